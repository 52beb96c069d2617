"""The audit trail: one record per association received or sent, with the instances of each
series it carried counted by outcome. It says which peer sent or received which study, when,
and how it ended; it holds UIDs, accession numbers, AE titles and addresses, never a
patient's name or ID.

Records are written once, when an association has ended, and never changed. They are kept
for good (a few hundred bytes each); nothing in the node deletes them.
"""

from __future__ import annotations

import datetime as dt
import unicodedata
from dataclasses import dataclass, fields
from typing import Any, TypeVar

from sqlalchemy import Select, or_, select
from sqlalchemy.orm import Session

from ctp_node.store.database import Database
from ctp_node.store.models import AuditAssociation, AuditOutcome, AuditSeries

_Record = TypeVar("_Record", "SeriesCounts", "AssociationAudit")


@dataclass(frozen=True)
class SeriesCounts:
    """The instances of one series in one association, by outcome.

    Attributes
    ----------
    study_instance_uid, series_instance_uid : "" when the data set could not be decoded.
    accession_number, modality : as sent ("" when absent).
    instances : C-STOREs received, or files to send.
    stored : answered Success (or a warning status): a new object, an identical resend, or an
        object that is not CT, acknowledged.
    duplicate : answered 0x0111: the SOP Instance UID was received before with other content.
    refused : answered any other failure status. When sent, ``instances - stored - duplicate
        - refused`` were not sent at all (the association failed or ended first).
    """

    study_instance_uid: str
    series_instance_uid: str
    accession_number: str = ""
    modality: str = ""
    instances: int = 0
    stored: int = 0
    duplicate: int = 0
    refused: int = 0


@dataclass(frozen=True)
class AssociationAudit:
    """One association as the audit trail records it.

    Attributes
    ----------
    direction : ``AuditDirection``: "received" or "sent".
    started_at, ended_at : naive UTC.
    peer_ae_title : the peer's AE title: calling (received) or called (sent).
    peer_address : ``IP:port`` of the peer (received) or ``host:port`` of the destination.
    local_ae_title : the AE title the peer called (received; for a refused association, the
        wrong one it called), or the node's calling AE title (sent).
    outcome : ``AuditOutcome``; ``reason`` says why when it is not "released".
    series : the instances of each series carried, by outcome.
    id : the record's number once recorded, else None.
    """

    direction: str
    started_at: dt.datetime
    ended_at: dt.datetime
    peer_ae_title: str
    peer_address: str
    local_ae_title: str
    outcome: str
    reason: str = ""
    series: tuple[SeriesCounts, ...] = ()
    id: int | None = None

    @property
    def instances(self) -> int:
        return sum(s.instances for s in self.series)

    @property
    def stored(self) -> int:
        return sum(s.stored for s in self.series)

    @property
    def duplicate(self) -> int:
        return sum(s.duplicate for s in self.series)

    @property
    def refused(self) -> int:
        return sum(s.refused for s in self.series)

    @property
    def needs_attention(self) -> bool:
        """It did not end with a release, or some of its instances were not stored."""
        return self.outcome != AuditOutcome.RELEASED or self.stored < self.instances


def record_association(db: Database, audit: AssociationAudit) -> int:
    """Record an association that has ended, with its series; returns the record's id.

    Texts are cut to their column's length and lose control characters (a peer's AE title or
    a malformed UID is whatever the peer sent; PostgreSQL refuses NUL characters).
    """
    with db.session() as s:
        row = AuditAssociation(
            direction=audit.direction,
            started_at=audit.started_at,
            ended_at=audit.ended_at,
            peer_ae_title=_clean(audit.peer_ae_title, 64),
            peer_address=_clean(audit.peer_address, 128),
            local_ae_title=_clean(audit.local_ae_title, 64),
            outcome=audit.outcome,
            reason=_clean(audit.reason, 4000),
            instances=audit.instances,
            stored=audit.stored,
            duplicate=audit.duplicate,
            refused=audit.refused,
        )
        s.add(row)
        s.flush()
        for counts in audit.series:
            s.add(
                AuditSeries(
                    association_id=row.id,
                    study_instance_uid=_clean(counts.study_instance_uid, 64),
                    series_instance_uid=_clean(counts.series_instance_uid, 64),
                    accession_number=_clean(counts.accession_number, 16),
                    modality=_clean(counts.modality, 16),
                    instances=counts.instances,
                    stored=counts.stored,
                    duplicate=counts.duplicate,
                    refused=counts.refused,
                )
            )
        return row.id


def list_associations(
    db: Database,
    *,
    since: dt.datetime | None = None,
    series_instance_uid: str | None = None,
    needs_attention: bool = False,
    carried_instances: bool = False,
    latest: int | None = None,
) -> list[AssociationAudit]:
    """Audited associations, oldest first.

    Parameters
    ----------
    since : only those that ended at or after this time (naive UTC).
    series_instance_uid : only those that carried this series.
    needs_attention : only those that did not end with a release or did not store every
        instance (:attr:`AssociationAudit.needs_attention`).
    carried_instances : only those that carried instances or did not end with a release
        (leaves out the C-ECHOs of a health check).
    latest : only the last ``latest`` of them.
    """
    chosen = _chosen_associations(
        since=since,
        series_instance_uid=series_instance_uid,
        needs_attention=needs_attention,
        carried_instances=carried_instances,
    )
    with db.session() as s:
        rows = list(
            reversed(s.scalars(chosen.order_by(AuditAssociation.id.desc()).limit(latest)).all())
        )
        series = _carried_series(s, chosen, rows)
    return [_association_audit(row, tuple(series[row.id])) for row in rows]


def _chosen_associations(
    *,
    since: dt.datetime | None,
    series_instance_uid: str | None,
    needs_attention: bool,
    carried_instances: bool,
) -> Select:
    """The query for the associations :func:`list_associations` is asked for, in no order."""
    chosen = select(AuditAssociation)
    if since is not None:
        chosen = chosen.where(AuditAssociation.ended_at >= since)
    if series_instance_uid is not None:
        carried = select(AuditSeries.association_id).where(
            AuditSeries.series_instance_uid == series_instance_uid
        )
        chosen = chosen.where(AuditAssociation.id.in_(carried))
    if needs_attention:
        chosen = chosen.where(
            or_(
                AuditAssociation.outcome != AuditOutcome.RELEASED,
                AuditAssociation.stored < AuditAssociation.instances,
            )
        )
    if carried_instances:
        chosen = chosen.where(
            or_(AuditAssociation.outcome != AuditOutcome.RELEASED, AuditAssociation.instances > 0)
        )
    return chosen


def _carried_series(
    session: Session, chosen: Select, rows: list[AuditAssociation]
) -> dict[int, list[SeriesCounts]]:
    """The series each of ``rows`` carried (association id → its series, in the order they
    were recorded); ``chosen`` is the query that found the rows."""
    series: dict[int, list[SeriesCounts]] = {row.id: [] for row in rows}
    if not rows:
        return series
    # The same choice again (not a list of ids: there may be more than SQLite takes as
    # parameters); a record added meanwhile is left out.
    ids = chosen.with_only_columns(AuditAssociation.id).where(AuditAssociation.id >= rows[0].id)
    for item in session.scalars(
        select(AuditSeries).where(AuditSeries.association_id.in_(ids)).order_by(AuditSeries.id)
    ):
        if item.association_id in series:
            series[item.association_id].append(_series_counts(item))
    return series


def _series_counts(item: AuditSeries) -> SeriesCounts:
    return _from_row(SeriesCounts, item)


def _association_audit(row: AuditAssociation, series: tuple[SeriesCounts, ...]) -> AssociationAudit:
    return _from_row(AssociationAudit, row, series=series)


def _from_row(kind: type[_Record], row: object, **given: Any) -> _Record:
    """A ``kind`` dataclass from the row's attributes of the same names, and ``given``."""
    values = {f.name: getattr(row, f.name) for f in fields(kind) if f.name not in given}
    return kind(**values, **given)


def _clean(text: str, length: int) -> str:
    return "".join(c for c in text if not unicodedata.category(c).startswith("C"))[:length]
