"""The node's settings: schema and defaults, and loading them from a file, the environment and
explicit overrides.

Precedence, lowest first: defaults < TOML file < environment (``PARLEY_<SECTION>__<KEY>``) <
overrides (command-line flags). Every source is validated by one pydantic schema; every problem is
reported at once, naming ``section.key`` and where its value came from.
"""

from __future__ import annotations

import ipaddress
import os
import tomllib
from collections.abc import Mapping
from pathlib import Path
from typing import Annotated, Any, Final, Literal

from pydantic import (
    BaseModel,
    BeforeValidator,
    ConfigDict,
    Field,
    SecretStr,
    ValidationError,
    field_validator,
    model_validator,
)
from pydantic_settings import BaseSettings, EnvSettingsSource, SettingsConfigDict
from pydantic_settings.sources import PydanticBaseSettingsSource
from pydantic_settings.sources.utils import parse_env_vars

from ._errors import ConfigError

ENV_PREFIX: Final = "PARLEY_"
ENV_DELIMITER: Final = "__"
#: The SQLite file of the default storage, inside the data directory.
SQLITE_FILE: Final = "parley.db"
#: The admin socket's file name inside the data directory.
ADMIN_SOCKET_FILE: Final = "admin.sock"


def _not_a_bool(value: object) -> object:
    # TOML and JSON booleans are not numbers here (pydantic's lax mode would take true as 1).
    if isinstance(value, bool):
        raise ValueError("must be a number, not true/false")
    return value


Int = Annotated[int, BeforeValidator(_not_a_bool)]
Float = Annotated[float, BeforeValidator(_not_a_bool)]
Port = Int
GcGen0 = Annotated[int, BeforeValidator(_not_a_bool), Field(ge=100, le=10_000_000)]
GcOlder = Annotated[int, BeforeValidator(_not_a_bool), Field(ge=1, le=1_000)]


class _Section(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)


class ServerSettings(_Section):
    """``[server]``: where the node listens and keeps its data."""

    #: Interface for WebSocket clients (loopback unless told otherwise).
    host: str = "127.0.0.1"
    #: TCP port for WebSocket clients; 0 picks a free one.
    port: Port = Field(default=8765, ge=0, le=65535)
    #: Directory of the node's secret, SQLite database and admin socket (relative to the
    #: working directory).
    data_dir: Path = Path("parley-data")
    #: Seconds between WebSocket pings; a connection silent for two heartbeats is closed.
    heartbeat: Float = Field(default=30.0, gt=0)
    #: The WebSocket endpoint's path.
    ws_path: str = "/ws"
    #: ``console`` (readable on a terminal) or ``json`` (one object per line).
    log_format: Literal["console", "json"] = "console"
    #: The cyclic garbage collector's thresholds (``gc.set_threshold``: allocations before a
    #: young collection, then young collections before each older one). CPython's 700/10/10
    #: promote in-flight messages to the old generation so often that a full collection (about
    #: 0.6 µs per live object: 200 ms at 400,000) ran every few seconds under 800 msgs/s and
    #: set the ack p99. 10,000/4/10 makes full collections rare and keeps each middle one
    #: small: half-rate ack / delivery p99 50-56 / 58-65 ms, against 94-100 / 122-126 ms with
    #: 20,000/10/10, for ~10 % less closed-loop throughput (docs/benchmarks.md, "Garbage
    #: collection").
    gc_thresholds: tuple[GcGen0, GcOlder, GcOlder] = (10_000, 4, 10)

    @field_validator("ws_path")
    @classmethod
    def _path_is_absolute(cls, value: str) -> str:
        if not value.startswith("/") or any(c in value for c in "?# "):
            raise ValueError("must start with / and hold no '?', '#' or space")
        return value


class StorageSettings(_Section):
    """``[storage]``: where messages are kept.

    ``url`` defaults to SQLite in the data directory (``sqlite+aiosqlite:///DATA/parley.db``).
    ``urls``, when given, is one URL per shard (and must list exactly ``shards`` of them);
    otherwise every shard uses ``url``.
    """

    url: str = ""
    #: Number of storage shards (storage actors) conversations are spread over.
    shards: Int = Field(default=1, ge=1, le=1024)
    urls: tuple[str, ...] | None = None

    @model_validator(mode="after")
    def _one_url_per_shard(self) -> StorageSettings:
        if self.urls is not None and len(self.urls) != self.shards:
            raise ValueError(
                f"urls must list one URL per shard ({len(self.urls)} given, shards = {self.shards})"
            )
        return self

    def shard_urls(self) -> tuple[str, ...]:
        """The URL of each shard, in shard order (``shards`` of them)."""
        return self.urls if self.urls is not None else (self.url,) * self.shards


class LimitsSettings(_Section):
    """``[limits]``: per-user and per-connection limits."""

    #: Messages per minute per user (token bucket refill).
    send_rate: Int = Field(default=100, gt=0)
    #: Messages a user may send at once (token bucket size).
    send_burst: Int = Field(default=20, gt=0)
    #: Connections one user may hold; one more is refused with HTTP 429.
    max_connections_per_user: Int = Field(default=5, gt=0)
    #: Largest frame in bytes; a larger one closes the connection with 1009.
    max_frame: Int = Field(default=65536, ge=1024)
    #: Largest message body in bytes (must be below max_frame).
    max_body: Int = Field(default=16384, gt=0)
    #: Most members a group may have.
    max_group: Int = Field(default=1024, ge=2)
    #: Frames queued for one connection before it is closed with 4008.
    outgoing_queue: Int = Field(default=1000, gt=0)
    #: Messages pushed per conversation by a connect-time sync or a sync request.
    sync_limit: Int = Field(default=1000, gt=0)
    #: Bad frames in a row that close the connection with 1008.
    bad_frames: Int = Field(default=10, gt=0)
    #: Seconds without a request before a conversation's actor stops (it is started again,
    #: from storage, on the next request).
    conversation_idle: Float = Field(default=60.0, gt=0)
    #: Seconds a ``typing start`` lasts unless renewed.
    typing_timeout: Float = Field(default=10.0, gt=0)

    @model_validator(mode="after")
    def _body_fits_in_a_frame(self) -> LimitsSettings:
        if self.max_body >= self.max_frame:
            raise ValueError(
                f"max_body ({self.max_body}) must be smaller than max_frame ({self.max_frame})"
            )
        return self


class MetricsSettings(_Section):
    """``[metrics]``: the Prometheus ``/metrics`` and ``/healthz`` endpoint."""

    enabled: bool = True
    host: str = "127.0.0.1"
    port: Port = Field(default=9765, ge=0, le=65535)


class AdminSettings(_Section):
    """``[admin]``: the inspector endpoint.

    ``socket`` defaults to ``DATA/admin.sock`` (owner-only). ``tcp_port`` is off unless set, and
    then needs a ``token``. ``allow_destructive`` permits kill/restart commands.
    """

    socket: Path = Path()
    tcp_port: Port | None = Field(default=None, ge=1, le=65535)
    token: SecretStr | None = None
    allow_destructive: bool = False

    @model_validator(mode="after")
    def _tcp_needs_a_token(self) -> AdminSettings:
        if self.tcp_port is not None and not (self.token and self.token.get_secret_value()):
            raise ValueError("tcp_port needs a token")
        return self


class Settings(BaseSettings):
    """All of a node's settings. Build it with :func:`load_settings`."""

    model_config = SettingsConfigDict(
        env_prefix=ENV_PREFIX,
        env_nested_delimiter=ENV_DELIMITER,
        extra="forbid",
        frozen=True,
    )

    server: ServerSettings = ServerSettings()
    storage: StorageSettings = StorageSettings()
    limits: LimitsSettings = LimitsSettings()
    metrics: MetricsSettings = MetricsSettings()
    admin: AdminSettings = AdminSettings()

    @classmethod
    def settings_customise_sources(
        cls,
        settings_cls: type[BaseSettings],
        init_settings: PydanticBaseSettingsSource,
        env_settings: PydanticBaseSettingsSource,
        dotenv_settings: PydanticBaseSettingsSource,
        file_secret_settings: PydanticBaseSettingsSource,
    ) -> tuple[PydanticBaseSettingsSource, ...]:
        # load_settings merges the sources itself (it is told the file and the environment).
        return (init_settings,)

    @model_validator(mode="before")
    @classmethod
    def _defaults_in_data_dir(cls, data: Any) -> Any:
        if not isinstance(data, dict):
            return data
        server = data.get("server") or {}
        data_dir = server.get("data_dir", "parley-data") if isinstance(server, dict) else None
        if not isinstance(data_dir, str | Path):
            return data  # the schema reports it
        data_dir = Path(data_dir)
        data = dict(data)
        for section, key, default in (
            ("storage", "url", f"sqlite+aiosqlite:///{(data_dir / SQLITE_FILE).as_posix()}"),
            ("admin", "socket", data_dir / ADMIN_SOCKET_FILE),
        ):
            values = data.get(section)
            if values is None:
                values = {}
            if isinstance(values, dict) and not values.get(key):
                data[section] = {**values, key: default}
        return data

    @model_validator(mode="after")
    def _loopback_hosts_are_valid(self) -> Settings:
        for section in (self.server, self.metrics):
            _check_host(section.host)
        return self


def _check_host(host: str) -> None:
    if host == "localhost":
        return
    try:
        ipaddress.ip_address(host)
    except ValueError:
        if not host or any(c.isspace() for c in host):
            raise ValueError(f"host {host!r} is not an address or a name") from None


class _EnvironSource(EnvSettingsSource):
    """pydantic-settings' environment source, reading a given mapping rather than os.environ."""

    def __init__(self, settings_cls: type[BaseSettings], environ: Mapping[str, str]) -> None:
        self._environ = environ
        super().__init__(settings_cls)

    def _load_env_vars(self) -> Mapping[str, str | None]:
        return parse_env_vars(self._environ, self.case_sensitive, self.env_ignore_empty)


def env_name(section: str, key: str) -> str:
    """The environment variable of ``section.key``, e.g. ``PARLEY_LIMITS__SEND_RATE``."""
    return f"{ENV_PREFIX}{section.upper()}{ENV_DELIMITER}{key.upper()}"


def _merge(base: dict[str, Any], top: Mapping[str, Any]) -> dict[str, Any]:
    merged = dict(base)
    for key, value in top.items():
        if isinstance(value, Mapping) and isinstance(merged.get(key), dict):
            merged[key] = _merge(merged[key], value)
        else:
            merged[key] = dict(value) if isinstance(value, Mapping) else value
    return merged


def _nest_overrides(overrides: Mapping[str, Any]) -> dict[str, Any]:
    nested: dict[str, Any] = {}
    for key, value in overrides.items():
        if value is None:
            continue  # an option that was not given
        if isinstance(value, Mapping):
            nested = _merge(nested, {key: {k: v for k, v in value.items() if v is not None}})
            continue
        section, dot, name = key.partition(".")
        if not dot or not section or not name:
            raise ConfigError(f"{key}: an override must be named section.key")
        nested = _merge(nested, {section: {name: value}})
    return nested


def _read_toml(path: Path) -> dict[str, Any]:
    try:
        with path.open("rb") as file:
            return tomllib.load(file)
    except FileNotFoundError:
        raise ConfigError(f"{path}: no such configuration file") from None
    except (OSError, tomllib.TOMLDecodeError, UnicodeDecodeError) as exc:
        raise ConfigError(f"{path}: {exc}") from exc


_MESSAGES: Final = {
    "greater_than": "must be > {gt}",
    "greater_than_equal": "must be >= {ge}",
    "less_than": "must be < {lt}",
    "less_than_equal": "must be <= {le}",
    "int_parsing": "must be an integer",
    "int_type": "must be an integer",
    "int_from_float": "must be an integer",
    "float_parsing": "must be a number",
    "float_type": "must be a number",
    "bool_parsing": "must be true or false",
    "bool_type": "must be true or false",
    "string_type": "must be a string",
    "extra_forbidden": "unknown key",
    "missing": "required",
}


def _describe(error: Mapping[str, Any]) -> str:
    template = _MESSAGES.get(error["type"])
    if template is not None:
        try:
            return template.format(**(error.get("ctx") or {}))
        except KeyError:
            pass
    message = str(error["msg"])
    return message.removeprefix("Value error, ")


def _origin(
    loc: tuple[str, ...],
    layers: list[tuple[str, Mapping[str, Any]]],
) -> str:
    for name, data in reversed(layers):  # the highest precedence that set it is to blame
        node: Any = data
        for part in loc:
            if not isinstance(node, Mapping) or part not in node:
                break
            node = node[part]
        else:
            if name == "env" and len(loc) >= 2:
                return f" (from {env_name(loc[0], loc[1])})"
            return f" (from {name})"
    return ""


def load_settings(
    config_file: str | os.PathLike[str] | None = None,
    overrides: Mapping[str, Any] | None = None,
    environ: Mapping[str, str] | None = None,
) -> Settings:
    """Load and validate the node's settings.

    Args:
        config_file: a TOML file with ``[server]``, ``[storage]``, ``[limits]``, ``[metrics]``
            and ``[admin]`` tables, or ``None``.
        overrides: values that win over everything, as ``{"section.key": value}`` or
            ``{"section": {"key": value}}``; ``None`` values are skipped (options not given).
        environ: the environment to read ``PARLEY_<SECTION>__<KEY>`` variables from
            (default ``os.environ``).

    Raises:
        ConfigError: the file cannot be read or parsed, or any value from any source is invalid
            or unknown; every problem is listed, as ``section.key: what is wrong (from where)``.
    """
    toml: dict[str, Any] = {}
    if config_file is not None:
        toml = _read_toml(Path(config_file))
    env = _EnvironSource(Settings, os.environ if environ is None else environ)()
    flags = _nest_overrides(overrides or {})
    layers: list[tuple[str, Mapping[str, Any]]] = [
        (str(config_file), toml),
        ("env", env),
        ("flag", flags),
    ]
    merged = _merge(_merge(toml, env), flags)
    try:
        return Settings(**merged)
    except ValidationError as exc:
        problems = []
        for error in exc.errors():
            loc = tuple(str(part) for part in error["loc"])
            key = ".".join(loc) or "settings"
            problems.append(f"{key}: {_describe(error)}{_origin(loc, layers)}")
        raise ConfigError(problems) from None
