"""Parley's settings: schema, defaults, and loading from a TOML file, the environment and flags;
and the node's secret."""

from ._errors import ConfigError as ConfigError
from ._secret import load_or_create_secret as load_or_create_secret
from ._settings import AdminSettings as AdminSettings
from ._settings import LimitsSettings as LimitsSettings
from ._settings import MetricsSettings as MetricsSettings
from ._settings import ServerSettings as ServerSettings
from ._settings import Settings as Settings
from ._settings import StorageSettings as StorageSettings
from ._settings import env_name as env_name
from ._settings import load_settings as load_settings
