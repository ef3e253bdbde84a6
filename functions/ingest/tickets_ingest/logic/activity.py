"""Noting what each dataset last heard and the last error of its syncs (for ``status``).

Both entry points go through here: the function notes every message or invocation it acts
on (``note_message``), and the function and the CLI sync through ``noted_sync``, which
notes a sync's error in one place. Noting is best effort: a failure to note is a warning in
the log, never a failed message or command.
"""

from __future__ import annotations

import logging

from tickets_ingest.core.events import News
from tickets_ingest.core.keys import key_timestamp
from tickets_ingest.dal import activity
from tickets_ingest.dal.db import InterfaceError
from tickets_ingest.errors import (
    DatasetPaused,
    FileFailed,
    LockLost,
    LockWaitTimeout,
    SyncBusy,
    TransientFault,
)
from tickets_ingest.logic.runtime import Runtime
from tickets_ingest.logic.sync import SyncOptions, sync
from tickets_ingest.models import BlockedFile, SyncReport

log = logging.getLogger(__name__)

# What a queue message's reason is called in status (an S3 event is just an event).
MESSAGE_KINDS = {"object-created": "event"}


def note_message(runtime: Runtime, dataset: str, kind: str, key: str | None = None) -> None:
    """The function acted on a message or an invocation for ``dataset`` (one upsert)."""
    runtime.forget_vouch()  # an earlier message's vouch says nothing about the connection now
    if dataset not in runtime.settings.datasets:
        return  # the sync refuses it (not enabled): no row for a name nobody configured
    try:
        try:
            activity.note_message(runtime.db(), dataset, kind, key)
        except (InterfaceError, OSError):
            # The note is an invocation's first statement: a warm container's kept
            # connection may have died while idle. runtime.db() connects again (the dead
            # one is marked broken); the note is an idempotent upsert.
            activity.note_message(runtime.db(), dataset, kind, key)
        runtime.vouch()  # it answered: the sync that follows need not check it again
    except Exception as exc:  # never fail a message for its bookkeeping
        log.warning("could not note the %s message of %s: %s", kind, dataset, exc)


def note_news(runtime: Runtime, news: News) -> None:
    note_message(runtime, news.dataset, MESSAGE_KINDS.get(news.reason, news.reason), news.key)


def noted_sync(runtime: Runtime, dataset: str, options: SyncOptions | None = None) -> SyncReport:
    """``sync``, noting its error as the dataset's last error: a rejected file, or what it
    raised (``FileFailed``, a ``TransientFault`` that outlasted the retries, ``LockLost``, a
    lock-wait timeout, …). Not an error: a busy dataset (another sync has it), a pause, and
    anything of a dry run (it changes nothing, as it records no block)."""
    options = options or SyncOptions()
    try:
        report = sync(runtime, dataset, options)
    except Exception as error:
        if not options.dry_run and is_sync_error(error):
            note_error(runtime, dataset, error_kind(error), str(error), error_key(error))
        raise
    if report.rejected is not None and not options.dry_run:
        rejected = report.rejected
        note_error(runtime, dataset, "rejected", rejection_text(rejected), rejected.key)
    return report


def is_sync_error(error: BaseException) -> bool:
    """Whether a sync's exception is trouble (not another sync's turn, nor a pause)."""
    if isinstance(error, LockLost):
        return True
    return not isinstance(error, SyncBusy | DatasetPaused)


def error_kind(error: BaseException) -> str:
    return type(error).__name__


def error_key(error: BaseException) -> str | None:
    """The stream file an error concerns, when it names one."""
    if isinstance(error, FileFailed | LockWaitTimeout):
        return error.key
    if isinstance(error, TransientFault):
        key = f"automations/{error.target}"  # its target is the key without the prefix
        return key if key_timestamp(key) is not None else None
    return None


def rejection_text(blocked: BlockedFile) -> str:
    where = blocked.key
    if blocked.line is not None:
        where += f", line {blocked.line}"
    if blocked.column:
        where += f", column {blocked.column}"
    return f"rejected {where}: {blocked.reason}"


def note_error(runtime: Runtime, dataset: str, kind: str, message: str, key: str | None) -> None:
    try:
        activity.note_error(runtime.db(), dataset, kind, message, key)
    except Exception as exc:  # the sync's own error is what the caller must see
        log.warning("could not note the last error of %s (%s): %s", dataset, message, exc)
