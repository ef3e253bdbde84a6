"""Two syncs of one dataset at once never both apply: the advisory lock decides."""

from __future__ import annotations

import threading
import time
from concurrent.futures import ThreadPoolExecutor

import pytest

from tests.conftest import Env
from tests.support.leases import HOLD
from tests.support.rows import csv_bytes, key, row
from tickets_ingest.errors import SyncBusy
from tickets_ingest.logic.sync import SyncOptions, sync

RELEASE = "SELECT pg_advisory_unlock(hashtextextended('tickets-ingest:inc', 0))"


def test_loser_exits_cleanly_and_names_the_holder(env: Env) -> None:
    env.put(key("2026-06-22T15-50-39"), csv_bytes([row("INC1")]))
    holder = env.db()
    holder.scalar(HOLD)
    with pytest.raises(SyncBusy, match=r"another sync of dataset 'inc' is running \(held by pid"):
        sync(env.runtime(), "inc")
    assert env.db().scalar("SELECT count(*) FROM tickets.import_meta") == 0
    # Other datasets are not blocked by inc's lock.
    env.put(key("2026-06-22T15-50-39", "crq"), csv_bytes([row("CRQ1")]))
    assert sync(env.runtime(), "crq").ok


def test_loser_can_wait_for_the_holder(env: Env) -> None:
    env.put(key("2026-06-22T15-50-39"), csv_bytes([row("INC1")]))
    holder = env.db()
    holder.scalar(HOLD)
    timer = threading.Timer(0.5, lambda: holder.scalar(RELEASE))
    timer.start()
    started = time.monotonic()
    report = sync(env.runtime(), "inc", SyncOptions(lock_wait_seconds=10))
    timer.join()
    assert report.ok and len(report.applied) == 1
    assert time.monotonic() - started >= 0.4


def test_racing_syncs_apply_each_file_exactly_once(env: Env) -> None:
    for i, stamp in enumerate(
        ["2026-06-22T15-50-39", "2026-06-22T15-53-04", "2026-06-22T17-10-41"]
    ):
        env.put(key(stamp), csv_bytes([row(f"INC{i}{n:04d}") for n in range(2000)]))
    runtimes = [env.runtime() for _ in range(4)]
    with ThreadPoolExecutor(max_workers=4) as pool:
        reports = list(
            pool.map(lambda r: sync(r, "inc", SyncOptions(lock_wait_seconds=60)), runtimes)
        )
    applied = [result.key for report in reports for result in report.applied]
    assert sorted(applied) == sorted(set(applied)) and len(applied) == 3
    db = env.db()
    assert db.scalar("SELECT count(*) FROM tickets.import_meta") == 3
    assert db.scalar("SELECT count(*) FROM tickets.incidents") == 6000
    assert env.list_keys("automations/inc/changes/") == []
