"""``http.auth`` and ``http.tls``: a console reachable from other machines needs a sign-in,
refused by ``config check`` (and so by ``serve``) with a sentence; relative files resolve
against the configuration's folder; the HTTPS files are checked."""

from __future__ import annotations

from pathlib import Path

from ctp_node.config import load_config
from tests.test_config_check import _check, _config


def test_a_console_beyond_loopback_without_sign_in_is_refused(tmp_path: Path) -> None:
    path = _config(tmp_path, http={"enabled": True, "bind": "0.0.0.0", "port": 8080})
    checked = _check(path)
    assert checked.returncode == 2, checked.stdout
    assert "http.auth.mode: is none, but http.bind 0.0.0.0 is not a loopback address" in (
        checked.stdout
    )
    assert "set http.auth.mode to users" in checked.stdout


def test_loopback_without_sign_in_and_users_beyond_it_are_valid(tmp_path: Path) -> None:
    loopback = _config(tmp_path, http={"enabled": True, "bind": "127.0.0.1", "port": 8080})
    assert _check(loopback).returncode == 0
    remote = {"mode": "users", "users_file": "users.yaml", "session_minutes": 5}
    path = _config(tmp_path, http={"enabled": True, "bind": "0.0.0.0", "auth": remote})
    checked = _check(path)
    assert checked.returncode == 0, checked.stdout
    assert "valid, with 2 warning(s)" in checked.stdout
    assert "http.auth.users_file: " in checked.stdout and "nobody can sign in" in checked.stdout
    assert "http.tls: passwords and session cookies would cross the network" in checked.stdout
    auth = load_config(path).http.auth
    assert auth.users_file == tmp_path / "users.yaml"  # relative to the configuration
    assert auth.session_minutes == 5


def test_users_need_a_file_and_proxies_are_addresses(tmp_path: Path) -> None:
    checked = _check(_config(tmp_path, http={"enabled": True, "auth": {"mode": "users"}}))
    assert checked.returncode == 2
    assert "http.auth.users_file: needed with mode: users" in checked.stdout
    auth = {"mode": "proxy", "trusted_proxies": ["10.0.0.0/8", "proxy.example"]}
    checked = _check(_config(tmp_path, http={"enabled": True, "auth": auth}))
    assert checked.returncode == 2
    assert "http.auth.trusted_proxies.1: must be an IP address" in checked.stdout
    assert "'proxy.example'" in checked.stdout


def test_https_files_are_checked(tmp_path: Path, tls_files) -> None:
    good = {
        "certificate": str(tls_files.server.certificate),
        "private_key": str(tls_files.server.private_key),
    }
    path = _config(tmp_path, http={"enabled": True, "tls": good})
    assert _check(path).returncode == 0
    bad = {
        "certificate": str(tls_files.server.certificate),
        "private_key": str(tmp_path / "none.key"),
    }
    checked = _check(_config(tmp_path, http={"enabled": True, "tls": bad}))
    assert checked.returncode == 2
    assert "http.tls.private_key:" in checked.stdout
