"""Client tokens (JWT, HS256, signed with the node's secret) and message ids (ULIDs)."""

from __future__ import annotations

import time
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from typing import Final
from urllib.parse import parse_qs

import jwt
from ulid import ULID

from ._errors import AuthError
from ._validate import ID_RE

#: The device id of a token without a ``dev`` claim.
DEFAULT_DEVICE: Final = "default"
#: Lifetime of a minted token unless told otherwise: one day, in seconds.
DEFAULT_TOKEN_TTL_S: Final = 86_400
#: Shortest secret accepted, in bytes (HS256 wants a key at least as long as its hash).
MIN_SECRET_BYTES: Final = 32
_ALGORITHM: Final = "HS256"


@dataclass(frozen=True, slots=True)
class Identity:
    """Who a verified token speaks for: a user id and a device id."""

    user: str
    device: str = DEFAULT_DEVICE


def _check_secret(secret: bytes) -> None:
    if not isinstance(secret, bytes) or len(secret) < MIN_SECRET_BYTES:
        raise ValueError(f"the secret must be at least {MIN_SECRET_BYTES} bytes")


def mint_token(
    secret: bytes,
    user: str,
    device: str | None = None,
    *,
    ttl_s: float = DEFAULT_TOKEN_TTL_S,
    now: float | None = None,
) -> str:
    """Sign a token for ``user`` (and ``device``) valid for ``ttl_s`` seconds from ``now``.

    ``now`` is seconds since the Unix epoch (default: the wall clock). Claims: ``sub`` (user),
    ``exp`` (integer seconds since the epoch), and ``dev`` when ``device`` is given.

    Raises:
        ValueError: ``user`` or ``device`` is not 1-64 characters of ``[A-Za-z0-9_.-]``, ``ttl_s``
            is not positive, or ``secret`` is shorter than 32 bytes.
    """
    _check_secret(secret)
    if not (isinstance(user, str) and ID_RE.fullmatch(user)):
        raise ValueError(f"user id {user!r} is not 1-64 characters of [A-Za-z0-9_.-]")
    if device is not None and not (isinstance(device, str) and ID_RE.fullmatch(device)):
        raise ValueError(f"device id {device!r} is not 1-64 characters of [A-Za-z0-9_.-]")
    if not ttl_s > 0:
        raise ValueError(f"ttl must be positive, not {ttl_s!r}")
    issued = time.time() if now is None else now
    claims: dict[str, object] = {"sub": user, "exp": int(issued + ttl_s)}
    if device is not None:
        claims["dev"] = device
    return jwt.encode(claims, secret, algorithm=_ALGORITHM)


def verify_token(secret: bytes, token: str, now: float | None = None) -> Identity:
    """Check ``token``'s signature, expiry and claims, and say whom it identifies.

    ``now`` is seconds since the Unix epoch (default: the wall clock); a token whose ``exp`` is
    at or before ``now`` has expired.

    Raises:
        AuthError: the token is malformed, not HS256, badly signed, expired, or its ``sub``/``dev``
            claims are missing or outside the id alphabet (``http_status`` 401).
        ValueError: ``secret`` is shorter than 32 bytes (the node's misuse).
    """
    _check_secret(secret)
    if not isinstance(token, str) or not token:
        raise AuthError("missing token")
    try:
        claims = jwt.decode(
            token,
            secret,
            algorithms=[_ALGORITHM],
            options={"require": ["sub", "exp"], "verify_exp": False},
        )
    except jwt.InvalidSignatureError as exc:
        raise AuthError("bad token signature") from exc
    except jwt.PyJWTError as exc:
        raise AuthError(f"malformed token: {exc}") from exc
    exp = claims["exp"]
    if type(exp) not in (int, float):
        raise AuthError("malformed token: exp must be a number")
    if exp <= (time.time() if now is None else now):
        raise AuthError("token expired")
    user = claims["sub"]
    if not (isinstance(user, str) and ID_RE.fullmatch(user)):
        raise AuthError("malformed token: sub must be 1-64 characters of [A-Za-z0-9_.-]")
    device = claims.get("dev", DEFAULT_DEVICE)
    if not (isinstance(device, str) and ID_RE.fullmatch(device)):
        raise AuthError("malformed token: dev must be 1-64 characters of [A-Za-z0-9_.-]")
    return Identity(user, device)


def _text(value: str | bytes) -> str:
    return value.decode("latin-1") if isinstance(value, bytes) else value


def token_from_request(
    headers: Mapping[str, str] | Iterable[tuple[str | bytes, str | bytes]],
    query: str | Mapping[str, str],
) -> str | None:
    """The token of a handshake request: ``Authorization: Bearer <token>``, else ``?token=``.

    ``headers`` is a mapping or a sequence of (name, value) pairs (``str`` or latin-1 ``bytes``);
    ``query`` the request's query string (without ``?``) or a mapping of its parameters.

    Returns:
        The token, or ``None`` when the request carries none.

    Raises:
        AuthError: an ``Authorization`` header that is not ``Bearer <token>`` (``http_status``
            401).
    """
    pairs = headers.items() if isinstance(headers, Mapping) else headers
    for name, value in pairs:
        if _text(name).lower() != "authorization":
            continue
        scheme, _, token = _text(value).strip().partition(" ")
        token = token.strip()
        if scheme.lower() != "bearer" or not token:
            raise AuthError("the Authorization header must be 'Bearer <token>'")
        return token
    if isinstance(query, str):
        values = parse_qs(query).get("token")
        found = values[0] if values else None
    else:
        found = query.get("token")
    return found or None


def new_message_id() -> str:
    """A new message id: a ULID, as its 26-character string (sortable by creation time)."""
    return str(ULID())
