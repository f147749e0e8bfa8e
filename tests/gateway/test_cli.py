"""``parley token``: a token signed with the node's secret; argument errors exit 2."""

from __future__ import annotations

import os
import stat
import subprocess
import sys
import time
from pathlib import Path

import pytest
from click.testing import CliRunner

from config import load_or_create_secret
from gateway import AuthError, Identity, verify_token
from gateway._cli import main

CLEAN_ENV = {k: v for k, v in os.environ.items() if not k.upper().startswith("PARLEY_")}


def run(*args: str, env: dict[str, str] | None = None) -> tuple[int, str, str]:
    unset: dict[str, str | None] = {k: None for k in os.environ if k.upper().startswith("PARLEY_")}
    result = CliRunner().invoke(
        main, list(args), env={**unset, **(env or {})}, catch_exceptions=False
    )
    return result.exit_code, result.stdout, result.stderr


def test_token_for_a_data_dir_creates_and_reuses_its_secret(tmp_path: Path) -> None:
    data = tmp_path / "node"
    code, out, _ = run("token", "alice", "--device", "phone", "--data-dir", str(data))
    assert code == 0
    assert stat.S_IMODE((data / "secret").stat().st_mode) == 0o600
    secret = load_or_create_secret(data)
    assert verify_token(secret, out.strip()) == Identity("alice", "phone")
    code, again, _ = run("token", "bob", "--data-dir", str(data))
    assert verify_token(load_or_create_secret(data), again.strip()) == Identity("bob", "default")


def test_token_uses_the_config_files_data_dir(tmp_path: Path) -> None:
    data = tmp_path / "from-config"
    config = tmp_path / "parley.toml"
    config.write_text(f'[server]\ndata_dir = "{data}"\n')
    code, out, _ = run("token", "alice", "--config", str(config))
    assert code == 0
    assert verify_token(load_or_create_secret(data), out.strip()).user == "alice"


def test_token_uses_the_environment(tmp_path: Path) -> None:
    data = tmp_path / "from-env"
    code, out, _ = run("token", "carol", env={"PARLEY_SERVER__DATA_DIR": str(data)})
    assert code == 0
    assert verify_token(load_or_create_secret(data), out.strip()).user == "carol"


def test_ttl(tmp_path: Path) -> None:
    code, out, _ = run("token", "alice", "--ttl", "5", "--data-dir", str(tmp_path))
    assert code == 0
    secret = load_or_create_secret(tmp_path)
    assert verify_token(secret, out.strip(), now=time.time() + 1).user == "alice"
    with pytest.raises(AuthError, match="expired"):
        verify_token(secret, out.strip(), now=time.time() + 10)


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (["token"], "Missing argument 'USER'"),
        (["token", "al ice"], "Invalid value for 'USER'"),
        (["token", "a" * 65], "Invalid value for 'USER'"),
        (["token", "alice", "--device", "ph/one"], "Invalid value for '--device'"),
        (["token", "alice", "--ttl", "0"], "Invalid value for '--ttl'"),
        (["token", "alice", "--ttl", "soon"], "Invalid value for '--ttl'"),
        (["token", "alice", "--config", "/nonexistent/p.toml"], "does not exist"),
        (["token", "alice", "--data-dir", "D", "--config", __file__], "not both"),
    ],
)
def test_usage_errors_exit_2(args: list[str], message: str, tmp_path: Path) -> None:
    code, _, err = run(*args)
    assert code == 2
    assert message in err


def test_bad_config_exits_1_naming_the_key(tmp_path: Path) -> None:
    config = tmp_path / "parley.toml"
    config.write_text("[server]\nprot = 1\n")
    code, out, err = run("token", "alice", "--config", str(config))
    assert code == 1
    assert out == ""
    assert "server.prot: unknown key" in err


def test_exposed_secret_exits_1(tmp_path: Path) -> None:
    load_or_create_secret(tmp_path)
    (tmp_path / "secret").chmod(0o644)
    code, _, err = run("token", "alice", "--data-dir", str(tmp_path))
    assert code == 1
    assert "chmod 600" in err


def test_console_script(tmp_path: Path) -> None:
    parley = Path(sys.executable).parent / "parley"
    result = subprocess.run(
        [str(parley), "token", "alice", "--data-dir", str(tmp_path)],
        capture_output=True,
        text=True,
        env=CLEAN_ENV,
        check=True,
        timeout=60,
    )
    assert verify_token(load_or_create_secret(tmp_path), result.stdout.strip()).user == "alice"
