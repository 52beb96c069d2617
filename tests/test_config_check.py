"""``ctp-node config check`` beyond the file: the listener's address and ports, the database's
driver and (``--connect``) the server, the destinations (host names, not the node itself,
``--echo`` against a real Orthanc), relative paths; and ``ctp-node config example``."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import yaml

from ctp_node.config import load_config
from tests.conftest import free_port, run_cli

ROOT = Path(__file__).resolve().parents[1]


def _check(path: Path, *options: str) -> subprocess.CompletedProcess:
    return run_cli("config", "check", *options, str(path))


def _config(tmp_path: Path, **sections: object) -> Path:
    """A configuration with absolute paths and a free port, ``sections`` replacing its own."""
    config: dict[str, object] = {
        "node": {"ae_title": "CTPNODE", "port": free_port(), "bind": "127.0.0.1"},
        "storage": {"root": str(tmp_path / "storage")},
        "database": {"url": f"sqlite:///{tmp_path / 'node.db'}"},
        **sections,
    }
    path = tmp_path / "ctp-node.yaml"
    path.write_text(yaml.safe_dump(config))
    return path


def test_a_clean_configuration_is_valid_and_leaves_no_database(tmp_path: Path) -> None:
    checked = _check(_config(tmp_path), "--connect")
    assert (checked.returncode, checked.stdout.strip()) == (
        0,
        f"{tmp_path / 'ctp-node.yaml'}: valid",
    )
    assert not (tmp_path / "node.db").exists()  # checked, not created


def test_a_port_in_use_is_a_warning_and_another_machines_address_a_problem(
    tmp_path: Path, held_port: int
) -> None:
    """The port may be the running node's own: a warning (serve refuses it, exit 2); an
    address that is not this machine's never works: a problem, exit 2."""
    in_use = _check(_config(tmp_path, node={"port": held_port, "bind": "127.0.0.1"}))
    assert in_use.returncode == 0, in_use.stdout
    assert f"warning: node.port: port {held_port} on 127.0.0.1 is in use" in in_use.stdout

    elsewhere = _check(_config(tmp_path, node={"port": free_port(), "bind": "192.0.2.1"}))
    assert elsewhere.returncode == 2, elsewhere.stdout
    assert "node.bind: 192.0.2.1 is not an address of this machine" in elsewhere.stdout


def test_the_database_driver_is_checked_and_with_connect_the_server(tmp_path: Path) -> None:
    mysql = _check(_config(tmp_path, database={"url": "mysql://ctp@127.0.0.1/ctp"}))
    assert mysql.returncode == 2
    assert "database.url: the driver for mysql is not installed" in mysql.stdout

    closed = free_port()
    path = _config(tmp_path, database={"url": f"postgresql+psycopg://ctp@127.0.0.1:{closed}/x"})
    assert _check(path).returncode == 0  # the driver is there; nothing connects without --connect
    connected = _check(path, "--connect")
    assert connected.returncode == 2
    assert f"cannot connect to the database at 127.0.0.1:{closed}" in connected.stdout
    assert "Traceback" not in connected.stdout + connected.stderr


def test_config_check_connects_to_a_real_postgresql(tmp_path: Path, postgres_url: str) -> None:
    checked = _check(_config(tmp_path, database={"url": postgres_url}), "--connect")
    assert checked.returncode == 0, checked.stdout + checked.stderr


def test_a_destination_that_is_the_node_itself_is_a_problem(tmp_path: Path) -> None:
    port = free_port()
    node = {"ae_title": "CTPNODE", "port": port, "bind": "0.0.0.0"}
    to_self = {"name": "loop", "ae_title": "CTPNODE", "host": "localhost", "port": port}
    other_ae = {**to_self, "name": "pacs", "ae_title": "PACS"}  # a PACS on this machine
    checked = _check(_config(tmp_path, node=node, destinations=[other_ae, to_self]))
    assert checked.returncode == 2, checked.stdout
    assert checked.stdout.splitlines()[1].startswith(
        f"  destinations.1: CTPNODE@localhost:{port} is this node's own listener"
    )
    assert "destinations.0" not in checked.stdout


def test_a_destination_host_that_does_not_resolve_is_a_warning(tmp_path: Path) -> None:
    pacs = {"name": "pacs", "ae_title": "PACS", "host": "pacs.example.invalid", "port": 104}
    checked = _check(_config(tmp_path, destinations=[pacs]))
    assert checked.returncode == 0, checked.stdout
    assert "warning: destinations.0.host: host 'pacs.example.invalid' does not resolve" in (
        checked.stdout
    )


def test_echo_reaches_a_real_orthanc_and_names_the_destination_that_does_not_answer(
    tmp_path: Path, orthanc
) -> None:
    answering = {
        "name": "orthanc",
        "ae_title": orthanc.ae_title,
        "host": "127.0.0.1",
        "port": orthanc.dicom_port,
    }
    path = _config(tmp_path, destinations=[answering])
    echoed = _check(path, "--echo")
    assert echoed.returncode == 0, echoed.stdout + echoed.stderr
    assert f"destinations.0: ORTHANC@127.0.0.1:{orthanc.dicom_port} answered the C-ECHO in" in (
        echoed.stdout
    )

    wrong_ae = {**answering, "name": "wrong-ae", "ae_title": "NOTORTHANC"}
    silent = {**answering, "name": "silent", "port": free_port()}
    path = _config(tmp_path, destinations=[answering, wrong_ae, silent])
    echoed = _check(path, "--echo")
    assert echoed.returncode == 1, echoed.stdout + echoed.stderr  # needs attention
    lines = echoed.stdout.splitlines()
    assert "answered the C-ECHO" in lines[1]
    assert lines[2].startswith("  destinations.1: association rejected")
    assert lines[3].startswith("  destinations.2: no association with ORTHANC@127.0.0.1:")
    assert "check that the destination is running" in lines[3]


def test_relative_paths_outside_a_checkout_are_warned_about(tmp_path: Path) -> None:
    """Copied to /etc, the reference's var/ctp-node would mean /etc/var/ctp-node."""
    path = tmp_path / "ctp-node.yaml"
    path.write_text(f"node: {{port: {free_port()}}}\nstorage: {{root: var/ctp-node}}\n")
    checked = _check(path)
    assert checked.returncode == 0
    assert (
        f"warning: storage.root: 'var/ctp-node' is relative to this file's folder and means "
        f"'{tmp_path / 'var/ctp-node'}'"
    ) in checked.stdout
    assert "warning: database.url: 'sqlite:///var/ctp-node/ctp-node.db'" in checked.stdout
    # the reference in a checkout is relative on purpose
    reference = _check(ROOT / "config" / "ctp-node.yaml")
    assert "relative" not in reference.stdout


def test_config_example_prints_the_reference_and_with_root_absolute_paths(
    tmp_path: Path,
) -> None:
    def example(*options: str) -> str:
        printed = subprocess.run(
            [sys.executable, "-m", "ctp_node", "config", "example", *options],
            capture_output=True,
            text=True,
            timeout=60,
            check=True,
        )
        return printed.stdout

    assert example() == (ROOT / "config" / "ctp-node.yaml").read_text()
    written = tmp_path / "etc" / "ctp-node.yaml"
    written.parent.mkdir()
    written.write_text(example("--root", str(tmp_path / "lib")))
    config = load_config(written)
    assert config.storage.root == tmp_path / "lib"
    assert config.database.url == f"sqlite:///{tmp_path / 'lib' / 'ctp-node.db'}"
    # the comments stay: it is still the reference, key by key
    assert written.read_text().count("\n#") == example().count("\n#")
    refused = subprocess.run(
        [sys.executable, "-m", "ctp_node", "config", "example", "--root", "relative"],
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert refused.returncode == 2 and "absolute" in refused.stderr
