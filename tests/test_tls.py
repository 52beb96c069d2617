"""DICOM TLS settings: the profile of the contexts, the checks of the PEM files, the keys of
``node.tls`` and ``destinations[].tls``, and what ``config check`` and ``serve`` make of them."""

from __future__ import annotations

import datetime as dt
import logging
import ssl
import subprocess
import sys
from pathlib import Path

import pytest
import yaml
from cryptography.hazmat.primitives import serialization

from ctp_node.config import ConfigError, load_config
from ctp_node.tls import (
    BCP195_ND_CIPHERS,
    ClientTLS,
    ServerTLS,
    client_context,
    pem_problems,
    server_context,
)
from tests.conftest import free_port
from tests.test_config import problems_of, write


def test_contexts_follow_bcp195_non_downgrading(tls_files) -> None:
    server = server_context(
        ServerTLS(tls_files.server.certificate, tls_files.server.private_key, tls_files.ca)
    )
    client = client_context(ClientTLS(tls_files.ca))

    for context in (server, client):
        assert context.minimum_version == ssl.TLSVersion.TLSv1_2
        assert context.options & ssl.OP_NO_COMPRESSION
        tls12 = {c["name"] for c in context.get_ciphers() if c["protocol"] == "TLSv1.2"}
        assert tls12 and tls12 <= set(BCP195_ND_CIPHERS.split(":"))
        assert all(c["aead"] for c in context.get_ciphers())
    assert server.verify_mode == ssl.CERT_REQUIRED  # callers must present a certificate
    assert client.verify_mode == ssl.CERT_REQUIRED and client.check_hostname


def test_good_files_have_no_problem(tls_files) -> None:
    pair = tls_files.server
    assert pem_problems(pair.certificate, pair.private_key, tls_files.ca) == []


def test_file_problems_say_what_is_wrong(tls_files, tmp_path: Path) -> None:
    not_pem = write(tmp_path, "hello\n", "not.pem")

    problems = pem_problems(tmp_path / "gone.pem", tls_files.server.certificate, not_pem)

    assert [(p.key, p.lapsed) for p in problems] == [
        ("certificate", False),
        ("private_key", False),
        ("ca_certificates", False),
    ]
    assert problems[0].message == f"no file at {tmp_path / 'gone.pem'}"
    assert "holds no PEM private key" in problems[1].message
    assert "holds no PEM certificate" in problems[2].message
    (folder,) = pem_problems(None, None, tmp_path)
    assert folder.message == f"{tmp_path} is a folder; expected a PEM file"


def test_a_key_that_is_not_the_certificates(tls_files) -> None:
    (problem,) = pem_problems(tls_files.server.certificate, tls_files.client.private_key, None)

    assert problem.key == "private_key" and not problem.lapsed
    assert problem.message.startswith(f"{tls_files.client.private_key} is not the private key")
    assert "CN=ctp-node" in problem.message


def test_an_encrypted_key_is_refused(tls_files, tmp_path: Path) -> None:
    key = serialization.load_pem_private_key(
        tls_files.server.private_key.read_bytes(), password=None
    )
    encrypted = tmp_path / "encrypted.key"
    encrypted.write_bytes(
        key.private_bytes(
            serialization.Encoding.PEM,
            serialization.PrivateFormat.PKCS8,
            serialization.BestAvailableEncryption(b"secret"),
        )
    )

    (problem,) = pem_problems(tls_files.server.certificate, encrypted, None)

    assert problem.key == "private_key"
    assert "encrypted with a password" in problem.message


def test_expired_and_not_yet_valid_certificates_are_lapsed(tls_files) -> None:
    (expired,) = pem_problems(tls_files.expired.certificate, tls_files.expired.private_key, None)
    assert (expired.key, expired.lapsed) == ("certificate", True)
    assert "the certificate expired on" in expired.message

    long_ago = dt.datetime(2000, 1, 1, tzinfo=dt.UTC)
    problems = pem_problems(tls_files.server.certificate, None, tls_files.ca, now=long_ago)
    assert [(p.key, p.lapsed) for p in problems] == [
        ("certificate", True),
        ("ca_certificates", True),
    ]
    assert "is not valid before" in problems[0].message
    assert "CN=ctp-node test hospital CA is not valid before" in problems[1].message


# --- The keys ------------------------------------------------------------------------------


def _listener(tls_files, **overrides) -> dict:  # type: ignore[no-untyped-def]
    return {
        "port": 2762,
        "certificate": str(tls_files.server.certificate),
        "private_key": str(tls_files.server.private_key),
        "ca_certificates": str(tls_files.ca),
        **overrides,
    }


def _destination(**tls) -> dict:  # type: ignore[no-untyped-def]
    return {"name": "pacs", "ae_title": "PACS", "host": "127.0.0.1", "port": 104, "tls": tls}


def test_key_shapes_are_checked(tls_files, tmp_path: Path) -> None:
    config = {
        "node": {"tls": _listener(tls_files, ca_certificates=None)},
        "destinations": [
            _destination(ca_certificates="ca.pem", certificate="client.pem"),
            {**_destination(), "name": "archive"},
        ],
    }

    problems = problems_of(write(tmp_path, yaml.safe_dump(config)))

    assert problems.keys() == {
        "node.tls.ca_certificates",
        "destinations.0.tls.private_key",
        "destinations.1.tls.ca_certificates",
    }
    assert problems["node.tls.ca_certificates"].startswith(
        "needed when require_client_certificate is true"
    )
    assert problems["destinations.0.tls.private_key"].startswith(
        "a client certificate needs both certificate and private_key"
    )
    assert problems["destinations.1.tls.ca_certificates"] == "required key is missing"
    same_port = {"node": {"port": 11112, "tls": _listener(tls_files, port=11112)}}
    assert problems_of(write(tmp_path, yaml.safe_dump(same_port))) == {
        "node.tls.port": "must differ from node.port (11112): the TLS listener accepts TLS only"
    }


def test_tls_files_are_relative_to_the_configuration_folder(tmp_path: Path) -> None:
    folder = tmp_path / "etc"
    folder.mkdir()
    config = {
        "node": {
            "tls": {
                "port": 2762,
                "certificate": "tls/node.pem",
                "private_key": "/srv/node.key",
                "require_client_certificate": False,
            }
        },
        "destinations": [_destination(ca_certificates="tls/ca.pem")],
    }

    loaded = load_config(write(folder, yaml.safe_dump(config)))

    assert loaded.node.tls.certificate == folder / "tls" / "node.pem"
    assert loaded.node.tls.private_key == Path("/srv/node.key")
    assert loaded.node.tls.ca_certificates is None
    assert loaded.destinations[0].tls.ca_certificates == folder / "tls" / "ca.pem"
    assert loaded.destinations[0].tls.verify_host_name is True


def _config_check(path: Path) -> subprocess.CompletedProcess:
    return subprocess.run(
        [sys.executable, "-m", "ctp_node", "config", "check", str(path)],
        capture_output=True,
        text=True,
        timeout=60,
    )


def test_config_check_reports_each_tls_file_problem_with_its_key_path(
    tls_files, tmp_path: Path
) -> None:
    config = {
        "node": {
            "tls": _listener(
                tls_files,
                certificate="missing.pem",
                private_key=str(tls_files.client.private_key),
            )
        },
        "destinations": [
            _destination(
                ca_certificates=str(tls_files.ca),
                certificate=str(tls_files.server.certificate),
                private_key=str(tls_files.client.private_key),
            ),
            {
                **_destination(
                    ca_certificates=str(tls_files.ca),
                    certificate=str(tls_files.expired.certificate),
                    private_key=str(tls_files.expired.private_key),
                ),
                "name": "archive",
            },
        ],
    }
    path = write(tmp_path, yaml.safe_dump(config))

    result = _config_check(path)

    assert result.returncode == 2, result.stdout + result.stderr
    lines = result.stdout.splitlines()
    assert lines[0] == f"{path}: 3 problem(s)"
    assert lines[1] == f"  node.tls.certificate: no file at {tmp_path / 'missing.pem'}"
    assert lines[2].startswith(
        f"  destinations.0.tls.private_key: {tls_files.client.private_key} is not the private "
        f"key of the certificate {tls_files.server.certificate}"
    )
    assert lines[3].startswith("  destinations.1.tls.certificate: the certificate expired on")


def test_config_check_accepts_good_tls_files(tls_files, tmp_path: Path) -> None:
    client = tls_files.client
    config = {
        "node": {"port": free_port(), "tls": {**_listener(tls_files), "port": free_port()}},
        "storage": {"root": str(tmp_path / "storage")},  # absolute: no warning
        "database": {"url": f"sqlite:///{tmp_path / 'node.db'}"},
        "destinations": [
            _destination(
                ca_certificates=str(tls_files.ca),
                certificate=str(client.certificate),
                private_key=str(client.private_key),
            )
        ],
    }
    path = write(tmp_path, yaml.safe_dump(config))

    result = _config_check(path)

    assert (result.returncode, result.stdout.strip()) == (0, f"{path}: valid")


def test_serve_refuses_unusable_files_but_not_an_expired_certificate(
    tls_files, tmp_path: Path, caplog
) -> None:
    from ctp_node.service import Node

    def node_with(pair) -> Node:  # type: ignore[no-untyped-def]
        config = {
            "node": {
                "tls": _listener(
                    tls_files, certificate=str(pair.certificate), private_key=str(pair.private_key)
                )
            },
            "storage": {"root": "storage"},
            "database": {"url": "sqlite:///node.db"},
        }
        return Node(load_config(write(tmp_path, yaml.safe_dump(config))))

    mismatched = type(tls_files.server)(tls_files.server.certificate, tls_files.client.private_key)
    with pytest.raises(ConfigError) as refused:
        node_with(mismatched)
    assert [p.key_path for p in refused.value.problems] == ["node.tls.private_key"]

    # Expiry is a matter of time: a running node meets it too, and goes on without TLS peers.
    caplog.set_level(logging.ERROR)
    node = node_with(tls_files.expired)
    node.db.dispose()
    (line,) = [r.getMessage() for r in caplog.records if "node.tls" in r.getMessage()]
    assert line.startswith("node.tls.certificate: the certificate expired on")
    assert line.endswith("TLS peers will refuse it")


# --- The whole node --------------------------------------------------------------------------


@pytest.mark.slow
def test_a_study_over_tls_in_and_its_results_over_tls_out(
    small_study, serve_node, tls_files, tmp_path: Path
) -> None:
    """DCMTK storescu +tls → ctp-node serve (node.tls) → DCMTK storescp +tls (destination tls),
    client certificates required on both legs."""
    from tests.conftest import free_port, stop_process, stored_count, storescu, wait_until
    from tests.receive.test_tls import tls_options
    from tests.send.test_tls import start_tls_storescp

    _, paths = small_study
    client = tls_files.client
    pacs = tmp_path / "pacs"
    pacs_port, pacs_process = start_tls_storescp(pacs, tls_files.server, tls_files.ca)
    tls_port = free_port()
    try:
        node = serve_node(
            [
                {
                    **_destination(
                        ca_certificates=str(tls_files.ca),
                        certificate=str(client.certificate),
                        private_key=str(client.private_key),
                    ),
                    "ae_title": "STORESCP",
                    "port": pacs_port,
                }
            ],
            node={"tls": _listener(tls_files, port=tls_port)},
        )

        sent = storescu(
            paths,
            tls_port,
            node.ae_title,
            extra=tls_options(client.private_key, client.certificate, tls_files.ca),
        )
        assert stored_count(sent) == len(paths), sent.stdout[-2000:] + sent.stderr[-2000:]

        outputs = 5 + 7 + 1  # Parametric Maps, summary pages, SR
        wait_until(lambda: len(list(pacs.iterdir())) >= outputs, 240, "the results in PACS")
        status = node.status()
        (job,) = status["jobs"]
        assert job["exports"] == {"pacs:sent": outputs}
        assert status["rejections"] == []
        assert f"listening as CTPNODE on 127.0.0.1:{tls_port} (DICOM TLS)" in node.log()
    finally:
        stop_process(pacs_process)
