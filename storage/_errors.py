"""The storage package's exceptions: one root, named by whose fault they are.

``ConfigError`` and ``SchemaMismatch`` are the operator's to fix (retrying does not help);
``Unavailable`` is the database's (retry after ``retry_after`` seconds); ``SeqConflict`` is the
caller's (two different messages were given the same sequence number).
"""

from __future__ import annotations

__all__ = ["ConfigError", "SchemaMismatch", "SeqConflict", "StorageError", "Unavailable"]


class StorageError(Exception):
    """Root of every error the storage layer raises; driver errors are translated into these."""


class Unavailable(StorageError):
    """The database could not be reached, or the connection was lost during the call.

    Whether a write that failed this way was committed is unknown: retry it (appends are
    idempotent by ``(conv, sender, cmid)``, watermarks by ``max``). ``retry_after`` is a hint in
    seconds for when a retry may succeed.
    """

    def __init__(self, message: str, *, retry_after: float = 1.0) -> None:
        super().__init__(message)
        self.retry_after = retry_after


class ConfigError(StorageError, ValueError):
    """A backend URL or option is malformed; the message says what and which forms are accepted."""


class SchemaMismatch(StorageError):
    """The database holds a schema version this code does not know (e.g. written by a newer one)."""


class SeqConflict(StorageError):
    """A different message already holds ``(conv, seq)``; nothing of the batch was committed.

    ``conv`` and ``seq`` name the first conflicting slot found.
    """

    def __init__(self, conv: str, seq: int, existing_id: str | None = None) -> None:
        detail = f" (held by message {existing_id})" if existing_id else ""
        super().__init__(
            f"conversation {conv!r} already has a different message at seq {seq}{detail}"
        )
        self.conv = conv
        self.seq = seq
        self.existing_id = existing_id
