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
from dataclasses import dataclass, replace
from datetime import UTC, datetime
from functools import partial
from typing import Any

from botocore.exceptions import BotoCoreError, ClientError

from tickets_ingest.core.plan import classify_listing, plan_sync
from tickets_ingest.dal import ledger, pauses
from tickets_ingest.dal.db import DatabaseError, InterfaceError
from tickets_ingest.dal.lease import DatasetLock
from tickets_ingest.dal.retry import connection_lost
from tickets_ingest.dal.s3 import DELETE_BATCH_MAX, MAX_POOL_CONNECTIONS, DownloadCut
from tickets_ingest.errors import DatasetPaused, FileRejected, ObjectChanged, TransientFault
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
    # A live holder of the lock is told to list again before it lets go, and this sync
    # stops with SyncBusy(handed_over=True) at once (the Lambda handler: the message is
    # acknowledged, nothing lost). Otherwise: wait lock_wait_seconds, then SyncBusy.
    hand_over: bool = False


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


def raise_if_paused(runtime: Runtime, dataset: str) -> None:
    """``DatasetPaused`` if an operator paused ``dataset`` (before a sync takes the lock;
    each file's transaction checks again as it opens: ``apply_file(stop_if_paused=...)``)."""
    pause = pauses.pause_of(runtime.db(), dataset)
    if pause is not None:
        raise DatasetPaused(dataset, pause.describe())


def sync(runtime: Runtime, dataset: str, options: SyncOptions | None = None) -> SyncReport:
    """Sync ``dataset`` under its lock. Before letting go, the sync lists again if another
    sync found it busy meanwhile (``release_unless_news``): what that one came for is
    applied here, so its message can be acknowledged.

    A paused dataset: a sync that would apply raises ``DatasetPaused`` before it takes the
    lock (so it never waits for, or hands news to, a holder), and a pause that comes while
    it runs stops it before its next file. A dry run still plans."""
    options = options or SyncOptions()
    runtime.db(verify=True)
    if not options.dry_run:
        raise_if_paused(runtime, dataset)
    ctx = runtime.apply_context(dataset)
    with runtime.dataset_lock(
        dataset,
        options.lock_wait_seconds,
        takes_news=not options.dry_run,  # it lists again before it lets go
        hand_over=options.hand_over,
    ) as lock:
        report = _sync_once(runtime, dataset, ctx, options, lock)
        while (
            not options.dry_run
            and report.ok
            and not report.stopped_early
            and not lock.release_unless_news()
        ):
            report = _merged(report, _sync_once(runtime, dataset, ctx, options, lock))
    return report


def _sync_once(
    runtime: Runtime, dataset: str, ctx: ApplyContext, options: SyncOptions, lock: DatasetLock
) -> SyncReport:
    plan = plan_dataset(runtime, dataset)
    reached(Step.LISTED, dataset)
    _warn_about(plan)
    return apply_plan(runtime, plan, lock, options, ctx=ctx)


def apply_plan(
    runtime: Runtime,
    plan: Plan,
    lock: DatasetLock,
    options: SyncOptions,
    *,
    ctx: ApplyContext | None = None,
) -> SyncReport:
    """Carry out ``plan`` under ``lock`` (held by the caller): archive what was committed
    already, then apply each file in order with the retry policy, archiving each after its
    commit. A sync's plan and a replay's (files from ``processed/``, nothing to move) take
    this one path."""
    ctx = ctx or runtime.apply_context(plan.dataset)
    report = SyncReport(dataset=plan.dataset, plan=plan, dry_run=options.dry_run)
    with _Pipeline(runtime, plan.dataset, plan.to_apply, report) as pipeline:
        if not options.dry_run:
            for obj in plan.to_archive:
                pipeline.archive(obj)
        report.watermark_after = _apply_in_order(
            runtime,
            ctx=ctx,
            plan=plan,
            options=options,
            report=report,
            pipeline=pipeline,
            lock=lock,
        )
    return report


def _merged(first: SyncReport, then: SyncReport) -> SyncReport:
    """One report for a sync that listed again before letting go."""
    plan = replace(
        then.plan,
        watermark=first.plan.watermark,
        to_apply=first.plan.to_apply + then.plan.to_apply,
        to_archive=first.plan.to_archive + then.plan.to_archive,
    )
    return replace(
        then,
        plan=plan,
        applied=first.applied + then.applied,
        archived=sorted(first.archived + then.archived),
    )


def _apply_in_order(
    runtime: Runtime,
    *,
    ctx: ApplyContext,
    plan: Plan,
    options: SyncOptions,
    report: SyncReport,
    pipeline: _Pipeline,
    lock: DatasetLock,
) -> str | None:
    """Apply the plan's files one by one; the watermark after the last one committed.

    A file whose try meets a transient fault (its download cut off, the database
    connection lost) is tried again from a fresh GET in a fresh transaction, within the
    retry policy and the time budget; nothing of a failed try was committed. After a
    reconnect the dataset lock is held again on the new connection, unless another sync
    took it over meanwhile (``LockLost``: this sync stops, it never applies again).
    """
    watermark = plan.watermark
    session = _Session(runtime, ctx.dataset, lock)
    for index, planned in enumerate(plan.to_apply):
        obj = planned.obj
        pipeline.raise_if_crashed()
        lock.raise_if_lost()
        if options.may_start_file is not None and not options.may_start_file(obj):
            report.stopped_early = True
            log.info("stopping before %s: time budget", obj.key)
            break
        replaying = planned.export_type is ExportType.REPLAY
        after = _watermark_after(planned, watermark)
        try_file = partial(
            _try_file,
            runtime,
            session=session,
            pipeline=pipeline,
            index=index,
            ctx=ctx,
            planned=planned,
            watermark_after=after,
            options=options,
        )
        budget = options.may_start_file
        try:
            result = runtime.retry_policy.run(
                _failed_step,
                obj.key,
                try_file,
                transient=_passing_fault,
                before_retry=session.recover,
                may_retry=partial(budget, obj) if budget is not None else None,
            )
        except FileRejected as rejection:
            # A replayed file does not block the stream: changes/ goes on without it.
            record = not (options.dry_run or replaying)
            report.rejected = _block(runtime, ctx.dataset, obj, rejection, record=record)
            break
        if result is not None:
            report.applied.append(result)
            _log_applied(planned.export_type, result)
        if not options.dry_run:
            watermark = after
            if not replaying:  # a replayed file is in processed/ already
                pipeline.archive(obj, result)  # only ever after the commit
    return watermark


def _watermark_after(planned: PlannedFile, watermark: str | None) -> str | None:
    """The watermark once ``planned`` is committed: a late file leaves it, a replayed one
    moves it forward only (it may be older), any other file is the new watermark."""
    if planned.export_type is ExportType.LATE:
        return watermark
    if planned.export_type is ExportType.REPLAY:
        return max(watermark or "", planned.source_key)
    return planned.obj.key


def _try_file(
    runtime: Runtime,
    *,
    session: _Session,
    pipeline: _Pipeline,
    index: int,
    ctx: ApplyContext,
    planned: PlannedFile,
    watermark_after: str | None,
    options: SyncOptions,
) -> FileResult | None:
    """One try of one file: GET, apply, commit. None: a try before this one committed it
    (only the reply to its COMMIT was lost with the connection)."""
    obj = planned.obj
    if session.reconnected and session.committed_already(planned):
        return None
    lock = session.lock
    lock.start_file()
    body = pipeline.body(index)
    try:
        reached(Step.BODY_OPENED, obj.key)
        result = apply_file(
            runtime.db(),
            ctx,
            planned,
            body,
            watermark_after=watermark_after,
            dry_run=options.dry_run,
            # A pause that came while this sync ran stops it before this file (also the gap
            # between the check before the lock and taking it), checked with the file's
            # BEGIN. Inside the try: a connection lost since the last file is recovered
            # like any other, not a failed run. (A replay runs while paused: the restore
            # procedure pauses the stream first.)
            stop_if_paused=not options.dry_run and planned.export_type is not ExportType.REPLAY,
            on_progress=_progress_for(obj, options.on_progress),
        )
        if not options.dry_run:
            reached(Step.COMMITTED, obj.key)
    except DatabaseError as error:
        waited = lock.wait_timeout(error, obj.key, f"tickets.{ctx.loader.table}")
        if waited is not None:
            raise waited from None
        lock.raise_if_lost()  # a takeover ended this connection: never retried
        raise
    except (InterfaceError, OSError):
        lock.raise_if_lost()
        raise
    finally:
        body.close()
    return result


def _passing_fault(error: BaseException) -> bool:
    """Faults that a new try of the file may not meet: the file is tried again."""
    return isinstance(error, DownloadCut) or connection_lost(error)


def _failed_step(error: BaseException) -> str:
    return "GET" if isinstance(error, DownloadCut) else "apply"


class _Session:
    """The sync's database session across reconnects.

    The dataset lock is a session lock: it goes with a lost connection. After
    reconnecting, the sync takes it again on the new connection, or stops with
    ``LockLost`` if another sync took the dataset over meanwhile (a takeover ends this
    sync's backend, which looks like any lost connection: the lease tells them apart). It
    then asks the ledger, before applying a file again, whether a try whose COMMIT reply
    was lost did commit it.
    """

    def __init__(self, runtime: Runtime, dataset: str, lock: DatasetLock) -> None:
        self._runtime = runtime
        self._dataset = dataset
        self.lock = lock
        self._locked_on = runtime.db()  # the connection the lock is held on
        self.reconnected = False

    def recover(self, error: BaseException) -> None:
        self.lock.raise_if_lost()
        if connection_lost(error):
            self._runtime.close()  # whatever pg8000 says, this connection is done
        db = self._runtime.db()
        if db is self._locked_on:
            return  # the connection survived (the download broke off before any SQL)
        log.warning("reconnected to the database; taking the lock on %s again", self._dataset)
        self.lock.rebind(db)
        self._locked_on = db
        self.reconnected = True

    def committed_already(self, planned: PlannedFile) -> bool:
        """True if the ledger holds ``planned`` with its ETag (it is not applied again)."""
        key, etag = planned.source_key, planned.obj.etag
        applied = ledger.applied_etags(self._runtime.db(), self._dataset, [key]).get(key)
        if applied is None:
            return False
        if applied != etag:
            raise ObjectChanged(
                f"{key} was applied with ETag {applied} while this sync was reconnecting; "
                "the next run re-plans"
            )
        log.warning("%s was committed before the connection was lost; not applied again", key)
        return True


class _Pipeline:
    """Keeps S3 round trips off the critical path without weakening order or safety.

    The GETs of the next small files start while the current one applies (``PREFETCH_DEPTH``
    ahead, on their own threads, so a backlog of copies never delays them); a GET only
    opens the response, the body is read when applied. The archive of a committed file is
    a copy in the background (it is only ever submitted after its commit), and the deletes
    from changes/ go in batches, in commit order, each batch once all its copies are done:
    a file leaves changes/ only after its commit AND its copy. A batch is sent when
    ``DELETE_BATCH`` files are in it, and the last one when the pipeline closes: at the end
    of the sync, before the lock is let go, also when the run stops early (the time budget)
    or fails. Applies stay strictly sequential.
    """

    PREFETCH_BELOW = 8 * 1024 * 1024  # a large file's COPY is long; don't hold a GET idle
    # GETs in flight ahead of the file being applied: with 30 ms a request and ~5 ms of
    # database work a file, six are needed to keep up; the rest is headroom.
    PREFETCH_DEPTH = 12
    COPY_WORKERS = 16  # copies in flight: ~30 ms each against a few ms of apply per file
    DELETE_BATCH = DELETE_BATCH_MAX
    # One connection each for the GETs held open, the copies, the batch delete, the
    # applying thread: botocore's pool must have room for them all.
    assert PREFETCH_DEPTH + 1 + COPY_WORKERS + 2 <= MAX_POOL_CONNECTIONS

    def __init__(
        self, runtime: Runtime, dataset: str, files: tuple[PlannedFile, ...], report: SyncReport
    ) -> None:
        self._bucket = runtime.bucket
        self._dataset = dataset
        self._files = files
        self._report = report
        self._gets = ThreadPoolExecutor(self.PREFETCH_DEPTH, thread_name_prefix="tickets-get")
        self._copies = ThreadPoolExecutor(self.COPY_WORKERS, thread_name_prefix="tickets-copy")
        # One thread: batches go one after the other, in commit order.
        self._deletes = ThreadPoolExecutor(1, thread_name_prefix="tickets-delete")
        # What a background step raised, as each one ends (a done-callback): checking it
        # costs the same before the thousandth file as before the first.
        self._failures: list[BaseException] = []
        self._batch: list[tuple[StreamObject, FileResult | None, Future[bool]]] = []
        self._prefetched: dict[int, Future[Any]] = {}
        self._lock = threading.Lock()

    def __enter__(self) -> _Pipeline:
        return self

    def __exit__(self, kind: object, error: BaseException | None, tb: object) -> None:
        self._discard_prefetch()
        self._gets.shutdown(wait=True)
        try:
            self._send_batch()  # what was copied leaves changes/ now, whatever stopped us
        finally:
            self._copies.shutdown(wait=True)
            self._deletes.shutdown(wait=True)
            self._report.archived.sort()
        if error is None:
            self.raise_if_crashed()
        else:
            for failure in self._failures:  # the error already raised comes first
                log.warning("background archive step failed too: %s", failure)

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
                self._prefetched[ahead] = self._gets.submit(
                    self._bucket.open, upcoming.key, upcoming.etag
                )
        return body

    def archive(self, obj: StreamObject, result: FileResult | None = None) -> None:
        """Copy ``obj`` (committed) to processed/ now; delete it from changes/ with its batch."""
        copied = self._copies.submit(self._copy, obj, result)
        copied.add_done_callback(self._note_failure)
        self._batch.append((obj, result, copied))
        if len(self._batch) >= self.DELETE_BATCH:
            self._send_batch()

    def _copy(self, obj: StreamObject, result: FileResult | None) -> bool:
        """True: copied, to be deleted with its batch. False: nothing more to do now."""
        try:
            still_there = self._bucket.copy_applied(self._dataset, obj.key, obj.etag)
        except _ARCHIVE_ERRORS as exc:
            # Committed already: the next run sees the ledger row and only archives.
            log.warning("could not archive %s yet (%s); the next run will", obj.key, exc)
            return False
        if not still_there:  # an earlier move did both steps
            self._archived(obj, result)
        return still_there

    def _send_batch(self) -> None:
        batch, self._batch = self._batch, []
        if batch:
            self._deletes.submit(self._delete, batch).add_done_callback(self._note_failure)

    def _delete(self, batch: list[tuple[StreamObject, FileResult | None, Future[bool]]]) -> None:
        copied = [(obj, result) for obj, result, done in batch if _succeeded(done)]
        if not copied:
            return
        try:
            outcome = self._bucket.delete_applied([(obj.key, obj.etag) for obj, _ in copied])
        except _ARCHIVE_ERRORS as exc:
            # Committed and copied: the next run sees the ledger rows and only archives.
            log.warning(
                "could not delete %d archived file(s) from changes/ yet (%s); the next run will",
                len(copied),
                exc,
            )
            return
        deleted = set(outcome.deleted)
        for obj, result in copied:
            if obj.key in deleted:
                self._archived(obj, result)

    def _archived(self, obj: StreamObject, result: FileResult | None) -> None:
        with self._lock:
            self._report.archived.append(obj.key)
        if result is not None:
            result.archived = True

    def _note_failure(self, future: Future[Any]) -> None:
        """Run as a background step ends (on its thread, or here if it ended already)."""
        error = None if future.cancelled() else future.exception()
        if error is not None:
            with self._lock:
                self._failures.append(error)

    def raise_if_crashed(self) -> None:
        """Anything but an S3 error in a background step stops the run, as in the foreground
        (S3 errors are handled in the step: the next run archives)."""
        with self._lock:
            failure = self._failures[0] if self._failures else None
        if failure is not None:
            raise failure

    def _discard_prefetch(self) -> None:
        prefetched, self._prefetched = self._prefetched, {}
        for future in prefetched.values():
            try:
                future.result().close()
            except Exception:  # an unused prefetch may fail in any way; it does not matter
                log.debug("discarded prefetch failed", exc_info=True)


_ARCHIVE_ERRORS = (ClientError, BotoCoreError, ObjectChanged, TransientFault)


def _succeeded(copied: Future[bool]) -> bool:
    """The copy went through and the key is still to be deleted (waits for the copy)."""
    return copied.exception() is None and copied.result()


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
    runtime: Runtime, dataset: str, obj: StreamObject, rejection: FileRejected, record: bool
) -> BlockedFile:
    """The rejected file as ``status`` shows it; ``record``: in the blocked-file register
    (not for a dry run, nor for a replayed file)."""
    log.error("rejected %s; the run stops here", rejection)
    if not record:
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
