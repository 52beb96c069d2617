"""Draining the outbox: due exports, grouped per destination, sent; failures retried later."""

from __future__ import annotations

import logging
from collections import Counter, defaultdict
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path

from ctp_node.send.scu import Peer, SendOutcome, SentAssociation, send_over_association
from ctp_node.send.stow import StowPeer, send_stow
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


#: Most bytes of files POSTed in one STOW-RS request (the body is built in memory; a
#: destination may limit uploads): due exports beyond it go in further requests.
STOW_BATCH_BYTES = 64 * 2**20


def send_due_exports(
    db: Database,
    storage_root: Path,
    peers: Mapping[str, Peer | StowPeer],
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
        if peer is None:
            _failed(
                db,
                exports,
                f"destination {destination!r} is no longer configured",
                policy,
                notify,
                final=True,
            )
            continue
        missing = [e for e in exports if not (storage_root / e.path).is_file()]
        why = "the output file is missing from the results folder"
        _failed(db, missing, why, policy, notify, final=True)
        exports = [e for e in exports if e not in missing]
        batches = _batches(peer, storage_root, exports)
        for index, batch in enumerate(batches):
            sent, unreachable = _send_batch(
                db, storage_root, destination, peer, batch, policy, notify
            )
            stored += sent
            if unreachable:  # the later batches would wait for the same timeout: not now
                later = [e for b in batches[index + 1 :] for e in b]
                _failed(db, later, unreachable, policy, notify)
                break
    return stored


def _send_batch(
    db: Database,
    storage_root: Path,
    destination: str,
    peer: Peer | StowPeer,
    exports: list,
    policy: RetryPolicy,
    notify: Sequence[str],
) -> tuple[int, str]:
    """Send ``exports`` in one association (or one STOW-RS request) and record what became of
    each: sent, retried later, or given up (a permanent failure). Returns how many were
    stored, and why the destination could not be reached ("" when it could)."""
    paths = [storage_root / e.path for e in exports]
    if isinstance(peer, StowPeer):
        association = send_stow(peer, paths)
    else:
        association = send_over_association(peer, paths)
    audit(db, association)
    established = association.outcome not in (AuditOutcome.REFUSED, AuditOutcome.UNREACHABLE)
    if not established:
        why = association.reason
        log.warning("%d output(s) for %s not sent: %s", len(exports), destination, why)
    outcomes = association.outcomes
    sent = [e.id for e, o in zip(exports, outcomes, strict=True) if o.stored]
    mark_sent(db, sent)
    failed: dict[tuple[str, bool], list] = defaultdict(list)  # one update per reason
    for export, outcome in zip(exports, outcomes, strict=True):
        if outcome.stored:
            continue
        if established:
            log.warning("%s to %s: %s", export.sop_instance_uid, destination, outcome.message)
        failed[(outcome.message, outcome.permanent)].append(export)
    for (why, permanent), group in failed.items():
        _failed(db, group, why, policy, notify, final=permanent)
    if any(o.permanent for o in outcomes):
        log.error(
            "%d output(s) for %s will not be retried (a permanent failure); fix the cause, "
            "then ctp-node resend",
            sum(o.permanent for o in outcomes),
            destination,
        )
    log.info("%d of %d output(s) stored by %s", len(sent), len(exports), destination)
    unreachable = association.outcome == AuditOutcome.UNREACHABLE
    return len(sent), association.reason if unreachable else ""


def _batches(peer: Peer | StowPeer, storage_root: Path, exports: list) -> list[list]:
    """``exports`` in the groups sent together: all in one association for a DIMSE peer; for
    STOW-RS, requests of at most :data:`STOW_BATCH_BYTES` (at least one file each)."""
    if not isinstance(peer, StowPeer):
        return [exports] if exports else []
    batches: list[list] = []
    size = 0
    for export in exports:
        length = (storage_root / export.path).stat().st_size
        if not batches or size + length > STOW_BATCH_BYTES:
            batches.append([])
            size = 0
        batches[-1].append(export)
        size += length
    return batches


def _failed(
    db: Database,
    exports: list,
    why: str,
    policy: RetryPolicy,
    notify: Sequence[str],
    *,
    final: bool = False,
) -> None:
    """Count a failed attempt for ``exports``: retried after the backoff, or (``final``, or
    out of attempts) given up, telling the notification channels ``notify``."""
    if exports:
        mark_attempt_failed(
            db,
            [e.id for e in exports],
            why,
            max_attempts=policy.max_attempts,
            backoff_s=policy.backoff_s,
            backoff_max_s=policy.backoff_max_s,
            notify=notify,
            final=final,
        )


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
                peer_address=peer.address[:128],
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
