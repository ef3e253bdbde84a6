"""``sync(dataset)``: bring one dataset's table up to date with its ``changes/`` stream.

Plan from the listing and the ledger, then apply each file oldest first, each in its own
transaction, archiving it to ``processed/`` only after its commit. Whatever stops a run
(a crash, a rejected file, the time budget), the next run starts from the ledger and
finishes the job: archive what was committed, apply what was not.
"""

from __future__ import annotations

import logging
import threading
from collections.abc import Callable
from concurrent.futures import Future, ThreadPoolExecutor
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any

from botocore.exceptions import BotoCoreError, ClientError

from tickets_ingest.core.plan import classify_listing, plan_sync
from tickets_ingest.dal import ledger
from tickets_ingest.errors import FileRejected, ObjectChanged
from tickets_ingest.failpoints import Step, reached
from tickets_ingest.logic.apply import ApplyContext, apply_file
from tickets_ingest.logic.runtime import Runtime
from tickets_ingest.models import (
    BlockedFile,
    ExportType,
    FileResult,
    Plan,
    PlannedFile,
    StreamObject,
    SyncReport,
)

log = logging.getLogger(__name__)

ProgressCallback = Callable[[StreamObject, int], None]


@dataclass(frozen=True)
class SyncOptions:
    dry_run: bool = False
    lock_wait_seconds: float | None = None  # None: the configured LOCK_WAIT_SECONDS
    # Asked before each file; False stops the run cleanly between files (Lambda time budget).
    may_start_file: Callable[[StreamObject], bool] | None = None
    on_progress: ProgressCallback | None = None


def plan_dataset(runtime: Runtime, dataset: str, now: datetime | None = None) -> Plan:
    """The plan a sync would follow right now (reads the bucket and the ledger only)."""
    runtime.settings.table_for(dataset)  # refuse datasets that are not enabled
    db = runtime.db()
    files, ignored = classify_listing(dataset, runtime.bucket.list_changes(dataset))
    applied = ledger.applied_etags(db, dataset, (f.key for f in files))
    return plan_sync(
        dataset,
        files,
        applied,
        ledger.watermark(db, dataset),
        ignored,
        now=now or datetime.now(UTC),
        future_tolerance_seconds=runtime.settings.future_tolerance_seconds,
    )


def sync(runtime: Runtime, dataset: str, options: SyncOptions | None = None) -> SyncReport:
    options = options or SyncOptions()
    db = runtime.db(verify=True)
    ctx = runtime.apply_context(dataset)
    wait = runtime.settings.lock_wait_seconds
    if options.lock_wait_seconds is not None:
        wait = options.lock_wait_seconds
    with ledger.dataset_lock(db, dataset, wait):
        plan = plan_dataset(runtime, dataset)
        reached(Step.LISTED, dataset)
        report = SyncReport(dataset=dataset, plan=plan, dry_run=options.dry_run)
        _warn_about(plan)
        with _Pipeline(runtime, dataset, plan.to_apply, report) as pipeline:
            if not options.dry_run:
                for obj in plan.to_archive:
                    pipeline.archive(obj)
            report.watermark_after = _apply_in_order(
                runtime, ctx=ctx, plan=plan, options=options, report=report, pipeline=pipeline
            )
    return report


def _apply_in_order(
    runtime: Runtime,
    *,
    ctx: ApplyContext,
    plan: Plan,
    options: SyncOptions,
    report: SyncReport,
    pipeline: _Pipeline,
) -> str | None:
    """Apply the plan's files one by one; the watermark after the last one committed."""
    watermark = plan.watermark
    for index, planned in enumerate(plan.to_apply):
        obj = planned.obj
        pipeline.raise_if_crashed()
        if options.may_start_file is not None and not options.may_start_file(obj):
            report.stopped_early = True
            log.info("stopping before %s: time budget", obj.key)
            break
        after = watermark if planned.export_type is ExportType.LATE else obj.key
        body = pipeline.body(index)
        try:
            reached(Step.BODY_OPENED, obj.key)
            result = apply_file(
                runtime.db(),
                ctx,
                planned,
                body,
                watermark_after=after,
                dry_run=options.dry_run,
                on_progress=_progress_for(obj, options.on_progress),
            )
        except FileRejected as rejection:
            report.rejected = _block(runtime, ctx.dataset, obj, rejection, options.dry_run)
            break
        finally:
            body.close()
        report.applied.append(result)
        _log_applied(planned.export_type, result)
        if not options.dry_run:
            reached(Step.COMMITTED, obj.key)
            watermark = after
            pipeline.archive(obj, result)  # only ever after the commit
    return watermark


class _Pipeline:
    """Keeps S3 round trips off the critical path without weakening order or safety.

    The archive move of a committed file runs in the background while the next file
    applies (it is only ever submitted after its commit), and the GETs of the next few
    small files start while the current one is copied and committed. Applies stay
    strictly sequential; a GET only opens the response, the body is read when applied.
    """

    PREFETCH_BELOW = 8 * 1024 * 1024  # a large file's COPY is long; don't hold a GET idle
    PREFETCH_DEPTH = 3  # GETs in flight ahead of the file being applied
    WORKERS = 6

    def __init__(
        self, runtime: Runtime, dataset: str, files: tuple[PlannedFile, ...], report: SyncReport
    ) -> None:
        self._bucket = runtime.bucket
        self._dataset = dataset
        self._files = files
        self._report = report
        self._pool = ThreadPoolExecutor(self.WORKERS, thread_name_prefix="tickets-s3")
        self._archives: list[Future[None]] = []
        self._prefetched: dict[int, Future[Any]] = {}
        self._lock = threading.Lock()

    def __enter__(self) -> _Pipeline:
        return self

    def __exit__(self, kind: object, error: BaseException | None, tb: object) -> None:
        self._discard_prefetch()
        self._pool.shutdown(wait=True)
        self._report.archived.sort()
        if error is None:
            self.raise_if_crashed()

    def body(self, index: int) -> Any:
        planned = self._files[index].obj
        prefetched = self._prefetched.pop(index, None)
        body = (
            prefetched.result()
            if prefetched is not None
            else self._bucket.open(planned.key, planned.etag)
        )
        for ahead in range(index + 1, min(index + 1 + self.PREFETCH_DEPTH, len(self._files))):
            upcoming = self._files[ahead].obj
            if upcoming.size >= self.PREFETCH_BELOW or planned.size >= self.PREFETCH_BELOW:
                break
            if ahead not in self._prefetched:
                self._prefetched[ahead] = self._pool.submit(
                    self._bucket.open, upcoming.key, upcoming.etag
                )
        return body

    def archive(self, obj: StreamObject, result: FileResult | None = None) -> None:
        self._archives.append(self._pool.submit(self._archive, obj, result))

    def _archive(self, obj: StreamObject, result: FileResult | None) -> None:
        try:
            self._bucket.archive(self._dataset, obj.key, obj.etag)
        except (ClientError, BotoCoreError, ObjectChanged) as exc:
            # Committed already: the next run sees the ledger row and only archives.
            log.warning("could not archive %s yet (%s); the next run will", obj.key, exc)
            return
        with self._lock:
            self._report.archived.append(obj.key)
        if result is not None:
            result.archived = True

    def raise_if_crashed(self) -> None:
        """Anything but an S3 error in a background move stops the run, as in the foreground."""
        for future in self._archives:
            if future.done() and future.exception() is not None:
                raise future.exception()  # type: ignore[misc]

    def _discard_prefetch(self) -> None:
        prefetched, self._prefetched = self._prefetched, {}
        for future in prefetched.values():
            try:
                future.result().close()
            except Exception:  # an unused prefetch may fail in any way; it does not matter
                log.debug("discarded prefetch failed", exc_info=True)


def _log_applied(export_type: ExportType, result: FileResult) -> None:
    counts = result.counts
    log.info(
        "applied %s (%s): %d rows read, %d upserted, %d rejected in %d ms",
        result.key,
        export_type.value,
        counts.read,
        counts.upserted,
        counts.rejected,
        result.duration_ms,
    )
    if counts.sentinel_filtered:
        log.warning(
            "%s holds %d 'EXPORT STOPPED' sentinel row(s): the export was truncated "
            "upstream; rows after the cut are missing until a later file brings them",
            result.key,
            counts.sentinel_filtered,
        )


def _block(
    runtime: Runtime, dataset: str, obj: StreamObject, rejection: FileRejected, dry_run: bool
) -> BlockedFile:
    log.error("rejected %s; dataset %s stops here until it is fixed", rejection, dataset)
    if dry_run:
        return BlockedFile(
            obj.key,
            obj.etag,
            rejection.reason,
            rejection.line,
            rejection.column,
            since=obj.timestamp,
            attempts=0,
        )
    # A rejection raised inside COPY closes the connection (pg8000 cannot resume the
    # protocol); runtime.db() reconnects. Recording the block needs no lock: it is one
    # idempotent upsert, and any other sync stops at this same file.
    db = runtime.db()
    ledger.mark_blocked(db, dataset, obj.etag, rejection)
    blocked = ledger.blocked_file(db, dataset)
    assert blocked is not None
    return blocked


def _warn_about(plan: Plan) -> None:
    for conflict in plan.conflicts:
        log.warning(
            "conflict: %s was applied with ETag %s but now has ETag %s; not re-applied, "
            "left in changes/ for an operator",
            conflict.obj.key,
            conflict.applied_etag,
            conflict.obj.etag,
        )
    for held in plan.held:
        log.warning("held %s: %s", held.obj.key, held.reason)
    if plan.ignored:
        log.info(
            "ignored %d non-stream key(s) under changes/: %s",
            len(plan.ignored),
            ", ".join(plan.ignored[:10]),
        )


def _progress_for(
    obj: StreamObject, callback: ProgressCallback | None
) -> Callable[[int], None] | None:
    if callback is None:
        return None
    return lambda done: callback(obj, done)
