"""The configuration of a DICOMweb destination: the keys of each kind, its url, its bearer token
from a file or a variable (never from the YAML, never printed), and ``config check`` (the
url's host, ``--echo`` as a search against a real Orthanc with its DICOMweb plugin)."""

from __future__ import annotations

from pathlib import Path

import pytest
import yaml

from ctp_node.config import ConfigError, load_config
from ctp_node.send.scu import Peer
from ctp_node.send.stow import StowPeer
from ctp_node.wiring import peers
from tests.conftest import free_port, run_cli

URL = "http://127.0.0.1:8042/dicom-web/studies"


def _write(tmp_path: Path, *destinations: dict) -> Path:
    config = {
        "node": {"port": free_port(), "bind": "127.0.0.1"},
        "storage": {"root": str(tmp_path / "storage")},
        "database": {"url": f"sqlite:///{tmp_path / 'node.db'}"},
        "destinations": list(destinations),
    }
    path = tmp_path / "ctp-node.yaml"
    path.write_text(yaml.safe_dump(config))
    return path


def _problems(path: Path) -> dict[str, str]:
    with pytest.raises(ConfigError) as caught:
        load_config(path)
    return {p.key_path: p.message for p in caught.value.problems}


def test_each_kind_needs_its_keys_and_refuses_the_others(tmp_path) -> None:
    path = _write(
        tmp_path,
        {"name": "a", "kind": "dicomweb", "host": "pacs", "bearer_token_env": "TOKEN"},
        {"name": "b", "ae_title": "PACS", "url": URL},
        {"name": "c", "kind": "dicomweb", "url": "ftp://pacs/studies"},
        {"name": "d", "kind": "dicomweb", "url": "http://user:pw@pacs/dicom-web/studies"},
        {"name": "e", "kind": "dicomweb", "url": URL, "tls": {"ca_certificates": "ca.pem"}},
        {
            "name": "f",
            "kind": "dicomweb",
            "url": URL,
            "bearer_token_file": "t",
            "bearer_token_env": "T",
        },
        {"name": "g", "kind": "stow", "url": URL},
    )

    problems = _problems(path)

    assert problems["destinations.0.host"] == (
        "belongs to a destination of kind dimse; this one is kind dicomweb"
    )
    assert problems["destinations.0.url"] == "a destination of kind dicomweb needs url"
    assert problems["destinations.1.url"] == (
        "belongs to a destination of kind dicomweb; this one is kind dimse"
    )
    assert problems["destinations.1.host"] == "a destination of kind dimse needs host"
    assert problems["destinations.1.port"] == "a destination of kind dimse needs port"
    assert "must be an http:// or https:// URL" in problems["destinations.2.url"]
    assert "got 'http://user:***@pacs" in problems["destinations.3.url"]  # never the password
    assert problems["destinations.4.tls"] == "TLS settings need an https:// url"
    assert (
        "bearer_token_file or bearer_token_env, not both"
        in problems["destinations.5.bearer_token_env"]
    )
    assert "'dimse' or 'dicomweb'" in problems["destinations.6.kind"]
    assert len(problems) == 10


def test_bearer_token_from_a_file_relative_to_the_config_or_a_variable(
    tmp_path, monkeypatch
) -> None:
    (tmp_path / "secrets").mkdir()
    (tmp_path / "secrets" / "web.token").write_text("t0ken-from-file\n")
    monkeypatch.setenv("CTP_TEST_TOKEN", "t0ken-from-env")
    path = _write(
        tmp_path,
        {"name": "file", "kind": "dicomweb", "url": URL, "bearer_token_file": "secrets/web.token"},
        {"name": "env", "kind": "dicomweb", "url": URL, "bearer_token_env": "CTP_TEST_TOKEN"},
        {"name": "none", "kind": "dicomweb", "url": URL.replace("http:", "https:"), "timeout_s": 5},
        {"name": "pacs", "ae_title": "PACS", "host": "127.0.0.1", "port": 104},
    )

    config = load_config(path)
    found = peers(config)

    assert config.destination("file").bearer_token_file == tmp_path / "secrets" / "web.token"
    assert found["file"] == StowPeer(URL, "t0ken-from-file")
    assert found["env"] == StowPeer(URL, "t0ken-from-env")
    assert found["none"] == StowPeer(URL.replace("http:", "https:"), None, 5.0)
    assert isinstance(found["pacs"], Peer) and found["pacs"].address == "127.0.0.1:104"


def test_token_problems_name_the_key_and_never_the_secret(tmp_path, monkeypatch) -> None:
    (tmp_path / "empty.token").write_text("\n")
    monkeypatch.setenv("CTP_TEST_EMPTY", "")
    path = _write(
        tmp_path,
        {"name": "a", "kind": "dicomweb", "url": URL, "bearer_token_file": "missing.token"},
        {"name": "b", "kind": "dicomweb", "url": URL, "bearer_token_file": "empty.token"},
        {"name": "c", "kind": "dicomweb", "url": URL, "bearer_token_env": "CTP_TEST_UNSET_X"},
        {"name": "d", "kind": "dicomweb", "url": URL, "bearer_token_env": "CTP_TEST_EMPTY"},
    )

    assert _problems(path) == {
        "destinations.0.bearer_token_file": f"no file at {tmp_path / 'missing.token'}",
        "destinations.1.bearer_token_file": f"{tmp_path / 'empty.token'} is empty",
        "destinations.2.bearer_token_env": "the environment variable CTP_TEST_UNSET_X is not set",
        "destinations.3.bearer_token_env": "the environment variable CTP_TEST_EMPTY is empty",
    }


def test_config_check_warns_of_an_unresolved_host_and_a_token_over_plain_http(
    tmp_path, monkeypatch
) -> None:
    monkeypatch.setenv("CTP_TEST_TOKEN", "t0ken")
    web = {"name": "web", "kind": "dicomweb", "url": "https://pacs.example.invalid/dicomweb"}
    plain = {"name": "plain", "kind": "dicomweb", "url": "http://10.1.2.3/dicom-web/studies"}
    local = {"name": "local", "kind": "dicomweb", "url": URL}
    with_token = [{**d, "bearer_token_env": "CTP_TEST_TOKEN"} for d in (web, plain, local)]
    no_token = {**plain, "name": "no-token"}
    checked = run_cli("config", "check", str(_write(tmp_path, *with_token, no_token)))
    assert checked.returncode == 0, checked.stdout + checked.stderr
    warnings = [line for line in checked.stdout.splitlines() if "warning: destinations" in line]
    assert len(warnings) == 2, checked.stdout  # not the https one, nor loopback, nor no token
    assert (
        "warning: destinations.0.url: host 'pacs.example.invalid' does not resolve" in (warnings[0])
    )
    assert "warning: destinations.1.url: the bearer token would cross the network" in (warnings[1])
    assert "t0ken" not in checked.stdout + checked.stderr


@pytest.mark.parametrize("orthanc", ["dicomweb"], indirect=True)
def test_echo_searches_a_dicomweb_destination(tmp_path, orthanc) -> None:
    answering = {"name": "web", "kind": "dicomweb", "url": orthanc.stow_url}
    wrong = {**answering, "name": "wrong", "url": orthanc.stow_url.replace("studies", "x")}
    path = _write(tmp_path, answering, wrong)

    echoed = run_cli("config", "check", "--echo", str(path))

    assert echoed.returncode == 1, echoed.stdout + echoed.stderr  # the wrong one
    lines = echoed.stdout.splitlines()
    assert lines[1].startswith(f"  destinations.0: {orthanc.stow_url} answered a search in")
    assert lines[2].startswith("  destinations.1: http://127.0.0.1:")
    assert "answered HTTP 404 Not Found" in lines[2] and "check the destination's url" in lines[2]
