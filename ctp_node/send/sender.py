"""Draining the outbox: due exports, grouped per destination, sent; failures retried later."""

from __future__ import annotations

import logging
from collections import Counter, defaultdict
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path

from ctp_node.send.scu import Peer, SendOutcome, SentAssociation, send_over_association
from ctp_node.store import Database
from ctp_node.store.audit import AssociationAudit, SeriesCounts, record_association
from ctp_node.store.models import AuditDirection, AuditOutcome
from ctp_node.store.outbox import due_exports, mark_attempt_failed, mark_sent

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class RetryPolicy:
    max_attempts: int = 10
    backoff_s: float = 30.0
    backoff_max_s: float = 600.0


def send_due_exports(
    db: Database,
    storage_root: Path,
    peers: Mapping[str, Peer],
    policy: RetryPolicy,
    notify: Sequence[str] = (),
) -> int:
    """Send every due export once; returns how many were stored by their destination. An
    export that gives up tells the notification channels ``notify``."""
    by_destination: dict[str, list] = defaultdict(list)
    for export in due_exports(db):
        by_destination[export.destination].append(export)
    stored = 0
    for destination, exports in by_destination.items():
        peer = peers.get(destination)
        ids = [export.id for export in exports]
        if peer is None:
            mark_attempt_failed(
                db,
                ids,
                f"destination {destination!r} is no longer configured",
                max_attempts=policy.max_attempts,
                backoff_s=policy.backoff_s,
                backoff_max_s=policy.backoff_max_s,
                notify=notify,
                final=True,
            )
            continue
        missing = [e for e in exports if not (storage_root / e.path).is_file()]
        if missing:
            mark_attempt_failed(
                db,
                [e.id for e in missing],
                "the output file is missing from the results folder",
                max_attempts=policy.max_attempts,
                backoff_s=policy.backoff_s,
                backoff_max_s=policy.backoff_max_s,
                notify=notify,
                final=True,
            )
            exports = [e for e in exports if e not in missing]
        if not exports:
            continue
        association = send_over_association(peer, [storage_root / e.path for e in exports])
        audit(db, association)
        if association.outcome in (AuditOutcome.REFUSED, AuditOutcome.UNREACHABLE):
            why = association.reason
            log.warning("%d output(s) for %s wait for a retry: %s", len(exports), destination, why)
            mark_attempt_failed(
                db,
                [e.id for e in exports],
                why,
                max_attempts=policy.max_attempts,
                backoff_s=policy.backoff_s,
                backoff_max_s=policy.backoff_max_s,
                notify=notify,
            )
            continue
        outcomes = association.outcomes
        sent = [e.id for e, o in zip(exports, outcomes, strict=True) if o.stored]
        mark_sent(db, sent)
        stored += len(sent)
        for export, outcome in zip(exports, outcomes, strict=True):
            if not outcome.stored:
                log.warning("%s to %s: %s", export.sop_instance_uid, destination, outcome.message)
                mark_attempt_failed(
                    db,
                    [export.id],
                    outcome.message,
                    max_attempts=policy.max_attempts,
                    backoff_s=policy.backoff_s,
                    backoff_max_s=policy.backoff_max_s,
                    notify=notify,
                )
        log.info("%d of %d output(s) stored by %s", len(sent), len(exports), destination)
    return stored


#: The status a peer answers for a SOP Instance UID it holds with other content (PS3.7 C).
_DUPLICATE_SOP_INSTANCE = 0x0111


def audit(db: Database, association: SentAssociation) -> None:
    """Record an association with a destination in the audit trail: its series, and what the
    peer answered for each file. A record that cannot be written is one log line."""
    tallies: dict[tuple[str, str, str, str], Counter] = {}
    for outcome in association.outcomes:
        series = (
            outcome.study_instance_uid,
            outcome.series_instance_uid,
            outcome.accession_number,
            outcome.modality,
        )
        tally = tallies.setdefault(series, Counter())
        tally["instances"] += 1
        tally[_answer(outcome)] += 1
    peer = association.peer
    try:
        record_association(
            db,
            AssociationAudit(
                direction=AuditDirection.SENT,
                started_at=association.started_at,
                ended_at=association.ended_at,
                peer_ae_title=peer.ae_title,
                peer_address=f"{peer.host}:{peer.port}",
                local_ae_title=peer.calling_ae_title,
                outcome=association.outcome,
                reason=association.reason,
                series=tuple(
                    SeriesCounts(
                        *series,
                        instances=tally["instances"],
                        stored=tally["stored"],
                        duplicate=tally["duplicate"],
                        refused=tally["refused"],
                    )
                    for series, tally in tallies.items()
                ),
            ),
        )
    except Exception as exc:
        why = str(exc).splitlines()[0] if str(exc) else type(exc).__name__
        log.error("audit: the association with %s was not recorded: %s", peer, why)


def _answer(outcome: SendOutcome) -> str:
    if outcome.stored:
        return "stored"
    if outcome.status == _DUPLICATE_SOP_INSTANCE:
        return "duplicate"
    return "refused" if outcome.status is not None else "not sent"
