"""The node secret: created owner-only and atomically, reused, refused when exposed."""

from __future__ import annotations

import os
import stat
from pathlib import Path

import pytest

from config import ConfigError, load_or_create_secret


def test_created_once_owner_only_then_reused(tmp_path: Path) -> None:
    data = tmp_path / "data" / "nested"
    secret = load_or_create_secret(data)
    assert len(secret) == 32
    path = data / "secret"
    assert stat.S_IMODE(path.stat().st_mode) == 0o600
    assert stat.S_IMODE(data.stat().st_mode) == 0o700
    assert path.read_text().strip() == secret.hex()
    assert load_or_create_secret(data) == secret
    assert sorted(p.name for p in data.iterdir()) == ["secret"]  # no temporary file left


def test_each_node_gets_its_own(tmp_path: Path) -> None:
    assert load_or_create_secret(tmp_path / "a") != load_or_create_secret(tmp_path / "b")


@pytest.mark.parametrize("mode", [0o640, 0o604, 0o644, 0o660])
def test_readable_by_others_is_refused(tmp_path: Path, mode: int) -> None:
    load_or_create_secret(tmp_path)
    os.chmod(tmp_path / "secret", mode)
    with pytest.raises(ConfigError, match=f"mode {mode:04o}.*chmod 600"):
        load_or_create_secret(tmp_path)


def test_existing_owner_only_file_is_used(tmp_path: Path) -> None:
    path = tmp_path / "secret"
    path.write_text("ab" * 40 + "\n")
    os.chmod(path, 0o400)
    assert load_or_create_secret(tmp_path) == bytes.fromhex("ab" * 40)


@pytest.mark.parametrize("content", ["not hex", "abcd", ""])
def test_malformed_secret_is_refused(tmp_path: Path, content: str) -> None:
    path = tmp_path / "secret"
    path.write_text(content)
    os.chmod(path, 0o600)
    with pytest.raises(ConfigError, match="secret"):
        load_or_create_secret(tmp_path)


def test_directory_in_place_of_the_file_is_refused(tmp_path: Path) -> None:
    (tmp_path / "secret").mkdir(mode=0o700)
    with pytest.raises(ConfigError, match="regular file"):
        load_or_create_secret(tmp_path)


def test_lost_race_reads_the_winner(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    winner = bytes(range(32))
    real_link = os.link

    def link_after_another_starter(src: str, dst: str) -> None:
        Path(dst).write_text(winner.hex())
        os.chmod(dst, 0o600)
        real_link(src, dst)

    monkeypatch.setattr(os, "link", link_after_another_starter)
    assert load_or_create_secret(tmp_path) == winner
    assert sorted(p.name for p in tmp_path.iterdir()) == ["secret"]


def test_unwritable_data_dir(tmp_path: Path) -> None:
    if os.geteuid() == 0:
        pytest.skip("root writes anywhere")
    tmp_path.chmod(0o500)
    try:
        with pytest.raises(ConfigError, match="cannot create"):
            load_or_create_secret(tmp_path / "data")
    finally:
        tmp_path.chmod(0o700)
