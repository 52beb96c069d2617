"""``ctp-node status --audit`` and ``--console``: the audit trails of associations (received
and sent) and of the web console's sign-ins and actions, as tables or JSON lines."""

from __future__ import annotations

import datetime as dt
import json
from dataclasses import asdict

from ctp_node.config import Config, database_password
from ctp_node.status import StatusFilter
from ctp_node.store import open_database
from ctp_node.store.audit import AssociationAudit, SeriesCounts, list_associations
from ctp_node.store.console_audit import list_console_actions
from ctp_node.store.models import utcnow

#: How many associations ``status --audit`` prints as a table (``--json`` writes every one).
AUDIT_TABLE_ROWS = 50


def print_audit(config: Config, *, as_json: bool = False, only: StatusFilter | None = None) -> int:
    """Print the audit trail: a table of the latest associations received and sent, or (with
    ``as_json``) every one as JSON lines, oldest first, for a SIEM. Returns 0."""
    only = only or StatusFilter()
    db = open_database(config.database.url, database_password(config.database), must_exist=True)
    try:
        audits = list_associations(
            db,
            since=(
                utcnow() - dt.timedelta(seconds=only.since_s) if only.since_s is not None else None
            ),
            series_instance_uid=only.series,
            needs_attention=only.failed,
            carried_instances=not as_json,
            latest=None if as_json else AUDIT_TABLE_ROWS,
        )
    finally:
        db.dispose()
    if as_json:
        for audit in audits:
            print(json.dumps(audit_record(audit)))
        return 0
    print(
        f"audit trail: {len(audits)} association(s)"
        + (f", the last {AUDIT_TABLE_ROWS}" if len(audits) == AUDIT_TABLE_ROWS else "")
        + "; those released without instances (C-ECHO) only with --json"
    )
    for audit in audits:
        print("  " + _audit_line(audit))
        for series in audit.series:
            print(
                f"      study {series.study_instance_uid or '?'}"
                f"  acc {series.accession_number or '-'}"
                f"  series {series.series_instance_uid or '?'}  {series.modality or '-'}"
                f"  {_instance_outcomes(series)}"
            )
    return 0


def print_console_audit(
    config: Config, *, as_json: bool = False, only: StatusFilter | None = None
) -> int:
    """Print the web console's audit trail (sign-ins, failed ones, sign-outs, refusals,
    actions): a table of the latest, newest first, or (``as_json``) every one as JSON lines,
    oldest first. ``--failed``: only what was refused. Returns 0."""
    only = only or StatusFilter()
    since = utcnow() - dt.timedelta(seconds=only.since_s) if only.since_s is not None else None
    db = open_database(config.database.url, database_password(config.database), must_exist=True)
    try:
        actions = list_console_actions(
            db,
            latest=None if as_json else AUDIT_TABLE_ROWS,
            since=since,
            series_instance_uid=only.series,
            refused=only.failed,
        )
    finally:
        db.dispose()
    if as_json:
        for action in reversed(actions):
            record = asdict(action)
            record["at"] = action.at.isoformat(timespec="milliseconds") + "Z"
            print(json.dumps(record))
        return 0
    print(f"console audit trail: {len(actions)} action(s), newest first")
    for a in actions:
        where = f"  series {a.series_instance_uid}" if a.series_instance_uid else ""
        job = f"  job {a.job_id}" if a.job_id is not None else ""
        detail = f"  {a.detail}" if a.detail else ""
        print(
            f"  {a.at:%Y-%m-%d %H:%M:%S}  {a.user or '-'} from {a.address}  {a.action}"
            f"  {a.outcome}{where}{job}{detail}"
        )
    return 0


def audit_record(audit: AssociationAudit) -> dict:
    """One association as plain values (times ISO 8601 UTC, with a Z): a JSON line's object."""
    return {
        "id": audit.id,
        "direction": audit.direction,
        "started_at": audit.started_at.isoformat(timespec="milliseconds") + "Z",
        "ended_at": audit.ended_at.isoformat(timespec="milliseconds") + "Z",
        "peer_ae_title": audit.peer_ae_title,
        "peer_address": audit.peer_address,
        "local_ae_title": audit.local_ae_title,
        "outcome": audit.outcome,
        "reason": audit.reason,
        "instances": audit.instances,
        "stored": audit.stored,
        "duplicate": audit.duplicate,
        "refused": audit.refused,
        "series": [asdict(series) for series in audit.series],
    }


def _audit_line(audit: AssociationAudit) -> str:
    """``<start> received from SCANNER at 10.0.0.7:40112 (called CTPNODE) released 12.3 s …``"""
    peer = f"{audit.peer_ae_title or '?'} at {audit.peer_address}"
    who = (
        f"received from {peer} (called {audit.local_ae_title or '?'})"
        if audit.direction == "received"
        else f"sent to {peer} (as {audit.local_ae_title})"
    )
    lasted = (audit.ended_at - audit.started_at).total_seconds()
    line = f"{audit.started_at.isoformat(timespec='seconds')}Z  {who}  {audit.outcome}"
    line += f"  {lasted:.1f} s"
    if audit.instances:
        line += f"  {_instance_outcomes(audit)}"
    return line + (f"  {audit.reason}" if audit.reason else "")


def _instance_outcomes(counts: AssociationAudit | SeriesCounts) -> str:
    """``164 instances: 160 stored, 2 duplicate, 1 refused, 1 not sent``"""
    parts = [f"{counts.stored} stored"]
    parts += [
        f"{n} {name}"
        for n, name in ((counts.duplicate, "duplicate"), (counts.refused, "refused"))
        if n
    ]
    missing = counts.instances - counts.stored - counts.duplicate - counts.refused
    if missing:
        parts.append(f"{missing} not sent")
    plural = "" if counts.instances == 1 else "s"
    return f"{counts.instances} instance{plural}: {', '.join(parts)}"
