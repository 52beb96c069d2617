"""Fixtures with real parts: DCMTK tools, a real Orthanc, ctp-node serve, a phantom study.

Everything listens on 127.0.0.1 only; every wait is a bounded loop with a timeout.
"""

from __future__ import annotations

import glob
import itertools
import json
import os
import random
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time
import urllib.error
import urllib.request
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest
import yaml

# Debian's DCMTK leaves Nagle's algorithm on; without this a DCMTK peer manages ~20 images/s.
FAST_TCP_ENV = {**os.environ, "TCP_NODELAY": "1"}
# pynetdicom installs scripts named like DCMTK's into the venv: call DCMTK's by full path.
DCMTK = Path("/usr/bin")


def dcmtk(tool: str) -> str:
    path = DCMTK / tool
    if not path.exists():
        pytest.fail(f"DCMTK's {tool} is not installed at {path}: run .ci/run (installs dcmtk)")
    return str(path)


#: Listening ports for the servers the tests start come from a block of ports below Linux's
#: ephemeral range (32768–60999: the kernel's choice for bind(0) and for the source port of
#: every outgoing connection), one block per pytest-xdist worker (``PYTEST_XDIST_WORKER`` is
#: ``gw0``, ``gw1``, …), so two workers never hand out the same port, and a port is free until
#: its server binds it, not only at the instant the kernel chose it. Twelve blocks of 1000
#: span 20000–31999; a run with more workers shares blocks, from different starting points.
PORT_BLOCKS, PORT_BLOCK_SIZE, FIRST_PORT = 12, 1000, 20000


def _port_sequence() -> Iterator[int]:
    worker = os.environ.get("PYTEST_XDIST_WORKER", "gw0")
    block = int(worker.removeprefix("gw") or 0) % PORT_BLOCKS
    first = FIRST_PORT + block * PORT_BLOCK_SIZE
    # a different starting point for each process: two runs side by side rarely meet
    start = random.Random(os.getpid()).randrange(PORT_BLOCK_SIZE)
    for step in itertools.count():
        yield first + (start + step) % PORT_BLOCK_SIZE


_ports = _port_sequence()


def free_port() -> int:
    """A TCP port on 127.0.0.1 that nothing listens on now, from this test process's block,
    handed out again only after the other 999 of its block."""
    for _ in range(PORT_BLOCK_SIZE):
        port = next(_ports)
        with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as probe:
            try:
                probe.bind(("127.0.0.1", port))
            except OSError:
                continue  # another program's, or an earlier test's not yet released
            return port
    pytest.fail(f"no free port on 127.0.0.1 in this test process's block of {PORT_BLOCK_SIZE}")


def run_cli(*args: str, stdin: str | None = None) -> subprocess.CompletedProcess:
    """``ctp-node ARGS`` as a process, its output captured; ``stdin`` its standard input."""
    return subprocess.run(
        [sys.executable, "-m", "ctp_node", *args],
        input=stdin,
        capture_output=True,
        text=True,
        timeout=120,
    )


@pytest.fixture
def held_port() -> Iterator[int]:
    """A port on 127.0.0.1 that another program (the test itself) listens on."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as holder:
        holder.bind(("127.0.0.1", 0))
        holder.listen()
        yield holder.getsockname()[1]


def wait_until(
    predicate: Callable[[], object], timeout_s: float, what: str, interval_s: float = 0.25
) -> object:
    """Poll until ``predicate()`` is truthy; fail the test after ``timeout_s``."""
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        value = predicate()
        if value:
            return value
        time.sleep(interval_s)
    pytest.fail(f"timed out after {timeout_s:.0f} s waiting for {what}")


def echo_ok(port: int, called: str, calling: str = "ECHOSCU") -> bool:
    result = subprocess.run(
        [dcmtk("echoscu"), "-aet", calling, "-aec", called, "-to", "5", "127.0.0.1", str(port)],
        capture_output=True,
        timeout=30,
        env=FAST_TCP_ENV,
    )
    return result.returncode == 0


def storescu(
    files: list[Path],
    port: int,
    called: str,
    calling: str = "STORESCU",
    extra: tuple[str, ...] = (),
) -> subprocess.CompletedProcess:
    """Send files with DCMTK storescu (in the order given), all in one association."""
    return subprocess.run(
        [
            dcmtk("storescu"),
            "-v",
            "-aet",
            calling,
            "-aec",
            called,
            "-to",
            "30",
            "-nh",
            *extra,
            "127.0.0.1",
            str(port),
            *map(str, files),
        ],
        capture_output=True,
        text=True,
        timeout=300,
        env=FAST_TCP_ENV,
    )


def stored_count(result: subprocess.CompletedProcess) -> int:
    """How many C-STOREs storescu saw succeed (it exits 0 even when the peer refuses)."""
    return (result.stdout + result.stderr).count("Received Store Response (Success)")


# ------------------------------------------------------------------------------------------
# Orthanc


@dataclass
class Orthanc:
    dicom_port: int
    http_port: int
    ae_title: str
    process: subprocess.Popen

    def get(self, path: str) -> object:
        with urllib.request.urlopen(f"http://127.0.0.1:{self.http_port}{path}", timeout=10) as r:
            body = r.read()
            return json.loads(body) if r.headers.get_content_type() == "application/json" else body

    def get_bytes(self, path: str) -> bytes:
        with urllib.request.urlopen(f"http://127.0.0.1:{self.http_port}{path}", timeout=30) as r:
            return r.read()

    def instances(self) -> list[dict]:
        return [self.get(f"/instances/{i}/simplified-tags") for i in self.get("/instances")]

    @property
    def stow_url(self) -> str:
        """The STOW-RS endpoint of the DICOMweb plugin (started with ``dicomweb=True``)."""
        return f"http://127.0.0.1:{self.http_port}/dicom-web/studies"


#: Orthanc's DICOMweb plugin (Debian package orthanc-dicomweb); STOW-RS at /dicom-web/studies.
DICOMWEB_PLUGIN = Path("/usr/share/orthanc/plugins/libOrthancDicomWeb.so")


def start_orthanc(
    folder: Path,
    dicom_port: int | None = None,
    *,
    http_port: int | None = None,
    dicomweb: bool = False,
) -> Orthanc:
    """A real Orthanc on loopback; with ``dicomweb``, its DICOMweb plugin loaded (STOW-RS at
    ``Orthanc.stow_url``)."""
    binary = shutil.which("Orthanc") or "/usr/sbin/Orthanc"
    if not Path(binary).exists():
        pytest.fail("Orthanc is not installed: run .ci/run (installs orthanc)")
    if dicomweb and not DICOMWEB_PLUGIN.is_file():
        pytest.fail("Orthanc's DICOMweb plugin is not installed: run .ci/run (orthanc-dicomweb)")
    folder.mkdir(parents=True, exist_ok=True)
    dicom_port = dicom_port or free_port()
    http_port = http_port or free_port()
    config = {
        "Name": "ctp-node-test",
        "StorageDirectory": str(folder / "storage"),
        "IndexDirectory": str(folder / "index"),
        "HttpPort": http_port,
        "DicomPort": dicom_port,
        "DicomAet": "ORTHANC",
        "RemoteAccessAllowed": False,
        "AuthenticationEnabled": False,
        "DicomCheckCalledAet": True,
        "DicomAlwaysAllowStore": True,
        "DicomAlwaysAllowEcho": True,
        "Plugins": [str(DICOMWEB_PLUGIN)] if dicomweb else [],
        "DicomWeb": {"Enable": dicomweb, "Root": "/dicom-web/"},
        "StableAge": 1,
    }
    (folder / "orthanc.json").write_text(json.dumps(config))
    log = open(folder / "orthanc.log", "w")
    process = subprocess.Popen(
        [binary, str(folder / "orthanc.json")],
        stdout=log,
        stderr=subprocess.STDOUT,
        env=FAST_TCP_ENV,
    )
    orthanc = Orthanc(dicom_port, http_port, "ORTHANC", process)

    def ready() -> bool:
        if process.poll() is not None:
            pytest.fail(f"Orthanc exited: {(folder / 'orthanc.log').read_text()[-2000:]}")
        try:
            orthanc.get("/system")
            return True
        except OSError:
            return False

    wait_until(ready, 30, "Orthanc to start")
    return orthanc


def stop_process(process: subprocess.Popen, timeout_s: float = 20) -> None:
    if process.poll() is None:
        process.send_signal(signal.SIGTERM)
        try:
            process.wait(timeout=timeout_s)
        except subprocess.TimeoutExpired:
            process.kill()
            process.wait(timeout=10)


@pytest.fixture
def orthanc(tmp_path: Path, request: pytest.FixtureRequest) -> Iterator[Orthanc]:
    """A real Orthanc; with ``@pytest.mark.parametrize("orthanc", ["dicomweb"],
    indirect=True)``, with its DICOMweb plugin too."""
    server = start_orthanc(
        tmp_path / "orthanc", dicomweb=getattr(request, "param", None) == "dicomweb"
    )
    yield server
    stop_process(server.process)


# ------------------------------------------------------------------------------------------
# The phantom study (written once per session)


@pytest.fixture(scope="session")
def phantom_study(tmp_path_factory: pytest.TempPathFactory):
    from ctp_node.demo import write_phantom_study
    from ctp_node.phantom import PhantomSpec, make_phantom
    from ctp_node.phantom.dicom import StudyIdentity

    folder = tmp_path_factory.mktemp("phantom")
    phantom = make_phantom(PhantomSpec())
    paths = write_phantom_study(phantom, folder, StudyIdentity.new())
    return phantom, paths


@pytest.fixture(scope="session")
def small_study(tmp_path_factory: pytest.TempPathFactory):
    """A quick phantom study (64² × 4 slices × 41 time points) for tests of what the node does
    with a study (versions, recovery, operator commands) rather than of the maps' accuracy."""
    from ctp_node.demo import write_phantom_study
    from ctp_node.phantom import PhantomSpec, make_phantom
    from ctp_node.phantom.dicom import StudyIdentity

    folder = tmp_path_factory.mktemp("small-phantom")
    phantom = make_phantom(PhantomSpec(matrix=64, slices=4, pixel_spacing_mm=220.0 / 64))
    paths = write_phantom_study(phantom, folder, StudyIdentity.new())
    return phantom, paths


@pytest.fixture(scope="session")
def tls_files(tmp_path_factory: pytest.TempPathFactory):
    """Throw-away CAs, certificates and keys for the DICOM TLS tests (tests/tls_certificates)."""
    from tests.tls_certificates import make_tls_files

    return make_tls_files(tmp_path_factory.mktemp("tls"))


# ------------------------------------------------------------------------------------------
# ctp-node serve as a real process


@dataclass
class ServedNode:
    port: int
    ae_title: str
    config_path: Path
    root: Path
    process: subprocess.Popen
    log_path: Path
    http_port: int | None = None  # the HTTP face's port when http.enabled

    def http_get(self, path: str) -> tuple[int, bytes]:
        """GET ``path`` from the node's HTTP face: status code and body (also for 503)."""
        assert self.http_port is not None, "started without http=True"
        return http_get(self.http_port, path)

    def status(self) -> dict:
        result = subprocess.run(
            [
                sys.executable,
                "-m",
                "ctp_node",
                "status",
                "--json",
                "--config",
                str(self.config_path),
            ],
            capture_output=True,
            text=True,
            timeout=60,
        )
        # 1 = something needs attention (a failed job, an undelivered output): still a status
        assert result.returncode in (0, 1), result.stderr
        return json.loads(result.stdout)

    def log(self) -> str:
        return self.log_path.read_text()

    def restart(self) -> None:
        """Stop the process (SIGTERM) and start it again on the same configuration and data."""
        stop_process(self.process)
        started = start_node(self.root, yaml.safe_load(self.config_path.read_text()))
        self.process, self.log_path = started.process, started.log_path


def http_get(port: int, path: str) -> tuple[int, bytes]:
    """GET ``http://127.0.0.1:{port}{path}``: status code and body (also for 4xx and 5xx)."""
    try:
        with urllib.request.urlopen(f"http://127.0.0.1:{port}{path}", timeout=30) as response:
            return response.status, response.read()
    except urllib.error.HTTPError as exc:
        return exc.code, exc.read()


def node_config(root: Path, port: int, destinations: list[dict], **sections: dict) -> dict:
    config = {
        "node": {"ae_title": "CTPNODE", "port": port, "bind": "127.0.0.1"},
        "storage": {"root": str(root / "storage"), "min_free_bytes": 0},
        "database": {"url": f"sqlite:///{root / 'node.db'}"},
        "ingest": {"series_stable_after_s": 2.0, "scan_interval_s": 0.5},
        "worker": {"count": 1, "poll_interval_s": 0.5},
        "destinations": destinations,
        "send": {"retry_backoff_s": 1.0, "retry_backoff_max_s": 2.0},
    }
    for name, values in sections.items():
        config.setdefault(name, {}).update(values)
    return config


def start_node(root: Path, config: dict) -> ServedNode:
    root.mkdir(parents=True, exist_ok=True)
    config_path = root / "ctp-node.yaml"
    config_path.write_text(yaml.safe_dump(config))
    log_path = root / f"serve-{len(list(root.glob('serve*.log')))}.log"
    log = open(log_path, "w")
    process = subprocess.Popen(
        [sys.executable, "-m", "ctp_node", "serve", "--config", str(config_path)],
        stdout=log,
        stderr=subprocess.STDOUT,
    )
    port = config["node"]["port"]
    http = config.get("http", {})
    node = ServedNode(
        port,
        config["node"]["ae_title"],
        config_path,
        root,
        process,
        log_path,
        http["port"] if http.get("enabled") else None,
    )

    tls = bool(config["node"].get("tls"))

    def ready() -> bool:
        if process.poll() is not None:
            pytest.fail(f"ctp-node serve exited: {log_path.read_text()[-3000:]}")
        # The TLS listener starts after the plain one, and says so in the log (a probe of
        # its port without a certificate would be recorded as a refused connection).
        tls_up = not tls or "TLS listener's certificate" in log_path.read_text()
        return tls_up and echo_ok(port, node.ae_title)

    wait_until(ready, 60, "ctp-node serve to answer C-ECHO")
    return node


@pytest.fixture
def serve_node(tmp_path: Path):
    """A factory: ``serve_node(destinations, **sections)`` starts ``ctp-node serve``; with
    ``http=True`` (or a dict of ``http`` keys, e.g. ``auth``), its HTTP face on a free loopback
    port (``node.http_port``)."""
    started: list[ServedNode] = []

    def factory(
        destinations: list[dict], http: bool | dict = False, **sections: dict
    ) -> ServedNode:
        if http:
            given = http if isinstance(http, dict) else {}
            sections["http"] = {"enabled": True, "bind": "127.0.0.1", "port": free_port(), **given}
        root = tmp_path / f"node{len(started)}"
        node = start_node(root, node_config(root, free_port(), destinations, **sections))
        started.append(node)
        return node

    yield factory
    for node in started:
        stop_process(node.process)


def orthanc_destination(orthanc: Orthanc) -> dict:
    return {
        "name": "orthanc",
        "ae_title": orthanc.ae_title,
        "host": "127.0.0.1",
        "port": orthanc.dicom_port,
    }


# ------------------------------------------------------------------------------------------
# PostgreSQL (scale-out database)


def _as_postgres(command: list[str]) -> list[str]:
    # PostgreSQL refuses to run as root; CI runs as root.
    return ["runuser", "-u", "postgres", "--", *command] if os.geteuid() == 0 else command


@pytest.fixture(scope="session")
def postgres_url() -> Iterator[str]:
    binaries = sorted(glob.glob("/usr/lib/postgresql/*/bin"))
    if not binaries:
        pytest.fail("PostgreSQL is not installed: run .ci/run (installs postgresql)")
    bin_dir = Path(binaries[-1])
    folder = Path(tempfile.mkdtemp(prefix="ctp-node-pg-"))
    if os.geteuid() == 0:
        shutil.chown(folder, "postgres", "postgres")
    data = folder / "data"
    subprocess.run(
        _as_postgres([str(bin_dir / "initdb"), "-D", str(data), "-A", "trust", "-U", "postgres"]),
        check=True,
        capture_output=True,
        timeout=120,
    )
    port = free_port()
    options = f"-p {port} -k {folder} -c listen_addresses=127.0.0.1 -c fsync=off"
    subprocess.run(
        _as_postgres(
            [
                str(bin_dir / "pg_ctl"),
                "-D",
                str(data),
                "-o",
                options,
                "-l",
                str(folder / "log"),
                "-w",
                "-t",
                "60",
                "start",
            ]
        ),
        check=True,
        capture_output=True,
        timeout=120,
    )
    try:
        yield f"postgresql+psycopg://postgres@127.0.0.1:{port}/postgres"
    finally:
        subprocess.run(
            _as_postgres([str(bin_dir / "pg_ctl"), "-D", str(data), "-m", "fast", "-w", "stop"]),
            capture_output=True,
            timeout=60,
        )
        shutil.rmtree(folder, ignore_errors=True)


@pytest.fixture(params=["sqlite", "postgresql"])
def db(request: pytest.FixtureRequest, tmp_path: Path):
    """The same tests on both databases the node supports, each a real server or file."""
    from ctp_node.store import Database
    from ctp_node.store.models import Base

    if request.param == "sqlite":
        database = Database(f"sqlite:///{tmp_path / 'node.db'}")
    else:
        database = Database(request.getfixturevalue("postgres_url"))
        Base.metadata.drop_all(database.engine)
    database.create_schema()
    yield database
    database.dispose()
