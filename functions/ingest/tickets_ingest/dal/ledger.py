"""The file ledger (``tickets.import_meta``), the watermark and the blocked-file register."""

from __future__ import annotations

import json
from collections.abc import Iterable, Iterator
from contextlib import contextmanager
from datetime import datetime
from typing import Any

from tickets_ingest.dal import sql
from tickets_ingest.dal.db import Database, DatabaseError, sqlstate
from tickets_ingest.errors import FileRejected, SyncBusy
from tickets_ingest.models import BlockedFile, ExportType, RowCounts


def watermark(db: Database, dataset: str) -> str | None:
    value = db.scalar(sql.WATERMARK, dataset=dataset)
    return str(value) if value is not None else None


def applied_etags(db: Database, dataset: str, keys: Iterable[str]) -> dict[str, str]:
    wanted = list(keys)
    if not wanted:
        return {}
    return {row[0]: row[1] for row in db.run(sql.APPLIED_ETAGS, dataset=dataset, keys=wanted)}


def record_file(
    db: Database,
    *,
    dataset: str,
    key: str,
    etag: str,
    export_type: ExportType,
    counts: RowCounts,
    bytes_read: int,
    started_at: datetime,
    duration_ms: int,
    metadata: dict[str, Any],
) -> None:
    db.run(
        sql.RECORD_FILE,
        dataset=dataset,
        source_key=key,
        etag=etag,
        export_type=export_type.value,
        rows_read=counts.read,
        rows_upserted=counts.upserted,
        rows_skipped_older=counts.skipped_older,
        rows_alarm_filtered=counts.alarm_filtered,
        rows_sentinel_filtered=counts.sentinel_filtered,
        rows_rejected=counts.rejected,
        rows_duplicate=counts.duplicate_ids,
        bytes_read=bytes_read,
        started_at=started_at,
        duration_ms=duration_ms,
        metadata=json.dumps(metadata, sort_keys=True),
    )


def mark_blocked(db: Database, dataset: str, etag: str, error: FileRejected) -> None:
    db.run(
        sql.MARK_BLOCKED,
        dataset=dataset,
        source_key=error.key,
        etag=etag,
        reason=error.reason,
        line_number=error.line,
        column_name=error.column,
    )


def clear_blocked(db: Database, dataset: str) -> None:
    db.run(sql.CLEAR_BLOCKED, dataset=dataset)


def blocked_file(db: Database, dataset: str) -> BlockedFile | None:
    rows = db.run(sql.BLOCKED_FILE, dataset=dataset)
    if not rows:
        return None
    key, etag, reason, line, column, since, attempts = rows[0]
    return BlockedFile(key, etag, reason, line, column, since, attempts)


@contextmanager
def dataset_lock(db: Database, dataset: str, wait_seconds: float = 0.0) -> Iterator[None]:
    """Hold the per-dataset advisory lock for the block, or raise ``SyncBusy``.

    A session lock: it survives the per-file commits and dies with the connection, so a
    crashed process never leaves a dataset locked.
    """
    if wait_seconds > 0:
        db.run(sql.SET_LOCK_TIMEOUT, timeout=f"{int(wait_seconds * 1000)}ms")
        try:
            db.scalar(sql.WAIT_DATASET_LOCK, dataset=dataset)
        except DatabaseError as exc:
            if sqlstate(exc) != "55P03":  # lock_not_available
                raise
            raise SyncBusy(dataset, _holder(db, dataset)) from None
        finally:
            db.run(sql.SET_LOCK_TIMEOUT, timeout="0")
    elif not db.scalar(sql.TRY_DATASET_LOCK, dataset=dataset):
        raise SyncBusy(dataset, _holder(db, dataset))
    try:
        yield
    finally:
        if not db.broken:
            db.scalar(sql.UNLOCK_DATASET, dataset=dataset)


def _holder(db: Database, dataset: str) -> str | None:
    rows = db.run(sql.LOCK_HOLDER, dataset=dataset)
    if not rows:
        return None
    pid, application, address, _started = rows[0]
    return f"pid {pid}, {application or 'unknown client'} from {address or 'local socket'}"
