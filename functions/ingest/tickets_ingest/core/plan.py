"""Which files a sync applies, archives, reports or ignores, and in what order. Pure."""

from __future__ import annotations

from collections.abc import Collection, Iterable, Mapping
from datetime import datetime, timedelta

from tickets_ingest.core.keys import changes_prefix, parse_archived_key, parse_stream_key
from tickets_ingest.models import (
    Conflict,
    ExportType,
    HeldFile,
    Plan,
    PlannedFile,
    StreamObject,
)


def classify_listing(
    dataset: str, listing: Iterable[tuple[str, str, int]]
) -> tuple[list[StreamObject], list[str]]:
    """Split raw ``(key, etag, size)`` listing rows into stream files and ignored keys."""
    files: list[StreamObject] = []
    ignored: list[str] = []
    for key, etag, size in listing:
        timestamp = parse_stream_key(dataset, key)
        if timestamp is None:
            ignored.append(key)
        else:
            files.append(
                StreamObject(key=key, etag=normalize_etag(etag), size=size, timestamp=timestamp)
            )
    return files, sorted(ignored)


def normalize_etag(etag: str) -> str:
    """S3 quotes ETags in some responses and not in others; compare them bare."""
    return etag.strip('"')


def plan_sync(
    dataset: str,
    files: Iterable[StreamObject],
    applied_etags: Mapping[str, str],
    watermark: str | None,
    ignored: Iterable[str] = (),
    *,
    now: datetime | None = None,
    future_tolerance_seconds: float = 0.0,
) -> Plan:
    """Decide, for every stream file under ``changes/``, what happens to it.

    ``applied_etags`` maps keys already applied (ledger) to the ETag they were applied with;
    ``watermark`` is the newest in-order key applied (None for a fresh stream). A file not
    yet applied and dated beyond ``now`` + ``future_tolerance_seconds`` is held: applying
    it would pin the watermark in the future and make every real file after it late.
    Without ``now`` nothing is held.
    """
    to_apply: list[PlannedFile] = []
    to_archive: list[StreamObject] = []
    conflicts: list[Conflict] = []
    held: list[HeldFile] = []
    horizon = None if now is None else now + timedelta(seconds=future_tolerance_seconds)
    baseline_pending = watermark is None
    # Keys are fixed-width timestamps, so key order is time order; ties cannot happen.
    for obj in sorted(files, key=lambda f: f.key):
        applied_etag = applied_etags.get(obj.key)
        if applied_etag is not None:
            if applied_etag == obj.etag:
                to_archive.append(obj)  # committed, but the move to processed/ did not finish
            else:
                conflicts.append(Conflict(obj=obj, applied_etag=applied_etag))
        elif horizon is not None and obj.timestamp > horizon:
            held.append(HeldFile(obj, _held_reason(obj, future_tolerance_seconds)))
        elif watermark is not None and obj.key <= watermark:
            to_apply.append(PlannedFile(obj, ExportType.LATE))
        elif baseline_pending:
            to_apply.append(PlannedFile(obj, ExportType.BASELINE))
            baseline_pending = False
        else:
            to_apply.append(PlannedFile(obj, ExportType.DELTA))
    return Plan(
        dataset=dataset,
        watermark=watermark,
        to_apply=tuple(to_apply),
        to_archive=tuple(to_archive),
        conflicts=tuple(conflicts),
        ignored=tuple(sorted(ignored)),
        held=tuple(held),
    )


def _held_reason(obj: StreamObject, tolerance_seconds: float) -> str:
    return (
        f"dated {obj.timestamp:%Y-%m-%d %H:%M:%S} {obj.timestamp.tzname()}, more than "
        f"{tolerance_seconds:g} s (FUTURE_TOLERANCE_SECONDS) ahead of now: held, not applied, "
        "until its time comes; quarantine it if the date is wrong"
    )


def plan_replay(
    dataset: str, archived: Iterable[tuple[str, str, int]], from_name: str
) -> tuple[PlannedFile, ...]:
    """Archived files (``processed/``) named ``from_name`` or later, oldest first, to be
    re-applied with the recency guard: the way back after restoring a database backup."""
    return tuple(p for p in _archived(dataset, archived) if p.obj.name >= from_name)


def plan_missing(
    dataset: str, archived: Iterable[tuple[str, str, int]], known_keys: Collection[str]
) -> tuple[PlannedFile, ...]:
    """Archived files whose ``changes/`` key the ledger does not know (``known_keys``: keys
    with a baseline, delta, late or replay row), oldest first, to be replayed.

    After a restore, these are exactly the files applied since the backup, late ones
    included: a file is archived only after its commit, so in normal operation there are
    none. Selecting by name from the watermark on would miss a late file older than it.
    """
    return tuple(p for p in _archived(dataset, archived) if p.source_key not in known_keys)


def _archived(dataset: str, archived: Iterable[tuple[str, str, int]]) -> list[PlannedFile]:
    planned = []
    for key, etag, size in archived:
        timestamp = parse_archived_key(dataset, key)
        if timestamp is None:
            continue
        obj = StreamObject(key=key, etag=normalize_etag(etag), size=size, timestamp=timestamp)
        planned.append(
            PlannedFile(obj, ExportType.REPLAY, ledger_key=changes_prefix(dataset) + obj.name)
        )
    return sorted(planned, key=lambda p: p.obj.key)
