"""The node's secret: created once, owner-only, in the data directory, and reused."""

from __future__ import annotations

import os
import secrets
import stat
from pathlib import Path
from typing import Final

from ._errors import ConfigError

SECRET_FILE: Final = "secret"
SECRET_BYTES: Final = 32


def _read(path: Path) -> bytes:
    try:
        info = path.stat()
    except OSError as exc:
        raise ConfigError(f"{path}: cannot read the node secret: {exc}") from exc
    if not stat.S_ISREG(info.st_mode):
        raise ConfigError(f"{path}: the node secret must be a regular file")
    if info.st_mode & 0o077:
        mode = stat.S_IMODE(info.st_mode)
        raise ConfigError(
            f"{path}: the node secret is readable by others (mode {mode:04o}); "
            f"make it owner-only with: chmod 600 {path}"
        )
    if hasattr(os, "getuid") and info.st_uid != os.getuid():
        raise ConfigError(f"{path}: the node secret belongs to another user")
    try:
        text = path.read_text("ascii").strip()
        secret = bytes.fromhex(text)
    except (OSError, ValueError) as exc:
        raise ConfigError(f"{path}: the node secret is not hex-encoded bytes") from exc
    if len(secret) < SECRET_BYTES:
        raise ConfigError(f"{path}: the node secret is shorter than {SECRET_BYTES} bytes")
    return secret


def load_or_create_secret(data_dir: str | os.PathLike[str]) -> bytes:
    """The node's secret (at least 32 bytes), from ``DATA/secret``, created on first use.

    The file holds the secret hex-encoded, mode 0600. Creation is atomic: the secret is written
    to a temporary file and linked into place, so a concurrent starter reads one whole secret,
    never a partial one. ``data_dir`` is created (mode 0700) when missing.

    Raises:
        ConfigError: the existing file is readable by group or others, not owned by this user,
            not a regular file, or malformed; or the data directory cannot be created or written.
    """
    directory = Path(data_dir)
    path = directory / SECRET_FILE
    if path.exists() or path.is_symlink():
        return _read(path)
    try:
        directory.mkdir(mode=0o700, parents=True, exist_ok=True)
        secret = secrets.token_bytes(SECRET_BYTES)
        temp = directory / f".{SECRET_FILE}.{os.getpid()}.{secrets.token_hex(4)}"
        fd = os.open(temp, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
        try:
            with os.fdopen(fd, "w", encoding="ascii") as file:
                file.write(secret.hex() + "\n")
                file.flush()
                os.fsync(file.fileno())
            try:
                os.link(temp, path)
            except FileExistsError:
                return _read(path)  # another starter won the race: use theirs
        finally:
            temp.unlink(missing_ok=True)
    except OSError as exc:
        raise ConfigError(f"{path}: cannot create the node secret: {exc}") from exc
    return secret
