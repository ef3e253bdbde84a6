"""Apply one stream file: the whole transaction, in one place.

Stream the object through the header check into COPY, reject bad rows, upsert, write the
ledger row (which advances the watermark) and commit. Either all of it commits or none.
"""

from __future__ import annotations

import re
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from datetime import UTC, datetime
from functools import cached_property
from typing import Any

from tickets_ingest.core.csvstream import CsvBody
from tickets_ingest.core.schema import COLUMN_KINDS, HeaderPlan, plan_header
from tickets_ingest.dal import ledger, pauses
from tickets_ingest.dal import sql as statements
from tickets_ingest.dal.db import Behind, Database, DatabaseError, error_fields, sqlstate
from tickets_ingest.dal.loader import TableLoader
from tickets_ingest.dal.retry import connection_lost
from tickets_ingest.errors import DatasetPaused, FileFailed, FileRejected
from tickets_ingest.failpoints import Step, reached
from tickets_ingest.models import DriftPolicy, FileResult, PlannedFile, RowCounts

# SQLSTATE classes a file's content causes: 21 cardinality (a key twice in one upsert),
# 22 data exception, 23 integrity constraint, 54 program limit (e.g. an index row too big).
_CONTENT_CLASSES = ("21", "22", "23", "54")
# lock_not_available, query_canceled (lock_timeout / statement_timeout): not the content.
_NOT_THE_FILES = {"55P03", "57014"}
_WHERE = re.compile(r"line (\d+)(?:, column (\w+))?")
_MAX_LISTED_ROW_ERRORS = 3
# A file up to this size (the listing's) is read whole, then sent with its COPY statement:
# one round trip instead of two, for what most of the stream is (deltas of a few KB).
# Larger files stream in constant memory.
EAGER_COPY_BYTES = 256 * 1024
TYPED = "typed"  # the savepoint before the typed upsert: a value that does not cast


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
    # SCHEMA_DRIFT for this dataset: reject a header that differs from the contract, or
    # apply the file with unknown columns rescued and missing ones left alone.
    drift_policy: DriftPolicy = DriftPolicy.REJECT

    @cached_property
    def file_session(self) -> str:
        """The file transaction's settings, sent with its BEGIN (built once per sync)."""
        return statements.file_session(
            self.source_timezone, self.lock_timeout_ms, self.statement_timeout_ms
        )

    @cached_property
    def sort_rows_then_savepoint(self) -> str:
        """Set aside the rows without a usable key, count (one row), and declare the
        savepoint of the typed upsert (it keeps what the first statement did). Sent in the
        COPY's Query, with the transaction's BEGIN before it: no round trip of its own."""
        return f"{self.loader.reject_bad_rows};\nSAVEPOINT {TYPED}"

    @cached_property
    def sort_rows_then_savepoint_and_pause(self) -> str:
        """The same, then the dataset's pause (a row only if there is one): the Query that
        opens the file also says whether an operator paused the dataset meanwhile."""
        return f"{self.sort_rows_then_savepoint};\n{statements.pause_check(self.dataset)}"


def apply_file(
    db: Database,
    ctx: ApplyContext,
    planned: PlannedFile,
    body: Any,
    *,
    watermark_after: str | None,
    dry_run: bool = False,
    stop_if_paused: bool = False,
    on_progress: Callable[[int], None] | None = None,
) -> FileResult:
    """Apply ``planned`` from the readable ``body``; raises ``FileRejected`` for bad input.

    ``watermark_after`` is what the ledger row records as ``source_max_key``.
    ``stop_if_paused``: raise ``DatasetPaused`` (nothing applied) if an operator paused the
    dataset, as the transaction opens (a pause that came while the sync ran).
    """
    obj = planned.obj
    source_key = planned.source_key
    started_at = datetime.now(UTC)
    clock = time.perf_counter()
    timings: dict[str, int] = {}

    csv_body = CsvBody(obj.key, body, on_progress=on_progress)
    header = plan_header(obj.key, csv_body.header, ctx.drift_policy)
    file_columns = header.columns
    counts = RowCounts()
    with _named_failures(obj.key):
        db.once(ctx.loader.create_staging)
    sort = (
        ctx.sort_rows_then_savepoint_and_pause if stop_if_paused else ctx.sort_rows_then_savepoint
    )
    eager = obj.size <= EAGER_COPY_BYTES
    # A small file's upsert goes ahead, behind its COPY in the same round trip, as for a
    # clean file (most are): it runs after the savepoint, so if the file turns out to have
    # rows set aside, or a value that does not cast, it is rolled back and redone below.
    ahead = (
        Behind(_upsert_statement(ctx, header, rejected=False), _upsert_params(ctx, source_key))
        if eager and not header.added
        else None
    )
    with (
        _named_failures(obj.key),
        # BEGIN and the settings go with the first statement, the COPY: one round trip.
        db.transaction(commit=not dry_run, setup=ctx.file_session, deferred=True),
    ):
        sorted_rows, *paused = _stage(
            db, ctx.loader, obj.key, header, csv_body, then=sort, eager=eager, behind=ahead
        )
        pause = pauses.pause_in(ctx.dataset, paused) if stop_if_paused else None
        if pause is not None:  # nothing of the file is kept: the transaction rolls back
            raise DatasetPaused(ctx.dataset, pause.describe(), stopped_before=obj.key)
        (
            counts.read,
            counts.sentinel_filtered,
            counts.rejected,
            counts.alarm_filtered,
            candidates,
        ) = sorted_rows
        # With the upsert gone ahead, "copy" is the COPY's round trip, upsert included.
        timings["copy"] = _ms_since(clock)
        reached(Step.STAGED, obj.key)
        if ahead is not None and counts.rejected:
            # It took rows that are now set aside: undo it (or the failure it met).
            db.run(f"ROLLBACK TO SAVEPOINT {TYPED}")
            ahead = None
        # Rows set aside: what follows changes the staging, so the savepoint is declared
        # again after it (a rollback to it must keep that). A clean file uses the first.
        declared = not counts.rejected
        if counts.rejected and _set_aside_superseded(db, ctx, counts):
            counts.alarm_filtered, candidates = db.one(ctx.loader.candidate_counts)
        _check_reject_share(db, ctx, obj.key, file_columns, counts)

        try:
            with db.savepoint(TYPED, declared=declared):
                # What went ahead counts as this upsert: its error is raised here, so the
                # savepoint rolls it back and a value that does not cast is found below.
                _upsert(db, ctx, source_key, header, counts, candidates=candidates, ahead=ahead)
        except DatabaseError as exc:
            if not sqlstate(exc).startswith("22"):
                raise
            # Some value is not a literal or does not cast: find every bad row exactly,
            # set them aside (with the earlier occurrences of their tickets), retry.
            db.run(ctx.loader.find_bad_values)
            counts.rejected += db.row_count
            _set_aside_superseded(db, ctx, counts)
            counts.alarm_filtered, candidates = db.one(ctx.loader.candidate_counts)
            _check_reject_share(db, ctx, obj.key, file_columns, counts)
            _upsert(db, ctx, source_key, header, counts, candidates=candidates)
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
                **({"schema_drift": header.drift.as_metadata()} if header.drift else {}),
            },
            unblock=True,
            at_commit=True,  # the ledger row and the COMMIT: one round trip
        )
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
        drift=header.drift,
    )


def _stage(
    db: Database,
    loader: TableLoader,
    key: str,
    header: HeaderPlan,
    body: CsvBody,
    *,
    then: str,
    eager: bool,
    behind: Behind | None = None,
) -> list[list[Any]]:
    """COPY the file into ``staged_rows``, then ``then`` in the COPY's Query: its rows (the
    first is the counts). A file with unknown columns goes through its own staging table
    first (``DriftStaging``), missing columns are simply not copied.
    ``eager``: a small file, sent with its COPY statement (one round trip, not two);
    ``behind``: a statement pipelined after that round trip's Query (no drift staging)."""
    if not header.added:
        return _copy(
            db,
            loader.copy_statement(header.columns),
            key,
            body,
            then=then,
            eager=eager,
            behind=behind,
        )
    if behind is not None:
        raise ValueError("a file with unknown columns stages twice: nothing goes behind")
    staging = loader.drift_staging(header.columns)
    db.run(staging.create)
    _copy(db, staging.copy, key, body, column_names=staging.column_names, eager=eager)
    return db.run(f"{staging.move};\n{then}")


def _copy(
    db: Database,
    statement: str,
    key: str,
    body: CsvBody,
    *,
    then: str = "",
    column_names: dict[str, str] | None = None,
    eager: bool = False,
    behind: Behind | None = None,
) -> list[list[Any]]:
    """COPY ``body``; with ``then``, those statements too, in its Query: their rows."""
    try:
        if not then:
            db.copy_in(statement, body.chunks(), eager=eager)
            return []
        return db.copy_in_then(statement, body.chunks(), then, eager=eager, behind=behind)
    except DatabaseError as exc:
        # Class 22 is the data's fault (bad CSV, bad encoding; ``then`` only reads what the
        # COPY stored, with checks that do not raise); anything else is ours. What goes
        # ``behind`` keeps its own error: this is the Query's.
        if not sqlstate(exc).startswith("22"):
            raise
        fields = error_fields(exc)
        where = _WHERE.search(fields.get("W", ""))
        column = where.group(2) if where and where.group(2) else None
        message = fields.get("M", str(exc))
        for staged, name in (column_names or {}).items():
            message = message.replace(f'"{staged}"', f'"{name}"')
        raise FileRejected(
            key,
            message,
            line=int(where.group(1)) if where else None,
            # A rescued column is staged as rescue_<n>: name it as the file does.
            column=(column_names or {}).get(column, column) if column else None,
        ) from None


def _upsert(
    db: Database,
    ctx: ApplyContext,
    key: str,
    header: HeaderPlan,
    counts: RowCounts,
    *,
    candidates: int,
    ahead: Behind | None = None,
) -> None:
    """Upsert the staged rows (or take the answer of the upsert that went ``ahead``)."""
    if ahead is None:
        statement = _upsert_statement(ctx, header, rejected=counts.rejected > 0)
        distinct_ids, written = db.one(statement, **_upsert_params(ctx, key))
    else:
        distinct_ids, written = ahead.one()
    counts.upserted = written
    counts.duplicate_ids = candidates - distinct_ids
    counts.skipped_older = distinct_ids - written


def _upsert_statement(ctx: ApplyContext, header: HeaderPlan, *, rejected: bool) -> str:
    return ctx.loader.upsert(
        exclude_rejected=rejected,
        # A clean file takes the statement of every stored column; a drifting one, its own.
        file_columns=header.columns if header.missing else None,
        rescue=bool(header.added),
    )


def _upsert_params(ctx: ApplyContext, key: str) -> dict[str, Any]:
    return {"aliases": ctx.aliases_json, "source_key": key}


def _set_aside_superseded(db: Database, ctx: ApplyContext, counts: RowCounts) -> bool:
    """Set aside the earlier occurrences of tickets whose last occurrence was set aside
    (an older version must not stand in for it); True if that set anything aside."""
    db.run(ctx.loader.reject_superseded)
    counts.rejected += db.row_count
    return db.row_count > 0


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


@contextmanager
def _named_failures(key: str) -> Iterator[None]:
    """A database error while applying ``key`` leaves as ``_named`` says."""
    try:
        yield
    except DatabaseError as exc:
        named = _named(key, exc)
        if named is None:
            raise
        raise named from exc


def _named(key: str, error: Exception) -> FileRejected | FileFailed | None:
    """What a database error while applying ``key`` becomes: a rejection of the file when
    the file's content caused it, else an error naming the file. Lock waits and lost
    connections stay as they are (None): the lock-wait handling and the retry policy take
    them."""
    state = sqlstate(error)
    if state in _NOT_THE_FILES or connection_lost(error):
        return None
    detail = error_fields(error).get("D")
    message = _message(error) + (f" ({detail})" if detail else "")
    if state[:2] in _CONTENT_CLASSES:
        return FileRejected(key, f"{message} [SQLSTATE {state}]")
    return FileFailed(key, f"database: {message} [SQLSTATE {state or 'none'}]")


def _message(error: DatabaseError) -> str:
    return error_fields(error).get("M", str(error))


def _ms_since(clock: float) -> int:
    return int((time.perf_counter() - clock) * 1000)
