"""What the function notes for the pipe-status view, through the real event path: the last
message it acted on (an S3 event and its key, a continuation, the sweep, a direct
invocation), and the last error of its syncs (a rejected file), as ``status`` shows them."""

from __future__ import annotations

import io
import json
import logging
from typing import Any

import pytest

from tests.e2e.conftest import LambdaWorld
from tests.support import faults
from tests.support.rows import csv_bytes, key, row
from tickets_ingest.handlers import aws
from tickets_ingest.handlers.cli import main


def status(dataset: str = "inc") -> dict[str, Any]:
    out = io.StringIO()
    main(["status", "--dataset", dataset, "--json"], out=out)
    result: dict[str, Any] = json.loads(out.getvalue())
    return result


def last_message(dataset: str = "inc") -> tuple[str, str | None]:
    message = status(dataset)["last_message"]
    return message["kind"], message["key"]


def test_each_kind_of_message_is_noted_with_what_it_named(world: LambdaWorld) -> None:
    env = world.env
    env.put(key("2026-06-22T15-50-39"), csv_bytes([row("INC1")]))
    assert world.poll().failed == 0
    assert last_message() == ("event", key("2026-06-22T15-50-39"))
    assert status("crq")["last_message"] is None  # nothing was heard for crq
    assert status()["last_applied"]["key"] == key("2026-06-22T15-50-39")
    assert status()["state"] == "idle"

    # A run out of time queues a continuation; the function notes it when it comes back.
    env.put(key("2026-06-22T16-00-00"), csv_bytes([row("INC2")]))
    world.path.sqs.purge_queue(QueueUrl=world.path.queue_url)
    result = world.invoke_with_time_spent({"dataset": "inc"}, 30_000)
    assert result["stopped_early"] and result["applied"] == []
    assert last_message() == ("direct", None)
    assert status()["state"] == "running"
    assert world.poll().failed == 0
    assert last_message() == ("continuation", None)
    assert status()["state"] == "idle"

    world.invoke({"sweep": True})
    assert last_message() == ("sweep", None) == last_message("crq")
    assert status()["last_error"] is None  # nothing went wrong on the way


def test_a_file_the_function_rejects_is_the_last_error(world: LambdaWorld) -> None:
    env = world.env
    env.put(key("2026-06-22T15-50-39"), b"ticket_id,what\r\nINC3,nonsense\r\n")
    stats = world.poll(max_batches=1)
    assert stats.failed == 1  # retried, then dead-lettered: the file must be dealt with
    seen = status()
    assert seen["state"] == "blocked"
    assert seen["last_message"]["kind"] == "event"
    error = seen["last_error"]
    assert (error["kind"], error["key"]) == ("rejected", key("2026-06-22T15-50-39"))
    assert error["message"].startswith(f"rejected {key('2026-06-22T15-50-39')}, line 1: ")


def test_a_message_after_the_kept_connection_died_while_idle_is_still_noted(
    world: LambdaWorld, caplog: pytest.LogCaptureFixture
) -> None:
    # The note is an invocation's first statement: a failover or an idle timeout that ended
    # the warm container's connection must not cost the message its note.
    env = world.env
    env.put(key("2026-06-22T15-50-39"), csv_bytes([row("INC1")]))
    assert world.poll().failed == 0
    pid = aws.runtime().db().scalar("SELECT pg_backend_pid()")
    assert faults.terminate_backend(env, pid)

    with caplog.at_level(logging.WARNING):
        world.invoke({"dataset": "inc"})
    assert last_message() == ("direct", None)
    assert not [r for r in caplog.records if "could not note" in r.getMessage()]
    assert aws.runtime().db().scalar("SELECT pg_backend_pid()") != pid  # connected again
