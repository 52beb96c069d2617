"""What the node writes is its own user's only (files 0600, folders 0700) whatever the umask,
through the real paths: a study received by DCMTK storescu, computed by the node's worker,
other objects kept, refused objects quarantined (within the bound), the SQLite database."""

from __future__ import annotations

import os
import stat
from pathlib import Path

import pytest

from ctp_node.file_modes import FILE_MODE, FOLDER_MODE
from tests.conftest import free_port, node_config, start_node, stop_process, storescu, wait_until
from tests.dicom_checks import with_other_pixels
from tests.study_objects import write_other_objects


@pytest.fixture
def umask_022():
    previous = os.umask(0o022)  # the usual default: files 0644, folders 0755
    yield
    os.umask(previous)


def _modes(root: Path) -> dict[str, int]:
    modes = {}
    for parent, folders, files in os.walk(root):
        for name in folders + files:
            path = Path(parent) / name
            modes[path.relative_to(root).as_posix()] = stat.S_IMODE(path.lstat().st_mode)
    return modes


def test_spool_results_quarantine_and_database_are_owner_only(
    small_study, tmp_path, umask_022
) -> None:
    _, paths = small_study
    root = tmp_path / "node"
    storage = root / "storage"
    (storage / "spool").mkdir(parents=True)  # left by an earlier release, world-readable
    os.chmod(storage, 0o755)
    os.chmod(storage / "spool", 0o755)
    size = paths[0].stat().st_size
    config = node_config(
        root,
        free_port(),
        [],
        storage={"retention": {"quarantine_max_bytes": 2 * size + size // 2}},
        ingest={"keep_other_objects": True, "series_stable_after_s": 2.0},
    )
    node = start_node(root, config)
    try:
        others = write_other_objects(paths[0], tmp_path / "others")
        sent = storescu([*paths, *others["secondary_capture"]], node.port, node.ae_title)
        assert sent.returncode == 0, sent.stderr
        collisions = [with_other_pixels(p, tmp_path / f"c{n}.dcm") for n, p in enumerate(paths[:4])]
        refused = storescu(collisions, node.port, node.ae_title, calling="CT2")
        assert "0x111" in refused.stderr

        def done() -> bool:  # summary.png is written once the outputs are queued
            jobs = node.status()["jobs"]
            return any(j["state"] == "done" for j in jobs) and any(storage.rglob("summary.png"))

        wait_until(done, 240, "the series to be computed")
        status = node.status()
        modes = _modes(storage)
        # SQLite removes its -wal and -shm files when the last connection closes.
        database = {p.name: stat.S_IMODE(p.stat().st_mode) for p in root.glob("node.db*")}
    finally:
        stop_process(node.process)

    for folder in ("spool", "other", "quarantine", "results"):
        assert any(p.startswith(f"{folder}/") for p in modes), folder  # each was written
    wrong = {p: f"{m:04o}" for p, m in modes.items() if m != FILE_MODE and m != FOLDER_MODE}
    assert wrong == {}
    folders = {p for p in modes if (storage / p).is_dir()}
    assert all(modes[p] == FOLDER_MODE for p in folders)
    assert all(modes[p] == FILE_MODE for p in modes.keys() - folders)
    assert stat.S_IMODE(storage.stat().st_mode) == FOLDER_MODE
    results = [p for p in modes if p.startswith("results/") and p.endswith(".dcm")]
    assert len(results) >= 7 and any(p.endswith("summary.png") for p in modes)

    assert database == {"node.db": FILE_MODE, "node.db-wal": FILE_MODE, "node.db-shm": FILE_MODE}
    log = node.log()
    assert log.count("folder modes set to 0700") == 1
    assert "spool 0755" in log

    # The quarantine bound held for the four refusals: two files, four records.
    quarantined = [p for p in modes if p.startswith("quarantine/") and p.endswith(".dcm")]
    assert len(quarantined) == 2
    refusals = [r for r in status["rejections"] if r["kind"] == "c-store"]
    assert len(refusals) == 4
    assert sorted(r["quarantine_path"] for r in refusals if r["quarantine_path"]) == sorted(
        quarantined
    )
