"""The audit trail's records on SQLite and PostgreSQL: written once per association, read back
with their series, chosen by time, series and outcome."""

from __future__ import annotations

import datetime as dt

from ctp_node.store.audit import (
    AssociationAudit,
    SeriesCounts,
    list_associations,
    record_association,
)
from ctp_node.store.models import AuditDirection, AuditOutcome, utcnow


def _received(
    ended_at: dt.datetime, outcome: str = AuditOutcome.RELEASED, *series: SeriesCounts
) -> AssociationAudit:
    return AssociationAudit(
        direction=AuditDirection.RECEIVED,
        started_at=ended_at - dt.timedelta(seconds=5),
        ended_at=ended_at,
        peer_ae_title="SCANNER",
        peer_address="10.0.0.7:40112",
        local_ae_title="CTPNODE",
        outcome=outcome,
        series=series,
    )


def test_an_association_is_read_back_with_its_series_and_totals(db) -> None:
    now = utcnow().replace(microsecond=0)
    ct = SeriesCounts("1.2.3", "1.2.3.4", "ACC1", "CT", instances=10, stored=8, duplicate=1)
    sr = SeriesCounts("1.2.3", "1.2.3.5", "ACC1", "SR", instances=1, refused=1)
    record_id = record_association(db, _received(now, AuditOutcome.RELEASED, ct, sr))

    [audit] = list_associations(db)
    assert audit.id == record_id
    assert (audit.direction, audit.peer_ae_title, audit.peer_address) == (
        "received",
        "SCANNER",
        "10.0.0.7:40112",
    )
    assert (audit.started_at, audit.ended_at) == (now - dt.timedelta(seconds=5), now)
    assert audit.series == (ct, sr)
    assert (audit.instances, audit.stored, audit.duplicate, audit.refused) == (11, 8, 1, 1)
    assert audit.needs_attention  # two instances were not stored


def test_what_a_peer_sent_is_cleaned_and_cut_to_fit(db) -> None:
    """A peer's AE title and a malformed UID are whatever it sent; PostgreSQL refuses NUL."""
    bad_uid = "1.2.\x00" + "9" * 80
    audit = AssociationAudit(
        direction=AuditDirection.RECEIVED,
        started_at=utcnow(),
        ended_at=utcnow(),
        peer_ae_title="EVIL\x00\x1bAE",
        peer_address="127.0.0.1:1",
        local_ae_title="CTPNODE",
        outcome=AuditOutcome.RELEASED,
        series=(SeriesCounts(bad_uid, bad_uid, "A" * 40, "CT", 1, 0, 0, 1),),
    )
    record_association(db, audit)
    [read] = list_associations(db)
    assert read.peer_ae_title == "EVILAE"
    assert read.series[0].series_instance_uid == ("1.2." + "9" * 80)[:64]
    assert read.series[0].accession_number == "A" * 16


def test_associations_are_chosen_by_time_series_and_outcome(db) -> None:
    now = utcnow()
    old = _received(
        now - dt.timedelta(hours=3),
        AuditOutcome.RELEASED,
        SeriesCounts("1.2", "1.2.1", "", "CT", 2, 2),
    )
    echo = _received(now - dt.timedelta(minutes=5))
    refused = _received(now - dt.timedelta(minutes=4), AuditOutcome.REFUSED)
    partial = _received(now, AuditOutcome.RELEASED, SeriesCounts("1.2", "1.2.1", "", "CT", 3, 2, 1))
    ids = [record_association(db, audit) for audit in (old, echo, refused, partial)]

    def chosen(**only) -> list[int | None]:
        return [audit.id for audit in list_associations(db, **only)]

    assert chosen() == ids  # oldest first
    assert chosen(since=now - dt.timedelta(hours=1)) == ids[1:]
    assert chosen(series_instance_uid="1.2.1") == [ids[0], ids[3]]
    assert chosen(needs_attention=True) == [ids[2], ids[3]]
    assert chosen(carried_instances=True) == [ids[0], ids[2], ids[3]]  # not the C-ECHO
    assert chosen(latest=2) == ids[2:]
    assert chosen(series_instance_uid="1.2.1", latest=1) == [ids[3]]
    assert list_associations(db, latest=1)[0].series == partial.series
