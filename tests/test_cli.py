"""What the node's log says while it works: its own lines, not the libraries' chatter."""

from __future__ import annotations

import importlib.util
import re
import subprocess
import sys
from pathlib import Path

import pytest
import yaml

from tests.conftest import free_port, run_cli, stored_count, storescu, wait_until


@pytest.mark.slow
def test_a_jobs_log_has_no_highdicom_info_lines(small_study, serve_node) -> None:
    """highdicom logs at INFO every module it copies into an output object (~52 lines for a
    study's 13 outputs); the node's log keeps its own line about the outputs, and only
    highdicom's warnings."""
    _, paths = small_study
    node = serve_node([])
    assert stored_count(storescu(paths, node.port, node.ae_title)) == len(paths)

    def finished() -> dict | None:
        jobs = node.status()["jobs"]
        return jobs[0] if jobs and jobs[0]["state"] in ("done", "failed") else None

    job = wait_until(finished, 240, "the job to end")
    log = node.log()
    assert job["state"] == "done", log[-3000:]
    assert re.search(r"INFO ctp_node\.pipeline: series .*: 13 outputs", log), log[-3000:]
    assert not re.findall(r"^.* (INFO|DEBUG) highdicom.*$", log, re.MULTILINE)


# --- Start-up failures: a sentence and exit 2, no traceback ---------------------------------


def _node_yaml(tmp_path: Path, port: int, **sections: dict) -> Path:
    config = {
        "node": {"port": port, "bind": "127.0.0.1"},
        "storage": {"root": str(tmp_path / "storage")},
        "database": {"url": f"sqlite:///{tmp_path / 'node.db'}"},
    }
    for name, values in sections.items():
        config[name] = {**config.get(name, {}), **values}
    path = tmp_path / "ctp-node.yaml"
    path.write_text(yaml.safe_dump(config))
    return path


def _refused_plainly(result: subprocess.CompletedProcess, *phrases: str) -> None:
    """Exit 2, the phrases on standard error in at most a few lines, no traceback."""
    output = result.stdout + result.stderr
    assert result.returncode == 2, output
    assert "Traceback" not in output
    assert len(result.stderr.strip().splitlines()) <= 3, result.stderr
    for phrase in phrases:
        assert phrase in result.stderr, result.stderr


def test_serve_on_a_port_in_use_says_so_and_exits_2(tmp_path: Path, held_port: int) -> None:
    result = run_cli("serve", "--config", str(_node_yaml(tmp_path, held_port)))
    _refused_plainly(result, "node.port", f"port {held_port} on 127.0.0.1 is in use")
    assert not (tmp_path / "node.db").exists()  # refused before opening anything


def test_serve_on_another_machines_address_says_so_and_exits_2(tmp_path: Path) -> None:
    # 192.0.2.1 is TEST-NET-1 (RFC 5737): documentation only, never a local address
    path = _node_yaml(tmp_path, free_port(), node={"bind": "192.0.2.1"})
    result = run_cli("serve", "--config", str(path))
    _refused_plainly(result, "node.bind", "192.0.2.1 is not an address of this machine")


def test_serve_with_a_database_driver_not_installed_says_so_and_exits_2(tmp_path: Path) -> None:
    if importlib.util.find_spec("MySQLdb") is not None:
        pytest.skip("MySQLdb is installed here: the driver is not missing")
    path = _node_yaml(tmp_path, free_port(), database={"url": "mysql://ctp@127.0.0.1/ctp"})
    result = run_cli("serve", "--config", str(path))
    _refused_plainly(result, "database.url", "driver for mysql is not installed", "PostgreSQL")


def test_serve_with_an_unreachable_postgresql_says_so_and_exits_2(tmp_path: Path) -> None:
    closed = free_port()  # nothing listens there
    url = f"postgresql+psycopg://ctp@127.0.0.1:{closed}/ctp"
    for command in ("serve", "worker"):
        path = _node_yaml(tmp_path, free_port(), database={"url": url})
        result = run_cli(command, "--config", str(path))
        _refused_plainly(
            result, "database.url", f"cannot connect to the database at 127.0.0.1:{closed}"
        )
        assert "Connection refused" in result.stderr


def test_a_missing_or_invalid_configuration_file_exits_2(tmp_path: Path) -> None:
    missing = run_cli("serve", "--config", str(tmp_path / "nowhere.yaml"))
    assert missing.returncode == 2 and "Traceback" not in missing.stderr
    assert "no configuration file at" in missing.stderr
    assert "ctp-node config example" in missing.stderr  # what to do
    bad = tmp_path / "bad.yaml"
    bad.write_text("node: [\n")
    for command in (["serve", "--config", str(bad)], ["config", "check", str(bad)]):
        result = run_cli(*command)
        assert result.returncode == 2, result.stdout + result.stderr
        assert "YAML syntax error at line" in result.stdout + result.stderr


def test_status_refuses_a_database_that_does_not_exist(tmp_path: Path) -> None:
    """Pointed at the wrong configuration, status must not create an empty database and
    answer "nothing happened"."""
    path = _node_yaml(tmp_path, free_port())
    for command in (["status"], ["status", "--audit"], ["purge", "--dry-run"]):
        result = run_cli(*command, "--config", str(path))
        _refused_plainly(result, f"there is no database at {tmp_path / 'node.db'}", "--config")
    assert not (tmp_path / "node.db").exists()


def test_an_unexpected_error_is_one_line_unless_debug(tmp_path: Path) -> None:
    """A failure nobody foresaw (here: a phantom of matrix 0) is one line and exit 1; the
    traceback only with --debug."""
    plain = run_cli("phantom", str(tmp_path / "p"), "--matrix", "0")
    assert plain.returncode == 1
    assert "Traceback" not in plain.stderr and "--debug" in plain.stderr
    assert "unexpected error: ZeroDivisionError" in plain.stderr
    debug = run_cli("--debug", "phantom", str(tmp_path / "p"), "--matrix", "0")
    assert debug.returncode == 1 and "Traceback" in debug.stderr


def test_a_port_taken_after_the_check_is_still_a_configuration_error(
    tmp_path: Path, held_port: int
) -> None:
    """Between serve's check and the listener's bind another program may take the port: the
    listener's own failure is told the same way."""
    from ctp_node.config import ConfigError, load_config
    from ctp_node.service import Node

    node = Node(load_config(_node_yaml(tmp_path, held_port, worker={"count": 0})))
    with pytest.raises(ConfigError) as refused:
        node.start()
    node.stop()
    assert [p.key_path for p in refused.value.problems] == ["node.port"]
    assert f"port {held_port} on 127.0.0.1 is in use" in str(refused.value)


def test_the_command_line_loads_before_numpy_so_blas_threads_can_be_set() -> None:
    """``ctp-node`` sets OPENBLAS_NUM_THREADS before numpy loads (cli._one_blas_thread): the
    same series must give the same last bits in ``process`` and in ``serve``'s workers, and
    OpenBLAS reads the variable only when numpy first loads. Importing the command line (its
    configuration, the profiles) must not load numpy or pydicom (session 30 found it did, and
    a loaded machine then gave maps one ulp apart)."""
    probe = (
        "import sys, ctp_node.cli; "
        "print(sorted(m for m in ('numpy', 'pydicom') if m in sys.modules))"
    )
    run = subprocess.run(
        [sys.executable, "-c", probe], capture_output=True, text=True, check=True, timeout=60
    )
    assert run.stdout.strip() == "[]"
