"""``sync(dataset)``: bring one dataset's table up to date with its ``changes/`` stream.

Plan from the listing and the ledger, then apply each file oldest first, each in its own
transaction, archiving it to ``processed/`` only after its commit. Whatever stops a run
(a crash, a rejected file, the time budget), the next run starts from the ledger and
finishes the job: archive what was committed, apply what was not.
"""

from __future__ import annotations

import logging
from collections.abc import Callable
from dataclasses import dataclass

from botocore.exceptions import BotoCoreError, ClientError

from tickets_ingest.core.plan import classify_listing, plan_sync
from tickets_ingest.dal import ledger
from tickets_ingest.errors import FileRejected, ObjectChanged
from tickets_ingest.failpoints import Step, reached
from tickets_ingest.logic.apply import apply_file
from tickets_ingest.logic.runtime import Runtime
from tickets_ingest.models import BlockedFile, ExportType, Plan, StreamObject, SyncReport

log = logging.getLogger(__name__)

ProgressCallback = Callable[[StreamObject, int], None]


@dataclass(frozen=True)
class SyncOptions:
    dry_run: bool = False
    lock_wait_seconds: float | None = None  # None: the configured LOCK_WAIT_SECONDS
    # Asked before each file; False stops the run cleanly between files (Lambda time budget).
    may_start_file: Callable[[StreamObject], bool] | None = None
    on_progress: ProgressCallback | None = None


def plan_dataset(runtime: Runtime, dataset: str) -> Plan:
    """The plan a sync would follow right now (reads the bucket and the ledger only)."""
    runtime.settings.table_for(dataset)  # refuse datasets that are not enabled
    db = runtime.db()
    files, ignored = classify_listing(dataset, runtime.bucket.list_changes(dataset))
    applied = ledger.applied_etags(db, dataset, (f.key for f in files))
    return plan_sync(dataset, files, applied, ledger.watermark(db, dataset), ignored)


def sync(runtime: Runtime, dataset: str, options: SyncOptions | None = None) -> SyncReport:
    options = options or SyncOptions()
    ctx = runtime.apply_context(dataset)
    db = runtime.db()
    wait = runtime.settings.lock_wait_seconds
    if options.lock_wait_seconds is not None:
        wait = options.lock_wait_seconds
    with ledger.dataset_lock(db, dataset, wait):
        plan = plan_dataset(runtime, dataset)
        reached(Step.LISTED, dataset)
        report = SyncReport(dataset=dataset, plan=plan, dry_run=options.dry_run)
        _warn_about(plan)
        if not options.dry_run:
            for obj in plan.to_archive:
                _archive(runtime, dataset, obj, report)

        watermark = plan.watermark
        for planned in plan.to_apply:
            obj = planned.obj
            if options.may_start_file is not None and not options.may_start_file(obj):
                report.stopped_early = True
                log.info("stopping before %s: time budget", obj.key)
                break
            after = watermark if planned.export_type is ExportType.LATE else obj.key
            progress = _progress_for(obj, options.on_progress)
            body = runtime.bucket.open(obj.key, obj.etag)
            try:
                reached(Step.BODY_OPENED, obj.key)
                result = apply_file(
                    runtime.db(),
                    ctx,
                    planned,
                    body,
                    watermark_after=after,
                    dry_run=options.dry_run,
                    on_progress=progress,
                )
            except FileRejected as rejection:
                report.rejected = _block(runtime, dataset, obj, rejection, options.dry_run)
                break
            finally:
                body.close()
            report.applied.append(result)
            if not options.dry_run:
                reached(Step.COMMITTED, obj.key)
            log.info(
                "applied %s (%s): %d rows read, %d upserted, %d rejected in %d ms",
                obj.key,
                planned.export_type.value,
                result.counts.read,
                result.counts.upserted,
                result.counts.rejected,
                result.duration_ms,
            )
            if result.counts.sentinel_filtered:
                log.warning(
                    "%s holds %d 'EXPORT STOPPED' sentinel row(s): the export was truncated "
                    "upstream; rows after the cut are missing until a later file brings them",
                    obj.key,
                    result.counts.sentinel_filtered,
                )
            if not options.dry_run:
                watermark = after
                result.archived = _archive(runtime, dataset, obj, report)
        report.watermark_after = watermark
    return report


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


def _archive(runtime: Runtime, dataset: str, obj: StreamObject, report: SyncReport) -> bool:
    try:
        runtime.bucket.archive(dataset, obj.key, obj.etag)
    except (ClientError, BotoCoreError, ObjectChanged) as exc:
        # Committed already: the next run sees the ledger row and only archives.
        log.warning("could not archive %s yet (%s); the next run will", obj.key, exc)
        return False
    report.archived.append(obj.key)
    return True


def _warn_about(plan: Plan) -> None:
    for conflict in plan.conflicts:
        log.warning(
            "conflict: %s was applied with ETag %s but now has ETag %s; not re-applied, "
            "left in changes/ for an operator",
            conflict.obj.key,
            conflict.applied_etag,
            conflict.obj.etag,
        )
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
