"""Settings: defaults, each source, precedence, env naming, validation messages, unknown keys."""

from __future__ import annotations

from pathlib import Path

import pytest

from config import ConfigError, Settings, env_name, load_settings


def write(tmp_path: Path, text: str) -> Path:
    path = tmp_path / "parley.toml"
    path.write_text(text)
    return path


def test_defaults() -> None:
    s = load_settings(environ={})
    assert (s.server.host, s.server.port, s.server.heartbeat) == ("127.0.0.1", 8765, 30.0)
    assert s.server.data_dir == Path("parley-data")
    assert s.server.ws_path == "/ws"
    assert s.server.log_format == "console"
    assert s.storage.url == "sqlite+aiosqlite:///parley-data/parley.db"
    assert s.storage.shards == 1
    assert s.storage.shard_urls() == (s.storage.url,)
    limits = s.limits
    assert (limits.send_rate, limits.send_burst, limits.max_connections_per_user) == (100, 20, 5)
    assert (limits.max_frame, limits.max_body, limits.max_group) == (65536, 16384, 1024)
    assert (limits.outgoing_queue, limits.sync_limit, limits.bad_frames) == (1000, 1000, 10)
    assert (s.metrics.enabled, s.metrics.host, s.metrics.port) == (True, "127.0.0.1", 9765)
    assert s.admin.socket == Path("parley-data/admin.sock")
    assert s.admin.tcp_port is None
    assert s.admin.token is None
    assert s.admin.allow_destructive is False


def test_settings_are_frozen() -> None:
    s = load_settings(environ={})
    with pytest.raises(ValueError, match="frozen"):
        s.limits.send_rate = 5  # type: ignore[misc]


def test_data_dir_moves_its_defaults(tmp_path: Path) -> None:
    s = load_settings(overrides={"server.data_dir": tmp_path}, environ={})
    assert s.storage.url == f"sqlite+aiosqlite:///{tmp_path}/parley.db"
    assert s.admin.socket == tmp_path / "admin.sock"


def test_explicit_storage_url_and_socket_are_kept(tmp_path: Path) -> None:
    path = write(
        tmp_path,
        '[storage]\nurl = "postgresql+asyncpg://db/parley"\n[admin]\nsocket = "/run/p.sock"\n',
    )
    s = load_settings(path, environ={})
    assert s.storage.url == "postgresql+asyncpg://db/parley"
    assert s.admin.socket == Path("/run/p.sock")


def test_toml_file(tmp_path: Path) -> None:
    path = write(
        tmp_path,
        """
[server]
port = 9000
log_format = "json"
[storage]
shards = 2
urls = ["sqlite+aiosqlite:///a.db", "sqlite+aiosqlite:///b.db"]
[limits]
send_rate = 600
[metrics]
enabled = false
[admin]
tcp_port = 9999
token = "t0ken"
allow_destructive = true
""",
    )
    s = load_settings(path, environ={})
    assert s.server.port == 9000
    assert s.server.log_format == "json"
    assert s.storage.shard_urls() == ("sqlite+aiosqlite:///a.db", "sqlite+aiosqlite:///b.db")
    assert s.limits.send_rate == 600
    assert s.metrics.enabled is False
    assert s.admin.tcp_port == 9999
    assert s.admin.token is not None
    assert s.admin.token.get_secret_value() == "t0ken"
    assert "t0ken" not in repr(s)
    assert s.admin.allow_destructive is True


def test_precedence_defaults_file_env_flags(tmp_path: Path) -> None:
    path = write(tmp_path, "[limits]\nsend_rate = 200\nsend_burst = 30\nsync_limit = 7\n")
    env = {"PARLEY_LIMITS__SEND_RATE": "300", "PARLEY_LIMITS__SEND_BURST": "40"}
    s = load_settings(path, overrides={"limits.send_rate": 400}, environ=env)
    assert s.limits.send_rate == 400  # flag > env
    assert s.limits.send_burst == 40  # env > file
    assert s.limits.sync_limit == 7  # file > default
    assert s.limits.bad_frames == 10  # default


def test_nested_overrides_and_none_is_not_given() -> None:
    s = load_settings(
        overrides={"server": {"port": 1234, "host": None}, "server.heartbeat": None},
        environ={"PARLEY_SERVER__HOST": "::1"},
    )
    assert (s.server.port, s.server.host, s.server.heartbeat) == (1234, "::1", 30.0)


#: A non-default value for every setting, as an environment variable would carry it.
SAMPLES = {
    ("server", "host"): ("::1", "::1"),
    ("server", "port"): ("1", 1),
    ("server", "data_dir"): ("/srv/parley", Path("/srv/parley")),
    ("server", "heartbeat"): ("2.5", 2.5),
    ("server", "ws_path"): ("/chat", "/chat"),
    ("server", "log_format"): ("json", "json"),
    ("server", "gc_thresholds"): ("[5000, 5, 20]", (5000, 5, 20)),
    ("storage", "url"): ("postgresql+asyncpg://db/p", "postgresql+asyncpg://db/p"),
    ("storage", "shards"): ("1", 1),
    ("storage", "urls"): ('["a://1"]', ("a://1",)),
    ("limits", "send_rate"): ("600", 600),
    ("limits", "send_burst"): ("2", 2),
    ("limits", "max_connections_per_user"): ("3", 3),
    ("limits", "max_frame"): ("20000", 20000),
    ("limits", "max_body"): ("100", 100),
    ("limits", "max_group"): ("8", 8),
    ("limits", "outgoing_queue"): ("9", 9),
    ("limits", "sync_limit"): ("10", 10),
    ("limits", "bad_frames"): ("11", 11),
    ("limits", "conversation_idle"): ("90", 90.0),
    ("limits", "typing_timeout"): ("2.5", 2.5),
    ("metrics", "enabled"): ("0", False),
    ("metrics", "host"): ("localhost", "localhost"),
    ("metrics", "port"): ("9999", 9999),
    ("admin", "socket"): ("/run/a.sock", Path("/run/a.sock")),
    ("admin", "tcp_port"): ("7000", 7000),
    ("admin", "token"): ("tok", "tok"),
    ("admin", "allow_destructive"): ("true", True),
}


def all_keys() -> set[tuple[str, str]]:
    keys = set()
    for section, field in Settings.model_fields.items():
        model = field.annotation
        assert isinstance(model, type)
        keys |= {(section, key) for key in model.model_fields}  # type: ignore[attr-defined]
    return keys


def test_every_setting_is_sampled() -> None:
    assert set(SAMPLES) == all_keys()


@pytest.mark.parametrize(("section", "key"), sorted(SAMPLES))
def test_env_names(section: str, key: str) -> None:
    raw, value = SAMPLES[(section, key)]
    environ = {env_name(section, key): raw}
    if (section, key) == ("admin", "tcp_port"):
        environ[env_name("admin", "token")] = "tok"
    s = load_settings(environ=environ)
    got = getattr(getattr(s, section), key)
    if hasattr(got, "get_secret_value"):
        got = got.get_secret_value()
    assert got == value
    assert env_name(section, key) == f"PARLEY_{section.upper()}__{key.upper()}"


def test_docs_list_every_setting_and_env_var() -> None:
    docs = (Path(__file__).parents[2] / "docs" / "configuration.md").read_text()
    for section, key in all_keys():
        assert f"`{key}`" in docs, key
        assert env_name(section, key) in docs, key


def test_env_is_case_insensitive_and_json_for_lists() -> None:
    env = {
        "parley_server__port": "1111",
        "PARLEY_STORAGE__SHARDS": "2",
        "PARLEY_STORAGE__URLS": '["a://1", "a://2"]',
        "PARLEY_METRICS__ENABLED": "false",
        "OTHER": "ignored",
    }
    s = load_settings(environ=env)
    assert s.server.port == 1111
    assert s.storage.shard_urls() == ("a://1", "a://2")
    assert s.metrics.enabled is False


@pytest.mark.parametrize(
    ("env", "message"),
    [
        ({"PARLEY_LIMITS__SEND_RATE": "0"}, "limits.send_rate: must be > 0"),
        ({"PARLEY_LIMITS__SEND_RATE": "-3"}, "limits.send_rate: must be > 0"),
        ({"PARLEY_LIMITS__SEND_RATE": "fast"}, "limits.send_rate: must be an integer"),
        ({"PARLEY_LIMITS__BAD_FRAMES": "1.5"}, "limits.bad_frames: must be an integer"),
        ({"PARLEY_LIMITS__MAX_FRAME": "100"}, "limits.max_frame: must be >= 1024"),
        ({"PARLEY_LIMITS__MAX_BODY": "70000"}, "max_body (70000) must be smaller than max_frame"),
        ({"PARLEY_LIMITS__MAX_GROUP": "1"}, "limits.max_group: must be >= 2"),
        ({"PARLEY_SERVER__PORT": "70000"}, "server.port: must be <= 65535"),
        ({"PARLEY_SERVER__HEARTBEAT": "0"}, "server.heartbeat: must be > 0"),
        ({"PARLEY_SERVER__LOG_FORMAT": "xml"}, "server.log_format: Input should be 'console'"),
        ({"PARLEY_SERVER__WS_PATH": "ws"}, "server.ws_path: must start with /"),
        ({"PARLEY_SERVER__GC_THRESHOLDS": "[10, 10, 10]"}, "server.gc_thresholds.0: must be >="),
        ({"PARLEY_SERVER__GC_THRESHOLDS": "[700, 10]"}, "server.gc_thresholds"),
        ({"PARLEY_SERVER__GC_THRESHOLDS": "[700, 10, 0]"}, "server.gc_thresholds.2: must be >="),
        ({"PARLEY_SERVER__HOST": "a b"}, "is not an address or a name"),
        ({"PARLEY_STORAGE__SHARDS": "0"}, "storage.shards: must be >= 1"),
        ({"PARLEY_STORAGE__URLS": '["x"]', "PARLEY_STORAGE__SHARDS": "2"}, "one URL per shard"),
        ({"PARLEY_METRICS__ENABLED": "maybe"}, "metrics.enabled: must be true or false"),
        ({"PARLEY_ADMIN__TCP_PORT": "9000"}, "tcp_port needs a token"),
        ({"PARLEY_ADMIN__TCP_PORT": "0", "PARLEY_ADMIN__TOKEN": "t"}, "admin.tcp_port: must be >="),
        ({"PARLEY_LIMITS__SEND_RAT": "1"}, "limits.send_rat: unknown key"),
    ],
)
def test_bad_values_name_their_key(env: dict[str, str], message: str) -> None:
    with pytest.raises(ConfigError, match=message.replace("(", r"\(").replace(")", r"\)")):
        load_settings(environ=env)


def test_errors_say_where_the_value_came_from(tmp_path: Path) -> None:
    path = write(tmp_path, "[limits]\nsend_rate = 0\nsend_burst = 0\n")
    with pytest.raises(ConfigError) as info:
        load_settings(
            path,
            overrides={"limits.max_connections_per_user": 0},
            environ={"PARLEY_LIMITS__SEND_BURST": "-1"},
        )
    assert info.value.problems == (
        f"limits.send_rate: must be > 0 (from {path})",
        "limits.send_burst: must be > 0 (from PARLEY_LIMITS__SEND_BURST)",
        "limits.max_connections_per_user: must be > 0 (from flag)",
    )


@pytest.mark.parametrize(
    ("text", "message"),
    [
        ("[limits]\nsend_rat = 5\n", "limits.send_rat: unknown key"),
        ("[limit]\nsend_rate = 5\n", "limit: unknown key"),
        ("port = 5\n", "port: unknown key"),
        ('[server]\nport = "high"\n', "server.port: must be an integer"),
        ("[server]\nport = true\n", "server.port: must be a number, not true/false"),
        ("[server]\nheartbeat = -1\n", "server.heartbeat: must be > 0"),
    ],
)
def test_bad_toml(tmp_path: Path, text: str, message: str) -> None:
    with pytest.raises(ConfigError, match=message):
        load_settings(write(tmp_path, text), environ={})


def test_unparsable_or_missing_file(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match=r"parley\.toml"):
        load_settings(write(tmp_path, "[server\n"), environ={})
    with pytest.raises(ConfigError, match="no such configuration file"):
        load_settings(tmp_path / "absent.toml", environ={})


def test_bad_override_name() -> None:
    with pytest.raises(ConfigError, match=r"section\.key"):
        load_settings(overrides={"port": 1}, environ={})
