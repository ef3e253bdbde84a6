"""The one retry policy for transient faults: what is retried, how often, for how long.

Two layers share one budget (``RETRY_ATTEMPTS``, ``RETRY_MAX_SECONDS``, see settings.py):

- **one S3 request** (SlowDown, 5xx, throttling, a connection reset or a reply lost on the
  way): botocore's own retries, configured from this policy in ``dal/s3.py``;
- **one file** (what botocore cannot retry: a download cut off after the headers, a
  PostgreSQL connection lost during or between files, a COMMIT whose reply was lost):
  ``RetryPolicy.run`` tries the whole step again, a fresh GET into a fresh transaction,
  with exponential backoff and jitter (stamina), never past the attempts, the total time,
  or the caller's time budget.

Every retry is logged (WARNING: target, operation, attempt, cause) and counted by operation
(``retry_counts``; the Lambda handler publishes the counts as the ``Retries`` metric).
"""

from __future__ import annotations

import logging
import struct
import threading
import time
from collections import Counter
from collections.abc import Callable, Mapping
from contextvars import ContextVar
from dataclasses import dataclass
from typing import TypeVar

import stamina
from botocore.exceptions import ClientError, ResponseStreamingError
from stamina.instrumentation import RetryDetails, set_on_retry_hooks
from urllib3.exceptions import ProtocolError

from tickets_ingest.dal.db import DatabaseError, InterfaceError, error_fields, sqlstate
from tickets_ingest.errors import TransientFault
from tickets_ingest.settings import RetrySettings

log = logging.getLogger(__name__)
T = TypeVar("T")

# SQLSTATEs of a connection the server ended: admin_shutdown (pg_terminate_backend, a
# restart), crash_shutdown, cannot_connect_now (starting up); class 08 is "connection".
_CONNECTION_ENDED = {"57P01", "57P02", "57P03"}


@dataclass(frozen=True)
class RetryPolicy:
    """Bounded exponential backoff with jitter: the n-th retry waits
    ``min(wait_max, wait_initial * 2 ** (n - 1) + uniform(0, wait_jitter))`` seconds."""

    attempts: int = 5  # tries in all, the first included
    max_seconds: float = 60.0  # no new try starts after this long (tries included)
    wait_initial: float = 0.25
    wait_max: float = 5.0
    wait_jitter: float = 0.5

    @classmethod
    def from_settings(cls, settings: RetrySettings) -> RetryPolicy:
        return cls(attempts=settings.attempts, max_seconds=settings.max_seconds)

    def run(
        self,
        operation: Operation,
        target: str,
        attempt: Callable[[], T],
        *,
        transient: Callable[[BaseException], bool],
        before_retry: Callable[[BaseException], None] | None = None,
        may_retry: Callable[[], bool] | None = None,
        outcome: str = "nothing of it was committed",
    ) -> T:
        """``attempt()``, tried again while it fails with a ``transient`` error.

        ``operation`` names what failed (or says it, given the error). ``before_retry(error)``
        runs before each new try (e.g. reconnect). ``may_retry`` is the caller's time budget,
        asked before a retry is scheduled: a retry that cannot finish in time never starts.
        When the faults outlast the budget, ``TransientFault`` names the target, the
        operation, the tries, the time and the cause.
        """
        started = time.monotonic()
        tries = 0
        last: BaseException | None = None
        out_of_time = False

        def retry_on(error: Exception) -> bool:
            nonlocal last, out_of_time
            last = error
            if not transient(error):
                return False
            if may_retry is not None and not may_retry():
                out_of_time = True
                return False
            return True

        scope = _scope.set((operation, target, self.attempts))
        try:
            for trying in stamina.retry_context(
                on=retry_on,
                attempts=self.attempts,
                timeout=self.max_seconds,
                wait_initial=self.wait_initial,
                wait_max=self.wait_max,
                wait_jitter=self.wait_jitter,
            ):
                with trying:
                    tries = trying.num
                    if tries > 1 and before_retry is not None and last is not None:
                        before_retry(last)
                    return attempt()
        except Exception as error:
            if not transient(error):
                raise
            raise TransientFault(
                short_target(target),
                operation_name(operation, error),
                attempts=tries,
                seconds=time.monotonic() - started,
                cause=describe(error),
                out_of_time=out_of_time,
                outcome=outcome,
            ) from error
        finally:
            _scope.reset(scope)
        raise AssertionError("unreachable: stamina either returns or raises")


Operation = str | Callable[[BaseException], str]


def operation_name(operation: Operation, error: BaseException) -> str:
    return operation if isinstance(operation, str) else operation(error)


class WrappedFault(Exception):
    """An exception that only says where a fault hit; ``describe`` shows its cause."""


def connection_lost(error: BaseException) -> bool:
    """True for a PostgreSQL connection that broke or could not be (re)opened."""
    if isinstance(error, InterfaceError | OSError | struct.error):
        return True
    state = sqlstate(error)
    return state.startswith("08") or state in _CONNECTION_ENDED


def describe(error: BaseException) -> str:
    """The cause of a fault in one line: ``SlowDown: Please reduce your request rate.``"""
    if isinstance(error, WrappedFault) and error.__cause__ is not None:
        return describe(error.__cause__)
    if isinstance(error, ClientError):
        details = error.response.get("Error", {})
        code = details.get("Code") or error.response.get("ResponseMetadata", {}).get(
            "HTTPStatusCode", "?"
        )
        return f"{code}: {details.get('Message') or 'no message'}"
    if isinstance(error, DatabaseError) and error_fields(error):
        fields = error_fields(error)
        return f"{fields.get('M', 'database error')} (SQLSTATE {fields.get('C', '?')})"
    inner = _inner(error)
    if inner is not None:
        return describe(inner)
    text = str(error)
    if text.startswith(type(error).__name__):  # IncompleteRead(1618 bytes read, ...)
        return text
    return f"{type(error).__name__}: {text}" if text else type(error).__name__


def _inner(error: BaseException) -> BaseException | None:
    """The real cause inside botocore's and urllib3's wrappers of a broken stream."""
    if isinstance(error, ResponseStreamingError):
        wrapped = error.kwargs.get("error")
        return wrapped if isinstance(wrapped, BaseException) else None
    if isinstance(error, ProtocolError) and len(error.args) > 1:
        wrapped = error.args[1]
        return wrapped if isinstance(wrapped, BaseException) else None
    return None


def short_target(key: str) -> str:
    """``inc/changes/2026-...csv`` for ``automations/inc/changes/2026-...csv``."""
    return key.removeprefix("automations/")


# -- logging and counting every retry ------------------------------------------------------

_counts: Counter[str] = Counter()
_counts_lock = threading.Lock()
# (operation, target, attempts) of the ``run`` in progress in this thread, for the hook.
_scope: ContextVar[tuple[Operation, str, int] | None] = ContextVar("tickets_retry", default=None)


def note_retry(
    operation: str, target: str, *, attempt: int, attempts: int, cause: str, wait: float | None
) -> None:
    """Log one retry about to happen and count it under ``operation``."""
    with _counts_lock:
        _counts[operation] += 1
    after = f" in {wait:.2f} s" if wait is not None else ""
    log.warning(
        "%s: %s failed (%s); retrying%s (attempt %d of %d)",
        short_target(target),
        operation,
        cause,
        after,
        attempt,
        attempts,
    )


def retry_counts() -> dict[str, int]:
    """Retries so far in this process, by operation (subtract an earlier snapshot)."""
    with _counts_lock:
        return dict(_counts)


def counts_since(before: Mapping[str, int]) -> dict[str, int]:
    now = retry_counts()
    return {op: n - before.get(op, 0) for op, n in sorted(now.items()) if n > before.get(op, 0)}


def _on_retry(details: RetryDetails) -> None:
    scope = _scope.get()
    if scope is None:  # a stamina retry that is not ours
        return
    operation, target, attempts = scope
    note_retry(
        operation_name(operation, details.caused_by),
        target,
        attempt=details.retry_num + 1,
        attempts=attempts,
        cause=describe(details.caused_by),
        wait=details.wait_for,
    )


# Our hook replaces stamina's default one (an unformatted "stamina.retry_scheduled" line).
set_on_retry_hooks([_on_retry])
