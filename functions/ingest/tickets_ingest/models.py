"""Plain data passed between the layers. No behaviour beyond derived properties."""

from __future__ import annotations

import enum
from dataclasses import dataclass, field
from datetime import datetime


class ExportType(enum.StrEnum):
    """How a file was applied, as recorded in ``tickets.import_meta.export_type``."""

    BASELINE = "baseline"  # the first file applied onto an empty watermark
    DELTA = "delta"  # newer than the watermark: plain upsert, advances the watermark
    LATE = "late"  # at/older than the watermark, never applied: recency-guarded upsert
    REPLAY = "replay"  # re-applied from processed/ by an operator: recency-guarded
    QUARANTINE = "quarantine"  # not applied: moved to quarantine/ by an operator
    PAUSE = "pause"  # no file: an operator paused the dataset (who, why in metadata)
    RESUME = "resume"  # no file: an operator resumed it


@dataclass(frozen=True)
class StreamObject:
    """One object listed under ``changes/``."""

    key: str
    etag: str
    size: int
    timestamp: datetime  # from the name, Africa/Nairobi

    @property
    def name(self) -> str:
        return self.key.rsplit("/", 1)[-1]


@dataclass(frozen=True)
class PlannedFile:
    obj: StreamObject
    export_type: ExportType
    # The key the ledger and the rows' lineage record: the changes/ key, also when a replay
    # reads the object from processed/.
    ledger_key: str | None = None

    @property
    def source_key(self) -> str:
        return self.ledger_key or self.obj.key


@dataclass(frozen=True)
class Conflict:
    """A key already applied whose object now has a different ETag."""

    obj: StreamObject
    applied_etag: str


@dataclass(frozen=True)
class HeldFile:
    """A stream file dated beyond now + FUTURE_TOLERANCE_SECONDS: not applied (it would pin
    the watermark in the future), and not in the way of the files after it. It becomes
    pending once its time comes, unless an operator quarantines it."""

    obj: StreamObject
    reason: str


@dataclass(frozen=True)
class Plan:
    """What a sync of one dataset would do, in order. Built by ``core.plan.plan_sync``."""

    dataset: str
    watermark: str | None
    to_apply: tuple[PlannedFile, ...]  # oldest first: late files and pending files
    to_archive: tuple[StreamObject, ...]  # applied (same ETag) but still in changes/
    conflicts: tuple[Conflict, ...]
    ignored: tuple[str, ...]  # keys under changes/ that are not stream files
    held: tuple[HeldFile, ...] = ()  # dated too far ahead of now: not applied yet

    @property
    def pending(self) -> tuple[PlannedFile, ...]:
        return tuple(p for p in self.to_apply if p.export_type is not ExportType.LATE)

    @property
    def late(self) -> tuple[PlannedFile, ...]:
        return tuple(p for p in self.to_apply if p.export_type is ExportType.LATE)


@dataclass
class RowCounts:
    read: int = 0  # data records in the file
    upserted: int = 0  # rows inserted or updated in the table
    skipped_older: int = 0  # late/replay rows not applied because the stored row is newer
    alarm_filtered: int = 0
    sentinel_filtered: int = 0
    rejected: int = 0  # rows sent to tickets.rejected_rows
    duplicate_ids: int = 0  # rows superseded by a later row with the same ticket_id


class DriftPolicy(enum.StrEnum):
    """What a file whose header differs from the contract gets (SCHEMA_DRIFT)."""

    REJECT = "reject"  # the file is rejected at line 1, naming every unknown and missing column
    RESCUE = "rescue"  # applied: unknown columns go to ``rescued``, missing ones are left alone


@dataclass(frozen=True)
class HeaderDrift:
    """How a file's header differs from the contract (a file applied under ``rescue``)."""

    added: tuple[str, ...]  # columns the contract does not know, in the file's order
    missing: tuple[str, ...]  # contract columns the file lacks, in the contract's order

    def as_metadata(self) -> dict[str, list[str]]:
        """The ledger's ``metadata["schema_drift"]`` (read by the status view)."""
        return {"added": list(self.added), "missing": list(self.missing)}


@dataclass
class FileResult:
    key: str
    etag: str
    export_type: ExportType
    counts: RowCounts
    bytes_read: int
    duration_ms: int
    committed: bool  # False on a dry run
    archived: bool = False
    timings_ms: dict[str, int] = field(default_factory=dict)
    drift: HeaderDrift | None = None  # the header differed from the contract (under rescue)


@dataclass(frozen=True)
class BlockedFile:
    key: str
    etag: str
    reason: str
    line: int | None
    column: str | None
    since: datetime
    attempts: int


@dataclass
class SyncReport:
    dataset: str
    plan: Plan
    applied: list[FileResult] = field(default_factory=list)
    archived: list[str] = field(default_factory=list)
    rejected: BlockedFile | None = None
    stopped_early: bool = False  # the caller's time budget ran out between files
    dry_run: bool = False
    watermark_after: str | None = None

    @property
    def ok(self) -> bool:
        return self.rejected is None


@dataclass(frozen=True)
class Pause:
    """A dataset held by an operator for planned work: nothing applies until it is resumed."""

    dataset: str
    paused_by: str
    paused_at: datetime
    reason: str

    def describe(self) -> str:
        since = f"{self.paused_at:%Y-%m-%d %H:%M:%S %Z}"
        return f"paused by {self.paused_by} since {since}: {self.reason}"


@dataclass(frozen=True)
class WatermarkAge:
    """How far behind the table is, from the watermark's name and a clock. Never negative."""

    lag_seconds: float | None  # now minus the watermark's time; None: no watermark, or in_future
    clock_skew_seconds: float | None  # the watermark's time is this far ahead of now (else None)
    in_future: bool = False  # ahead by more than the tolerance: a future-dated file was applied


@dataclass(frozen=True)
class LockHolder:
    """The session holding a dataset's sync lock, and what its lease says about it."""

    pid: int
    application_name: str | None
    client_addr: str | None  # None: a local socket
    heartbeat_age_seconds: float | None  # None: no lease names this session
    stale_seconds: float | None  # the holder's LOCK_STALE_SECONDS (from its lease)
    # Another role's session, whose backend_start (and address) this role may not see
    # without pg_read_all_stats: no lease can be matched to it, so it is never taken over.
    hidden: bool = False

    @property
    def has_lease(self) -> bool:
        return self.heartbeat_age_seconds is not None

    @property
    def silent(self) -> bool:
        """Its heartbeat stopped: the next sync ends its session and takes the dataset."""
        age, stale = self.heartbeat_age_seconds, self.stale_seconds
        return age is not None and stale is not None and age > stale

    def describe(self) -> str:
        if self.hidden:
            return (
                f"pid {self.pid}, {self.application_name or 'unknown client'}, a session of "
                "another role that this role may not look into, so its lease cannot be "
                "checked: not taken over automatically (to take over the syncs of other "
                "roles, GRANT pg_read_all_stats and pg_signal_backend: tickets-ingest grants)"
            )
        who = (
            f"pid {self.pid}, {self.application_name or 'unknown client'} "
            f"from {self.client_addr or 'local socket'}"
        )
        if self.heartbeat_age_seconds is None:
            return f"{who}, no lease: not taken over automatically"
        if self.silent:
            return (
                f"{who}, SILENT: no heartbeat for {self.heartbeat_age_seconds:.0f} s "
                f"(stale after {self.stale_seconds:g} s); the next sync takes it over"
            )
        return f"{who}, heartbeat {self.heartbeat_age_seconds:.0f} s ago"
