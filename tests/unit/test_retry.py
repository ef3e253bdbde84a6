"""The retry policy (dal/retry.py) on its own: what is retried, how often, what is said."""

from __future__ import annotations

import logging

import pytest
from botocore.exceptions import ClientError, ResponseStreamingError
from urllib3.exceptions import IncompleteRead, ProtocolError

from tickets_ingest.dal.db import DatabaseError, InterfaceError
from tickets_ingest.dal.retry import (
    RetryPolicy,
    WrappedFault,
    connection_lost,
    counts_since,
    describe,
    retry_counts,
)
from tickets_ingest.errors import ConfigError, TransientFault
from tickets_ingest.settings import RetrySettings, load_settings

# No waits, so the tests measure behaviour, not time.
QUICK = RetryPolicy(attempts=4, max_seconds=30, wait_initial=0, wait_max=0, wait_jitter=0)
KEY = "automations/inc/changes/2026-06-22T17-20-02.csv"


class Passing(Exception):
    """Stands for a fault that may pass."""


def failing(times: int, error: Exception | None = None) -> tuple[list[int], object]:
    calls: list[int] = []

    def attempt() -> str:
        calls.append(1)
        if len(calls) <= times:
            raise error or Passing(f"try {len(calls)}")
        return "done"

    return calls, attempt


def is_passing(error: BaseException) -> bool:
    return isinstance(error, Passing)


def test_a_passing_fault_is_retried_until_it_passes() -> None:
    calls, attempt = failing(2)
    assert QUICK.run("GET", KEY, attempt, transient=is_passing) == "done"  # type: ignore[arg-type]
    assert len(calls) == 3


def test_a_fault_that_persists_ends_in_one_clear_error() -> None:
    calls, attempt = failing(99)
    with pytest.raises(TransientFault) as failure:
        QUICK.run("GET", KEY, attempt, transient=is_passing)  # type: ignore[arg-type]
    assert len(calls) == QUICK.attempts
    message = str(failure.value)
    assert message.startswith("inc/changes/2026-06-22T17-20-02.csv: GET failed after 4 attempts")
    assert message.endswith(
        "s (Passing: try 4); nothing of it was committed; the next run retries it"
    )
    assert isinstance(failure.value.__cause__, Passing)


def test_anything_else_is_not_retried_and_passes_unchanged() -> None:
    calls, attempt = failing(99, ValueError("a bug"))
    with pytest.raises(ValueError, match="a bug"):
        QUICK.run("GET", KEY, attempt, transient=is_passing)  # type: ignore[arg-type]
    assert len(calls) == 1


def test_before_retry_sees_the_fault_before_each_new_try() -> None:
    seen: list[str] = []
    _, attempt = failing(2)
    QUICK.run(
        "apply",
        KEY,
        attempt,  # type: ignore[arg-type]
        transient=is_passing,
        before_retry=lambda error: seen.append(str(error)),
    )
    assert seen == ["try 1", "try 2"]


def test_no_retry_starts_without_time_for_it() -> None:
    calls, attempt = failing(99)
    with pytest.raises(TransientFault) as failure:
        QUICK.run(
            "GET",
            KEY,
            attempt,  # type: ignore[arg-type]
            transient=is_passing,
            may_retry=lambda: False,
        )
    assert len(calls) == 1
    assert failure.value.out_of_time
    assert "after 1 attempt over" in str(failure.value)
    assert "the run's time budget leaves no room for another" in str(failure.value)


def test_the_total_time_bounds_the_tries() -> None:
    slow = RetryPolicy(attempts=20, max_seconds=0.1, wait_initial=0.05, wait_jitter=0)
    calls, attempt = failing(99)
    with pytest.raises(TransientFault):
        slow.run("GET", KEY, attempt, transient=is_passing)  # type: ignore[arg-type]
    assert len(calls) < 20  # stopped by the time, long before the attempts ran out


def test_the_operation_can_be_named_by_the_fault() -> None:
    _, attempt = failing(99)
    with pytest.raises(TransientFault, match=r": apply failed after"):
        QUICK.run(
            lambda error: "apply" if isinstance(error, Passing) else "GET",
            KEY,
            attempt,  # type: ignore[arg-type]
            transient=is_passing,
        )


def test_each_retry_is_logged_and_counted(caplog: pytest.LogCaptureFixture) -> None:
    caplog.set_level(logging.WARNING, logger="tickets_ingest")
    before = retry_counts()
    _, attempt = failing(2)
    QUICK.run("GET", KEY, attempt, transient=is_passing)  # type: ignore[arg-type]
    assert counts_since(before) == {"GET": 2}
    lines = [r.getMessage() for r in caplog.records if r.name == "tickets_ingest.dal.retry"]
    assert lines == [
        "inc/changes/2026-06-22T17-20-02.csv: GET failed (Passing: try 1); "
        "retrying in 0.00 s (attempt 2 of 4)",
        "inc/changes/2026-06-22T17-20-02.csv: GET failed (Passing: try 2); "
        "retrying in 0.00 s (attempt 3 of 4)",
    ]


@pytest.mark.parametrize(
    ("error", "lost"),
    [
        (InterfaceError("network error"), True),
        (ConnectionResetError(104, "reset"), True),
        (DatabaseError({"C": "57P01", "M": "terminating connection"}), True),
        (DatabaseError({"C": "08006", "M": "connection failure"}), True),
        (DatabaseError({"C": "23505", "M": "duplicate key"}), False),
        (DatabaseError({"C": "22P02", "M": "bad value"}), False),
        (ValueError("no"), False),
    ],
)
def test_what_counts_as_a_lost_connection(error: BaseException, lost: bool) -> None:
    assert connection_lost(error) is lost


def test_causes_are_described_in_one_line() -> None:
    slowdown = ClientError(
        {"Error": {"Code": "SlowDown", "Message": "Please reduce your request rate."}},
        "GetObject",
    )
    assert describe(slowdown) == "SlowDown: Please reduce your request rate."
    terminated = DatabaseError({"C": "57P01", "M": "terminating connection"})
    assert describe(terminated) == "terminating connection (SQLSTATE 57P01)"
    broken = ResponseStreamingError(
        error=ProtocolError("Connection broken", IncompleteRead(1618, 1618))
    )
    assert describe(broken) == "IncompleteRead(1618 bytes read, 1618 more expected)"
    wrapped = WrappedFault("download broke off")
    wrapped.__cause__ = InterfaceError("network error")
    assert describe(wrapped) == "InterfaceError: network error"


def test_the_budget_comes_from_settings() -> None:
    settings = load_settings({"RETRY_ATTEMPTS": "3", "RETRY_MAX_SECONDS": "12.5"})
    assert settings.retry == RetrySettings(attempts=3, max_seconds=12.5)
    policy = RetryPolicy.from_settings(settings.retry)
    assert (policy.attempts, policy.max_seconds) == (3, 12.5)
    assert load_settings({}).retry == RetrySettings(attempts=5, max_seconds=60.0)


@pytest.mark.parametrize(
    ("variable", "value", "message"),
    [
        ("RETRY_ATTEMPTS", "0", "RETRY_ATTEMPTS='0' must be between 1 and 20"),
        ("RETRY_ATTEMPTS", "21", "RETRY_ATTEMPTS='21' must be between 1 and 20"),
        ("RETRY_ATTEMPTS", "2.5", "RETRY_ATTEMPTS='2.5' is not a whole number"),
        ("RETRY_MAX_SECONDS", "0", "RETRY_MAX_SECONDS='0' must be between 1.0 and 900.0"),
        ("RETRY_MAX_SECONDS", "soon", "RETRY_MAX_SECONDS='soon' is not a number"),
    ],
)
def test_a_bad_budget_is_refused_naming_the_variable(
    variable: str, value: str, message: str
) -> None:
    with pytest.raises(ConfigError, match=message.replace(".", r"\.")):
        load_settings({variable: value})
