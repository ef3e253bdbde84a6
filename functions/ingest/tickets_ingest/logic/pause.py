"""Pause and resume a dataset for planned work on the target (a migration, a restore, a
vacuum): while paused nothing applies to it, its messages are acknowledged, and the files
wait in ``changes/``. Resuming catches up at once.

The state is the pause register (``tickets.dataset_pauses``); each pause and resume is also
a ledger row (``export_type`` pause / resume, beside quarantines), so ``history`` shows who
held the stream, when and why.
"""

from __future__ import annotations

import logging
import time
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any

from tickets_ingest.core.events import queued_message
from tickets_ingest.core.keys import changes_prefix
from tickets_ingest.dal import ledger, pauses
from tickets_ingest.dal.lease import lock_holder
from tickets_ingest.errors import IngestError
from tickets_ingest.logic.operator import operator_name
from tickets_ingest.logic.runtime import Runtime
from tickets_ingest.logic.sync import SyncOptions, sync
from tickets_ingest.models import ExportType, LockHolder, Pause, RowCounts, SyncReport

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class Paused:
    pause: Pause
    already: bool  # paused before this command: that pause (its who and why) is kept
    # A sync holding the dataset right now: it stops before its next file.
    running: LockHolder | None


@dataclass(frozen=True)
class Resumed:
    dataset: str
    pause: Pause | None  # None: the dataset was not paused


@dataclass(frozen=True)
class CatchUp:
    """How a resume catches up: a message queued to the dataset's group, or a sync here."""

    queued_to: str | None = None
    message_id: str | None = None
    report: SyncReport | None = None


def pause(runtime: Runtime, dataset: str, reason: str, who: str | None = None) -> Paused:
    """Pause ``dataset``: from the commit on, no sync applies to it (one that runs now stops
    before its next file). Pausing a paused dataset changes nothing."""
    if not reason.strip():
        raise IngestError("say why: --reason is recorded with the pause")
    runtime.settings.table_for(dataset)
    who = operator_name(who)
    db = runtime.db()
    with db.transaction():
        added = pauses.add_pause(db, dataset, who, reason)
        if added is not None:
            _record(runtime, dataset, ExportType.PAUSE, {"who": who, "why": reason})
    if added is None:
        current = pauses.pause_of(db, dataset)
        if current is None:
            raise IngestError(f"dataset {dataset!r} was resumed meanwhile; pause it again")
        return Paused(current, already=True, running=lock_holder(db, dataset))
    log.warning("paused %s by %s: %s", dataset, who, reason)
    return Paused(added, already=False, running=lock_holder(db, dataset))


def resume(runtime: Runtime, dataset: str, who: str | None = None) -> Resumed:
    """Lift the pause of ``dataset`` (nothing caught up yet: see ``catch_up``)."""
    runtime.settings.table_for(dataset)
    who = operator_name(who)
    db = runtime.db()
    with db.transaction():
        lifted = pauses.remove_pause(db, dataset)
        if lifted is not None:
            held = (datetime.now(UTC) - lifted.paused_at).total_seconds()
            _record(
                runtime,
                dataset,
                ExportType.RESUME,
                {
                    "who": who,
                    "paused_by": lifted.paused_by,
                    "paused_at": lifted.paused_at.isoformat(),
                    "why": lifted.reason,
                    "paused_seconds": round(held, 1),
                },
            )
    if lifted is not None:
        log.warning("resumed %s by %s (paused by %s)", dataset, who, lifted.paused_by)
    return Resumed(dataset, lifted)


def catch_up(runtime: Runtime, dataset: str, sqs: Any | None) -> CatchUp:
    """After a resume: queue a message to the dataset's FIFO group when QUEUE_URL is set
    (the function applies in order, as for any event), else sync here and now."""
    queue_url = runtime.settings.lambda_.queue_url
    if queue_url and sqs is not None:
        token = f"resume|{datetime.now(UTC).isoformat()}"
        sent = sqs.send_message(
            QueueUrl=queue_url,
            MessageGroupId=dataset,
            MessageBody=queued_message("resume", dataset, token),
            # Explicit: content-based dedup is not needed (nor assumed) on the queue.
            MessageDeduplicationId=f"resume-{dataset}-{time.time_ns()}",
        )
        return CatchUp(queued_to=queue_url, message_id=str(sent.get("MessageId", "")))
    # A live holder that takes news lists again before it lets go: then it catches up.
    return CatchUp(report=sync(runtime, dataset, SyncOptions(hand_over=True)))


def watermark(runtime: Runtime, dataset: str) -> str | None:
    """The dataset's watermark (its lag still counts while it is paused)."""
    return ledger.watermark(runtime.db(), dataset)


def _record(runtime: Runtime, dataset: str, kind: ExportType, metadata: dict[str, Any]) -> None:
    now = datetime.now(UTC)
    ledger.record_file(
        runtime.db(),
        dataset=dataset,
        key=changes_prefix(dataset),  # no file: the stream itself
        etag="",
        export_type=kind,
        counts=RowCounts(),
        bytes_read=0,
        started_at=now,
        duration_ms=0,
        metadata={**metadata, "when": now.isoformat()},
    )
