"""The studies page past one screen: a year's index is read page by page, newest first, and
every study is on exactly one page."""

from __future__ import annotations

import re

import pytest
import yaml

from ctp_node.http.console import STUDIES_PER_PAGE
from ctp_node.store import Database
from ctp_node.store.console_queries import studies, study_count
from ctp_node.store.ingest import ReceivedInstance, record_instance

pytestmark = pytest.mark.slow

CT_IMAGE = "1.2.840.10008.5.1.4.1.1.2"
STUDIES = 2 * STUDIES_PER_PAGE + 7  # three pages, the last one short


def record_studies(db: Database, count: int) -> list[str]:
    """``count`` studies of one instance each, recorded one after the other (the last is the
    newest); their Study Instance UIDs, oldest first."""
    uids = []
    for index in range(count):
        study = f"1.2.826.0.1.3680043.10.1.{index + 1}"
        record_instance(
            db,
            ReceivedInstance(
                sop_instance_uid=f"{study}.3.1",
                sop_class_uid=CT_IMAGE,
                series_instance_uid=f"{study}.2",
                study_instance_uid=study,
                transfer_syntax_uid="1.2.840.10008.1.2.1",
                modality="CT",
                accession_number=f"ACC{index + 1}",
                series_number=1,
                path=f"spool/{study}.dcm",
                size_bytes=1,
                calling_ae_title="SCANNER",
            ),
        )
        uids.append(study)
    return uids


def test_studies_are_read_page_by_page_newest_first(db: Database) -> None:
    uids = record_studies(db, 12)
    assert study_count(db) == 12
    pages = [studies(db, 5, offset) for offset in (0, 5, 10)]
    assert [len(page) for page in pages] == [5, 5, 2]
    read = [line.study_instance_uid for page in pages for line in page]
    assert read == uids[::-1]


def test_the_console_pages_through_more_studies_than_one_screen(serve_node) -> None:
    node = serve_node([], http=True, worker={"count": 0}, ingest={"series_stable_after_s": 3600})
    url = yaml.safe_load(node.config_path.read_text())["database"]["url"]
    db = Database(url)
    try:
        uids = record_studies(db, STUDIES)
    finally:
        db.dispose()

    shown, page = [], 1
    while True:
        status, body = node.http_get(f"/?page={page}")
        assert status == 200
        text = body.decode()
        on_page = re.findall(r"<h2>Study ([0-9.]+)", text)
        assert len(on_page) == min(STUDIES_PER_PAGE, STUDIES - len(shown))
        first = len(shown) + 1
        assert f"studies {first}-{first + len(on_page) - 1} of {STUDIES}" in text
        assert (f'href="/?page={page - 1}"' in text) == (page > 1)
        shown += on_page
        if f'href="/?page={page + 1}"' not in text:
            break
        page += 1
    assert page == 3
    assert shown == uids[::-1], "every study once, newest first"
    status, body = node.http_get("/?page=99")  # past the end: the last page
    assert status == 200 and re.findall(r"<h2>Study ([0-9.]+)", body.decode()) == shown[-7:]
    assert node.http_get("/?page=0")[0] == 422
