"""``ctp-node purge`` and ``ctp-node status`` as an administrator runs them, against a
configuration file, a SQLite database and real files."""

from __future__ import annotations

import json
import subprocess
import sys
import time
from pathlib import Path

import yaml

from ctp_node.store import Database
from ctp_node.store.ingest import instance_paths, list_series
from tests.retention.history import NodeHistory

DELIVERED, WAITING = "1.2.3.1", "1.2.3.2"


def ctp_node(*args: str) -> subprocess.CompletedProcess:
    result = subprocess.run(
        [sys.executable, "-m", "ctp_node", *args],
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert result.returncode == 0, result.stderr[-2000:]
    return result


def test_purge_dry_run_prints_the_plan_then_purge_frees_it(tmp_path: Path) -> None:
    root = tmp_path / "storage"
    config = tmp_path / "ctp-node.yaml"
    config.write_text(
        yaml.safe_dump(
            {
                "storage": {"root": str(root), "retention": {"spool_days": 0.00001}},
                "database": {"url": f"sqlite:///{tmp_path / 'node.db'}"},
                "destinations": [
                    {"name": "pacs", "ae_title": "PACS", "host": "127.0.0.1", "port": 4242}
                ],
            }
        )
    )
    db = Database(f"sqlite:///{tmp_path / 'node.db'}")
    db.create_schema()
    node = NodeHistory(db, root, size=250_000)
    delivered, _, results = node.delivered_series(DELIVERED)
    waiting = node.receive(WAITING)
    node.run(node.decide(WAITING), WAITING)  # its exports are still pending
    time.sleep(1.5)  # spool_days 0.00001: 0.86 s after the delivery

    dry = ctp_node("purge", "--dry-run", "--config", str(config)).stdout

    assert "spool 1e-05 d, results 30 d" in dry
    assert "  spool            1 series         3 files        0.8 MB" in dry
    assert f"  spool {WAITING}: job 2 has 2 export(s) pending" in dry
    assert "dry run: nothing was deleted" in dry
    assert all(f.exists() for f in delivered + waiting)
    assert len(instance_paths(db, DELIVERED)) == 3

    status = json.loads(ctp_node("status", "--json", "--config", str(config)).stdout)
    disk = status["disk"]
    assert disk["spool_bytes"] == 6 * 250_000 and disk["results_bytes"] == 4 * 250_000
    assert disk["quarantine_bytes"] == disk["other_bytes"] == 0 and disk["free_bytes"] > 0

    freed = ctp_node("purge", "--config", str(config)).stdout

    assert freed.split("freed:")[1].splitlines()[1] == (
        "  spool            1 series         3 files        0.8 MB"
    )
    assert not any(f.exists() for f in delivered) and all(f.exists() for f in waiting)
    assert results.is_dir()
    assert instance_paths(db, DELIVERED) == []
    purged = {s.series_instance_uid: s.purged_at for s in list_series(db)}
    assert purged[DELIVERED] is not None and purged[WAITING] is None

    text = ctp_node("status", "--config", str(config)).stdout
    assert "spool 0.8 MB, results 1.0 MB, quarantine 0.0 MB, other 0.0 MB" in text
    assert f"{DELIVERED}  acc ACC1  CT  0 inst.  perfusion  test  (received files purged " in text
    db.dispose()
