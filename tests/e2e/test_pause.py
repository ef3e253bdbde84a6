"""A paused dataset through the real event path: its messages are acknowledged (nothing
reaches the DLQ), nothing is applied, the pause is counted; the sweep skips it. Resuming
queues a message to the dataset's group, and the function then applies everything that
waited, in order, once."""

from __future__ import annotations

import io
import json

import pytest

from tests.e2e.conftest import LambdaWorld
from tests.support.oracle import fold, table_state
from tests.support.rows import csv_bytes, key, row
from tickets_ingest.core.schema import CSV_COLUMNS, DEFAULT_DROP_FIELDS
from tickets_ingest.handlers.cli import EXIT_OK, main

COLUMNS = [c for c in CSV_COLUMNS if c not in DEFAULT_DROP_FIELDS]


def cli(*argv: str) -> tuple[int, str]:
    out = io.StringIO()
    return main(list(argv), out=out), out.getvalue()


def emf_documents(stdout: str, metric: str) -> list[dict[str, object]]:
    """The EMF documents (one JSON object a line) that carry ``metric``."""
    found = []
    for line in stdout.splitlines():
        if line.startswith("{") and f'"{metric}"' in line:
            document = json.loads(line)
            if metric in document:
                found.append(document)
    return found


def test_paused_messages_are_acknowledged_then_resume_applies_all_in_order_once(
    world: LambdaWorld, capsys: pytest.CaptureFixture[str], caplog: pytest.LogCaptureFixture
) -> None:
    env = world.env
    first = csv_bytes([row("INC1"), row("INC2")])
    env.put(key("2026-06-22T15-50-39"), first)
    assert world.poll().failed == 0
    assert env.list_keys("automations/inc/changes/") == []

    code, out = cli("pause", "--dataset", "inc", "--reason", "reindex", "--by", "ana")
    assert code == EXIT_OK and "dataset inc paused by ana" in out
    capsys.readouterr()

    later = [
        csv_bytes([row("INC2", "2026-06-22 17:00:00", raw_status="Resolved")]),
        csv_bytes([row("INC3", "2026-06-22 17:30:00")]),
        csv_bytes([row("INC3", "2026-06-22 18:00:00", raw_status="Closed")]),
    ]
    for stamp, body in zip(("17-00-00", "17-30-00", "18-00-00"), later, strict=True):
        env.put(key(f"2026-06-22T{stamp}"), body)
    # Polled as often as maxReceiveCount allows and more: a paused message never fails.
    stats = world.poll(max_batches=10)
    assert (stats.delivered, stats.failed, stats.acknowledged) == (3, 0, 3)
    assert world.queue_depth() == 0
    assert world.queue_depth(world.path.dlq_url) == 0
    assert table_state(env.db(), "incidents", COLUMNS) == fold([first])
    assert len(env.list_keys("automations/inc/changes/")) == 3
    emitted = capsys.readouterr().out
    paused = emf_documents(emitted, "DatasetPaused")
    assert paused and all(d["dataset"] == "inc" and d["DatasetPaused"] == [1.0] for d in paused)
    assert all("LagSeconds" in d for d in paused)  # its lag alarm still counts
    assert "dataset paused; nothing applied" in caplog.text

    # The sweep skips it (and syncs the others).
    swept = world.invoke({"sweep": True})
    assert swept["inc"]["ok"] is True and "is paused by ana" in swept["inc"]["paused"]
    assert swept["crq"]["ok"] is True and "paused" not in swept["crq"]
    assert table_state(env.db(), "incidents", COLUMNS) == fold([first])

    code, out = cli("resume", "--dataset", "inc", "--by", "bo")
    assert code == EXIT_OK
    assert f"catch-up queued to {world.path.queue_url} (group inc, message " in out
    stats = world.poll()
    assert (stats.delivered, stats.failed) == (1, 0)
    assert world.queue_depth(world.path.dlq_url) == 0
    assert table_state(env.db(), "incidents", COLUMNS) == fold([first, *later])
    applied = env.db().run(
        "SELECT source_key FROM tickets.import_meta WHERE dataset = 'inc' "
        "AND export_type IN ('baseline', 'delta', 'late') ORDER BY id"
    )
    assert [r[0] for r in applied] == [
        key("2026-06-22T15-50-39"),
        key("2026-06-22T17-00-00"),
        key("2026-06-22T17-30-00"),
        key("2026-06-22T18-00-00"),
    ]
    assert env.list_keys("automations/inc/changes/") == []
