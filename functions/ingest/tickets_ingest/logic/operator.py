"""Operator actions beyond sync: quarantine a blocking file, redrive the dead-letter queue."""

from __future__ import annotations

import getpass
import logging
import os
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any

from tickets_ingest.core.keys import changes_prefix, file_name, parse_stream_key, quarantine_key
from tickets_ingest.core.plan import plan_missing, plan_replay
from tickets_ingest.dal import ledger
from tickets_ingest.dal.db import Database
from tickets_ingest.errors import IngestError
from tickets_ingest.logic.runtime import Runtime
from tickets_ingest.logic.sync import SyncOptions, apply_plan
from tickets_ingest.models import (
    ExportType,
    Plan,
    PlannedFile,
    RowCounts,
    SyncReport,
)

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class Quarantined:
    dataset: str
    key: str
    etag: str
    moved_to: str
    was_blocking: bool


def resolve_key(dataset: str, key_or_name: str) -> str:
    """Accept a full key or a bare file name; refuse anything that is not a stream file."""
    key = key_or_name if "/" in key_or_name else changes_prefix(dataset) + key_or_name
    if parse_stream_key(dataset, key) is None:
        raise IngestError(
            f"{key_or_name!r} is not a stream file of dataset {dataset!r} "
            f"(expected {changes_prefix(dataset)}YYYY-MM-DDTHH-mm-ss.csv)"
        )
    return key


def quarantine(
    runtime: Runtime, dataset: str, key_or_name: str, reason: str, who: str | None = None
) -> Quarantined:
    """Move a file out of ``changes/`` into ``quarantine/`` and record who, why and when.

    The stream then moves on. A fixed file re-uploaded under the same name later is a late
    file (if the watermark passed it) and applies with the recency guard.
    """
    if not reason.strip():
        raise IngestError("say why: --reason is recorded with the decision")
    runtime.settings.table_for(dataset)
    key = resolve_key(dataset, key_or_name)
    who = operator_name(who)
    db = runtime.db()
    with runtime.dataset_lock(dataset):
        etag = runtime.bucket.head_etag(key)
        if etag is None:
            raise IngestError(f"{key} is not in the bucket (already moved?)")
        blocked = ledger.blocked_file(db, dataset)
        was_blocking = blocked is not None and blocked.key == key
        target = quarantine_key(dataset, key.rsplit("/", 1)[-1])
        if runtime.bucket.head_etag(target) not in (None, etag):
            # An earlier bad copy under the same name stays: this one gets its ETag added.
            target = f"{target[: -len('.csv')]}.{etag[:12]}.csv"
        now = datetime.now(UTC)
        with db.transaction():
            ledger.record_file(
                db,
                dataset=dataset,
                key=key,
                etag=etag,
                export_type=ExportType.QUARANTINE,
                counts=RowCounts(),
                bytes_read=0,
                started_at=now,
                duration_ms=0,
                metadata={
                    "who": who,
                    "why": reason,
                    "when": now.isoformat(),
                    "moved_to": target,
                    "blocked_reason": blocked.reason
                    if blocked is not None and was_blocking
                    else None,
                },
            )
            if was_blocking:
                ledger.clear_blocked(db, dataset)
            # Move inside the transaction: if the move fails, the decision is not recorded.
            runtime.bucket.quarantine(key, etag, target)
    log.warning("quarantined %s (%s) by %s: %s", key, etag, who, reason)
    return Quarantined(dataset, key, etag, target, was_blocking)


def operator_name(who: str | None = None) -> str:
    """Who an operator decision is recorded for: ``who`` if given, else TICKETS_OPERATOR,
    else the OS user."""
    return (who or "").strip() or os.environ.get("TICKETS_OPERATOR") or _login()


def _login() -> str:
    try:
        return getpass.getuser()
    except (KeyError, OSError):
        return "unknown"


def replay(runtime: Runtime, dataset: str, from_key: str, *, dry_run: bool = True) -> SyncReport:
    """Re-apply archived files from ``processed/``, ``from_key``'s name onward, oldest first,
    each in its own transaction with the recency guard, recorded as ``replay``.

    The way back after a database restore: the restored ledger's watermark says where the
    database stopped; replaying from there brings it forward without ever letting an older
    row overwrite a newer one. Replays advance the watermark; nothing is moved in S3.
    """
    from_name = from_key.rsplit("/", 1)[-1]
    if parse_stream_key(dataset, changes_prefix(dataset) + from_name) is None:
        raise IngestError(
            f"--from {from_key!r} is not a stream file name (YYYY-MM-DDTHH-mm-ss.csv)"
        )
    return _replay(
        runtime,
        dataset,
        lambda _db: plan_replay(dataset, runtime.bucket.list_processed(dataset), from_name),
        dry_run=dry_run,
    )


def replay_missing(runtime: Runtime, dataset: str, *, dry_run: bool = True) -> SyncReport:
    """Re-apply exactly the archived files the ledger does not know (``missing_files``),
    oldest first, each with the recency guard, recorded as ``replay``.

    The way back after a database restore that also catches late files: a late file
    applied after the backup is older than the restored watermark, so a replay "from the
    next file" by name would skip it.
    """
    return _replay(runtime, dataset, lambda db: _missing(runtime, db, dataset), dry_run=dry_run)


def missing_files(runtime: Runtime, dataset: str) -> tuple[PlannedFile, ...]:
    """Archived files (under ``processed/``) without a baseline, delta, late or replay row
    for their ``changes/`` key: rows the database lacks, typically after a restore."""
    runtime.settings.table_for(dataset)
    return _missing(runtime, runtime.db(), dataset)


def _missing(runtime: Runtime, db: Database, dataset: str) -> tuple[PlannedFile, ...]:
    archived = list(runtime.bucket.list_processed(dataset))
    names = {changes_prefix(dataset) + file_name(key) for key, _etag, _size in archived}
    known = ledger.applied_etags(db, dataset, names)
    return plan_missing(dataset, archived, known.keys())


def _replay(
    runtime: Runtime,
    dataset: str,
    choose: Callable[[Database], tuple[PlannedFile, ...]],
    *,
    dry_run: bool,
) -> SyncReport:
    """Apply the chosen archived files the way a sync applies its own: one path, with
    the retry policy, the lock's checks and the recency guard."""
    db = runtime.db()
    with runtime.dataset_lock(dataset) as lock:  # a replay lists no news: takes none
        files = choose(db)  # under the lock: no sync changes the ledger meanwhile
        plan = Plan(dataset, ledger.watermark(db, dataset), files, (), (), ())
        return apply_plan(runtime, plan, lock, SyncOptions(dry_run=dry_run))


@dataclass(frozen=True)
class RedriveProgress:
    status: str
    moved: int
    to_move: int | None


def redrive(
    sqs: Any,
    dlq_arn: str,
    *,
    wait: bool = True,
    poll_seconds: float = 5.0,
    sleep: Callable[[float], None] = time.sleep,
) -> Iterator[RedriveProgress]:
    """Start an SQS message move task from the DLQ back to its source queue; yield progress
    until it ends (or once, with ``wait=False``). Redriven messages get new message ids;
    the handler keys idempotency on what a message means, so that is harmless."""
    sqs.start_message_move_task(SourceArn=dlq_arn)
    while True:
        tasks = sqs.list_message_move_tasks(SourceArn=dlq_arn, MaxResults=1).get("Results", [])
        if not tasks:
            yield RedriveProgress("UNKNOWN", 0, None)
            return
        task = tasks[0]
        progress = RedriveProgress(
            status=str(task.get("Status", "UNKNOWN")),
            moved=int(task.get("ApproximateNumberOfMessagesMoved", 0)),
            to_move=task.get("ApproximateNumberOfMessagesToMove"),
        )
        yield progress
        if not wait or progress.status in {"COMPLETED", "CANCELLED", "FAILED"}:
            if progress.status == "FAILED":
                raise IngestError(f"redrive failed: {task.get('FailureReason', 'no reason given')}")
            return
        sleep(poll_seconds)


def redrive_by_hand(sqs: Any, dlq_url: str, queue_url: str, *, batch: int = 10) -> int:
    """Move every DLQ message back to the queue one by one, keeping its message group.

    For emulators and accounts without the message-move API; slower, same effect."""
    moved = 0
    while True:
        messages = sqs.receive_message(
            QueueUrl=dlq_url,
            MaxNumberOfMessages=batch,
            AttributeNames=["MessageGroupId"],
            WaitTimeSeconds=0,
        ).get("Messages", [])
        if not messages:
            return moved
        for message in messages:
            sqs.send_message(
                QueueUrl=queue_url,
                MessageBody=message["Body"],
                MessageGroupId=message["Attributes"]["MessageGroupId"],
                # Explicit: content-based dedup would drop a body the queue saw <5 min ago.
                MessageDeduplicationId=f"redrive-{message['MessageId']}-{time.time_ns()}",
            )
            sqs.delete_message(QueueUrl=dlq_url, ReceiptHandle=message["ReceiptHandle"])
            moved += 1
