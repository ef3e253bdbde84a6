"""The file ledger (``tickets.import_meta``), the watermark and the blocked-file register."""

from __future__ import annotations

import json
from collections.abc import Iterable
from datetime import datetime
from typing import Any

from tickets_ingest.dal import sql
from tickets_ingest.dal.db import Database
from tickets_ingest.errors import FileRejected
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
    unblock: bool = False,
    at_commit: bool = False,
) -> None:
    """The ledger row of a file; ``unblock``: and clear the dataset's blocked-file register
    in the same statement (an applied file means nothing blocks the dataset).
    ``at_commit``: the row goes with the transaction's COMMIT (``Database.at_commit``), in
    its round trip, as a statement with literals (``FILE_SESSION``'s transaction)."""
    statement = sql.RECORD_FILE_AND_UNBLOCK if unblock else sql.RECORD_FILE
    values = {
        "dataset": dataset,
        "source_key": key,
        "etag": etag,
        "export_type": export_type.value,
        "rows_read": counts.read,
        "rows_upserted": counts.upserted,
        "rows_skipped_older": counts.skipped_older,
        "rows_alarm_filtered": counts.alarm_filtered,
        "rows_sentinel_filtered": counts.sentinel_filtered,
        "rows_rejected": counts.rejected,
        "rows_duplicate": counts.duplicate_ids,
        "bytes_read": bytes_read,
        "started_at": started_at,
        "duration_ms": duration_ms,
        "metadata": json.dumps(metadata, sort_keys=True),
    }
    if at_commit:
        db.at_commit(sql.with_literals(statement, **values))
    else:
        db.run(statement, **values)


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
