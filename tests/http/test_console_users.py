"""``ctp-node user add|remove|list``: the console's users file, argon2 hashes, owner-only;
the password read from standard input (it is not a terminal here)."""

from __future__ import annotations

import stat
import subprocess
from pathlib import Path

import yaml
from argon2 import PasswordHasher

from ctp_node.http.users import Users
from tests.conftest import run_cli


def _user(config: Path, *args: str, password: str = "") -> subprocess.CompletedProcess:
    return run_cli("user", *args, "--config", str(config), stdin=password + "\n")


def _config(tmp_path: Path, auth: dict) -> Path:
    path = tmp_path / "ctp-node.yaml"
    path.write_text(yaml.safe_dump({"storage": {"root": str(tmp_path)}, "http": {"auth": auth}}))
    return path


def test_add_list_remove_with_salted_hashes_owner_only(tmp_path: Path) -> None:
    config = _config(tmp_path, {"mode": "users", "users_file": "users.yaml"})
    users_file = tmp_path / "users.yaml"
    added = _user(config, "add", "alice", password="correct horse")
    assert added.returncode == 0, added.stderr
    assert added.stdout.strip() == f"added alice in {users_file}"
    assert _user(config, "add", "bob", password="correct horse").returncode == 0
    assert stat.S_IMODE(users_file.stat().st_mode) == 0o600
    hashes = yaml.safe_load(users_file.read_text())
    assert set(hashes) == {"alice", "bob"}
    assert "correct horse" not in users_file.read_text()
    assert hashes["alice"].startswith("$argon2id$") and hashes["alice"] != hashes["bob"]  # salted
    assert PasswordHasher().verify(hashes["alice"], "correct horse")
    assert Users(users_file).verify("alice", "correct horse")
    assert not Users(users_file).verify("alice", "wrong horse")
    assert not Users(users_file).verify("carol", "correct horse")

    again = _user(config, "add", "alice", password="another horse")
    assert again.stdout.strip() == f"new password for alice in {users_file}"
    assert Users(users_file).verify("alice", "another horse")
    assert _user(config, "list").stdout.split() == ["alice", "bob"]
    assert _user(config, "remove", "bob").returncode == 0
    assert _user(config, "list").stdout.split() == ["alice"]


def test_refusals_are_sentences_and_change_nothing(tmp_path: Path) -> None:
    config = _config(tmp_path, {"mode": "users", "users_file": "users.yaml"})
    short = _user(config, "add", "alice", password="short")
    assert (short.returncode, short.stderr.strip()) == (
        2,
        "ctp-node user add: a password needs at least 8 characters",
    )
    bad_name = _user(config, "add", "al ice", password="long enough")
    assert bad_name.returncode == 2 and "is not a user name" in bad_name.stderr
    missing = _user(config, "remove", "nobody")
    assert missing.returncode == 2 and "there is no user 'nobody'" in missing.stderr
    assert not (tmp_path / "users.yaml").exists()
    unset = _user(_config(tmp_path, {"mode": "none"}), "add", "alice", password="long enough")
    assert unset.returncode == 2 and "http.auth.users_file is not set" in unset.stderr


def test_the_console_sees_a_changed_file_and_restricts_a_readable_one(tmp_path: Path) -> None:
    config = _config(tmp_path, {"mode": "users", "users_file": "users.yaml"})
    users = Users(tmp_path / "users.yaml")
    assert not users.exists("alice")  # no file: no users
    assert _user(config, "add", "alice", password="correct horse").returncode == 0
    assert users.exists("alice")
    assert _user(config, "remove", "alice").returncode == 0
    assert not users.exists("alice")
    (tmp_path / "users.yaml").chmod(0o644)  # by hand
    assert not Users(tmp_path / "users.yaml").exists("alice")
    assert stat.S_IMODE((tmp_path / "users.yaml").stat().st_mode) == 0o600
