"""Render the example summary pages in this folder from the digital phantom.

    PYTHONPATH=. python docs/render_examples.py   # from the repository root

Writes ``summary-*.png`` (the Secondary Capture pages of a successful job) and
``failure-notice.png`` (the page sent when no maps can be computed). The identification on
the pages is the phantom's, not a person's.
"""

from __future__ import annotations

import tempfile
from datetime import datetime
from pathlib import Path

import pydicom
from PIL import Image

from ctp_node.perfusion.engine import compute_perfusion
from ctp_node.phantom import make_phantom
from ctp_node.phantom.dicom import StudyIdentity, write_ct_series
from ctp_node.report import ReportSettings, build_failure_notice, build_secondary_captures

DOCS = Path(__file__).resolve().parent
PAGE_NAMES = ("mismatch", "cbf", "cbv", "mtt", "tmax", "ttp", "quality")


def main() -> None:
    acquisition = make_phantom().acquisition
    result = compute_perfusion(acquisition)
    identity = StudyIdentity.new(study_datetime=datetime(2024, 5, 1, 14, 3, 0))
    with tempfile.TemporaryDirectory() as folder:
        paths = write_ct_series(acquisition, Path(folder), identity=identity)
        n_slices = acquisition.hu.shape[1]
        sources = [pydicom.dcmread(p, stop_before_pixels=True) for p in paths[:n_slices]]
    settings = ReportSettings()
    pages = build_secondary_captures(result, acquisition, sources, settings)
    for name, page in zip(PAGE_NAMES, pages, strict=True):
        Image.fromarray(page.pixel_array).save(DOCS / f"summary-{name}.png", optimize=True)
    notice, _ = build_failure_notice(
        "The contrast bolus never arrives: no artery enhances by more than 50 HU.",
        sources,
        settings,
    )
    Image.fromarray(notice.pixel_array).save(DOCS / "failure-notice.png", optimize=True)


if __name__ == "__main__":
    main()
