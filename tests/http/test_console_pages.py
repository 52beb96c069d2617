"""The web console's pages and pictures on a real ``serve`` (its HTTP face on): a study sent with
DCMTK's storescu, processed, delivered to a real Orthanc; a refused association. The browser
session (clicking a new AIF) is tests/http/test_console_browser.py."""

from __future__ import annotations

import html
import io
import json
import re
import urllib.error
import urllib.parse
import urllib.request
from pathlib import Path

import numpy as np
import pydicom
import pytest
from matplotlib import colormaps
from PIL import Image

from tests.conftest import (
    echo_ok,
    free_port,
    node_config,
    orthanc_destination,
    start_node,
    start_orthanc,
    stop_process,
    stored_count,
    storescu,
    wait_until,
)

pytestmark = pytest.mark.slow


def http_post(port: int, path: str, fields: dict[str, str], headers: dict | None = None):
    """POST a form without following the redirect: (status, Location or body)."""

    class NoRedirect(urllib.request.HTTPRedirectHandler):
        def redirect_request(self, *args, **kwargs):  # type: ignore[no-untyped-def]
            return None

    request = urllib.request.Request(
        f"http://127.0.0.1:{port}{path}",
        data=urllib.parse.urlencode(fields).encode(),
        headers=headers or {},
        method="POST",
    )
    opener = urllib.request.build_opener(NoRedirect)
    try:
        with opener.open(request, timeout=60) as response:
            return response.status, response.read().decode()
    except urllib.error.HTTPError as exc:
        if exc.code == 303:
            return 303, exc.headers["Location"]
        return exc.code, html.unescape(exc.read().decode())  # the error page's sentence


@pytest.fixture(scope="module")
def processed(small_study, tmp_path_factory):
    """A serve with a processed, delivered study and one refused association."""
    _, paths = small_study
    folder = tmp_path_factory.mktemp("console")
    orthanc = start_orthanc(folder / "orthanc")
    config = node_config(folder / "node", free_port(), [orthanc_destination(orthanc)])
    config["http"] = {"enabled": True, "bind": "127.0.0.1", "port": free_port()}
    node = start_node(folder / "node", config)
    node.http_port = config["http"]["port"]
    try:
        assert stored_count(storescu(paths, node.port, node.ae_title)) == len(paths)
        assert not echo_ok(node.port, "NOTTHENODE")

        def delivered() -> dict | None:
            jobs = node.status()["jobs"]
            done = jobs and jobs[0]["state"] == "done" and jobs[0]["exports"]
            pending = done and any(k.endswith(":pending") for k in jobs[0]["exports"])
            return jobs[0] if done and not pending else None

        job = wait_until(delivered, 240, "the result to be delivered")
        yield node, job, orthanc, paths
    finally:
        stop_process(node.process)
        stop_process(orthanc.process)


def _page(node, path: str) -> str:  # type: ignore[no-untyped-def]
    code, body = node.http_get(path)
    assert code == 200, body[:500]
    return body.decode()


def _png(node, path: str) -> np.ndarray:  # type: ignore[no-untyped-def]
    code, body = node.http_get(path)
    assert code == 200, body[:500]
    assert body.startswith(b"\x89PNG")
    return np.asarray(Image.open(io.BytesIO(body)).convert("RGB"))


def test_the_studies_page_shows_series_jobs_and_exports_without_the_patient_name(processed):
    node, job, _, paths = processed
    header = pydicom.dcmread(paths[0], stop_before_pixels=True)
    page = _page(node, "/")
    assert str(header.StudyInstanceUID) in page
    assert str(header.SeriesInstanceUID) in page
    assert "accession CTP0001" in page
    row = page[page.index(f'data-series="{header.SeriesInstanceUID}"') :]
    assert f"<td>{len(paths)} " in row or f"<td>{len(paths)}<" in row
    assert f'<a href="/jobs/{job["id"]}">job {job["id"]}</a>: done, version 1' in page
    sent = job["exports"]["orthanc:sent"]
    assert f"orthanc: {sent} sent" in page
    for identifying in ("PHANTOM", "CTP-PHANTOM", "19550314"):
        assert identifying not in page


def test_the_refusals_page_lists_a_refused_association(processed):
    node, *_ = processed
    page = _page(node, "/refusals")
    table = page[page.index('id="refusals"') :]
    assert "association" in table and "ECHOSCU" in table and "NOTTHENODE" in table
    # the audit trail's refused association, beside the rejection
    associations = page[page.index('id="associations"') :]
    assert "refused" in associations


def test_the_job_page_shows_curves_voxels_quality_maps_and_pages(processed):
    node, job, *_ = processed
    storage = node.root / "storage"
    summary = json.loads((storage / job["result_dir"] / "results.json").read_text())
    page = _page(node, f"/jobs/{job['id']}")
    aif = ",".join(map(str, summary["aif"]["centre_zyx"]))
    vof = ",".join(map(str, summary["vof"]["centre_zyx"]))
    assert re.search(rf'id="aif-row">.*<td class="zyx">{aif}</td>', page)
    assert re.search(rf'id="vof-row">.*<td class="zyx">{vof}</td>', page)
    scale = summary["parameters"]["aif_partial_volume_scale"]
    assert f"The AIF is scaled by {scale:.2f} for partial volume" in page
    for finding in summary["quality"]:
        assert f"<td>{finding['name']}</td><td>{finding['result']}</td>" in page
    assert "orthanc" in page[page.index('id="exports"') :]

    curves = _png(node, f"/jobs/{job['id']}/curves.png")
    red = (curves[..., 0] > 200) & (curves[..., 1] < 60) & (curves[..., 2] < 60)
    blue = (curves[..., 2] > 200) & (curves[..., 0] < 60)
    assert red.sum() > 50 and blue.sum() > 50  # both curves drawn

    maps = [o for o in summary["outputs"] if o["kind"] == "parametric_maps"]
    assert page.count('class="map"') == len(maps) == 5
    picture = _png(node, f"/jobs/{job['id']}/maps/0.png?slice=1")
    colours = {tuple(p) for p in picture.reshape(-1, 3)[::7]}
    assert len(colours) > 100  # a jet map and its colour bar, not a blank
    assert node.http_get(f"/jobs/{job['id']}/maps/0.png?slice=99")[0] == 404
    # the supervised choice's map background: one pixel per voxel, the stored map's values in
    # jet over its stored window
    chooser = page[page.index('id="pick-background"') :]
    chooser = chooser[: chooser.index("</select>")]
    assert chooser.count("<option value=") == 1 + len(maps)  # the pre-contrast image, the maps
    stored = pydicom.dcmread(storage / job["result_dir"] / maps[0]["file"])
    voi = stored.SharedFunctionalGroupsSequence[0].FrameVOILUTSequence[0]
    low = float(voi.WindowCenter) - float(voi.WindowWidth) / 2
    frame = stored.pixel_array[1].astype(np.float64)
    voxels = _png(node, f"/jobs/{job['id']}/maps/0/voxels.png?slice=1")
    assert voxels.shape == (*frame.shape, 3)
    fraction = np.clip((frame - low) / float(voi.WindowWidth), 0, 1)
    expected = colormaps["jet"](fraction)[..., :3] * 255
    assert np.abs(voxels - expected).max() <= 1
    assert node.http_get(f"/jobs/{job['id']}/maps/0/voxels.png?slice=99")[0] == 404
    assert node.http_get(f"/jobs/{job['id']}/maps/9.png")[0] == 404

    pages = [o for o in summary["outputs"] if o["kind"] == "secondary_captures"]
    first = pydicom.dcmread(storage / job["result_dir"] / pages[0]["file"])
    shown = _png(node, f"/jobs/{job['id']}/pages/0.png")
    assert shown.shape == (first.Rows, first.Columns, 3)
    stored = first.pixel_array.reshape(shown.shape)
    # the banner's patient line (name, ID, birth date) is withheld; the rest pixel for pixel
    band = round(first.Rows * 0.04)
    assert stored[12:band].any(axis=2).sum() > 500  # the stored page has the line there
    assert np.array_equal(shown[band:], stored[band:])
    assert not np.array_equal(shown[:band], stored[:band])
    assert shown[:band].max(axis=2).mean() < 10  # black, but for the short "withheld" note
    assert _png(node, f"/jobs/{job['id']}/summary.png").shape[1] > 1000
    code, body = node.http_get("/jobs/9999")
    assert code == 404 and b'<p class="error" id="problem">there is no job 9999</p>' in body
    code, body = node.http_get("/health/nothing")
    assert code == 404 and body == b'{"detail":"Not Found"}'  # JSON below /health


def _hu(ds: pydicom.Dataset) -> np.ndarray:
    return ds.pixel_array * float(ds.RescaleSlope) + float(ds.RescaleIntercept)


def test_the_candidate_curve_at_the_automatic_aif_is_the_arterial_curve(processed):
    node, job, _, paths = processed
    summary = json.loads((node.root / "storage" / job["result_dir"] / "results.json").read_text())
    series = urllib.parse.quote(job["series_instance_uid"])
    z, y, x = summary["aif"]["centre_zyx"]
    code, body = node.http_get(f"/series/{series}/curve?z={z}&y={y}&x={x}")
    assert code == 200
    curve = json.loads(body)
    assert curve["zyx"] == [z, y, x]
    assert len(curve["times_s"]) == summary["acquisition"]["time_points"]
    # the voxel's HU read here from the files (the phantom's names are t<time>_z<slice>.dcm),
    # less the mean of the frames before the bolus
    files = sorted(p for p in paths if p.name.endswith(f"_z{z:03d}.dcm"))
    hu = np.array([_hu(pydicom.dcmread(p))[y, x] for p in files])
    expected = hu - hu[: curve["baseline_frames"]].mean()
    assert curve["baseline_frames"] == summary["aif"]["baseline_frames"]
    assert np.allclose(curve["enhancement_hu"], expected, atol=0.01)
    assert max(curve["enhancement_hu"]) > 50  # an artery: enhancement well above tissue's
    peak_s = curve["times_s"][int(np.argmax(curve["enhancement_hu"]))]
    aif_peak_s = summary["aif"]["times_s"][int(np.argmax(summary["aif"]["concentration_hu"]))]
    assert abs(peak_s - aif_peak_s) < 4

    code, body = node.http_get("/series/1.2.3/curve?z=0&y=0&x=0")
    assert code == 404 and b"the images of series 1.2.3 are not on disk" in body
    code, body = node.http_get(f"/series/{series}/curve?z=99&y=0&x=0")
    assert code == 400 and b"lies outside the images: slice 0-3" in body
    assert b'id="problem"' in body  # a page with the sentence, not JSON
    image = _png(node, f"/series/{series}/baseline.png?slice={z}")
    rows, columns = summary["acquisition"]["matrix"]
    assert image.shape[:2] == (rows, columns)  # one pixel per voxel: a click is a voxel
    assert _png(node, f"/series/{series}/curve.png?z={z}&y={y}&x={x}").shape[0] > 200


def test_actions_refuse_what_cannot_be_done_with_a_sentence(processed):
    node, job, *_ = processed
    series = urllib.parse.quote(job["series_instance_uid"])
    code, body = http_post(node.http_port, f"/series/{series}/reprocess", {"aif": "1,2"})
    assert code == 400 and "slice,row,column" in body
    code, body = http_post(node.http_port, f"/series/{series}/reprocess", {"aif": "99,0,0"})
    assert code == 400 and "lies outside the images: slice 0-3" in body
    code, body = http_post(node.http_port, "/series/1.2.3/reprocess", {})
    assert code == 400 and "has no series 1.2.3" in body
    code, body = http_post(node.http_port, f"/jobs/{job['id']}/retry", {})
    assert code == 400 and "is done, not failed" in body
    code, body = http_post(node.http_port, f"/jobs/{job['id']}/resend", {"destination": "nope"})
    assert code == 400 and "no destination 'nope'" in body
    # a form on another site's page, posted by a browser on this machine
    for path in (f"/series/{series}/reprocess", f"/jobs/{job['id']}/resend"):
        code, body = http_post(node.http_port, path, {}, {"Origin": "http://elsewhere.example"})
        assert code == 403 and "from http://elsewhere.example (another site) is refused" in body
    code, body = http_post(
        node.http_port, f"/jobs/{job['id']}/retry", {}, {"Referer": "http://elsewhere.example/x"}
    )
    assert code == 403
    assert len(node.status()["jobs"]) == 1  # nothing queued


def test_resend_from_the_console_sends_the_result_again(processed):
    node, job, orthanc, _ = processed
    before = len(orthanc.get("/instances"))
    for instance in orthanc.get("/instances"):
        urllib.request.urlopen(
            urllib.request.Request(
                f"http://127.0.0.1:{orthanc.http_port}/instances/{instance}", method="DELETE"
            ),
            timeout=10,
        ).close()
    same_site = {"Origin": f"http://127.0.0.1:{node.http_port}"}  # as the browser sends it
    code, location = http_post(
        node.http_port, f"/jobs/{job['id']}/resend", {"destination": ""}, same_site
    )
    assert code == 303 and location.startswith(f"/jobs/{job['id']}?message=")
    assert f"{before} export(s) queued to orthanc" in _page(node, location)
    wait_until(lambda: len(orthanc.get("/instances")) == before, 60, "the result sent again")


def test_who_asked_is_recorded_with_the_new_job(processed, tmp_path: Path):
    """Without a sign-in (``http.auth.mode: none``), the peer's address: a header anyone can
    type is not believed (``mode: proxy`` believes it from a trusted proxy only,
    tests/http/test_console_auth.py)."""
    node, job, *_ = processed
    series = urllib.parse.quote(job["series_instance_uid"])
    code, location = http_post(
        node.http_port,
        f"/series/{series}/reprocess",
        {"aif": "", "vof": ""},
        headers={"X-Forwarded-User": "dr.who"},
    )
    assert code == 303
    new = int(location.rsplit("/", 1)[1])
    page = _page(node, location)
    assert 'id="requested-by">console 127.0.0.1,' in page
    (latest,) = [j for j in node.status()["jobs"] if j["id"] == new]
    assert latest["requested_by"] == "console 127.0.0.1"
    audit = _page(node, "/audit")
    assert "reprocess" in audit and f"/jobs/{new}" in audit and "dr.who" not in audit
