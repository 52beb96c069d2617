"""``ctp-node demo``: where it writes, and its result table."""

from __future__ import annotations

import os
import re
import shutil
import subprocess
import sys
import tempfile
from pathlib import Path

import pytest
import yaml

from ctp_node.demo import DEMO_CONFIG, demo_folder
from ctp_node.result_table import print_result

#: This checkout (the run's working folder is elsewhere; a relative PYTHONPATH would not find it).
SOURCE = Path(__file__).resolve().parents[1]

#: A table row: two spaces, the quantity, its unit, the value (and the truth, if known).
ROW = re.compile(r"^  (?P<name>.{28})(?P<unit>.{14})\s*(?P<value>-|yes|no|-?\d+\.\d\d)(\s+\S+)?$")


def _table_rows(text: str) -> list[re.Match]:
    lines = text.splitlines()
    start = next(i for i, line in enumerate(lines) if line.startswith("  quantity"))
    end = next(i for i, line in enumerate(lines) if line.startswith("  outputs: "))
    return [ROW.match(line) for line in lines[start + 1 : end]]


def test_every_row_of_the_result_table_has_a_unit(capsys) -> None:
    maps = ("CBF", "CBV", "MTT", "TTP", "Tmax", "delay", "rCBF")
    summary = {
        "series_instance_uid": "1.2.3",
        "algorithm": "test",
        "volumes": {
            "core_ml": 9.6,
            "tmax6_ml": 30.3,
            "tmax10_ml": 7.3,
            "mismatch_ml": 20.7,
            "mismatch_ratio": 3.15,
            "hypoperfusion_intensity_ratio": 0.24,
            "target_mismatch": True,
        },
        "maps": {name: {"median_in_tissue": 1.0} for name in maps},
        "outputs": [],
    }
    print_result(summary, Path("out"))
    rows = _table_rows(capsys.readouterr().out)
    assert len(rows) == 6 + len(maps) + 1 and all(rows), rows
    units = {row["name"].strip(): row["unit"].strip() for row in rows}
    assert all(units.values()), units
    assert units["median CBF"] == "ml/100 g/min" and units["median CBV"] == "ml/100 g"
    assert units["median Tmax"] == units["median delay"] == "s"
    assert units["median rCBF"] == "ratio" and units["core (rCBF<30%)"] == "ml"


def test_out_is_used_and_only_a_previous_demo_is_replaced(tmp_path: Path) -> None:
    out = tmp_path / "demo"
    assert demo_folder(out) == out.resolve() and out.is_dir()
    (out / DEMO_CONFIG).write_text("node: {}\n")
    (out / "pacs").mkdir()
    assert demo_folder(out) == out.resolve() and not any(out.iterdir())  # replaced
    (out / "thesis.tex").write_text("someone's work")
    with pytest.raises(ValueError, match="not a previous demo's"):
        demo_folder(out)
    assert (out / "thesis.tex").exists()


def test_without_out_a_new_temporary_folder(tmp_path: Path, monkeypatch) -> None:
    monkeypatch.setenv("TMPDIR", str(tmp_path))
    monkeypatch.chdir(tmp_path)
    import tempfile

    monkeypatch.setattr(tempfile, "tempdir", None)  # read TMPDIR again
    first, second = demo_folder(None), demo_folder(None)
    assert first != second
    assert first.parent == second.parent == tmp_path.resolve()
    assert first.name.startswith("ctp-node-demo-")


@pytest.mark.slow
def test_the_demo_writes_nothing_where_it_is_run_and_its_table_has_units(
    tmp_path: Path, request: pytest.FixtureRequest
) -> None:
    """The whole demo, run from an empty folder: the folder stays empty, the results are in the
    temporary folder it prints, and the table has a unit on every row."""
    here = tmp_path / "here"
    here.mkdir()
    # The temporary folder in /tmp itself: multiprocessing's forkserver puts its socket there,
    # and an AF_UNIX path has at most 107 bytes (under pytest-xdist's deeper tmp_path it had
    # more, the node's worker never started and the demo waited out its 600 s).
    temporary = Path(tempfile.mkdtemp(prefix="ctp-demo-", dir="/tmp"))
    request.addfinalizer(lambda: shutil.rmtree(temporary, ignore_errors=True))
    result = subprocess.run(
        [sys.executable, "-m", "ctp_node", "demo"],
        cwd=here,
        env={**os.environ, "TMPDIR": str(temporary), "PYTHONPATH": str(SOURCE)},
        capture_output=True,
        text=True,
        timeout=900,
    )
    assert result.returncode == 0, result.stdout[-3000:] + result.stderr[-3000:]
    assert not any(here.iterdir())
    (folder,) = temporary.iterdir()
    assert folder.name.startswith("ctp-node-demo-")
    assert f"demo folder: {folder}" in result.stdout
    config = folder / DEMO_CONFIG
    port = yaml.safe_load(config.read_text())["http"]["port"]
    assert f"   console: http://127.0.0.1:{port}/  health:" in result.stdout
    assert f"ctp-node serve --config {config}, then open http://127.0.0.1:{port}/jobs/1" in (
        result.stdout
    )
    assert (folder / "pacs").is_dir()
    rows = _table_rows(result.stdout)
    assert rows and all(rows), result.stdout
    assert all(row["unit"].strip() for row in rows), result.stdout
