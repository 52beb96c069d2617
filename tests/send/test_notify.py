"""Notifications delivered to real receivers on 127.0.0.1 — an HTTP server (webhook) and an
aiosmtpd SMTP server (e-mail) — and retried when one is down, then up; nothing is lost."""

from __future__ import annotations

import time

import pytest

from ctp_node.send.notify import send_due_notifications
from ctp_node.send.notify_channels import EmailChannel, WebhookChannel
from ctp_node.send.notify_message import MessageSettings, email_text
from ctp_node.send.notify_rules import NotifyRules
from ctp_node.send.scu import Peer
from ctp_node.send.sender import RetryPolicy, send_due_exports
from ctp_node.status import collect_status
from ctp_node.store.models import NotificationState
from ctp_node.store.notifications import list_notifications
from ctp_node.store.outbox import OutputObject, enqueue_exports
from ctp_node.store.queue import VersionRecord, claim_job, fail_job, record_notice
from tests.conftest import free_port
from tests.notify_sinks import HttpSink, SmtpSink
from tests.send.conftest import database_with_a_job
from tests.store.test_notifications import finish_with_notifications

SUMMARY = {
    "volumes": {
        "core_ml": 81.25,
        "tmax6_ml": 150.0,
        "tmax10_ml": 60.0,
        "mismatch_ml": 68.75,
        "mismatch_ratio": 1.846,
        "target_mismatch": False,
    },
    "warnings": ["the arterial input peaks late"],
    "quality": [
        {"name": "motion", "result": "warn", "detail": "3.2 mm between frames"},
        {"name": "truncation", "result": "pass", "detail": ""},
    ],
}
RULES = NotifyRules(
    (("webhook:chat", frozenset({"notable_result", "failure"})), ("email", frozenset({"failure"})))
)
SETTINGS = MessageSettings(node="CTPNODE", console_url="http://ctp.example:8080/")
FAST = RetryPolicy(max_attempts=3, backoff_s=0.05, backoff_max_s=0.05)


@pytest.fixture
def http_sink():
    sink = HttpSink().start()
    yield sink
    sink.stop()


@pytest.fixture
def smtp_sink():
    sink = SmtpSink(user="ctp", password="pa ss:word").start()
    yield sink
    sink.stop()


def _result(tmp_path, summary=SUMMARY, rules=RULES):
    db, job_id = database_with_a_job(tmp_path)
    claim_job(db, "w", 60, 3)
    assert finish_with_notifications(db, job_id, summary, rules.for_result(summary))
    return db, job_id


def _channels(http_sink: HttpSink, smtp_sink: SmtpSink | None = None) -> dict:
    channels = {
        "webhook:chat": WebhookChannel(http_sink.url, {"X-Team": "stroke"}, "t0ken", timeout_s=5)
    }
    if smtp_sink is not None:
        channels["email"] = EmailChannel(
            "127.0.0.1",
            smtp_sink.port,
            "ctp-node@hospital.example",
            ("team@hospital.example", "oncall@hospital.example"),
            security="none",
            user="ctp",
            password="pa ss:word",
            timeout_s=5,
        )
    return channels


def test_a_large_core_is_posted_as_json_with_units_and_no_patient(tmp_path, http_sink) -> None:
    db, job_id = _result(tmp_path)  # core 81 ml ≥ 70: notable; the e-mail wants failures only
    assert send_due_notifications(db, _channels(http_sink), FAST, SETTINGS) == 1
    ((path, headers, body),) = http_sink.received
    assert path == "/hooks/ctp"
    assert headers["Authorization"] == "Bearer t0ken" and headers["X-Team"] == "stroke"
    assert body["event"] == "result" and body["job"] == job_id and body["result_version"] == 1
    assert (body["study_instance_uid"], body["series_instance_uid"]) == ("1.2.3", "1.2.3.4")
    assert body["volumes"]["core"] == {
        "value": 81.25,
        "unit": "ml",
        "meaning": "rCBF < 30 % of normal",
    }
    assert body["volumes"]["penumbra"]["value"] == 68.75
    assert body["large_core"] and body["notable"] and not body["target_mismatch"]
    assert body["qc_warnings"] == [
        "the arterial input peaks late",
        "motion: 3.2 mm between frames",
    ]
    assert body["console_url"] == "http://ctp.example:8080/"
    assert not {"patient_name", "patient_id", "PatientName"} & set(body)
    (sent,) = list_notifications(db)
    assert sent.state == NotificationState.SENT and sent.channel == "webhook:chat"


def test_an_ordinary_result_tells_no_one_who_wants_notable_ones(tmp_path, http_sink) -> None:
    small = {**SUMMARY, "volumes": {**SUMMARY["volumes"], "core_ml": 12.0}}
    db, _ = _result(tmp_path, small)
    assert list_notifications(db) == []
    assert send_due_notifications(db, _channels(http_sink), FAST, SETTINGS) == 0


def test_a_failure_is_posted_and_mailed_after_signing_in(tmp_path, http_sink, smtp_sink) -> None:
    db, job_id = database_with_a_job(tmp_path)
    claim_job(db, "w", 60, 3)
    reason = "No contrast arrives: the arterial curve never rises 50 HU above baseline."
    fail_job(db, job_id, reason, retry=False, max_attempts=3, worker_id="w")
    assert record_notice(
        db,
        job_id,
        worker_id="w",
        result_dir="results/1",
        version=VersionRecord("d", 1, 1, "k", None, ""),
        exports=[],
        notifications=RULES.for_failure(reason),
    )
    channels = _channels(http_sink, smtp_sink)
    assert send_due_notifications(db, channels, FAST, SETTINGS) == 2
    ((_, _, body),) = http_sink.received
    assert body["event"] == "failure" and body["failure_reason"] == reason
    (mail,) = smtp_sink.received
    assert mail["Subject"] == "CT perfusion FAILED, no accession number"
    assert mail["X-Envelope-To"] == "team@hospital.example, oncall@hospital.example"
    assert mail["X-Signed-In-As"] == "ctp"
    text = mail.get_payload(decode=True).decode()
    assert reason in text and "series 1.2.3.4" in text and "http://ctp.example:8080/" in text


def test_receivers_down_then_up_get_every_message_after_a_retry(tmp_path, http_sink, smtp_sink):
    rules = NotifyRules((("webhook:chat", frozenset({"result"})), ("email", frozenset({"result"}))))
    db, _ = _result(tmp_path, rules=rules)
    channels = _channels(http_sink, smtp_sink)
    http_sink.stop()
    smtp_sink.stop()
    assert send_due_notifications(db, channels, FAST, SETTINGS) == 0
    waiting = list_notifications(db)
    assert [(n.state, n.attempts) for n in waiting] == [("pending", 1)] * 2
    assert "Connection refused" in waiting[0].last_error  # webhook: said in words
    assert "127.0.0.1" in waiting[0].last_error and "/hooks" not in waiting[0].last_error
    http_sink.start()
    smtp_sink.start()
    time.sleep(0.1)
    assert send_due_notifications(db, channels, FAST, SETTINGS) == 2
    assert len(http_sink.received) == 1 and len(smtp_sink.received) == 1
    (mail,) = smtp_sink.received
    assert (
        mail["Subject"]
        == "CT perfusion v1, no accession number: core 81.2 ml, penumbra 68.8 ml (LARGE CORE)"
    )
    assert [n.state for n in list_notifications(db)] == ["sent", "sent"]


def test_a_receiver_that_keeps_refusing_gives_up_and_is_recorded(tmp_path, http_sink) -> None:
    http_sink.status = 500
    db, _ = _result(tmp_path)
    for _ in range(FAST.max_attempts):
        send_due_notifications(db, _channels(http_sink), FAST, SETTINGS)
        time.sleep(0.1)
    (failed,) = list_notifications(db)
    assert failed.state == NotificationState.FAILED and failed.attempts == FAST.max_attempts
    answer = f"http://127.0.0.1:{http_sink.port} answered HTTP 500 Internal Server Error"
    assert failed.last_error == answer
    assert len(http_sink.received) == FAST.max_attempts
    status = collect_status(db)  # what `ctp-node status` shows, and why it exits 1
    assert status["jobs"][0]["notifications"] == {"webhook:chat:failed": 1}
    assert status["attention"] == [
        f"job {failed.job_id}: the result notification to webhook:chat gave up after 3 "
        f"attempt(s) ({answer}); a restart tries it again"
    ]


def test_a_channel_removed_from_the_configuration_gives_up_at_once(tmp_path) -> None:
    db, _ = _result(tmp_path)
    assert send_due_notifications(db, {}, FAST, SETTINGS) == 0
    (failed,) = list_notifications(db)
    assert failed.state == NotificationState.FAILED
    assert failed.last_error == "channel 'webhook:chat' is no longer configured"


def test_a_wrong_smtp_password_is_retried_with_the_servers_answer(tmp_path, smtp_sink) -> None:
    rules = NotifyRules((("email", frozenset({"result"})),))
    db, _ = _result(tmp_path, rules=rules)
    channel = _channels(HttpSink(), smtp_sink)["email"]
    wrong = {"email": EmailChannel(**{**channel.__dict__, "password": "wrong"})}
    assert send_due_notifications(db, wrong, FAST, SETTINGS) == 0
    (waiting,) = list_notifications(db)
    assert waiting.state == "pending" and "SMTPAuthenticationError" in waiting.last_error
    assert "wrong" not in waiting.last_error and smtp_sink.received == []


def test_the_patient_is_named_only_when_the_configuration_says_so(
    tmp_path, http_sink, outputs
) -> None:
    db, _ = _result(tmp_path)
    root = tmp_path / "storage"
    root.mkdir()
    (root / "x").write_bytes(outputs[0].read_bytes())  # the series' received image ("x")
    named = MessageSettings(node="CTPNODE", include_patient_identity=True)
    assert send_due_notifications(db, _channels(http_sink), FAST, named, root) == 1
    ((_, _, body),) = http_sink.received
    assert (body["patient_name"], body["patient_id"]) == ("PHANTOM^CTP", "CTP-PHANTOM")
    assert "patient: PHANTOM^CTP, ID CTP-PHANTOM" in email_text(body)[1]

    db, _ = _result(tmp_path / "purged")  # its image is gone (retention): no name, still sent
    assert send_due_notifications(db, _channels(http_sink), FAST, named, root / "gone") == 1
    assert (http_sink.received[1][2]["patient_name"], http_sink.received[1][2]["patient_id"]) == (
        None,
        None,
    )
    db, _ = _result(tmp_path / "default")
    assert send_due_notifications(db, _channels(http_sink), FAST, SETTINGS, root) == 1
    assert "patient_name" not in http_sink.received[2][2]


def test_outputs_that_give_up_on_a_pacs_tell_the_failure_channels(
    tmp_path, http_sink, outputs
) -> None:
    db, job_id = database_with_a_job(tmp_path)
    enqueue_exports(
        db,
        job_id,
        [
            ("pacs", OutputObject(f"9.{n}", "parametric_maps", p.name))
            for n, p in enumerate(outputs)
        ],
    )
    nobody = {"pacs": Peer("PACS", "127.0.0.1", free_port(), timeout_s=5)}  # nothing listens
    once = RetryPolicy(max_attempts=1)
    assert send_due_exports(db, outputs[0].parent, nobody, once, RULES.failure_channels()) == 0
    assert send_due_notifications(db, _channels(http_sink), FAST, SETTINGS) == 1  # one, not two
    ((_, _, body),) = http_sink.received
    assert (body["event"], body["destination"], body["job"]) == ("export_failed", "pacs", job_id)
    assert "check that the destination is running" in body["failure_reason"]
    assert [n.channel for n in list_notifications(db)] == ["webhook:chat", "email"]


def test_a_vasospasm_result_names_its_flagged_maps_not_volumes(
    tmp_path, http_sink, smtp_sink
) -> None:
    """A profile without stroke volumes (results.json ``volumes`` null): the webhook gets the
    profile and the flagged maps, no volumes, and is notable because a map is flagged; the
    e-mail's subject names the flagged maps."""
    summary = {
        "volumes": None,
        "profile": {"name": "vasospasm", "chosen_by": "rule 1 of profiles"},
        "asymmetry": {"flagged": ["CBV", "MTT"], "sides": ["left", "right"], "maps": {}},
        "warnings": [],
        "quality": [],
    }
    rules = NotifyRules(
        (("webhook:chat", frozenset({"notable_result"})), ("email", frozenset({"result"})))
    )
    db, _ = _result(tmp_path, summary, rules)
    assert send_due_notifications(db, _channels(http_sink, smtp_sink), FAST, SETTINGS) == 2
    ((_, _, body),) = http_sink.received
    assert body["profile"] == "vasospasm" and body["volumes"] is None
    assert body["asymmetry_flagged"] == ["CBV", "MTT"] and body["notable"]
    subject, text = email_text(body)
    assert subject.endswith("(vasospasm), no accession number: CBV, MTT asymmetric")
    assert "flagged hemispheric asymmetry: CBV, MTT" in text
