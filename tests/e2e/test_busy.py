"""A busy dataset sends nothing to the DLQ: while a live sync holds the dataset (an
operator's run, the sweep, another invocation), each message for it is handed over to the
holder, which lists again before it lets go, and the message is acknowledged."""

from __future__ import annotations

import threading
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor

import pytest

from tests.e2e.conftest import LambdaWorld
from tests.support.oracle import fold, table_state
from tests.support.rows import csv_bytes, key, row
from tickets_ingest import failpoints
from tickets_ingest.core.schema import CSV_COLUMNS, DEFAULT_DROP_FIELDS
from tickets_ingest.failpoints import Step
from tickets_ingest.logic.sync import sync

COLUMNS = [c for c in CSV_COLUMNS if c not in DEFAULT_DROP_FIELDS]
HOLDER = "operator-sync"


@pytest.fixture
def paused_holder() -> Iterator[tuple[threading.Event, threading.Event]]:
    """The holder's thread stops after its first commit until ``go`` is set."""
    committed, go = threading.Event(), threading.Event()

    def pause(step: Step, _key: str) -> None:
        if step is Step.COMMITTED and threading.current_thread().name.startswith(HOLDER):
            committed.set()
            assert go.wait(60), "the test never let the holder go on"

    with failpoints.on(pause):
        yield committed, go
    go.set()


def test_messages_for_a_dataset_a_live_sync_holds_are_handed_over_never_dead_lettered(
    world: LambdaWorld,
    paused_holder: tuple[threading.Event, threading.Event],
    capsys: pytest.CaptureFixture[str],
) -> None:
    committed, go = paused_holder
    env = world.env
    first = csv_bytes([row("INC1"), row("INC2")])
    env.put(key("2026-06-22T15-50-39"), first)
    world.path.sqs.purge_queue(QueueUrl=world.path.queue_url)  # the operator syncs this one

    pool = ThreadPoolExecutor(1, thread_name_prefix=HOLDER)
    holding = pool.submit(sync, env.runtime(), "inc")
    assert committed.wait(60)

    # Uploads while the operator's sync holds inc: their messages meet a busy dataset,
    # more often than maxReceiveCount would allow if busy were a failure.
    later = [
        csv_bytes([row("INC2", "2026-06-22 17:00:00", raw_status="Resolved")]),
        csv_bytes([row("INC3", "2026-06-22 17:30:00")]),
    ]
    env.put(key("2026-06-22T17-00-00"), later[0])
    env.put(key("2026-06-22T17-30-00"), later[1])
    stats = world.poll(max_batches=10)
    assert stats.delivered == 2 and stats.failed == 0 and stats.acknowledged == 2
    assert world.queue_depth() == 0
    assert world.queue_depth(world.path.dlq_url) == 0
    emitted = capsys.readouterr().out
    assert '"DatasetBusy"' in emitted

    go.set()
    report = holding.result(timeout=60)
    pool.shutdown()
    # The holder listed again before letting go and applied what the messages came for.
    assert [r.key for r in report.applied] == [
        key("2026-06-22T15-50-39"),
        key("2026-06-22T17-00-00"),
        key("2026-06-22T17-30-00"),
    ]
    assert table_state(env.db(), "incidents", COLUMNS) == fold([first, *later])
    assert env.list_keys("automations/inc/changes/") == []
    assert world.queue_depth(world.path.dlq_url) == 0
