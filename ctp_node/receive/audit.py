"""The listener's audit trail: one record per association, written when it has ended, with who
called, when, how it ended, and the instances of each series it carried counted by the status
the node answered (:mod:`ctp_node.store.audit`).

The C-STORE handler only counts, in memory (:meth:`AssociationTally.count`); the record is
written once per association, so auditing adds no database write per instance. An association
ends in pynetdicom's threads in an order that varies (the connection may close before the
abort is noticed, and a C-STORE may still be answered after it closed), so the record is
written by a short-lived thread that waits for the association's own thread to finish.
A failure to write it is one log line: it never changes a C-STORE's status.
"""

from __future__ import annotations

import datetime as dt
import logging
import queue
import threading
from dataclasses import dataclass, field

from pynetdicom import evt
from pynetdicom.association import Association
from pynetdicom.pdu_primitives import A_ABORT

from ctp_node.receive.admission import Requestor
from ctp_node.receive.header import ReceivedHeader
from ctp_node.store import Database
from ctp_node.store.audit import AssociationAudit, SeriesCounts, record_association
from ctp_node.store.models import AuditDirection, AuditOutcome, utcnow

log = logging.getLogger(__name__)

#: How long the record waits for the association's last handler (a C-STORE being written,
#: a database busy for up to its 30 s timeout) before it is written with what was counted.
HANDLERS_DONE_WITHIN_S = 60.0

STATUS_SUCCESS = 0x0000
STATUS_DUPLICATE_SOP_INSTANCE = 0x0111
#: Warning statuses (PS3.4 B.2.3) store the object too.
_STORED = {STATUS_SUCCESS, 0xB000, 0xB006, 0xB007}


@dataclass
class _SeriesTally:
    accession_number: str = ""
    modality: str = ""
    instances: int = 0
    stored: int = 0
    duplicate: int = 0
    refused: int = 0


@dataclass
class _OpenAssociation:
    """What is known of one association while it lasts."""

    started_at: dt.datetime
    peer_address: str
    series: dict[tuple[str, str], _SeriesTally] = field(default_factory=dict)
    peer_aborted: bool = False
    timed_out: bool = False
    closed_at: dt.datetime | None = None  # when the connection closed


class AssociationTally:
    """Counts each association's instances by series and outcome, and records the association
    in the audit trail when it has ended.

    Parameters
    ----------
    db : where the records go.
    """

    def __init__(self, db: Database) -> None:
        self._db = db
        self._open: dict[Association, _OpenAssociation] = {}
        self._lock = threading.Lock()
        self._ended: queue.Queue[tuple[Association, _OpenAssociation]] = queue.Queue()
        threading.Thread(target=self._write, name="audit writer", daemon=True).start()

    def handlers(self) -> list[tuple]:
        """The pynetdicom event handlers to bind (with ``start_server``)."""
        return [
            (evt.EVT_CONN_OPEN, self._opened),
            (evt.EVT_ABORTED, self._aborted),
            (evt.EVT_ACSE_RECV, self._acse_received),
            (evt.EVT_CONN_CLOSE, self._closed),
        ]

    def count(self, assoc: Association, header: ReceivedHeader | None, status: object) -> None:
        """Count one C-STORE of ``header``'s series (None: the data set could not be decoded)
        by the status answered (an int or a data set with ``Status``). Never raises."""
        try:
            with self._lock:
                current = self._open.get(assoc)
            if current is None:
                return
            code = int(getattr(status, "Status", status))  # type: ignore[call-overload]
            key = (header.study_instance_uid, header.series_instance_uid) if header else ("", "")
            series = current.series.get(key)
            if series is None:
                series = current.series[key] = _SeriesTally(
                    header.accession_number if header else "", header.modality if header else ""
                )
            series.instances += 1
            if code in _STORED:
                series.stored += 1
            elif code == STATUS_DUPLICATE_SOP_INSTANCE:
                series.duplicate += 1
            else:
                series.refused += 1
        except Exception as exc:  # counting must never cost a C-STORE its answer
            log.error("audit: could not count a C-STORE: %s", exc)

    def _opened(self, event: evt.Event) -> None:
        host, port = event.address[0], event.address[1]
        with self._lock:
            self._open[event.assoc] = _OpenAssociation(utcnow(), f"{host}:{port}")

    def _aborted(self, event: evt.Event) -> None:
        # The node aborts when the peer has said nothing for node.network_timeout_s; the idle
        # timer tells that apart from an abort by the peer, but only now.
        with self._lock:
            current = self._open.get(event.assoc)
        if current is not None and event.assoc.dul.idle_timer_expired():
            current.timed_out = True

    def _acse_received(self, event: evt.Event) -> None:
        # The peer's A-ABORT, seen as the association's reactor takes it from the queue (which
        # may happen before or after the connection's close is reported)
        if isinstance(event.primitive, A_ABORT):
            with self._lock:
                current = self._open.get(event.assoc)
            if current is not None:
                current.peer_aborted = True

    def _closed(self, event: evt.Event) -> None:
        assoc = event.assoc
        with self._lock:
            current = self._open.get(assoc)
            if current is None or current.closed_at is not None:
                return
            current.closed_at = utcnow()
        # The peer's A-ABORT may still wait in the queue (then the reactor has not taken it)
        current.peer_aborted = current.peer_aborted or assoc.acse.is_aborted("a-abort")
        threading.Thread(
            target=self._record, args=(assoc, current), name="audit", daemon=False
        ).start()

    def _record(self, assoc: Association, current: _OpenAssociation) -> None:
        """Wait until the association's thread has finished (a C-STORE may still be answered
        after the connection closed), then write its record."""
        if assoc.is_alive():
            assoc.join(HANDLERS_DONE_WITHIN_S)
        with self._lock:
            self._open.pop(assoc, None)
        self._ended.put((assoc, current))

    def _write(self) -> None:
        """The records, written by one thread: a flood of short associations never has a
        thread per association waiting for the database (it exhausted the connection pool,
        and the scanner's own C-STOREs waited behind it)."""
        while True:
            assoc, current = self._ended.get()
            try:
                audit = association_audit(assoc, current)
                log_ending(audit)
                record_association(self._db, audit)
            except Exception as exc:
                why = str(exc).splitlines()[0] if str(exc) else type(exc).__name__
                peer = current.peer_address
                log.error("audit: the association from %s was not recorded: %s", peer, why)


def association_audit(assoc: Association, current: _OpenAssociation) -> AssociationAudit:
    """The audit record of an association that has ended."""
    requestor = Requestor.of(assoc)
    outcome, reason = _ending(assoc, current)
    return AssociationAudit(
        direction=AuditDirection.RECEIVED,
        started_at=current.started_at,
        ended_at=current.closed_at or utcnow(),
        peer_ae_title=requestor.ae_title if assoc.requestor.primitive else "",
        peer_address=current.peer_address,
        local_ae_title=requestor.called_ae_title if assoc.requestor.primitive else "",
        outcome=outcome,
        reason=reason,
        series=tuple(
            SeriesCounts(
                study_instance_uid=study,
                series_instance_uid=series,
                accession_number=tally.accession_number,
                modality=tally.modality,
                instances=tally.instances,
                stored=tally.stored,
                duplicate=tally.duplicate,
                refused=tally.refused,
            )
            for (study, series), tally in current.series.items()
        ),
    )


#: At most this many series are named on an association's log line.
LOGGED_SERIES_MAX = 5


def log_ending(audit: AssociationAudit) -> None:
    """One log line for an association that carried instances or ended badly: who, how it
    ended, and its studies and series by UID and accession number. Refusals are logged by
    :mod:`ctp_node.receive.admission`; a C-ECHO that ended well, or a connection that never
    asked for an association (a port probe), is not worth a line."""
    if audit.outcome == AuditOutcome.REFUSED or not audit.local_ae_title:
        return
    if audit.outcome == AuditOutcome.RELEASED and not audit.instances:
        return
    lasted = (audit.ended_at - audit.started_at).total_seconds()
    counts = f"{audit.instances} instance(s), {audit.stored} stored"
    if audit.duplicate or audit.refused:
        counts += f", {audit.duplicate} duplicate, {audit.refused} refused"
    series = [
        f"study {s.study_instance_uid or '?'} (accession {s.accession_number or '-'}) series "
        f"{s.series_instance_uid or '?'} ({s.modality or '-'}) {s.instances}"
        for s in audit.series[:LOGGED_SERIES_MAX]
    ]
    if len(audit.series) > LOGGED_SERIES_MAX:
        series.append(f"and {len(audit.series) - LOGGED_SERIES_MAX} more series")
    level = logging.INFO if audit.outcome == AuditOutcome.RELEASED else logging.WARNING
    log.log(
        level,
        "association from %s at %s to %s %s after %.1f s%s: %s%s",
        audit.peer_ae_title or "?",
        audit.peer_address,
        audit.local_ae_title or "?",
        audit.outcome,
        lasted,
        f" ({audit.reason})" if audit.reason else "",
        counts,
        "; " + "; ".join(series) if series else "",
    )


def _ending(assoc: Association, current: _OpenAssociation) -> tuple[str, str]:
    """How and why the association ended: an ``AuditOutcome`` and a sentence."""
    if assoc.is_rejected:
        answer = assoc.acceptor.primitive
        return AuditOutcome.REFUSED, (
            f"{answer.reason_str} (A-ASSOCIATE-RJ {answer.result}/{answer.result_source}/"
            f"{answer.diagnostic}, {answer.result_str.lower()})"
        )
    if assoc.requestor.primitive is None:
        # pynetdicom closes at once a request it cannot decode, at the ACSE timeout an idle one
        lasted = ((current.closed_at or utcnow()) - current.started_at).total_seconds()
        if lasted >= (assoc.acse_timeout or 0):
            return AuditOutcome.TIMED_OUT, (
                f"no association request within {assoc.acse_timeout:g} s (node.acse_timeout_s)"
            )
        return AuditOutcome.ABORTED, (
            "the connection closed before an association was negotiated (nothing was sent, or "
            "a request that could not be decoded: see the refusals)"
        )
    if assoc.is_released:
        return AuditOutcome.RELEASED, ""
    if current.timed_out:
        return AuditOutcome.TIMED_OUT, (
            f"the peer sent nothing for {assoc.network_timeout:g} s (node.network_timeout_s); "
            "the node aborted the association"
        )
    if current.peer_aborted:
        return AuditOutcome.ABORTED, "the peer aborted the association (A-ABORT)"
    return AuditOutcome.ABORTED, (
        "the connection was closed or lost without a release (A-P-ABORT), or the node stopped"
    )
