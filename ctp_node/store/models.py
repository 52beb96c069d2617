"""The node's tables: what arrived, what became of each series, jobs and exports, and the
audit trail of associations.

Times are naive UTC ``datetime`` values (SQLite keeps no time zone); use :func:`utcnow`.
"""

from __future__ import annotations

import datetime as dt
import enum

from sqlalchemy import DateTime, Float, ForeignKey, Index, Integer, String, Text
from sqlalchemy.orm import DeclarativeBase, Mapped, mapped_column


def utcnow() -> dt.datetime:
    """The current time as naive UTC, the form every timestamp in the database takes."""
    return dt.datetime.now(dt.UTC).replace(tzinfo=None)


class Base(DeclarativeBase):
    pass


class SeriesState(enum.StrEnum):
    RECEIVING = "receiving"  # instances are arriving; not yet stable
    PERFUSION = "perfusion"  # complete and a perfusion acquisition: a job was created
    IGNORED = "ignored"  # complete but not a perfusion acquisition (reason recorded)
    ERROR = "error"  # could not be examined (reason recorded); looked at again when more arrive


class JobState(enum.StrEnum):
    QUEUED = "queued"
    RUNNING = "running"
    DONE = "done"
    FAILED = "failed"  # the acquisition cannot give maps (reason recorded); final
    SUPERSEDED = "superseded"  # a newer job of the series replaced it before it finished


class ExportState(enum.StrEnum):
    PENDING = "pending"
    SENT = "sent"
    FAILED = "failed"  # gave up after the configured attempts (resend or a restart retries it)
    CANCELLED = "cancelled"  # a newer version of the result replaced it before it was sent


class NotificationState(enum.StrEnum):
    PENDING = "pending"
    SENT = "sent"
    FAILED = "failed"  # gave up after ``notifications.max_attempts`` (``ctp-node status`` shows it)


class NotificationEvent(enum.StrEnum):
    """What a notification tells."""

    RESULT = "result"  # a job's result was recorded (its exports are queued)
    FAILURE = "failure"  # a job failed for good (its failure notice is queued)
    EXPORT_FAILED = "export_failed"  # an output gave up on a destination


class AuditDirection(enum.StrEnum):
    RECEIVED = "received"  # a peer called the node's listener
    SENT = "sent"  # the node called a destination


class AuditOutcome(enum.StrEnum):
    """How an association ended."""

    RELEASED = "released"  # A-RELEASE: the normal end (each instance's outcome is counted)
    ABORTED = "aborted"  # A-ABORT, or the connection closed or was lost without a release
    REFUSED = "refused"  # A-ASSOCIATE-RJ: by the node (received) or by the peer (sent)
    TIMED_OUT = "timed_out"  # the peer said nothing for the timeout; the node ended it
    UNREACHABLE = "unreachable"  # sent: no connection, or no answer to the request


class Instance(Base):
    """One received SOP instance, durably written to the spool before it was recorded."""

    __tablename__ = "instances"

    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    sop_instance_uid: Mapped[str] = mapped_column(String(64), unique=True)
    sop_class_uid: Mapped[str] = mapped_column(String(64))
    series_instance_uid: Mapped[str] = mapped_column(
        String(64), ForeignKey("series.series_instance_uid"), index=True
    )
    transfer_syntax_uid: Mapped[str] = mapped_column(String(64))
    path: Mapped[str] = mapped_column(Text)  # relative to storage.root
    size_bytes: Mapped[int] = mapped_column(Integer)
    calling_ae_title: Mapped[str] = mapped_column(String(16))
    received_at: Mapped[dt.datetime] = mapped_column(DateTime)
    # SHA-256 of the received bytes (hex): tells a harmless resend from a UID collision.
    sha256: Mapped[str] = mapped_column(String(64), default="")
    # What the header announces of the acquisition's size (None when absent), and where the
    # image lies: read at receive time so that completion needs no second look at the files.
    temporal_positions: Mapped[int | None] = mapped_column(Integer, nullable=True)
    images_in_acquisition: Mapped[int | None] = mapped_column(Integer, nullable=True)
    frames: Mapped[int] = mapped_column(Integer, default=1)
    # ImagePositionPatient projected on the slice normal, mm; None for multi-frame instances.
    slice_position_mm: Mapped[float | None] = mapped_column(Float, nullable=True)


class Series(Base):
    """A series as the node has seen it, and what it decided about it."""

    __tablename__ = "series"

    series_instance_uid: Mapped[str] = mapped_column(String(64), primary_key=True)
    study_instance_uid: Mapped[str] = mapped_column(String(64), index=True)
    modality: Mapped[str] = mapped_column(String(16), default="")
    accession_number: Mapped[str] = mapped_column(String(16), default="")
    series_number: Mapped[int | None] = mapped_column(Integer, nullable=True)
    instance_count: Mapped[int] = mapped_column(Integer, default=0)
    first_received_at: Mapped[dt.datetime] = mapped_column(DateTime)
    last_received_at: Mapped[dt.datetime] = mapped_column(DateTime)
    state: Mapped[str] = mapped_column(String(16), default=SeriesState.RECEIVING)
    reason: Mapped[str] = mapped_column(Text, default="")
    decided_at: Mapped[dt.datetime | None] = mapped_column(DateTime, nullable=True)
    # When retention deleted the received files (their records stay), None while they exist.
    purged_at: Mapped[dt.datetime | None] = mapped_column(DateTime, nullable=True)

    __table_args__ = (Index("ix_series_state_last", "state", "last_received_at"),)


class Job(Base):
    """Processing of one complete perfusion series; claimed by a worker under a lease."""

    __tablename__ = "jobs"

    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    series_instance_uid: Mapped[str] = mapped_column(
        String(64), ForeignKey("series.series_instance_uid"), index=True
    )
    state: Mapped[str] = mapped_column(String(16), default=JobState.QUEUED, index=True)
    attempts: Mapped[int] = mapped_column(Integer, default=0)
    worker_id: Mapped[str] = mapped_column(String(128), default="")
    lease_expires_at: Mapped[dt.datetime | None] = mapped_column(DateTime, nullable=True)
    created_at: Mapped[dt.datetime] = mapped_column(DateTime)
    started_at: Mapped[dt.datetime | None] = mapped_column(DateTime, nullable=True)
    finished_at: Mapped[dt.datetime | None] = mapped_column(DateTime, nullable=True)
    error: Mapped[str] = mapped_column(Text, default="")
    # Transient failures (disk full, database locked) wait until then before the next attempt;
    # ``retries`` counts them (``attempts`` counts tries that crashed or raised a bug).
    next_attempt_at: Mapped[dt.datetime | None] = mapped_column(DateTime, nullable=True)
    retries: Mapped[int] = mapped_column(Integer, default=0)
    # The result's version: its inputs (SHA-256 of the sorted input SOP Instance UIDs, the
    # chosen AIF/VOF, the engine's parameters and version), its number within the series, the
    # key its output UIDs derive from, what it supersedes and why.
    content_digest: Mapped[str] = mapped_column(String(64), default="")
    input_instances: Mapped[int] = mapped_column(Integer, default=0)
    version: Mapped[int] = mapped_column(Integer, default=0)
    version_key: Mapped[str] = mapped_column(String(64), default="")
    predecessor_job_id: Mapped[int | None] = mapped_column(Integer, nullable=True)
    version_reason: Mapped[str] = mapped_column(Text, default="")
    requested_by: Mapped[str] = mapped_column(String(32), default="scheduler")
    # "Z,Y,X" voxel indices chosen by a person (semi-automatic AIF/VOF), empty = automatic
    aif_zyx: Mapped[str] = mapped_column(String(32), default="")
    vof_zyx: Mapped[str] = mapped_column(String(32), default="")
    # "Z,Y,X,R" a region a person gave for the reports' statistics (a sphere), empty = none
    region: Mapped[str] = mapped_column(String(48), default="")
    result_dir: Mapped[str] = mapped_column(Text, default="")  # relative to storage.root
    summary_json: Mapped[str] = mapped_column(Text, default="")


class Export(Base):
    """One output object to one destination, retried with backoff until sent or given up."""

    __tablename__ = "exports"

    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    job_id: Mapped[int] = mapped_column(Integer, ForeignKey("jobs.id"), index=True)
    destination: Mapped[str] = mapped_column(String(64))
    sop_instance_uid: Mapped[str] = mapped_column(String(64))
    output_kind: Mapped[str] = mapped_column(String(32))
    path: Mapped[str] = mapped_column(Text)  # relative to storage.root
    state: Mapped[str] = mapped_column(String(16), default=ExportState.PENDING, index=True)
    attempts: Mapped[int] = mapped_column(Integer, default=0)
    next_attempt_at: Mapped[dt.datetime] = mapped_column(DateTime)
    last_error: Mapped[str] = mapped_column(Text, default="")
    sent_at: Mapped[dt.datetime | None] = mapped_column(DateTime, nullable=True)


class Notification(Base):
    """One event (a result, a failure) to tell one channel (a webhook, the e-mail), retried
    with backoff until delivered or given up. What it says is read from its job when it is
    sent; only the failure's reason is kept here."""

    __tablename__ = "notifications"

    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    job_id: Mapped[int] = mapped_column(Integer, ForeignKey("jobs.id"), index=True)
    event: Mapped[str] = mapped_column(String(16))  # NotificationEvent
    channel: Mapped[str] = mapped_column(String(80))  # "webhook:<name>" or "email"
    # export_failed: the destination that gave up; "" for the other events
    destination: Mapped[str] = mapped_column(String(64), default="")
    detail: Mapped[str] = mapped_column(Text, default="")  # the failure's reason, no PHI
    state: Mapped[str] = mapped_column(String(16), default=NotificationState.PENDING, index=True)
    attempts: Mapped[int] = mapped_column(Integer, default=0)
    created_at: Mapped[dt.datetime] = mapped_column(DateTime)
    next_attempt_at: Mapped[dt.datetime] = mapped_column(DateTime)
    last_error: Mapped[str] = mapped_column(Text, default="")
    sent_at: Mapped[dt.datetime | None] = mapped_column(DateTime, nullable=True)


class Rejection(Base):
    """Something the node refused, with why: a C-STORE (the received bytes are kept in
    quarantine), an association or a presentation context."""

    __tablename__ = "rejections"

    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    received_at: Mapped[dt.datetime] = mapped_column(DateTime)
    # "c-store", "association" or "context"; for the last two ``status`` is 0 and the
    # reason gives the A-ASSOCIATE-RJ result/source/reason or the refused context.
    kind: Mapped[str] = mapped_column(String(16), default="c-store")
    peer_address: Mapped[str] = mapped_column(String(64), default="")
    calling_ae_title: Mapped[str] = mapped_column(String(16))
    sop_instance_uid: Mapped[str] = mapped_column(String(64), default="")
    status: Mapped[int] = mapped_column(Integer)
    reason: Mapped[str] = mapped_column(Text)
    quarantine_path: Mapped[str] = mapped_column(Text, default="")
    size_bytes: Mapped[float] = mapped_column(Float, default=0)


class OtherObject(Base):
    """An object of the study that is not CT (a dose report, a localiser SC, an MR image…):
    acknowledged so that a whole-study send completes, recorded here, and kept only when
    ``ingest.keep_other_objects`` is true."""

    __tablename__ = "other_objects"

    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    received_at: Mapped[dt.datetime] = mapped_column(DateTime)
    calling_ae_title: Mapped[str] = mapped_column(String(16))
    sop_class_uid: Mapped[str] = mapped_column(String(64))
    sop_instance_uid: Mapped[str] = mapped_column(String(64), index=True)
    series_instance_uid: Mapped[str] = mapped_column(String(64), default="", index=True)
    study_instance_uid: Mapped[str] = mapped_column(String(64), default="")
    modality: Mapped[str] = mapped_column(String(16), default="")
    reason: Mapped[str] = mapped_column(Text, default="")
    path: Mapped[str] = mapped_column(Text, default="")  # relative to storage.root; "" = not kept
    size_bytes: Mapped[int] = mapped_column(Integer, default=0)


class AuditAssociation(Base):
    """One association, received or sent, recorded when it ended: who, when, how it ended, and
    how many instances it carried with what outcome (per series in ``audit_series``). Kept for
    good: a row is about 200 bytes."""

    __tablename__ = "audit_associations"

    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    direction: Mapped[str] = mapped_column(String(16))  # AuditDirection
    started_at: Mapped[dt.datetime] = mapped_column(DateTime)
    ended_at: Mapped[dt.datetime] = mapped_column(DateTime, index=True)
    # The peer: its AE title (calling when received, called when sent; "" when the request
    # could not be decoded) and "IP:port" (received) or "host:port" (sent).
    peer_ae_title: Mapped[str] = mapped_column(String(64), default="")
    peer_address: Mapped[str] = mapped_column(String(128), default="")
    # The node's side: the AE title the peer called (received), or the node's calling AE.
    local_ae_title: Mapped[str] = mapped_column(String(64), default="")
    outcome: Mapped[str] = mapped_column(String(16))  # AuditOutcome
    reason: Mapped[str] = mapped_column(Text, default="")
    # Instances: C-STOREs received (or files to send), and their outcome: stored (Success or
    # a warning), duplicate (0x0111, a UID received before with other content), refused (any
    # other failure). Sent: instances - stored - duplicate - refused were not sent at all.
    instances: Mapped[int] = mapped_column(Integer, default=0)
    stored: Mapped[int] = mapped_column(Integer, default=0)
    duplicate: Mapped[int] = mapped_column(Integer, default=0)
    refused: Mapped[int] = mapped_column(Integer, default=0)


class AuditSeries(Base):
    """The instances of one series in one audited association, counted by outcome."""

    __tablename__ = "audit_series"

    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    association_id: Mapped[int] = mapped_column(
        Integer, ForeignKey("audit_associations.id"), index=True
    )
    # "" when the data set could not be decoded.
    study_instance_uid: Mapped[str] = mapped_column(String(64), default="")
    series_instance_uid: Mapped[str] = mapped_column(String(64), default="", index=True)
    accession_number: Mapped[str] = mapped_column(String(16), default="")
    modality: Mapped[str] = mapped_column(String(16), default="")
    instances: Mapped[int] = mapped_column(Integer, default=0)
    stored: Mapped[int] = mapped_column(Integer, default=0)
    duplicate: Mapped[int] = mapped_column(Integer, default=0)
    refused: Mapped[int] = mapped_column(Integer, default=0)


class ConsoleActionKind(enum.StrEnum):
    """What a person did in the web console."""

    SIGN_IN = "sign-in"
    SIGN_IN_FAILED = "sign-in failed"
    SIGN_OUT = "sign-out"
    REFUSED = "refused"  # a request without a valid sign-in (e.g. a proxy header from elsewhere)
    REPROCESS = "reprocess"
    RESEND = "resend"
    RETRY = "retry"


class ConsoleAction(Base):
    """One action in the web console, recorded when it was answered: who (the signed-in user,
    the name tried, or the peer's address), from where, what, on which series or job, and how
    it ended. Kept for good, like the associations' audit trail; no patient name or ID."""

    __tablename__ = "console_actions"

    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    at: Mapped[dt.datetime] = mapped_column(DateTime, index=True)  # naive UTC
    user: Mapped[str] = mapped_column(String(64), default="")
    address: Mapped[str] = mapped_column(String(64), default="")  # the browser's (or proxy's) IP
    action: Mapped[str] = mapped_column(String(32))  # ConsoleActionKind
    series_instance_uid: Mapped[str] = mapped_column(String(64), default="")
    job_id: Mapped[int | None] = mapped_column(Integer, nullable=True)
    outcome: Mapped[str] = mapped_column(String(16), default="done")  # done, refused
    detail: Mapped[str] = mapped_column(Text, default="")  # AIF/VOF, destinations, why refused
