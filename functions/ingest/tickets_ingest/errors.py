"""Errors a person can act on.

The CLI turns them into exit codes, the Lambda handler into failed records.
"""

from __future__ import annotations


class IngestError(Exception):
    """Base class for every error this package raises on purpose."""


class ConfigError(IngestError):
    """An environment variable has a value we cannot use."""


class FileRejected(IngestError):
    """A stream file cannot be applied as a whole; nothing of it was committed.

    The dataset stops at this file until it is fixed or quarantined: later files wait,
    because order matters.
    """

    def __init__(
        self, key: str, reason: str, *, line: int | None = None, column: str | None = None
    ) -> None:
        self.key = key
        self.reason = reason
        self.line = line
        self.column = column
        super().__init__(self.describe())

    def describe(self) -> str:
        where = self.key
        if self.line is not None:
            where += f", line {self.line}"
        if self.column is not None:
            where += f", column {self.column}"
        return f"{where}: {self.reason}"


class FileFailed(IngestError):
    """Applying a file failed for a reason that is not its content (the database refused
    a statement: a privilege, a missing object, a server limit); nothing of it was
    committed, the dataset stops there, and the next run tries the file again."""

    def __init__(self, key: str, cause: str) -> None:
        self.key = key
        self.cause = cause
        super().__init__(f"{key}: applying it failed, nothing of it committed: {cause}")


class SyncBusy(IngestError):
    """Another sync of the same dataset holds the lock.

    ``handed_over``: the holder is alive and applying, and was told to list the dataset
    again before it lets go, so what this sync came for is picked up (a busy message can be
    acknowledged: nothing is lost).
    """

    def __init__(
        self,
        dataset: str,
        holder: str | None = None,
        *,
        handed_over: bool = False,
        message: str | None = None,
    ) -> None:
        self.dataset = dataset
        self.holder = holder
        self.handed_over = handed_over
        detail = f" (held by {holder})" if holder else ""
        after = "; it lists the dataset again before it lets go" if handed_over else ""
        busy = f"another sync of dataset {dataset!r} is running{detail}{after}; nothing done"
        super().__init__(message or busy)


class LockLost(SyncBusy):
    """This sync's dataset lock was taken over (its heartbeat looked dead to another sync,
    which ended its database session). It stops at once; the file in progress rolled back
    (a file's rows and ledger row commit together), the new holder carries on."""

    def __init__(self, dataset: str, detail: str) -> None:
        super().__init__(
            dataset,
            message=f"the lock on dataset {dataset!r} was taken over by another sync ({detail}); "
            "this sync stopped, its file in progress rolled back, the other sync carries on",
        )


class LockWaitTimeout(IngestError):
    """Applying a file waited too long for a row or table lock held by another session (or
    a statement ran past APPLY_STATEMENT_TIMEOUT_SECONDS). The file's transaction rolled
    back and the dataset lock was let go; the next run tries the file again."""

    def __init__(self, key: str, what: str, holders: str | None) -> None:
        self.key = key
        self.holders = holders  # None: no wait on another session's lock was seen
        held = (
            f"held by {holders}"
            if holders is not None
            else "the heartbeat sampled no wait on another session's lock (so the statement was "
            "slow in itself: a trigger, a busy server, a file larger than the timeout allows; "
            "or it waited on a lock for less than a heartbeat: see pg_locks if this repeats)"
        )
        super().__init__(
            f"{key}: {what}; {held}; nothing of it was committed, the dataset is "
            "free and the next run tries it again"
        )


class SchemaMismatch(IngestError):
    """The database table does not have the columns the configuration asks to store."""


class ObjectChanged(IngestError):
    """An object changed between listing and reading it; the next run re-plans."""


class TransientFault(IngestError):
    """A fault that is usually transient (S3 throttling or 5xx, a reset connection, a cut
    download, a lost database connection) lasted past the retry budget or the time budget.

    Nothing is lost: what was not committed is tried again by the next run.
    """

    def __init__(
        self,
        target: str,
        operation: str,
        *,
        attempts: int,
        seconds: float,
        cause: str,
        out_of_time: bool = False,
        outcome: str = "nothing of it was committed",
    ) -> None:
        self.target = target
        self.operation = operation
        self.attempts = attempts
        self.seconds = seconds
        self.cause = cause
        self.out_of_time = out_of_time
        tries = f"{attempts} attempt{'s' if attempts != 1 else ''}"
        budget = "; the run's time budget leaves no room for another" if out_of_time else ""
        super().__init__(
            f"{target}: {operation} failed after {tries} over {seconds:.1f} s ({cause}){budget}; "
            f"{outcome}; the next run retries it"
        )


class DatasetPaused(IngestError):
    """An operator paused the dataset (``tickets-ingest pause``): a sync that would apply
    refuses before taking the lock, or stops before its next file if the pause came while it
    ran (what it committed stays committed). Nothing is lost: the files wait in changes/ and
    ``tickets-ingest resume`` catches up."""

    def __init__(self, dataset: str, detail: str, *, stopped_before: str | None = None) -> None:
        self.dataset = dataset
        self.detail = detail
        self.stopped_before = stopped_before
        done = (
            f"this sync stopped before {stopped_before}, what it applied before stays committed"
            if stopped_before
            else "nothing applied"
        )
        super().__init__(
            f"dataset {dataset!r} is {detail}; {done} "
            f"(tickets-ingest resume --dataset {dataset} catches up)"
        )
