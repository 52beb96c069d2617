"""Who may call and with which secret: allowed callers' hosts (addresses, networks, names), the
database password from a file or an environment variable (never from the YAML, never
printed), and the warnings of ``ctp-node config check``."""

from __future__ import annotations

import os
import subprocess
import sys
import uuid
from pathlib import Path

import pytest
from sqlalchemy import create_engine, text
from sqlalchemy.engine import make_url
from sqlalchemy.exc import OperationalError

from ctp_node.config import ConfigError, database_password, load_config
from tests.conftest import free_port

PASSWORD = "s3cret:/@ with spaces " + uuid.uuid4().hex[:8]  # characters a URL must escape


def _write(folder: Path, text_: str) -> Path:
    path = folder / "ctp-node.yaml"
    path.write_text(text_, encoding="utf-8")
    return path


def _problems(path: Path) -> dict[str, str]:
    with pytest.raises(ConfigError) as caught:
        load_config(path)
    return {p.key_path: p.message for p in caught.value.problems}


def _cli(*args: str, env: dict[str, str] | None = None) -> subprocess.CompletedProcess:
    return subprocess.run(
        [sys.executable, "-m", "ctp_node", *args],
        capture_output=True,
        text=True,
        timeout=120,
        env={**os.environ, **(env or {})},
    )


# --- Allowed callers' hosts -----------------------------------------------------------------


def test_caller_hosts_may_be_addresses_networks_or_names(tmp_path) -> None:
    hosts = ["10.1.2.3", "10.1.2.0/24", "fd00::/64", "2001:db8::7", "ct1.hospital.example"]
    entries = "".join(f"    - {{ae_title: CT{n}, host: '{h}'}}\n" for n, h in enumerate(hosts))
    config = load_config(_write(tmp_path, f"node:\n  allowed_callers:\n{entries}"))
    assert [c.host for c in config.node.allowed_callers] == hosts


def test_a_network_with_host_bits_or_a_bad_host_is_refused(tmp_path) -> None:
    problems = _problems(
        _write(
            tmp_path,
            "node:\n  allowed_callers:\n"
            "    - {ae_title: CT1, host: 10.1.2.5/24}\n"
            "    - {ae_title: CT2, host: 10.1.2.0/33}\n"
            "    - {ae_title: CT3, host: 'ct 3'}\n",
        )
    )
    assert "the network is 10.1.2.0/24" in problems["node.allowed_callers.0.host"]
    assert "a network such as 10.1.2.0/24" in problems["node.allowed_callers.1.host"]
    assert "IP address or a host name" in problems["node.allowed_callers.2.host"]


def test_config_check_warns_of_callers_without_host_and_names_that_do_not_resolve(
    tmp_path,
) -> None:
    path = _write(
        tmp_path,
        f"node:\n  port: {free_port()}\n  allowed_callers:\n"
        "    - {ae_title: CT1}\n"
        "    - {ae_title: CT2, host: ct2.invalid}\n"
        "    - {ae_title: CT3, host: localhost}\n"
        "    - {ae_title: CT4, host: 10.0.0.0/8}\n"
        "destinations: []\n"
        f"storage: {{root: {tmp_path / 'storage'}}}\n"
        f"database: {{url: 'sqlite:///{tmp_path / 'node.db'}'}}\n",
    )
    checked = _cli("config", "check", str(path))
    assert checked.returncode == 0, checked.stdout + checked.stderr
    lines = checked.stdout.splitlines()
    assert lines[0] == f"{path}: valid, with 2 warning(s)"
    assert lines[1].startswith("  warning: node.allowed_callers.0: no host: any machine")
    assert lines[2].startswith("  warning: node.allowed_callers.1.host: host name 'ct2.invalid'")
    assert "does not resolve" in lines[2]
    assert len(lines) == 3


# --- The database password ------------------------------------------------------------------


def test_password_file_is_relative_to_the_config_and_loses_its_final_newline(tmp_path) -> None:
    (tmp_path / "secrets").mkdir()
    (tmp_path / "secrets" / "db").write_text(PASSWORD + "\n")
    config = load_config(
        _write(
            tmp_path,
            "database:\n  url: postgresql+psycopg://ctp@db.example/ctp\n"
            "  password_file: secrets/db\n",
        )
    )
    assert config.database.password_file == tmp_path / "secrets" / "db"
    assert database_password(config.database) == PASSWORD
    assert PASSWORD not in repr(config) and PASSWORD not in config.model_dump_json()


def test_password_problems_name_the_key_and_never_the_secret(tmp_path, monkeypatch) -> None:
    url = "  url: postgresql+psycopg://ctp@db.example/ctp\n"
    monkeypatch.delenv("CTP_TEST_UNSET", raising=False)
    monkeypatch.setenv("CTP_TEST_EMPTY", "")
    (tmp_path / "empty").write_text("\n")
    cases = {
        "  password_file: missing\n": ("database.password_file", "no file at"),
        "  password_file: empty\n": ("database.password_file", "is empty"),
        "  password_env: CTP_TEST_UNSET\n": ("database.password_env", "CTP_TEST_UNSET is not set"),
        "  password_env: CTP_TEST_EMPTY\n": ("database.password_env", "CTP_TEST_EMPTY is empty"),
        "  password_file: empty\n  password_env: CTP_TEST_EMPTY\n": (
            "database.password_env",
            "not both",
        ),
        f"  password_env: '{PASSWORD}'\n": ("database.password_env", "not its value"),
    }
    for keys, (key_path, message) in cases.items():
        problems = _problems(_write(tmp_path, "database:\n" + url + keys))
        assert message in problems[key_path], (keys, problems)
        assert PASSWORD not in str(problems)
    with_password = "  url: postgresql+psycopg://ctp:hunter2@db/ctp\n"
    problems = _problems(_write(tmp_path, "database:\n" + with_password + "  password_env: X\n"))
    assert "url contains a password already" in problems["database.password_env"]
    assert "hunter2" not in str(problems)
    sqlite = "  url: sqlite:///node.db\n  password_env: X\n"
    assert "SQLite" in _problems(_write(tmp_path, "database:\n" + sqlite))["database.password_env"]


def test_a_bad_url_is_shown_without_its_password(tmp_path) -> None:
    problems = _problems(_write(tmp_path, "database:\n  url: 'ctp:hunter2@db/ctp'\n"))
    assert "hunter2" not in problems["database.url"]


@pytest.fixture
def password_role(postgres_url: str):
    """A role that must give its password (scram-sha-256) on the real PostgreSQL fixture,
    which otherwise trusts every local connection; returns its URL without the password."""
    role = f"ctp_pw_{uuid.uuid4().hex[:8]}"
    admin = create_engine(postgres_url, isolation_level="AUTOCOMMIT")
    with admin.connect() as connection:
        hba = Path(connection.execute(text("SHOW hba_file")).scalar_one())
        connection.execute(text("SET password_encryption = 'scram-sha-256'"))
        quoted = PASSWORD.replace("'", "''")
        connection.execute(text(f"CREATE ROLE {role} LOGIN PASSWORD '{quoted}'"))
        # a database of its own: the session's shared one holds tables other tests created
        connection.execute(text(f"CREATE DATABASE {role} OWNER {role}"))
        original = hba.read_text()
        # pg_hba.conf: the first matching line decides, so this one goes before "trust"
        hba.write_text(f"host all {role} 127.0.0.1/32 scram-sha-256\n{original}")
        connection.execute(text("SELECT pg_reload_conf()"))
    url = (
        make_url(postgres_url)
        .set(username=role, database=role)
        .render_as_string(hide_password=False)
    )
    try:
        yield url
    finally:
        with admin.connect() as connection:
            hba.write_text(original)
            connection.execute(text("SELECT pg_reload_conf()"))
            connection.execute(text(f"DROP DATABASE IF EXISTS {role} WITH (FORCE)"))
            connection.execute(text(f"DROP OWNED BY {role}"))
            connection.execute(text(f"DROP ROLE {role}"))
        admin.dispose()


def test_postgresql_password_from_a_file_or_a_variable_reaches_the_database(
    password_role, tmp_path
) -> None:
    without = create_engine(password_role)
    with pytest.raises(OperationalError, match="password"):  # the role needs its password
        without.connect().close()
    without.dispose()

    secret = tmp_path / "db-password"
    secret.write_text(PASSWORD + "\n")
    os.chmod(secret, 0o600)
    # absolute paths and a free port: "valid" without warnings
    storage = f"storage: {{root: {tmp_path / 'storage'}}}\nnode: {{port: {free_port()}}}\n"
    by_file = _write(
        tmp_path, f"database:\n  url: '{password_role}'\n  password_file: db-password\n" + storage
    )
    env_folder = tmp_path / "env"
    env_folder.mkdir()
    by_env = _write(
        env_folder,
        f"database:\n  url: '{password_role}'\n  password_env: CTP_TEST_DB_PASSWORD\n" + storage,
    )
    for path, env in ((by_file, {}), (by_env, {"CTP_TEST_DB_PASSWORD": PASSWORD})):
        checked = _cli("config", "check", str(path), env=env)
        assert checked.stdout.strip() == f"{path}: valid", checked.stdout + checked.stderr
        # ctp-node status opens the database (creating its tables) as the role
        status = _cli("status", "--config", str(path), env=env)
        assert status.returncode == 0, status.stderr
        assert "series (0)" in status.stdout
        for output in (checked.stdout, checked.stderr, status.stdout, status.stderr):
            assert PASSWORD not in output and PASSWORD.split()[0] not in output

    wrong = tmp_path / "wrong"
    wrong.mkdir()
    (wrong / "db-password").write_text("not-the-password\n")
    failed = _cli("status", "--config", str(_write(wrong, by_file.read_text())))
    assert failed.returncode != 0
    assert "password authentication failed" in failed.stderr
    assert "not-the-password" not in failed.stderr

    os.chmod(secret, 0o644)
    checked = _cli("config", "check", str(by_file))
    assert "warning: database.password_file:" in checked.stdout
    assert "chmod 600" in checked.stdout


# --- Notification channels' secrets ----------------------------------------------------------

_NOTIFY = """\
notifications:
  webhooks:
    - name: chat
      url: https://chat.example/hook
      {token}
  email:
    host: smtp.example
    user: ctp
    {password}
    from: ctp-node@hospital.example
    to: [team@hospital.example]
"""


def test_notification_secrets_from_a_file_and_a_variable(tmp_path, monkeypatch) -> None:
    from ctp_node.config import config_warnings, notification_secrets

    (tmp_path / "token").write_text(PASSWORD + "\n", encoding="utf-8")
    (tmp_path / "token").chmod(0o600)
    monkeypatch.setenv("CTP_SMTP_PASSWORD", PASSWORD[::-1])
    config = load_config(
        _write(
            tmp_path,
            _NOTIFY.format(
                token="bearer_token_file: token", password="password_env: CTP_SMTP_PASSWORD"
            ),
        )
    )
    assert config.notifications.webhooks[0].bearer_token_file == tmp_path / "token"
    assert notification_secrets(config.notifications) == {
        "webhook:chat": PASSWORD,
        "email": PASSWORD[::-1],
    }
    assert PASSWORD not in repr(config)
    assert config_warnings(config) == []  # written with the umask: say 0644, then 0600
    (tmp_path / "token").chmod(0o644)
    (warning,) = config_warnings(config)
    assert warning.key_path == "notifications.webhooks.0.bearer_token_file"
    assert "chmod 600" in warning.message


def test_notification_secrets_that_cannot_be_read_are_named_by_key(tmp_path, monkeypatch) -> None:
    monkeypatch.delenv("CTP_NOT_SET", raising=False)
    problems = _problems(
        _write(
            tmp_path,
            _NOTIFY.format(
                token="bearer_token_file: missing", password="password_env: CTP_NOT_SET"
            ),
        )
    )
    # the first unreadable secret stops loading, named by its key and never shown
    assert list(problems) == ["notifications.webhooks.0.bearer_token_file"]
    assert "no file at" in problems["notifications.webhooks.0.bearer_token_file"]
    problems = _problems(
        _write(tmp_path, _NOTIFY.format(token="", password="password_env: CTP_NOT_SET"))
    )
    assert problems == {
        "notifications.email.password_env": "the environment variable CTP_NOT_SET is not set"
    }


def test_a_secret_in_two_places_or_a_user_without_password_is_refused(tmp_path) -> None:
    both = _NOTIFY.format(
        token="bearer_token_file: t\n      bearer_token_env: T", password="password_env: P"
    )
    assert (
        "not both" in _problems(_write(tmp_path, both))["notifications.webhooks.0.bearer_token_env"]
    )
    no_password = _problems(_write(tmp_path, _NOTIFY.format(token="", password="")))
    assert no_password == {
        "notifications.email.password_file": "user ctp needs a password: give password_file or "
        "password_env"
    }
