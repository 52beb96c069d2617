"""Notifications through a real ``ctp-node serve``: a study sent with DCMTK storescu gives a
result, and a series whose contrast never arrives a failure; both are told to a webhook (a
real HTTP server) and by e-mail (aiosmtpd) that are down at first, survive a restart of the
node while pending, and arrive after a retry once the receivers are up. Nothing names the
patient."""

from __future__ import annotations

import dataclasses
import json

import numpy as np

from ctp_node.phantom.dicom import StudyIdentity, write_ct_series
from ctp_node.store import Database
from ctp_node.store.notifications import list_notifications
from tests.conftest import stored_count, storescu, wait_until
from tests.notify_sinks import HttpSink, SmtpSink


def _no_contrast(phantom, folder, identity):
    """The phantom's first frame repeated, with noise: a series whose bolus never arrives."""
    acquisition = phantom.acquisition
    still = np.repeat(acquisition.hu[:1], acquisition.hu.shape[0], axis=0)
    still = still + np.random.default_rng(5).normal(0, 5, still.shape).astype(np.float32)
    return write_ct_series(dataclasses.replace(acquisition, hu=still), folder, identity=identity)


def test_a_result_and_a_failure_are_told_after_the_receivers_come_up(
    small_study, serve_node, tmp_path
) -> None:
    phantom, paths = small_study
    flat = _no_contrast(phantom, tmp_path / "flat", StudyIdentity.new(accession_number="ACCFLAT"))
    webhook, mail = HttpSink(), SmtpSink()  # not started: both receivers are down
    node = serve_node(
        [],
        http=True,
        notifications={
            "webhooks": [{"name": "chat", "url": webhook.url}],
            "email": {
                "host": "127.0.0.1",
                "port": mail.port,
                "security": "none",
                "from": "ctp-node@hospital.example",
                "to": ["stroke-team@hospital.example"],
            },
            "retry_backoff_s": 1.0,
            "retry_backoff_max_s": 2.0,
        },
    )
    for series in (paths, flat):
        assert stored_count(storescu(series, node.port, node.ae_title)) == len(series)

    db = Database(yaml_url(node))
    try:

        def tried_and_waiting():
            told = list_notifications(db)
            return len(told) == 4 and all(n.state == "pending" and n.attempts for n in told)

        wait_until(tried_and_waiting, 240, "a result and a failure, their notifications tried")
        node.restart()  # pending notifications are in the database: the restart keeps them
        webhook.start()
        mail.start()
        wait_until(
            lambda: len(webhook.received) == 2 and len(mail.received) == 2,
            60,
            "the webhook and the e-mails after a retry",
        )
        # a message is recorded as sent once its receiver has answered: just after it arrived
        wait_until(
            lambda: {n.state for n in list_notifications(db)} == {"sent"},
            30,
            "every notification recorded as sent",
        )
    finally:
        db.dispose()
        webhook.stop()
        mail.stop()

    posted = {body["event"]: body for _, _, body in webhook.received}
    jobs = {j["state"]: j for j in node.status()["jobs"]}
    result, failure = posted["result"], posted["failure"]
    assert result["accession_number"] == "CTP0001" and result["result_version"] == 1
    assert result["volumes"]["core"]["value"] == jobs["done"]["volumes"]["core_ml"]
    assert result["volumes"]["core"]["unit"] == "ml"
    assert result["console_url"] == f"http://127.0.0.1:{node.http_port}/"
    assert failure["accession_number"] == "ACCFLAT"
    assert "contrast" in failure["failure_reason"].lower()
    assert jobs["failed"]["error"][:40] in failure["failure_reason"]
    subjects = sorted(m["Subject"].strip() for m in mail.received)  # (unfolded)
    assert subjects[0] == "CT perfusion FAILED, ACCFLAT"
    assert subjects[1].startswith("CT perfusion v1, CTP0001: core ")
    everything = json.dumps(list(posted.values())) + "".join(m.as_string() for m in mail.received)
    assert "PHANTOM" not in everything and "CTP-PHANTOM" not in everything  # name, patient ID
    assert not [line for line in node.status()["attention"] if "notification" in line]


def yaml_url(node) -> str:
    import yaml

    return yaml.safe_load(node.config_path.read_text())["database"]["url"]
