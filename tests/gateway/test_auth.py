"""Tokens: minting, verification and every way a token is refused; where a request carries one."""

from __future__ import annotations

import jwt
import pytest

from gateway import (
    AuthError,
    Identity,
    mint_token,
    new_message_id,
    token_from_request,
    verify_token,
)

SECRET = b"s" * 32
OTHER = b"o" * 32
NOW = 1_700_000_000.0


def test_round_trip_with_device() -> None:
    token = mint_token(SECRET, "alice", "phone", ttl_s=60, now=NOW)
    assert verify_token(SECRET, token, now=NOW + 59) == Identity("alice", "phone")


def test_device_defaults_to_default() -> None:
    token = mint_token(SECRET, "alice", now=NOW)
    assert "dev" not in jwt.decode(token, options={"verify_signature": False})
    assert verify_token(SECRET, token, now=NOW) == Identity("alice", "default")


def test_claims() -> None:
    token = mint_token(SECRET, "bob", "tab-1", ttl_s=90, now=NOW)
    assert jwt.get_unverified_header(token)["alg"] == "HS256"
    claims = jwt.decode(token, SECRET, algorithms=["HS256"], options={"verify_exp": False})
    assert claims == {"sub": "bob", "dev": "tab-1", "exp": int(NOW + 90)}


def test_expired_at_exp() -> None:
    token = mint_token(SECRET, "alice", ttl_s=60, now=NOW)
    with pytest.raises(AuthError, match="expired") as info:
        verify_token(SECRET, token, now=NOW + 60)
    assert info.value.http_status == 401


def test_wall_clock_is_the_default() -> None:
    assert verify_token(SECRET, mint_token(SECRET, "alice")).user == "alice"
    with pytest.raises(AuthError, match="expired"):
        verify_token(SECRET, mint_token(SECRET, "alice", now=NOW))


def test_bad_signature() -> None:
    token = mint_token(OTHER, "alice", now=NOW)
    with pytest.raises(AuthError, match="signature") as info:
        verify_token(SECRET, token, now=NOW)
    assert info.value.http_status == 401


def _forge(claims: dict[str, object], algorithm: str = "HS256", key: bytes = SECRET) -> str:
    return jwt.encode(claims, key, algorithm=algorithm)


@pytest.mark.parametrize(
    "token",
    [
        "",
        "not-a-jwt",
        "a.b.c",
        _forge({"exp": NOW + 60}),  # no sub
        _forge({"sub": "alice"}),  # no exp
        _forge({"sub": "alice", "exp": "soon"}),
        _forge({"sub": "alice", "exp": True}),
        _forge({"sub": "al ice", "exp": NOW + 60}),
        _forge({"sub": "a" * 65, "exp": NOW + 60}),
        _forge({"sub": 7, "exp": NOW + 60}),
        _forge({"sub": "alice", "dev": "", "exp": NOW + 60}),
        _forge({"sub": "alice", "dev": "ph/one", "exp": NOW + 60}),
        _forge({"sub": "alice", "exp": NOW + 60}, algorithm="HS512", key=SECRET * 2),
        jwt.encode({"sub": "alice", "exp": NOW + 60}, None, algorithm="none"),
    ],
)
def test_refused_tokens(token: str) -> None:
    with pytest.raises(AuthError) as info:
        verify_token(SECRET, token, now=NOW)
    assert info.value.http_status == 401


@pytest.mark.parametrize(
    ("user", "device", "ttl"),
    [
        ("", None, 60),
        ("a b", None, 60),
        ("a" * 65, None, 60),
        ("alice", "", 60),
        ("alice", "d" * 65, 60),
        ("alice", None, 0),
        ("alice", None, -5),
    ],
)
def test_mint_refuses_bad_arguments(user: str, device: str | None, ttl: float) -> None:
    with pytest.raises(ValueError):  # noqa: PT011 - the message varies by argument
        mint_token(SECRET, user, device, ttl_s=ttl, now=NOW)


def test_short_secret_is_refused() -> None:
    with pytest.raises(ValueError, match="32 bytes"):
        mint_token(b"short", "alice")
    with pytest.raises(ValueError, match="32 bytes"):
        verify_token(b"short", "x.y.z")


def test_id_alphabet_edges_are_accepted() -> None:
    user = "A-z_0.9" + "x" * 57
    token = mint_token(SECRET, user, "d", now=NOW)
    assert verify_token(SECRET, token, now=NOW) == Identity(user, "d")


@pytest.mark.parametrize(
    ("headers", "query", "token"),
    [
        ({"Authorization": "Bearer abc"}, "", "abc"),
        ([(b"authorization", b"bearer  abc ")], "", "abc"),
        ([("Host", "x"), ("AUTHORIZATION", "Bearer abc")], "token=zzz", "abc"),
        ({}, "token=q1&x=2", "q1"),
        ({}, {"token": "q2"}, "q2"),
        ({}, "", None),
        ({}, "token=", None),
        ({}, {"other": "1"}, None),
    ],
)
def test_token_from_request(headers: object, query: object, token: str | None) -> None:
    assert token_from_request(headers, query) == token  # type: ignore[arg-type]


@pytest.mark.parametrize("value", ["Basic abc", "Bearer", "Bearer   ", "abc"])
def test_malformed_authorization_header(value: str) -> None:
    with pytest.raises(AuthError) as info:
        token_from_request({"Authorization": value}, "token=q")
    assert info.value.http_status == 401


def test_message_ids_are_sortable_ulids() -> None:
    first, second = new_message_id(), new_message_id()
    assert len(first) == 26
    assert first.isalnum()
    assert first[:10] <= second[:10]
