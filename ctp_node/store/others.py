"""Objects of a study that are not CT (dose reports, localisers, MR, vendors' private objects):
acknowledged so that a whole-study send completes, and recorded here."""

from __future__ import annotations

import datetime as dt
from dataclasses import dataclass

from sqlalchemy import case, func, select

from ctp_node.store.database import Database
from ctp_node.store.models import OtherObject, utcnow


def record_other_object(
    db: Database,
    *,
    calling_ae_title: str,
    sop_class_uid: str,
    sop_instance_uid: str,
    series_instance_uid: str,
    study_instance_uid: str,
    modality: str,
    reason: str,
    size_bytes: int,
    path: str = "",
) -> None:
    """Record an acknowledged object that is not CT; ``path`` "" when it was not kept."""
    with db.session() as s:
        s.add(
            OtherObject(
                received_at=utcnow(),
                calling_ae_title=calling_ae_title[:16],
                sop_class_uid=sop_class_uid[:64],
                sop_instance_uid=sop_instance_uid[:64],
                series_instance_uid=series_instance_uid[:64],
                study_instance_uid=study_instance_uid[:64],
                modality=modality[:16],
                reason=reason,
                path=path,
                size_bytes=size_bytes,
            )
        )


@dataclass(frozen=True)
class OtherSeries:
    """The objects of one series (and SOP class) that were acknowledged but are not CT.

    ``objects`` counts arrivals (a resend counts again); ``kept`` how many were written below
    ``other/``.
    """

    series_instance_uid: str
    study_instance_uid: str
    modality: str
    sop_class_uid: str
    reason: str
    objects: int
    kept: int
    last_received_at: dt.datetime


def list_other_series(db: Database) -> list[OtherSeries]:
    """Other objects grouped by series, SOP class and reason, oldest first."""
    kept = func.sum(case((OtherObject.path != "", 1), else_=0))
    query = (
        select(
            OtherObject.series_instance_uid,
            func.max(OtherObject.study_instance_uid),
            func.max(OtherObject.modality),
            OtherObject.sop_class_uid,
            OtherObject.reason,
            func.count(),
            kept,
            func.max(OtherObject.received_at),
        )
        .group_by(OtherObject.series_instance_uid, OtherObject.sop_class_uid, OtherObject.reason)
        .order_by(func.min(OtherObject.id))
    )
    with db.engine.connect() as connection:
        return [
            OtherSeries(
                *row[:5], objects=int(row[5]), kept=int(row[6] or 0), last_received_at=row[7]
            )
            for row in connection.execute(query)
        ]
