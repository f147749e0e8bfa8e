"""SQLite's writes other than the append fast path, as steps for the writer process.

SQLite lets one connection write at a time. The writer process (storage/_sqlite_writer.py)
runs append transactions back to back under load, and any other connection's ``BEGIN
IMMEDIATE`` gets the lock only in the short gaps between them. SQLite's busy handler polls
with sleeps that grow to 100 ms, so it can miss every gap until the busy timeout ends with
"database is locked". So every write goes through that process and takes its turn with the
appends. Creating a conversation under a steady load of appends went that way from a median
of 118 ms to that of an idle node. Each function here returns the steps of one transaction
(``_sqlite_child.run_script``). storage/_sql.py builds the same statements with SQLAlchemy
for PostgreSQL. Reads stay on the engine's pool: WAL readers never wait for the writer.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping, Sequence
from typing import Any, Final

from ._records import Conversation, Message, Role
from ._sqlite_child import MESSAGE_COLUMNS, pow2_chunks

__all__ = [
    "Step",
    "add_members",
    "add_user_conversations",
    "conflict",
    "create_conversation",
    "loaded_conversation",
    "remove_members",
    "remove_user_conversations",
    "set_role",
    "store_messages",
    "stored",
    "touch_users",
]

#: ``(sql, params, many, when)``: see ``_sqlite_child.run_script``.
Step = tuple[str, Sequence[Any], bool, str]
#: What a script gives back: whether it committed, and per step run (rows changed, rows).
Results = tuple[bool, list[tuple[int, list[tuple[Any, ...]]]]]

_INSERT_CONVERSATION: Final = (
    "INSERT INTO conversations (conv, kind, title, created_ts, last_seq, direct_key) "
    "VALUES (?, ?, ?, ?, 0, ?) ON CONFLICT DO NOTHING"
)
_INSERT_MEMBER: Final = (
    "INSERT INTO members (conv, user_id, role, joined_ts) VALUES (?, ?, ?, ?) "
    "ON CONFLICT DO NOTHING"
)
#: The conversation a create found: the one of that id, else the direct one of that pair.
_FOUND: Final = (
    "(SELECT conv FROM conversations WHERE conv = ?1 "
    "UNION ALL SELECT conv FROM conversations WHERE direct_key = ?2 LIMIT 1)"
)
_LOAD: Final = (
    f"SELECT conv, kind, title, created_ts, last_seq FROM conversations WHERE conv = {_FOUND}",
    f"SELECT user_id, role FROM members WHERE conv = {_FOUND}",
    f"SELECT max(seq) FROM messages WHERE conv = {_FOUND}",
)
_DELETE_MEMBER: Final = "DELETE FROM members WHERE conv = ? AND user_id = ?"
_SET_ROLE: Final = "UPDATE members SET role = ? WHERE conv = ? AND user_id = ?"
_INSERT_USER_CONVERSATION: Final = (
    "INSERT INTO user_conversations (user_id, conv, read_seq) VALUES (?, ?, 0) "
    "ON CONFLICT DO NOTHING"
)
_DELETE_USER_CONVERSATION: Final = "DELETE FROM user_conversations WHERE user_id = ? AND conv = ?"
_DELETE_DELIVERED: Final = "DELETE FROM delivered WHERE user_id = ? AND conv = ?"
_TOUCH_USER: Final = (
    "INSERT INTO users (user_id, last_seen_ts) VALUES (?, ?) "
    "ON CONFLICT (user_id) DO UPDATE SET last_seen_ts = CASE "
    "WHEN users.last_seen_ts < excluded.last_seen_ts THEN excluded.last_seen_ts "
    "ELSE users.last_seen_ts END"
)
#: Raise ``last_seq`` to the highest stored seq of each conversation named (``{}``: the ?s).
_ADVANCE_TO_STORED: Final = (
    "UPDATE conversations SET last_seq = "
    "(SELECT max(seq) FROM messages WHERE messages.conv = conversations.conv) "
    "WHERE conv IN ({}) AND last_seq < "
    "(SELECT max(seq) FROM messages WHERE messages.conv = conversations.conv)"
)
#: Conversations per ``_ADVANCE_TO_STORED`` statement, under SQLite's oldest parameter limit.
_CONVS_PER_STATEMENT: Final = 500
#: Keys per look-up statement (5 parameters each at most).
_KEYS_PER_STATEMENT: Final = 150
#: The rows (conv, seq, id, sender, cmid) whose key has no stored message, each with the id
#: of the message holding its (conv, seq). A join with a VALUES list, which searches the
#: unique index (a row-value IN scans the table).
_CHECK_STORED: Final = (
    "WITH k(conv, seq, id, sender, cmid) AS (VALUES {}) "
    "SELECT k.conv, k.seq, k.id, "
    "(SELECT id FROM messages WHERE conv = k.conv AND seq = k.seq) FROM k "
    "WHERE NOT EXISTS (SELECT 1 FROM messages AS m "
    "WHERE m.conv = k.conv AND m.sender = k.sender AND m.cmid = k.cmid)"
)
#: The stored messages of the keys (conv, sender, cmid).
_STORED_BY_KEY: Final = (
    f"WITH k(conv, sender, cmid) AS (VALUES {{}}) SELECT "
    f"{', '.join('m.' + c.strip() for c in MESSAGE_COLUMNS.split(','))} FROM k "
    "JOIN messages AS m ON m.conv = k.conv AND m.sender = k.sender AND m.cmid = k.cmid"
)


def _one(sql: str, *params: Any) -> Step:
    return (sql, list(params), False, "always")


def _many(sql: str, rows: Iterable[Sequence[Any]]) -> Step:
    return (sql, [tuple(row) for row in rows], True, "always")


def create_conversation(conv: Conversation, direct_key: str | None) -> list[Step]:
    """Insert ``conv`` unless its id (or, for a direct one, its pair) is taken, with its
    members only if it went in; then load what is stored (``loaded_conversation``)."""
    row = (conv.conv, conv.kind, conv.title, conv.created_ts, direct_key)
    steps = [_one(_INSERT_CONVERSATION, *row)]
    members = [
        (conv.conv, user, "admin" if user in conv.admins else "member", conv.created_ts)
        for user in sorted(conv.members | conv.admins)
    ]
    if members:
        steps.append((_INSERT_MEMBER, members, True, "changed"))  # if the insert above did
    steps.extend(_one(sql, conv.conv, direct_key) for sql in _LOAD)
    return steps


def loaded_conversation(results: Results) -> Conversation | None:
    """The conversation the last three steps of ``create_conversation`` read, if any."""
    (_, head), (_, people), (_, top) = results[1][-3:]
    if not head:
        return None
    conv, kind, title, created_ts, last_seq = head[0]
    return Conversation(
        conv=conv,
        kind=kind,
        title=title,
        created_ts=created_ts,
        last_seq=max(last_seq, top[0][0] or 0),
        members=frozenset(user for user, _ in people),
        admins=frozenset(user for user, role in people if role == "admin"),
    )


def add_members(conv: str, users: Sequence[str], role: Role, joined_ts: int) -> list[Step]:
    """Add ``users`` to ``conv`` with ``role`` (``joined_ts`` ms); members already there stay
    as they are."""
    return [_many(_INSERT_MEMBER, ((conv, user, role, joined_ts) for user in users))]


def remove_members(conv: str, users: Sequence[str]) -> list[Step]:
    """Remove ``users`` from ``conv``'s members (absent ones are no error)."""
    return [_many(_DELETE_MEMBER, ((conv, user) for user in users))]


def set_role(conv: str, users: Sequence[str], role: Role) -> list[Step]:
    """Give those of ``users`` who are members of ``conv`` the ``role``."""
    return [_many(_SET_ROLE, ((role, conv, user) for user in users))]


def add_user_conversations(user: str, convs: Sequence[str]) -> list[Step]:
    """Put ``convs`` on ``user``'s list (read watermark 0; entries already there stay)."""
    return [_many(_INSERT_USER_CONVERSATION, ((user, conv) for conv in convs))]


def remove_user_conversations(user: str, convs: Sequence[str]) -> list[Step]:
    """Take ``convs`` off ``user``'s list, with the user's delivered watermarks there."""
    pairs = [(user, conv) for conv in convs]
    return [_many(_DELETE_USER_CONVERSATION, pairs), _many(_DELETE_DELIVERED, pairs)]


def touch_users(seen: Mapping[str, int]) -> list[Step]:
    """Record last-seen times (user -> ms since the epoch); a time only moves forward."""
    return [_many(_TOUCH_USER, seen.items())]


def store_messages(rows: Sequence[Sequence[Any]], convs: Sequence[str]) -> list[Step]:
    """The exact append path, for a batch that did not go in whole, in one transaction:

    1. insert message ``rows`` (``MESSAGE_COLUMNS`` order), skipping any that conflict,
       each chunk returning the ids it inserted;
    2. check that every row's key is stored now; a row that is not (its seq or its id is
       taken by another message) stops the script and rolls it all back
       (``conflict``);
    3. raise the ``last_seq`` of ``convs`` to what is stored;
    4. read the stored message of every row's key (``stored``: the duplicates).
    """
    steps = []
    for chunk in pow2_chunks(rows):
        values = ", ".join(["(?, ?, ?, ?, ?, ?, ?, ?, ?)"] * len(chunk))
        sql = (
            f"INSERT INTO messages ({MESSAGE_COLUMNS}) VALUES {values} "
            "ON CONFLICT DO NOTHING RETURNING id"
        )
        steps.append(_one(sql, *(value for row in chunk for value in row)))
    for chunk in _key_chunks(rows):
        sql = _CHECK_STORED.format(", ".join(["(?, ?, ?, ?, ?)"] * len(chunk)))
        params = (value for row in chunk for value in (row[0], row[1], row[2], row[3], row[4]))
        steps.append((sql, list(params), False, "check"))
    for i in range(0, len(convs), _CONVS_PER_STATEMENT):
        part = convs[i : i + _CONVS_PER_STATEMENT]
        steps.append(_one(_ADVANCE_TO_STORED.format(", ".join("?" * len(part))), *part))
    for chunk in _key_chunks(rows):
        sql = _STORED_BY_KEY.format(", ".join(["(?, ?, ?)"] * len(chunk)))
        steps.append(_one(sql, *(value for row in chunk for value in (row[0], row[3], row[4]))))
    return steps


def conflict(results: Results) -> tuple[str, int, str, str | None] | None:
    """When ``store_messages`` rolled back: the first row not stored, as (conv, seq, id, the
    id of the message holding that (conv, seq), if any). None when it committed."""
    committed, steps = results
    if committed:
        return None
    conv, seq, id_, holder = steps[-1][1][0]
    return str(conv), int(seq), str(id_), holder


def stored(rows: Sequence[Sequence[Any]], results: Results) -> tuple[set[str], list[Message]]:
    """After ``store_messages(rows, ...)`` committed: the ids it inserted, and the stored
    message of each row's key (inserted ones included)."""
    steps = results[1]
    inserted = {str(row[0]) for _, got in steps[: len(pow2_chunks(rows))] for row in got}
    found = [_message(row) for _, got in steps[-len(_key_chunks(rows)) :] for row in got]
    return inserted, found


def _key_chunks(rows: Sequence[Sequence[Any]]) -> list[Sequence[Sequence[Any]]]:
    return [rows[i : i + _KEYS_PER_STATEMENT] for i in range(0, len(rows), _KEYS_PER_STATEMENT)]


def _message(row: Sequence[Any]) -> Message:
    conv, seq, id_, sender, cmid, kind, body, is_text, ts = row
    raw = bytes(body)
    return Message(conv, seq, id_, sender, cmid, kind, raw.decode() if is_text else raw, ts)
