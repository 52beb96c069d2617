"""The web console in a real headless browser (Debian's chromium and chromium-driver, driven by
Selenium): a study sent with DCMTK's storescu to a real ``serve`` is processed and delivered to
a real Orthanc; a person signs in (``http.auth.mode: users``), opens it, sees the input curves,
clicks a new AIF on the Tmax map, sees its curve, reprocesses, and version 2 arrives at
Orthanc; the console's audit trail names them. One test: it is slow."""

from __future__ import annotations

import json
import shutil
import time
import urllib.parse
from collections.abc import Iterator
from pathlib import Path

import httpx
import pydicom
import pytest

from ctp_node.http.access import SESSION_COOKIE
from tests.conftest import orthanc_destination, run_cli, stored_count, storescu, wait_until
from tests.dicom_checks import MAP_NAMES

pytestmark = pytest.mark.slow

CHROMIUM = Path("/usr/bin/chromium")
CHROMEDRIVER = Path("/usr/bin/chromedriver")
OUTPUTS_PER_RESULT = len(MAP_NAMES) + 7 + 1
#: Seconds the browser waits for an element or a page.
BROWSER_WAIT_S = 30
PASSWORD = "correct horse battery"


@pytest.fixture
def browser(tmp_path: Path) -> Iterator:
    """Headless Chromium; missing, the test fails (CI installs chromium chromium-driver)."""
    from selenium import webdriver
    from selenium.webdriver.chrome.service import Service

    for path in (CHROMIUM, CHROMEDRIVER):
        if not path.exists() and shutil.which(path.name) is None:
            pytest.fail(f"{path} is not installed: run .ci/run (installs chromium chromium-driver)")
    options = webdriver.ChromeOptions()
    options.binary_location = str(CHROMIUM)
    for argument in (
        "--headless=new",
        "--no-sandbox",  # CI runs as root
        "--disable-dev-shm-usage",
        "--window-size=1400,1100",
        f"--user-data-dir={tmp_path / 'chromium'}",
    ):
        options.add_argument(argument)
    driver = webdriver.Chrome(service=Service(str(CHROMEDRIVER)), options=options)
    driver.set_page_load_timeout(BROWSER_WAIT_S)
    try:
        yield driver
    finally:
        driver.quit()


def _sent(node) -> int:  # type: ignore[no-untyped-def]
    return sum(j["exports"].get("orthanc:sent", 0) for j in node.status()["jobs"])


def _loaded(driver, element_id: str) -> bool:  # type: ignore[no-untyped-def]
    """The image has arrived and been decoded."""
    return bool(
        driver.execute_script(
            "const i = document.getElementById(arguments[0]);"
            "return i !== null && i.complete && i.naturalWidth > 0;",
            element_id,
        )
    )


def _best_neighbour(
    console: httpx.Client, series_uid: str, centre: list[int]
) -> tuple[int, int, int]:
    """The neighbour of the automatic AIF's centre (same slice) whose candidate curve peaks
    highest: what a person looking for the artery's brightest voxel would click."""
    z, y, x = centre
    best, best_peak = None, -1e9
    for dy in (-1, 0, 1):
        for dx in (-1, 0, 1):
            if dy == dx == 0:
                continue
            query = f"z={z}&y={y + dy}&x={x + dx}"
            answer = console.get(f"/series/{urllib.parse.quote(series_uid)}/curve?{query}")
            assert answer.status_code == 200
            peak = max(answer.json()["enhancement_hu"])
            if peak > best_peak:
                best, best_peak = (z, y + dy, x + dx), peak
    assert best is not None
    return best


def test_a_person_clicks_a_new_aif_and_version_2_reaches_pacs(
    small_study, orthanc, serve_node, browser, tmp_path: Path
) -> None:
    from selenium.webdriver.common.action_chains import ActionChains
    from selenium.webdriver.common.by import By
    from selenium.webdriver.support.ui import Select, WebDriverWait

    _, paths = small_study
    auth = {"mode": "users", "users_file": "console-users.yaml"}
    node = serve_node([orthanc_destination(orthanc)], http={"auth": auth})
    added = run_cli("user", "add", "alice", "--config", str(node.config_path), stdin=PASSWORD)
    assert added.returncode == 0, added.stderr
    patient_name = str(pydicom.dcmread(paths[0], stop_before_pixels=True).PatientName)
    assert stored_count(storescu(paths, node.port, node.ae_title)) == len(paths)
    wait_until(lambda: _sent(node) == OUTPUTS_PER_RESULT, 240, "version 1 in Orthanc")
    (first,) = node.status()["jobs"]
    summary = json.loads((node.root / "storage" / first["result_dir"] / "results.json").read_text())
    wait = WebDriverWait(browser, BROWSER_WAIT_S)

    # signed out, the console sends the browser to its sign-in form; signed in, to the studies
    base = f"http://127.0.0.1:{node.http_port}"
    browser.get(base + "/")
    wait.until(lambda d: "/login" in d.current_url)
    browser.find_element(By.ID, "name").send_keys("alice")
    browser.find_element(By.ID, "password").send_keys("not the password")
    browser.find_element(By.ID, "sign-in").click()
    wait.until(lambda d: "wrong name or password" in d.find_element(By.ID, "problem").text)
    browser.find_element(By.ID, "name").clear()
    browser.find_element(By.ID, "name").send_keys("alice")
    browser.find_element(By.ID, "password").send_keys(PASSWORD)
    browser.find_element(By.ID, "sign-in").click()
    wait.until(lambda d: d.current_url == base + "/")
    assert "alice" in browser.find_element(By.ID, "signed-in").text
    session = browser.get_cookie(SESSION_COOKIE)
    assert session is not None and session["httpOnly"] and session["sameSite"] == "Strict"
    console = httpx.Client(base_url=base, cookies={SESSION_COOKIE: session["value"]}, timeout=60)

    # the studies page, then the study's job
    browser.find_element(By.LINK_TEXT, f"job {first['id']}").click()
    wait.until(lambda d: d.current_url.endswith(f"/jobs/{first['id']}"))
    auto = summary["aif"]["centre_zyx"]
    aif_row = browser.find_element(By.ID, "aif-row").text
    assert ",".join(map(str, auto)) in aif_row and "automatic" in aif_row
    wait.until(lambda d: _loaded(d, "curves") and _loaded(d, "baseline"))
    browser.save_screenshot(str(tmp_path / "console-job.png"))

    # a click at the chosen voxel (the slice shown is the AIF's)
    assert patient_name not in browser.page_source  # no patient identity, even signed in
    z, y, x = chosen = _best_neighbour(console, first["series_instance_uid"], auto)
    assert browser.find_element(By.ID, "pick-slice").get_attribute("value") == str(z)
    image = browser.find_element(By.ID, "baseline")
    # the click is on a map (Tmax, one pixel per voxel) instead of the pre-contrast image
    backgrounds = Select(browser.find_element(By.ID, "pick-background"))
    tmax = next(o.get_attribute("value") for o in backgrounds.options if "Tmax" in o.text)
    backgrounds.select_by_value(tmax)
    wait.until(
        lambda d: (
            f"/maps/{tmax}/voxels.png?slice={z}" in image.get_attribute("src")
            and _loaded(d, "baseline")
        )
    )
    browser.execute_script("arguments[0].scrollIntoView({block: 'center'});", image)
    rows, columns = summary["acquisition"]["matrix"]
    width, height = image.size["width"], image.size["height"]
    offset_x = (x + 0.5) / columns * width - width / 2  # from the element's centre
    offset_y = (y + 0.5) / rows * height - height / 2
    ActionChains(browser).move_to_element_with_offset(
        image, round(offset_x), round(offset_y)
    ).click().perform()
    text = f"{z},{y},{x}"
    wait.until(lambda d: d.find_element(By.ID, "aif").get_attribute("value") == text)
    wait.until(
        lambda d: (
            d.find_element(By.ID, "candidate").get_attribute("data-zyx") == text
            and _loaded(d, "candidate")
        )
    )
    assert browser.find_element(By.ID, "vof").get_attribute("value") == ""  # VOF: automatic
    browser.save_screenshot(str(tmp_path / "console-candidate.png"))

    browser.find_element(By.ID, "reprocess").click()
    wait.until(
        lambda d: "/jobs/" in d.current_url and not d.current_url.endswith(f"/{first['id']}")
    )
    second_id = int(browser.current_url.rsplit("/", 1)[1])
    assert browser.find_element(By.ID, "requested-by").text.startswith("console alice,")
    assert browser.find_element(By.ID, "chosen").text == f"{text} / automatic"

    # version 2 reaches Orthanc, as with `ctp-node reprocess --aif`
    wait_until(lambda: _sent(node) == 2 * OUTPUTS_PER_RESULT, 240, "version 2 in Orthanc")
    second = next(j for j in node.status()["jobs"] if j["id"] == second_id)
    assert second["version"] == 2 and second["supersedes_job"] == first["id"]
    assert f"arterial input at (slice, row, column) ({text})" in second["version_reason"]
    descriptions = [i["SeriesDescription"] for i in orthanc.instances()]
    assert len(descriptions) == 2 * OUTPUTS_PER_RESULT
    assert sum(" v2 supersedes " in d for d in descriptions) == OUTPUTS_PER_RESULT

    deadline = time.monotonic() + BROWSER_WAIT_S
    browser.refresh()
    while "done, version 2" not in browser.find_element(By.TAG_NAME, "h1").text:
        assert time.monotonic() < deadline, browser.find_element(By.TAG_NAME, "h1").text
        time.sleep(0.5)
        browser.refresh()
    # the engine takes the arterial voxels around the chosen one: "manual", centred within a voxel
    row = browser.find_element(By.ID, "aif-row").text
    assert "manual" in row
    centre = browser.find_element(By.CSS_SELECTOR, "#aif-row .zyx").text.split(",")
    assert max(abs(int(a) - b) for a, b in zip(centre, chosen, strict=True)) <= 1
    assert f"({text})" in browser.find_element(By.ID, "version-reason").text
    wait.until(lambda d: _loaded(d, "curves"))
    # version 1's page now points to its successor
    browser.get(f"{base}/jobs/{first['id']}")
    assert f"job {second_id}" in browser.find_element(By.ID, "later").text

    # the audit trail: the failed sign-in, the sign-in and the reprocessing, by alice
    browser.find_element(By.LINK_TEXT, "Audit").click()
    rows = [r.text for r in browser.find_elements(By.CSS_SELECTOR, "#console-actions tr")[1:]]
    assert "alice 127.0.0.1 reprocess" in rows[0] and f"{second_id} done AIF {text}" in rows[0]
    assert "alice 127.0.0.1 sign-in " in rows[1]
    assert "alice 127.0.0.1 sign-in failed" in rows[2]
    browser.save_screenshot(str(tmp_path / "console-audit.png"))
    browser.find_element(By.ID, "sign-out").click()
    wait.until(lambda d: "/login" in d.current_url)
    browser.get(f"{base}/jobs/{second_id}")
    assert "/login?next=" in browser.current_url
    console.close()
