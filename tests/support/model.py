"""A pure in-memory model of one dataset: its bucket, its ledger and its table.

Written from the contract (the reference document and the rules the engine promises), not
from the engine's SQL: the model-based test (tests/integration/test_model.py) drives the
real engine and this model side by side and compares them after every step.

What the model keeps:

- ``changes``: key -> the object under ``changes/`` (ETag and content);
- ``processed``: key -> ETag of what was archived under ``processed/``;
- ``ledger``: every file applied, in order (key, ETag, export type, watermark, counts);
- ``table``: ticket_id -> the stored record (the columns the test compares).

``sync`` replays what a sync must do, step by step, announcing each step boundary
(``failpoints.Step``) to a hook exactly where the engine does, so that a crash or an upload
injected at a boundary lands at the same point in the model and in the engine.
"""

from __future__ import annotations

import csv
import hashlib
import io
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from zoneinfo import ZoneInfo

from tests.support.oracle import ALIASES
from tests.support.rows import row
from tickets_ingest.core.schema import CSV_COLUMNS
from tickets_ingest.failpoints import Step

DATASET = "inc"
CHANGES = f"automations/{DATASET}/changes/"
PROCESSED = f"automations/{DATASET}/processed/"
NAIROBI = ZoneInfo("Africa/Nairobi")
BASE_TIME = datetime(2026, 6, 22, 12, 0, tzinfo=NAIROBI)
SENTINEL_ID = "EXPORT STOPPED: row limit of 50000 reached"

BASELINE = "baseline"
DELTA = "delta"
LATE = "late"

# PostgreSQL's boolean input, trimmed and case-insensitive (only the spellings we write).
TRUE_WORDS = {"true", "t", "1", "yes", "on"}
FALSE_WORDS = {"false", "f", "0", "no", "off", ""}

# How an updated_at instant may be written (all mean the same instant).
TIME_FORMATS = (
    "{naive:%Y-%m-%d %H:%M:%S}",  # no offset: Africa/Nairobi
    "{utc:%Y-%m-%dT%H:%M:%S}Z",
    "{naive:%Y-%m-%d %H:%M:%S}+03",
    "{utc:%Y-%m-%d %H:%M:%S}+00:00",
)


def stream_key(stamp: str) -> str:
    return f"{CHANGES}{stamp}.csv"


def processed_key(key: str) -> str:
    return PROCESSED + key.rsplit("/", 1)[-1]


def etag_of(body: bytes) -> str:
    """S3's ETag of a single-part upload: the MD5 of the bytes (not a security use)."""
    return hashlib.md5(body, usedforsecurity=False).hexdigest()


def normalize_label(column: str, raw: str) -> str | None:
    """Trim, collapse inner whitespace, map case-insensitively through aliases.csv."""
    cleaned = " ".join(raw.split())
    return ALIASES[column].get(cleaned.lower(), cleaned) or None


# --- files ----------------------------------------------------------------------------


@dataclass(frozen=True)
class RowSpec:
    """One CSV record as the test writes it; ``sentinel`` rows carry only a ticket_id."""

    ticket_id: str
    minute: int | None = 0  # updated_at = BASE_TIME + minutes; None writes an empty value
    time_format: int = 0
    raw_status: str = "Assigned"
    region: str = "Nairobi"
    alarm: str = "false"  # is_alarm exactly as written
    owner: str = ""
    sentinel: bool = False

    @property
    def updated_at(self) -> datetime | None:
        if self.minute is None:
            return None
        return BASE_TIME + timedelta(minutes=self.minute)

    @property
    def is_alarm(self) -> bool:
        word = self.alarm.strip().lower()
        assert word in TRUE_WORDS | FALSE_WORDS, f"the model does not know {self.alarm!r}"
        return word in TRUE_WORDS

    def written_time(self) -> str:
        instant = self.updated_at
        if instant is None:
            return ""
        return TIME_FORMATS[self.time_format].format(naive=instant, utc=instant.astimezone(UTC))

    def record(self) -> dict[str, str]:
        if self.sentinel:
            return dict.fromkeys(CSV_COLUMNS, "") | {"ticket_id": self.ticket_id}
        written = self.written_time()
        return row(
            self.ticket_id,
            written,
            raw_status=self.raw_status,
            region=self.region,
            is_alarm=self.alarm,
            owner=self.owner,
        )


def sentinel_row() -> RowSpec:
    return RowSpec(SENTINEL_ID, minute=None, sentinel=True)


@dataclass(frozen=True)
class StreamFile:
    """A file's records; ``body`` renders them (with a unique ``tag`` so bytes differ)."""

    rows: tuple[RowSpec, ...]
    tag: str

    @property
    def body(self) -> bytes:
        out = io.StringIO()
        writer = csv.writer(out, lineterminator="\r\n")
        writer.writerow(CSV_COLUMNS)
        for spec in self.rows:
            record = spec.record()
            if not spec.sentinel:
                record["source_snapshot_id"] = self.tag  # a dropped column: only the bytes
            writer.writerow([record[c] for c in CSV_COLUMNS])
        return out.getvalue().encode("utf-8")

    @property
    def etag(self) -> str:
        return etag_of(self.body)


# --- state ----------------------------------------------------------------------------


@dataclass(frozen=True)
class Stored:
    """The compared columns of one stored ticket."""

    raw_status: str | None
    region: str | None
    updated_at: datetime | None
    owner: str | None
    source_key: str


@dataclass(frozen=True)
class Counts:
    read: int
    upserted: int
    skipped_older: int
    alarm_filtered: int
    sentinel_filtered: int
    rejected: int
    duplicate_ids: int


@dataclass(frozen=True)
class LedgerEntry:
    key: str
    etag: str
    export_type: str
    source_max_key: str | None
    counts: Counts


@dataclass(frozen=True)
class StoredObject:
    etag: str
    file: StreamFile


@dataclass(frozen=True)
class ModelPlan:
    watermark: str | None
    to_apply: tuple[tuple[str, str, str], ...]  # (key, etag, export type), oldest first
    to_archive: tuple[tuple[str, str], ...]  # (key, etag)
    conflicts: tuple[str, ...]


class ModelObjectChanged(Exception):
    """The model's ``ObjectChanged``: a planned object changed before it was read."""


# Step boundaries reached by the thread that applies files, in order; the archive runs in
# the background: each file's copy (COPIED) overlaps the next file, and the copied files
# leave changes/ in one batch delete (BATCHED, DELETED) when the sync ends.
MAIN_STEPS = (
    Step.LISTED,
    Step.BODY_OPENED,
    Step.STAGED,
    Step.UPSERTED,
    Step.LEDGER_WRITTEN,
    Step.COMMITTED,
)
ARCHIVE_STEPS = (Step.COPIED, Step.BATCHED, Step.DELETED)
# Copied files a batch delete takes at most (a DeleteObjects' limit; logic/sync.py too).
DELETE_BATCH = 1000


@dataclass
class SyncOutcome:
    events: list[tuple[Step, str]] = field(default_factory=list)
    applied: list[tuple[str, str, Counts]] = field(default_factory=list)  # key, type, counts
    archived: list[str] = field(default_factory=list)
    stopped_early: bool = False
    watermark_after: str | None = None


Hook = Callable[[Step, str], None]


def fold_file(
    table: dict[str, Stored], file: StreamFile, key: str
) -> tuple[dict[str, Stored], Counts]:
    """The table after applying ``file`` (read as ``key``), and the file's counts.

    Sentinel rows are dropped; a record with an empty updated_at is set aside (the recency
    guard cannot compare it), and when a ticket's last record is set aside, so are its
    earlier ones; alarm rows are dropped; the last remaining occurrence of a ticket_id
    wins. Every file, whatever its place in the stream, replaces a stored row only if the
    stored updated_at is NULL or the incoming one is at least as recent.
    """
    sentinels = [r for r in file.rows if r.sentinel]
    data = [r for r in file.rows if not r.sentinel]
    last_of = {spec.ticket_id: spec for spec in data}
    set_aside = [r for r in data if r.updated_at is None or last_of[r.ticket_id].updated_at is None]
    kept = [r for r in data if r.updated_at is not None and last_of[r.ticket_id].updated_at]
    alarms = [r for r in kept if r.is_alarm]
    candidates = [r for r in kept if not r.is_alarm]
    latest: dict[str, RowSpec] = {}
    for spec in candidates:
        latest[spec.ticket_id] = spec
    result = dict(table)
    written = 0
    for ticket_id, spec in latest.items():
        stored = result.get(ticket_id)
        incoming = spec.updated_at
        known = stored.updated_at if stored is not None else None
        if known is not None and (incoming is None or incoming < known):
            continue  # older never overwrites newer
        result[ticket_id] = Stored(
            raw_status=normalize_label("raw_status", spec.raw_status),
            region=normalize_label("region", spec.region),
            updated_at=incoming,
            owner=spec.owner or None,
            source_key=key,
        )
        written += 1
    counts = Counts(
        read=len(file.rows),
        upserted=written,
        skipped_older=len(latest) - written,
        alarm_filtered=len(alarms),
        sentinel_filtered=len(sentinels),
        rejected=len(set_aside),
        duplicate_ids=len(candidates) - len(latest),
    )
    return result, counts


@dataclass
class Model:
    table: dict[str, Stored] = field(default_factory=dict)
    ledger: list[LedgerEntry] = field(default_factory=list)
    changes: dict[str, StoredObject] = field(default_factory=dict)
    processed: dict[str, str] = field(default_factory=dict)

    # --- derived ---------------------------------------------------------------------

    @property
    def applied(self) -> dict[str, str]:
        return {e.key: e.etag for e in self.ledger}

    @property
    def watermark(self) -> str | None:
        keys = [
            e.source_max_key
            for e in self.ledger
            if e.export_type in (BASELINE, DELTA) and e.source_max_key is not None
        ]
        return max(keys) if keys else None

    def used_keys(self) -> set[str]:
        """Every key that exists or existed (pending, applied, archived)."""
        return (
            set(self.changes)
            | set(self.applied)
            | {CHANGES + k.rsplit("/", 1)[-1] for k in self.processed}
        )

    def has_work(self) -> bool:
        """Whether a sync would apply or archive anything."""
        plan = self.plan()
        return bool(plan.to_apply or plan.to_archive)

    def conflicts(self) -> list[str]:
        return list(self.plan().conflicts)

    # --- actions ---------------------------------------------------------------------

    def put(self, key: str, file: StreamFile) -> str:
        obj = StoredObject(file.etag, file)
        self.changes[key] = obj
        return obj.etag

    def plan(self) -> ModelPlan:
        applied = self.applied
        watermark = self.watermark
        to_apply: list[tuple[str, str, str]] = []
        to_archive: list[tuple[str, str]] = []
        conflicts: list[str] = []
        baseline_pending = watermark is None
        for key in sorted(self.changes):
            etag = self.changes[key].etag
            if key in applied:
                if applied[key] == etag:
                    to_archive.append((key, etag))  # committed, not yet archived
                else:
                    conflicts.append(key)  # never re-applied, left for an operator
            elif watermark is not None and key <= watermark:
                to_apply.append((key, etag, LATE))
            elif baseline_pending:
                to_apply.append((key, etag, BASELINE))
                baseline_pending = False
            else:
                to_apply.append((key, etag, DELTA))
        return ModelPlan(watermark, tuple(to_apply), tuple(to_archive), tuple(conflicts))

    def sync(
        self,
        hook: Hook,
        *,
        dry_run: bool = False,
        budget: int | None = None,
        detect_at: int | None = None,
        outcome: SyncOutcome | None = None,
    ) -> SyncOutcome:
        """What one sync does.

        ``hook`` sees every step boundary and may raise (a crash) or act on the model (an
        upload landing mid-sync). ``budget``: how many files the sync may start. The
        archive is background work: an exception raised in a copy or the batch delete does
        not stop the files being applied; it surfaces when the applying thread next looks,
        before starting file number ``detect_at`` (when it looks is timing: the caller says
        what happened), or at the end. The batch delete of what was copied goes whatever
        ends the sync (the end, the time budget, an error). ``outcome`` (optional) is filled
        in as the sync goes, so a caller sees the steps reached even when the sync raises.
        """
        out = outcome if outcome is not None else SyncOutcome()
        background: list[Exception] = []
        batch: list[tuple[str, str]] = []  # copied, to leave changes/ with the next batch

        def reach(step: Step, key: str) -> None:
            out.events.append((step, key))
            hook(step, key)

        def archive(key: str, etag: str) -> None:
            try:
                if self._copy(key, etag, reach):
                    batch.append((key, etag))
            except Exception as exc:  # the background copy failed; the run goes on
                background.append(exc)
            if len(batch) >= DELETE_BATCH:
                send_batch()

        def send_batch() -> None:
            sent = list(batch)
            batch.clear()
            if not sent:
                return
            try:
                out.archived.extend(self._delete_batch(sent, reach))
            except Exception as exc:  # the background delete failed; the run goes on
                background.append(exc)

        plan = self.plan()
        reach(Step.LISTED, DATASET)
        watermark = plan.watermark
        try:
            if not dry_run:
                for key, etag in plan.to_archive:
                    archive(key, etag)
            for started, (key, etag, export_type) in enumerate(plan.to_apply):
                if background and detect_at is not None and started >= detect_at:
                    raise background[0]
                if budget is not None and started >= budget:
                    out.stopped_early = True
                    break
                obj = self.changes.get(key)
                if obj is None or obj.etag != etag:
                    raise ModelObjectChanged(key)
                file = obj.file  # read by the GET: what lands later does not matter
                reach(Step.BODY_OPENED, key)
                after = watermark if export_type == LATE else key
                reach(Step.STAGED, key)
                table, counts = fold_file(self.table, file, key)
                reach(Step.UPSERTED, key)
                reach(Step.LEDGER_WRITTEN, key)
                out.applied.append((key, export_type, counts))
                if dry_run:
                    continue
                self.table = table  # the commit
                self.ledger.append(LedgerEntry(key, etag, export_type, after, counts))
                reach(Step.COMMITTED, key)
                watermark = after
                archive(key, etag)  # only ever after the commit
        finally:
            send_batch()  # what was copied leaves changes/, whatever ends the sync
        if background:
            raise background[0]
        out.watermark_after = watermark
        out.archived.sort()
        return out

    def _copy(self, key: str, etag: str, reach: Hook) -> bool:
        """Copy exactly the applied version to processed/ (True); a re-upload stays put."""
        obj = self.changes.get(key)
        if obj is None or obj.etag != etag:
            return False  # the copy is conditional on the ETag: a re-upload is not archived
        self.processed[processed_key(key)] = etag
        reach(Step.COPIED, key)
        return True

    def _delete_batch(self, batch: list[tuple[str, str]], reach: Hook) -> list[str]:
        """One DeleteObjects of copied files, each conditional on its applied ETag: the
        keys deleted. A re-upload that landed since the copy (or before the request) stays
        in changes/ (a conflict for an operator), its archive not finished."""
        for key, _ in batch:
            reach(Step.BATCHED, key)
        deleted = [
            key
            for key, etag in batch
            if (current := self.changes.get(key)) is None or current.etag == etag
        ]
        for key in deleted:  # the request: all at once
            self.changes.pop(key, None)
        for key in deleted:
            reach(Step.DELETED, key)
        return deleted
