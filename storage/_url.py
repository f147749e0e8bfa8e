"""Backend URLs: parse and validate them into typed settings, or raise ``ConfigError``."""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Literal
from urllib.parse import parse_qsl, unquote, urlsplit

from ._errors import ConfigError

__all__ = ["BackendUrl", "CassandraUrl", "PostgresUrl", "SqliteUrl", "parse_url"]

ACCEPTED_FORMS = (
    "sqlite+aiosqlite:///PATH[?synchronous=NORMAL|FULL&busy_timeout_ms=N]",
    "postgresql+asyncpg://USER[:PASSWORD]@HOST[:PORT]/DB[?pool_size=N&max_overflow=N&schema=NAME]",
    "cassandra://HOST[,HOST...][:PORT]/KEYSPACE[?protocol_version=N&replication=...&consistency=...]",
)
_FORMS = "; ".join(ACCEPTED_FORMS)

CASSANDRA_CONSISTENCY = ("ANY", "ONE", "TWO", "THREE", "QUORUM", "ALL", "LOCAL_QUORUM",
                         "EACH_QUORUM", "LOCAL_ONE")  # fmt: skip


@dataclass(frozen=True, slots=True)
class SqliteUrl:
    """``sqlite+aiosqlite:///PATH``: one database file (created when missing), WAL journal.

    ``synchronous`` NORMAL (default) survives a process crash; FULL also survives power loss at
    the cost of an fsync per commit. ``busy_timeout_ms`` is how long a writer waits for the lock.
    """

    path: str
    synchronous: Literal["NORMAL", "FULL"] = "NORMAL"
    busy_timeout_ms: int = 5000

    def redacted(self) -> str:
        return f"sqlite+aiosqlite:///{self.path}"


@dataclass(frozen=True, slots=True)
class PostgresUrl:
    """``postgresql+asyncpg://...``: ``sqlalchemy_url`` is the URL without Parley's options.

    ``pool_size``/``max_overflow`` size SQLAlchemy's pool; ``schema`` (optional) is a schema
    created when missing and put first on the search path, so several shards or test runs can
    share one database.
    """

    sqlalchemy_url: str
    pool_size: int = 5
    max_overflow: int = 10
    schema: str | None = None
    display: str = ""

    def redacted(self) -> str:
        return self.display


@dataclass(frozen=True, slots=True)
class CassandraUrl:
    """``cassandra://HOST[,HOST...][:PORT]/KEYSPACE?...``.

    ``protocol_version`` None lets the driver choose (it does not fall back by itself: Cassandra
    2.1 needs ``protocol_version=3``). ``replication`` is the keyspace's replication map used when
    the keyspace is created (``replication=SimpleStrategy:1`` (default) or
    ``replication=NetworkTopologyStrategy:dc1=3,dc2=3``). ``consistency`` applies to reads and
    writes (default LOCAL_QUORUM: with one node and rf=1 it is the same as ONE, and it stays
    correct on a real cluster); ``serial_consistency`` to lightweight transactions.
    """

    hosts: tuple[str, ...]
    port: int = 9042
    keyspace: str = "parley"
    protocol_version: int | None = None
    replication: Mapping[str, str] = field(
        default_factory=lambda: {"class": "SimpleStrategy", "replication_factor": "1"}
    )
    consistency: str = "LOCAL_QUORUM"
    serial_consistency: str = "LOCAL_SERIAL"
    connect_timeout_s: float = 5.0

    def redacted(self) -> str:
        return f"cassandra://{','.join(self.hosts)}:{self.port}/{self.keyspace}"


BackendUrl = SqliteUrl | PostgresUrl | CassandraUrl


def _int_option(name: str, value: str, url: str, *, low: int, high: int) -> int:
    try:
        number = int(value)
    except ValueError:
        raise ConfigError(f"{url!r}: option {name}={value!r} is not an integer") from None
    if not low <= number <= high:
        raise ConfigError(f"{url!r}: option {name}={number} is outside {low}..{high}")
    return number


def _options(query: str, url: str, allowed: tuple[str, ...]) -> dict[str, str]:
    options: dict[str, str] = {}
    for key, value in parse_qsl(query, keep_blank_values=True, strict_parsing=False):
        if key not in allowed:
            raise ConfigError(
                f"{url!r}: unknown option {key!r}; this backend accepts {', '.join(allowed)}"
            )
        if key in options:
            raise ConfigError(f"{url!r}: option {key!r} given twice")
        options[key] = value
    return options


def _parse_sqlite(url: str) -> SqliteUrl:
    rest = url[len("sqlite+aiosqlite://") :]
    path, _, query = rest.partition("?")
    if not path.startswith("/") or path in ("/", "") or path == "/:memory:":
        raise ConfigError(
            f"{url!r}: a SQLite URL needs a file path after three slashes "
            f"(sqlite+aiosqlite:///relative.db or sqlite+aiosqlite:////abs/path.db); "
            f"in-memory databases are not durable and not accepted"
        )
    options = _options(query, url, ("synchronous", "busy_timeout_ms"))
    sync = options.get("synchronous", "NORMAL").upper()
    if sync not in ("NORMAL", "FULL"):
        raise ConfigError(f"{url!r}: synchronous must be NORMAL or FULL, got {sync!r}")
    busy_ms = _int_option(
        "busy_timeout_ms", options.get("busy_timeout_ms", "5000"), url, low=0, high=600_000
    )
    return SqliteUrl(path=unquote(path[1:]), synchronous=sync, busy_timeout_ms=busy_ms)  # type: ignore[arg-type]


def _parse_postgres(url: str) -> PostgresUrl:
    parts = urlsplit(url)
    if not parts.hostname:
        raise ConfigError(f"{url!r}: a PostgreSQL URL needs a host; accepted: {ACCEPTED_FORMS[1]}")
    try:
        parts.port  # noqa: B018 - validates the port
    except ValueError as exc:
        raise ConfigError(f"{url!r}: bad port ({exc})") from exc
    db = parts.path.lstrip("/")
    if not db or "/" in db:
        raise ConfigError(f"{url!r}: a PostgreSQL URL needs one database name after the host")
    options = _options(parts.query, url, ("pool_size", "max_overflow", "schema"))
    schema = options.get("schema")
    if schema is not None and not (schema.isidentifier() and schema.isascii()):
        raise ConfigError(f"{url!r}: schema must be a plain identifier, got {schema!r}")
    base = parts._replace(query="").geturl()
    shown = parts._replace(
        netloc=(f"{parts.username}@" if parts.username else "") + parts.netloc.rpartition("@")[2],
        query="",
    ).geturl()
    return PostgresUrl(
        sqlalchemy_url=base,
        pool_size=_int_option("pool_size", options.get("pool_size", "5"), url, low=1, high=1000),
        max_overflow=_int_option(
            "max_overflow", options.get("max_overflow", "10"), url, low=0, high=1000
        ),
        schema=schema,
        display=shown,
    )


def _parse_replication(value: str, url: str) -> dict[str, str]:
    strategy, _, spec = value.partition(":")
    if strategy == "SimpleStrategy":
        factor = _int_option("replication factor", spec or "1", url, low=1, high=100)
        return {"class": "SimpleStrategy", "replication_factor": str(factor)}
    if strategy == "NetworkTopologyStrategy":
        result = {"class": "NetworkTopologyStrategy"}
        for item in filter(None, spec.split(",")):
            dc, eq, dc_factor = item.partition("=")
            if not eq or not dc:
                raise ConfigError(f"{url!r}: replication item {item!r} is not DC=FACTOR")
            result[dc] = str(_int_option("replication factor", dc_factor, url, low=1, high=100))
        if len(result) == 1:
            raise ConfigError(f"{url!r}: NetworkTopologyStrategy needs at least one DC=FACTOR")
        return result
    raise ConfigError(
        f"{url!r}: replication must be SimpleStrategy[:RF] or "
        f"NetworkTopologyStrategy:DC=RF[,DC=RF...], got {value!r}"
    )


def _parse_cassandra(url: str) -> CassandraUrl:
    rest = url[len("cassandra://") :]
    netloc, _, tail = rest.partition("/")
    path, _, query = tail.partition("?")
    if not netloc:
        raise ConfigError(f"{url!r}: a Cassandra URL needs at least one host; {ACCEPTED_FORMS[2]}")
    port = 9042
    hosts_part = netloc
    head, colon, maybe_port = netloc.rpartition(":")
    if colon and "]" not in maybe_port:
        hosts_part = head
        port = _int_option("port", maybe_port, url, low=1, high=65535)
    hosts = tuple(h.strip() for h in hosts_part.split(","))
    if not all(hosts) or any(":" in h for h in hosts):
        raise ConfigError(
            f"{url!r}: hosts must be a comma-separated list with one port at the end "
            f"(HOST[,HOST...][:PORT]), got {netloc!r}"
        )
    keyspace = path.strip("/")
    if not keyspace or not (keyspace.isidentifier() and keyspace.isascii()) or len(keyspace) > 48:
        raise ConfigError(
            f"{url!r}: the keyspace must be a plain identifier of at most 48 characters, "
            f"got {keyspace!r}"
        )
    options = _options(
        query,
        url,
        (
            "protocol_version",
            "replication",
            "consistency",
            "serial_consistency",
            "connect_timeout",
        ),
    )
    protocol: int | None = None
    if "protocol_version" in options:
        protocol = _int_option("protocol_version", options["protocol_version"], url, low=3, high=5)
    consistency = options.get("consistency", "LOCAL_QUORUM").upper()
    if consistency not in CASSANDRA_CONSISTENCY:
        raise ConfigError(
            f"{url!r}: consistency must be one of {', '.join(CASSANDRA_CONSISTENCY)}, "
            f"got {consistency!r}"
        )
    serial = options.get("serial_consistency", "LOCAL_SERIAL").upper()
    if serial not in ("SERIAL", "LOCAL_SERIAL"):
        raise ConfigError(f"{url!r}: serial_consistency must be SERIAL or LOCAL_SERIAL")
    timeout = options.get("connect_timeout", "5")
    try:
        connect_timeout = float(timeout)
    except ValueError:
        raise ConfigError(f"{url!r}: connect_timeout must be seconds, got {timeout!r}") from None
    replication = _parse_replication(options.get("replication", "SimpleStrategy:1"), url)
    return CassandraUrl(
        hosts=hosts,
        port=port,
        keyspace=keyspace,
        protocol_version=protocol,
        replication=replication,
        consistency=consistency,
        serial_consistency=serial,
        connect_timeout_s=connect_timeout,
    )


def parse_url(url: str) -> BackendUrl:
    """Parse a backend URL into its settings.

    Raises ``ConfigError`` naming what was wrong and the accepted forms: unknown scheme, missing
    path/host/database/keyspace, unknown or malformed options.
    """
    if not isinstance(url, str) or not url:
        raise ConfigError(f"a backend URL must be a non-empty string; accepted: {_FORMS}")
    scheme = url.partition("://")[0].lower() if "://" in url else ""
    if scheme == "sqlite+aiosqlite":
        return _parse_sqlite(url)
    if scheme == "postgresql+asyncpg":
        return _parse_postgres(url)
    if scheme == "cassandra":
        return _parse_cassandra(url)
    hint = ""
    if scheme in ("sqlite", "postgresql", "postgres"):
        hint = " (name the driver: sqlite+aiosqlite or postgresql+asyncpg)"
    raise ConfigError(f"{url!r}: unsupported scheme {scheme!r}{hint}; accepted: {_FORMS}")
