"""The HTTP face's health checks on a real ``serve``: live, ready, and not ready with the
reason; ``ctp-node status`` exits 1 when the node is not healthy; a port in use stops
start-up with a sentence."""

from __future__ import annotations

import json
import socket
import subprocess
import sys
from pathlib import Path

import pytest
import yaml

from tests.conftest import free_port, http_get, node_config, stop_process, wait_until
from tests.test_packaging import health_check_command

pytestmark = pytest.mark.slow

CHECKS = {"listener", "database", "disk", "workers"}


def _ctp_node(*args: str) -> subprocess.CompletedProcess:
    return subprocess.run(
        [sys.executable, "-m", "ctp_node", *args], capture_output=True, text=True, timeout=120
    )


def _docker_health_check(node) -> subprocess.CompletedProcess:  # type: ignore[no-untyped-def]
    """The image's HEALTHCHECK command, run here against ``node`` (its port for 8080)."""
    command = health_check_command()
    code = command[2].replace("127.0.0.1:8080/", f"127.0.0.1:{node.http_port}/")
    assert code != command[2]
    return subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=30)


def _ready(node) -> tuple[int, dict]:  # type: ignore[no-untyped-def]
    code, body = node.http_get("/health/ready")
    return code, json.loads(body)


def test_a_healthy_node_is_live_and_ready_and_status_exits_0(serve_node) -> None:
    node = serve_node([], http=True)
    assert node.http_get("/health/live") == (200, b'{"status":"live"}')
    # the worker process starts beside the listener: ready once it runs
    wait_until(lambda: _ready(node)[0] == 200, 30, "the node to be ready")
    body = _ready(node)[1]
    assert body["status"] == "ready"
    assert set(body["checks"]) == CHECKS
    assert all(check == {"ok": True, "reason": ""} for check in body["checks"].values())

    assert _docker_health_check(node).returncode == 0
    status = _ctp_node("status", "--json", "--config", str(node.config_path))
    assert status.returncode == 0, status.stdout + status.stderr
    assert json.loads(status.stdout)["health"] == []

    stop_process(node.process)
    stopped = _ctp_node("status", "--config", str(node.config_path))
    assert stopped.returncode == 1
    assert f"127.0.0.1:{node.http_port}/health/ready does not answer" in stopped.stdout
    assert "is serve running?" in stopped.stdout


def test_disk_below_the_watermark_is_not_ready_with_the_reason(serve_node) -> None:
    """storage.min_free_bytes above the free space: C-STORE would be refused, so not ready;
    `status` says so with the HTTP face and without it."""
    node = serve_node([], http=True, storage={"min_free_bytes": 10**18}, worker={"count": 0})
    code, body = _ready(node)
    assert code == 503
    assert body["status"] == "not ready"
    disk = body["checks"]["disk"]
    assert disk["ok"] is False
    assert "under storage.min_free_bytes (1000000000000 MB)" in disk["reason"]
    assert body["checks"]["listener"] == body["checks"]["database"] == {"ok": True, "reason": ""}
    assert node.http_get("/health/live")[0] == 200  # alive: a restart would not help
    docker = _docker_health_check(node)
    assert docker.returncode == 1 and "storage.min_free_bytes" in docker.stderr

    status = _ctp_node("status", "--json", "--config", str(node.config_path))
    assert status.returncode == 1
    health = json.loads(status.stdout)["health"]
    assert len(health) == 1 and "disk:" in health[0] and "storage.min_free_bytes" in health[0]

    without_http = yaml.safe_load(node.config_path.read_text())
    without_http["http"]["enabled"] = False
    path = node.root / "no-http.yaml"
    path.write_text(yaml.safe_dump(without_http))
    status = _ctp_node("status", "--config", str(path))
    assert status.returncode == 1
    assert "under storage.min_free_bytes" in status.stdout


def test_a_stopped_listener_is_not_ready(tmp_path: Path) -> None:
    """In process, so that the listener alone can be stopped under a running HTTP face."""
    from ctp_node.config import Config
    from ctp_node.service import Node

    raw = node_config(tmp_path, free_port(), [], worker={"count": 0})
    raw["http"] = {"enabled": True, "bind": "127.0.0.1", "port": free_port()}
    node = Node(Config.model_validate(raw))
    node.start()
    try:
        assert http_get(raw["http"]["port"], "/health/ready")[0] == 200
        node._server.shutdown()  # the listener's thread ends and its socket closes
        node._server = None
        code, body = http_get(raw["http"]["port"], "/health/ready")
        assert code == 503
        checks = json.loads(body)["checks"]
        listener = checks["listener"]
        assert listener == {
            "ok": False,
            "reason": f"the DICOM listener on 127.0.0.1:{raw['node']['port']} is not accepting "
            "connections",
        }
        assert checks["workers"]["ok"]  # worker.count 0, no job lost
    finally:
        node.stop()


@pytest.mark.parametrize("taken", ["http", "node"])
def test_a_port_in_use_stops_serve_with_a_sentence(tmp_path: Path, taken: str) -> None:
    """The HTTP face's port (bound first) or the DICOM listener's: a configuration problem,
    exit 2, one sentence that names the port and the key to change, no traceback."""
    holder = socket.socket()
    holder.bind(("127.0.0.1", 0))
    holder.listen(1)
    port = holder.getsockname()[1]
    try:
        raw = node_config(tmp_path, free_port(), [])
        raw["http"] = {"enabled": True, "bind": "127.0.0.1", "port": free_port()}
        raw[taken]["port"] = port
        path = tmp_path / "ctp-node.yaml"
        path.write_text(yaml.safe_dump(raw))
        serve = _ctp_node("serve", "--config", str(path))
    finally:
        holder.close()
    assert serve.returncode == 2, serve.stderr
    assert f"{taken}.port" in serve.stderr and str(port) in serve.stderr
    assert "in use" in serve.stderr
    assert "Traceback" not in serve.stderr + serve.stdout
