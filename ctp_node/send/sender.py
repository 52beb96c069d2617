"""Draining the outbox: due exports, grouped per destination, sent; failures retried later."""

from __future__ import annotations

import logging
from collections import defaultdict
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path

from ctp_node.send.scu import Peer, PeerUnreachableError, send_files
from ctp_node.store import Database
from ctp_node.store.outbox import due_exports, mark_attempt_failed, mark_sent

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class RetryPolicy:
    max_attempts: int = 10
    backoff_s: float = 30.0
    backoff_max_s: float = 600.0


def send_due_exports(
    db: Database, storage_root: Path, peers: Mapping[str, Peer], policy: RetryPolicy
) -> int:
    """Send every due export once; returns how many were stored by their destination."""
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
                final=True,
            )
            exports = [e for e in exports if e not in missing]
        if not exports:
            continue
        try:
            outcomes = send_files(peer, [storage_root / e.path for e in exports])
        except PeerUnreachableError as exc:
            log.warning("%d output(s) for %s wait for a retry: %s", len(exports), destination, exc)
            mark_attempt_failed(
                db,
                [e.id for e in exports],
                str(exc),
                max_attempts=policy.max_attempts,
                backoff_s=policy.backoff_s,
                backoff_max_s=policy.backoff_max_s,
            )
            continue
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
                )
        log.info("%d of %d output(s) stored by %s", len(sent), len(exports), destination)
    return stored
