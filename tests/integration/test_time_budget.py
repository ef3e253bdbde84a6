"""Issue 11.10: the Lambda time budget. A margin at or above the function's run time is a
configuration error at the start of an invocation (today it never applies anything, reports
ok and queues continuations for ever); a stop because of the margin is a metric and a
warning. A fake Lambda context (not a mock of the database) gives the time left."""

from __future__ import annotations

import importlib
import logging
from collections.abc import Iterator
from contextlib import contextmanager
from datetime import datetime, timedelta

import pytest

from tests.e2e.conftest import LambdaWorld, world  # noqa: F401 - registers the fixture
from tests.support.emf import emf_documents
from tests.support.rows import csv_bytes, key, row
from tickets_devkit.event_path import FakeLambdaContext
from tickets_ingest.core.keys import SOURCE_TZ
from tickets_ingest.errors import ConfigError


@contextmanager
def service_warnings() -> Iterator[list[str]]:
    """Warnings of the Powertools Logger (it writes to the stdout it saw at import)."""
    messages: list[str] = []

    class Keep(logging.Handler):
        def emit(self, record: logging.LogRecord) -> None:
            messages.append(record.getMessage())

    service_logger = logging.getLogger("tickets-ingest")  # the Powertools Logger's logger
    keep = Keep(level=logging.WARNING)
    service_logger.addHandler(keep)
    try:
        yield messages
    finally:
        service_logger.removeHandler(keep)


def stream_of_three(world: LambdaWorld) -> None:  # noqa: F811 - the fixture's name
    for minute, ticket in [("50", "INC1"), ("51", "INC2"), ("52", "INC3")]:
        world.env.put(key(f"2026-06-22T15-{minute}-00"), csv_bytes([row(ticket)]))
    world.path.sqs.purge_queue(QueueUrl=world.path.queue_url)


@pytest.mark.parametrize(
    ("margin", "run_time_ms"), [("60", 60_000), ("60", 45_000), ("900", 300_000)]
)
def test_a_margin_at_or_above_the_run_time_is_a_config_error(
    world: LambdaWorld,  # noqa: F811
    monkeypatch: pytest.MonkeyPatch,
    margin: str,
    run_time_ms: int,
) -> None:
    stream_of_three(world)
    monkeypatch.setenv("TIME_BUDGET_MARGIN_SECONDS", margin)
    context = FakeLambdaContext(remaining_ms=lambda: run_time_ms)
    with pytest.raises(ConfigError) as info:
        world.handler({"dataset": "inc"}, context)
    message = str(info.value)
    assert message.startswith(f"TIME_BUDGET_MARGIN_SECONDS={margin} is not below")
    assert "\n" not in message
    assert world.env.db().scalar("SELECT count(*) FROM tickets.import_meta") == 0
    assert world.queue_depth() == 0  # no continuation that would do the same again


def test_a_margin_below_the_run_time_applies(world: LambdaWorld) -> None:  # noqa: F811
    stream_of_three(world)
    result = world.handler({"dataset": "inc"}, FakeLambdaContext(remaining_ms=lambda: 61_000))
    assert result["ok"] and len(result["applied"]) == 3 and not result["stopped_early"]


def test_a_stop_for_the_margin_is_a_metric_and_a_warning(
    world: LambdaWorld,  # noqa: F811
    capsys: pytest.CaptureFixture[str],
) -> None:
    stream_of_three(world)
    capsys.readouterr()
    with service_warnings() as warnings:
        result = world.invoke_with_time_spent({"dataset": "inc"}, 30_000)
    assert result["ok"] and result["stopped_early"] and result["applied"] == []
    [metrics] = emf_documents(capsys.readouterr().out, "inc")
    assert metrics["TimeBudgetStops"] == 1
    assert metrics["FilesDeferred"] == 3
    assert metrics["FilesApplied"] == 0
    assert any(
        "time budget: 3 file(s) of inc not started with 30000 ms left" in m
        and "TIME_BUDGET_MARGIN_SECONDS=60" in m
        for m in warnings
    ), warnings

    # With time enough, the metrics say nothing was deferred.
    result = world.invoke({"dataset": "inc"})
    assert len(result["applied"]) == 3
    [metrics] = emf_documents(capsys.readouterr().out, "inc")
    assert metrics["TimeBudgetStops"] == 0 and metrics["FilesDeferred"] == 0
    assert metrics["LagSeconds"] > 0


def test_lag_metric_is_never_negative(
    world: LambdaWorld,  # noqa: F811
    capsys: pytest.CaptureFixture[str],
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """A watermark ahead of the clock within the tolerance reports LagSeconds 0 (today:
    about -1800); a future watermark beyond it reports none, which the lag alarm treats
    as breaching. A held file is counted."""
    ahead = key((datetime.now(SOURCE_TZ) + timedelta(minutes=30)).strftime("%Y-%m-%dT%H-%M-%S"))
    world.env.put(key("2099-06-22T11-00-00"), csv_bytes([row("INC9")]))
    world.env.put(ahead, csv_bytes([row("INC1")]))
    capsys.readouterr()
    result = world.invoke({"dataset": "inc"})
    assert [a["key"] for a in result["applied"]] == [ahead]
    assert result["held"] == [key("2099-06-22T11-00-00")]
    [metrics] = emf_documents(capsys.readouterr().out, "inc")
    assert metrics["FilesHeld"] == 1 and metrics["LagSeconds"] == 0

    # A smaller tolerance makes the applied watermark "in the future" (as a future file
    # applied before files were held): no LagSeconds at all, and a warning.
    monkeypatch.setenv("FUTURE_TOLERANCE_SECONDS", "60")
    aws = importlib.import_module("tickets_ingest.handlers.aws")
    aws.runtime().close()
    aws.runtime.cache_clear()
    with service_warnings() as warnings:
        world.invoke({"sweep": True})
    [metrics] = emf_documents(capsys.readouterr().out, "inc")
    assert "LagSeconds" not in metrics
    assert any(f"the watermark {ahead} of inc is in the future" in m for m in warnings)
