"""The storage package's public surface: everything exported is defined and documented."""

from __future__ import annotations

import storage


def test_public_names_are_exported_and_documented() -> None:
    public = [name for name in dir(storage) if not name.startswith("_")]
    expected = {
        "Backend", "SqlBackend", "CassandraBackend", "ShardedStorage", "HashRing", "Message",
        "Conversation", "UserConversation", "AppendResult", "StorageError", "Unavailable",
        "ConfigError", "SchemaMismatch", "SeqConflict", "parse_url", "backend_from_url",
        "AsyncioBridge", "direct_key",
    }  # fmt: skip
    assert expected <= set(public)
    for name in public:
        obj = getattr(storage, name)
        if callable(obj) and getattr(obj, "__module__", "").startswith("storage."):
            assert obj.__doc__, f"storage.{name} has no docstring"
