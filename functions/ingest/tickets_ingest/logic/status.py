"""What an operator needs to know about a dataset, at a glance or as JSON."""

from __future__ import annotations

from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any

from tickets_ingest.core.keys import watermark_age
from tickets_ingest.core.pipestate import PipeState, pipe_state
from tickets_ingest.dal import activity, ledger, pauses
from tickets_ingest.dal import sql as statements
from tickets_ingest.dal.activity import Activity, LastApplied
from tickets_ingest.dal.lease import lock_holder
from tickets_ingest.logic.operator import missing_files
from tickets_ingest.logic.runtime import Runtime
from tickets_ingest.logic.sync import plan_dataset
from tickets_ingest.models import BlockedFile, LockHolder, Pause, Plan, PlannedFile


@dataclass(frozen=True)
class LedgerEntry:
    """One file decision from ``tickets.import_meta``."""

    id: int
    key: str
    etag: str
    export_type: str
    rows_read: int
    rows_upserted: int
    rows_skipped_older: int
    rows_alarm_filtered: int
    rows_sentinel_filtered: int
    rows_rejected: int
    rows_duplicate: int
    bytes_read: int
    finished_at: datetime
    duration_ms: int
    metadata: dict[str, Any]

    def to_json(self) -> dict[str, Any]:
        return {**vars(self), "finished_at": self.finished_at.isoformat()}


def history(
    runtime: Runtime,
    dataset: str,
    *,
    limit: int = 20,
    export_type: str | None = None,
    since: datetime | None = None,
) -> list[LedgerEntry]:
    """The ledger of ``dataset``, newest first."""
    runtime.settings.table_for(dataset)
    rows = runtime.db().run(
        statements.HISTORY, dataset=dataset, export_type=export_type, since=since, limit=limit
    )
    return [LedgerEntry(*row) for row in rows]


@dataclass(frozen=True)
class DatasetStatus:
    dataset: str
    plan: Plan
    blocked: BlockedFile | None
    applied_files: int
    late_files: int
    rejected_rows: int
    last_applied_at: datetime | None
    lag_seconds: float | None  # now minus the watermark's timestamp; never negative
    recent: tuple[LedgerEntry, ...] = ()  # the last few file decisions, newest first
    # Archived under processed/ but unknown to the ledger (after a restore): replay --missing.
    missing: tuple[PlannedFile, ...] = ()
    clock_skew_seconds: float | None = None  # the watermark is this far ahead of our clock
    watermark_in_future: bool = False  # ahead beyond FUTURE_TOLERANCE_SECONDS
    lock: LockHolder | None = None  # the session holding the sync lock, if any
    # Paused by an operator (planned work): nothing applies, pending files wait. Not an
    # outage: a paused dataset alone does not need attention (its lag alarm still counts).
    paused: Pause | None = None
    # The pipe-status view (docs/status.md): the newest file applied (and its schema
    # drift), what the dataset last heard and its last sync error, and when this was read.
    last_applied: LastApplied | None = None
    activity: Activity | None = None
    as_of: datetime | None = None  # ages are counted to this moment (None: now)

    @property
    def watermark(self) -> str | None:
        return self.plan.watermark

    @property
    def state(self) -> PipeState:
        """One word: paused > blocked > busy > running > idle (``core.pipestate``)."""
        return pipe_state(
            paused=self.paused is not None,
            rejected=self.blocked is not None,
            holder=self.lock,
            pending=len(self.plan.to_apply),
        )

    @property
    def oldest_pending(self) -> PlannedFile | None:
        """The pending file with the oldest name (a late file first: it is older)."""
        pending = self.plan.to_apply
        return min(pending, key=lambda p: p.obj.timestamp) if pending else None

    def age_of(self, moment: datetime | None) -> float | None:
        """Seconds from ``moment`` to ``as_of`` (never negative)."""
        if moment is None:
            return None
        return max(0.0, ((self.as_of or datetime.now(UTC)) - moment).total_seconds())

    @property
    def needs_attention(self) -> bool:
        """What makes ``status`` exit 1: something an operator has to decide or repair."""
        plan = self.plan
        # A silent holder is taken over by the next sync; one without a lease never is.
        stuck_lock = self.lock is not None and (self.lock.silent or not self.lock.has_lease)
        return bool(
            self.blocked
            or plan.conflicts
            or plan.held
            or self.missing
            or self.watermark_in_future
            or stuck_lock
        )

    def to_json(self) -> dict[str, Any]:
        blocked = self.blocked
        return {
            "dataset": self.dataset,
            "watermark": self.watermark,
            "lag_seconds": None if self.lag_seconds is None else round(self.lag_seconds, 1),
            "pending": [p.obj.key for p in self.plan.to_apply],
            "late": [p.obj.key for p in self.plan.late],
            "to_archive": [o.key for o in self.plan.to_archive],
            "conflicts": [
                {"key": c.obj.key, "etag": c.obj.etag, "applied_etag": c.applied_etag}
                for c in self.plan.conflicts
            ],
            "ignored": list(self.plan.ignored),
            "held": [
                {
                    "key": h.obj.key,
                    "etag": h.obj.etag,
                    "due": h.obj.timestamp.isoformat(),
                    "reason": h.reason,
                }
                for h in self.plan.held
            ],
            "missing": [p.obj.key for p in self.missing],
            "clock_skew_seconds": None
            if self.clock_skew_seconds is None
            else round(self.clock_skew_seconds, 1),
            "watermark_in_future": self.watermark_in_future,
            "blocked": None
            if blocked is None
            else {
                "key": blocked.key,
                "etag": blocked.etag,
                "reason": blocked.reason,
                "line": blocked.line,
                "column": blocked.column,
                "since": blocked.since.isoformat(),
                "attempts": blocked.attempts,
            },
            "lock": None
            if self.lock is None
            else {
                "pid": self.lock.pid,
                "application_name": self.lock.application_name,
                "client_addr": self.lock.client_addr,
                "has_lease": self.lock.has_lease,
                "heartbeat_age_seconds": None
                if self.lock.heartbeat_age_seconds is None
                else round(self.lock.heartbeat_age_seconds, 1),
                "stale_after_seconds": self.lock.stale_seconds,
                "silent": self.lock.silent,
                "hidden": self.lock.hidden,
            },
            "paused": None
            if self.paused is None
            else {
                "by": self.paused.paused_by,
                "since": self.paused.paused_at.isoformat(),
                "reason": self.paused.reason,
            },
            "applied_files": self.applied_files,
            "late_files": self.late_files,
            "rejected_rows": self.rejected_rows,
            "last_applied_at": None
            if self.last_applied_at is None
            else self.last_applied_at.isoformat(),
            "recent": [entry.to_json() for entry in self.recent],
            **self._pipe_json(),
        }

    def _pipe_json(self) -> dict[str, Any]:
        """The pipe-status fields (docs/status.md is their contract)."""
        oldest, applied, seen = self.oldest_pending, self.last_applied, self.activity
        drift = applied.drift if applied is not None else None
        return {
            "schema_version": SCHEMA_VERSION,
            "state": self.state.value,
            "pending_count": len(self.plan.to_apply),
            "oldest_pending": None
            if oldest is None
            else {
                "key": oldest.obj.key,
                "timestamp": oldest.obj.timestamp.isoformat(),
                "age_seconds": _rounded(self.age_of(oldest.obj.timestamp)),
            },
            "last_applied": None
            if applied is None
            else {
                "key": applied.key,
                "applied_at": _utc(applied.applied_at),
                "export_type": applied.export_type,
                "age_seconds": _rounded(self.age_of(applied.applied_at)),
            },
            "last_message": None
            if seen is None or seen.last_message_at is None
            else {
                "at": _utc(seen.last_message_at),
                "kind": seen.last_message_kind,
                "key": seen.last_message_key,
                "age_seconds": _rounded(self.age_of(seen.last_message_at)),
            },
            "last_error": None
            if seen is None or seen.last_error_at is None
            else {
                "at": _utc(seen.last_error_at),
                "kind": seen.last_error_kind,
                "key": seen.last_error_key,
                "message": seen.last_error,
                "age_seconds": _rounded(self.age_of(seen.last_error_at)),
            },
            "drift": None
            if drift is None
            else {
                "added": list(drift.added),
                "missing": list(drift.missing),
                "since": drift.since_key,
            },
        }


# The version of the JSON shape of one dataset's status (docs/status.md): bumped when a
# field is removed or changes meaning; adding a field keeps it.
SCHEMA_VERSION = 1


def _rounded(seconds: float | None) -> float | None:
    return None if seconds is None else round(seconds, 1)


def _utc(moment: datetime) -> str:
    return moment.astimezone(UTC).isoformat()


def dataset_status(
    runtime: Runtime, dataset: str, now: datetime | None = None, recent: int = 5
) -> DatasetStatus:
    now = now or datetime.now(UTC)
    plan = plan_dataset(runtime, dataset, now)
    db = runtime.db()
    age = watermark_age(plan.watermark, now, runtime.settings.future_tolerance_seconds)
    applied, late, last_applied = db.one(statements.LEDGER_TOTALS, dataset=dataset)
    rejected_rows = db.scalar(statements.REJECTED_ROW_COUNT, dataset=dataset)
    return DatasetStatus(
        dataset=dataset,
        plan=plan,
        blocked=ledger.blocked_file(db, dataset),
        applied_files=int(applied),
        late_files=int(late),
        rejected_rows=int(rejected_rows),
        last_applied_at=last_applied,
        lag_seconds=age.lag_seconds,
        recent=tuple(history(runtime, dataset, limit=recent)),
        missing=missing_files(runtime, dataset),
        clock_skew_seconds=age.clock_skew_seconds,
        watermark_in_future=age.in_future,
        lock=lock_holder(db, dataset),
        paused=pauses.pause_of(db, dataset),
        last_applied=activity.last_applied(db, dataset),
        activity=activity.activity_of(db, dataset),
        as_of=now,
    )


def pause_of(runtime: Runtime, dataset: str) -> Pause | None:
    """The operator's pause of ``dataset``, if any (a dry run says so)."""
    return pauses.pause_of(runtime.db(), dataset)
