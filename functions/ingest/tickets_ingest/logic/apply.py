"""Apply one stream file: the whole transaction, in one place.

Stream the object through the header check into COPY, reject bad rows, upsert, write the
ledger row (which advances the watermark) and commit. Either all of it commits or none.
"""

from __future__ import annotations

import re
import time
from collections.abc import Callable
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any

from tickets_ingest.core.csvstream import CsvBody
from tickets_ingest.core.schema import COLUMN_KINDS, check_header
from tickets_ingest.dal import ledger
from tickets_ingest.dal import sql as statements
from tickets_ingest.dal.db import Database, DatabaseError, error_fields, sqlstate
from tickets_ingest.dal.loader import TableLoader
from tickets_ingest.errors import FileRejected
from tickets_ingest.failpoints import Step, reached
from tickets_ingest.models import ExportType, FileResult, PlannedFile, RowCounts

_WHERE = re.compile(r"line (\d+)(?:, column (\w+))?")
_MAX_LISTED_ROW_ERRORS = 3


@dataclass(frozen=True)
class ApplyContext:
    """What applying a file needs besides the file: fixed for a whole sync."""

    dataset: str
    loader: TableLoader
    source_timezone: str
    aliases_json: str
    max_rejected_share: float
    # Bounded waits of the file's transaction (APPLY_LOCK_TIMEOUT_SECONDS and
    # APPLY_STATEMENT_TIMEOUT_SECONDS): a lock held elsewhere never wedges the dataset.
    lock_timeout_ms: int = 30_000
    statement_timeout_ms: int = 900_000


def apply_file(
    db: Database,
    ctx: ApplyContext,
    planned: PlannedFile,
    body: Any,
    *,
    watermark_after: str | None,
    dry_run: bool = False,
    on_progress: Callable[[int], None] | None = None,
) -> FileResult:
    """Apply ``planned`` from the readable ``body``; raises ``FileRejected`` for bad input.

    ``watermark_after`` is what the ledger row records as ``source_max_key``.
    """
    obj = planned.obj
    source_key = planned.source_key
    started_at = datetime.now(UTC)
    clock = time.perf_counter()
    timings: dict[str, int] = {}

    csv_body = CsvBody(obj.key, body, on_progress=on_progress)
    file_columns = check_header(obj.key, csv_body.header)
    counts = RowCounts()
    with db.transaction(commit=not dry_run):
        db.run(
            statements.SET_FILE_SESSION,
            timezone=ctx.source_timezone,
            lock_timeout=f"{ctx.lock_timeout_ms}ms",
            statement_timeout=f"{ctx.statement_timeout_ms}ms",
        )
        db.run(ctx.loader.create_staging)
        _copy(db, ctx.loader, obj.key, file_columns, csv_body)
        timings["copy"] = _ms_since(clock)
        reached(Step.STAGED, obj.key)

        (
            counts.read,
            counts.sentinel_filtered,
            counts.rejected,
            counts.alarm_filtered,
            candidates,
        ) = db.one(ctx.loader.reject_blank_ids)
        _check_reject_share(db, ctx, obj.key, file_columns, counts)

        guarded = planned.export_type in (ExportType.LATE, ExportType.REPLAY)
        try:
            with db.savepoint("typed"):
                _upsert(db, ctx, source_key, counts, guarded=guarded, candidates=candidates)
        except DatabaseError as exc:
            if not sqlstate(exc).startswith("22"):
                raise
            # Some value does not cast: find every bad row exactly, set them aside, retry.
            db.run(ctx.loader.find_bad_values)
            counts.rejected += db.row_count
            _check_reject_share(db, ctx, obj.key, file_columns, counts)
            counts.alarm_filtered, candidates = db.one(ctx.loader.candidate_counts)
            try:
                _upsert(db, ctx, source_key, counts, guarded=guarded, candidates=candidates)
            except DatabaseError as again:
                if not sqlstate(again).startswith("22"):
                    raise
                raise FileRejected(obj.key, _message(again)) from None
        timings["upsert"] = _ms_since(clock) - timings["copy"]
        reached(Step.UPSERTED, obj.key)

        if counts.rejected:
            _save_rejected_rows(db, ctx, source_key, obj.etag, file_columns)
        duration_ms = _ms_since(clock)
        ledger.record_file(
            db,
            dataset=ctx.dataset,
            key=source_key,
            etag=obj.etag,
            export_type=planned.export_type,
            counts=counts,
            bytes_read=csv_body.bytes_read,
            started_at=started_at,
            duration_ms=duration_ms,
            metadata={
                "source_max_key": watermark_after,
                "source_size": obj.size,
                "file_timestamp": obj.timestamp.isoformat(),
                "timings_ms": timings,
                **({"read_from": obj.key} if source_key != obj.key else {}),
            },
        )
        ledger.clear_blocked(db, ctx.dataset)
        reached(Step.LEDGER_WRITTEN, obj.key)
    return FileResult(
        key=obj.key,
        etag=obj.etag,
        export_type=planned.export_type,
        counts=counts,
        bytes_read=csv_body.bytes_read,
        duration_ms=_ms_since(clock),
        committed=not dry_run,
        timings_ms=timings,
    )


def _copy(
    db: Database, loader: TableLoader, key: str, columns: tuple[str, ...], body: CsvBody
) -> None:
    try:
        db.copy_in(loader.copy_statement(columns), body.chunks())
    except DatabaseError as exc:
        # Class 22 is the data's fault (bad CSV, bad encoding); anything else is ours.
        if not sqlstate(exc).startswith("22"):
            raise
        fields = error_fields(exc)
        where = _WHERE.search(fields.get("W", ""))
        raise FileRejected(
            key,
            fields.get("M", str(exc)),
            line=int(where.group(1)) if where else None,
            column=where.group(2) if where and where.group(2) else None,
        ) from None


def _upsert(
    db: Database, ctx: ApplyContext, key: str, counts: RowCounts, *, guarded: bool, candidates: int
) -> None:
    distinct_ids, written = db.one(
        ctx.loader.upsert(recency_guard=guarded, exclude_rejected=counts.rejected > 0),
        aliases=ctx.aliases_json,
        source_key=key,
    )
    counts.upserted = written
    counts.duplicate_ids = candidates - distinct_ids
    counts.skipped_older = distinct_ids - written


def _check_reject_share(
    db: Database, ctx: ApplyContext, key: str, columns: tuple[str, ...], counts: RowCounts
) -> None:
    data_rows = counts.read - counts.sentinel_filtered
    if counts.rejected == 0 or counts.rejected <= ctx.max_rejected_share * data_rows:
        return
    examples = db.run(ctx.loader.rejected_details(columns))[:_MAX_LISTED_ROW_ERRORS]
    first_line = examples[0][1] if examples else None
    first_column = examples[0][3].split(":", 1)[0] if examples else None
    listed = "; ".join(f"line {line}: {error}" for _, line, _, error in examples)
    raise FileRejected(
        key,
        f"{counts.rejected} of {data_rows} rows are invalid (more than "
        f"{ctx.max_rejected_share:.1%}): this looks like a format change, not a bad row. "
        f"First: {listed}",
        line=first_line,
        column=first_column if first_column in COLUMN_KINDS else None,
    )


def _save_rejected_rows(
    db: Database, ctx: ApplyContext, key: str, etag: str, columns: tuple[str, ...]
) -> None:
    db.run(ctx.loader.save_rejected(columns), dataset=ctx.dataset, source_key=key, etag=etag)


def _message(error: DatabaseError) -> str:
    return error_fields(error).get("M", str(error))


def _ms_since(clock: float) -> int:
    return int((time.perf_counter() - clock) * 1000)
