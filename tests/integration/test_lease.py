"""The dataset lock's lease, in one process and real PostgreSQL sessions.

- a holder whose heartbeat stopped is named by ``status`` (never ``blocked no``) and taken
  over by the next sync, which ends its session;
- a pid alone never identifies the victim: a lease whose backend_start differs from the
  lock holder's (the pid was reused) is never acted on;
- a live holder that applies is told to list again, and does, before it lets go (one that
  went quiet, or a dry run, is trusted with nothing);
- a holder taken over stops with LockLost (exit 75) even though the retry layer sees only
  a lost connection, and never applies again.
"""

from __future__ import annotations

import io
import threading
from collections.abc import Iterator
from concurrent.futures import Future, ThreadPoolExecutor

import pytest

from tests.conftest import Env
from tests.support.leases import HOLD, SILENT_LEASE
from tests.support.rows import csv_bytes, key, row
from tickets_ingest import failpoints
from tickets_ingest.dal.db import Database
from tickets_ingest.errors import LockLost, SyncBusy
from tickets_ingest.failpoints import Step
from tickets_ingest.handlers.cli import EXIT_FAILED, main
from tickets_ingest.logic.sync import SyncOptions, sync
from tickets_ingest.models import SyncReport

STAMPS = ["2026-06-22T15-50-39", "2026-06-22T16-00-00", "2026-06-22T16-10-00"]


def cli(*argv: str) -> tuple[int, str]:
    out = io.StringIO()
    return main(list(argv), out=out), out.getvalue()


@pytest.fixture
def short_lease(env: Env) -> Env:
    env.set(LOCK_HEARTBEAT_SECONDS="0.1", LOCK_STALE_SECONDS="1")
    return env


def silent_holder(env: Env, shift: str = "0 seconds") -> tuple[Database, int]:
    holder = Database.connect(env.database_url, application_name="vanished sync")
    holder.scalar(HOLD)
    holder.run(SILENT_LEASE, shift=shift)
    return holder, int(holder.scalar("SELECT pg_backend_pid()"))


def test_a_silent_holder_is_named_by_status_and_taken_over_by_the_next_sync(
    short_lease: Env, capsys: pytest.CaptureFixture[str]
) -> None:
    env = short_lease
    env.put(key(STAMPS[0]), csv_bytes([row("INC1")]))
    holder, pid = silent_holder(env)

    code, out = cli("status", "--dataset", "inc")
    assert code == EXIT_FAILED
    assert f"BLOCKED        by a silent sync holding the lock: pid {pid}, vanished sync" in out
    assert "blocked        no" not in out

    report = sync(env.runtime(), "inc")
    assert report.ok and [r.key for r in report.applied] == [key(STAMPS[0])]
    assert (
        holder.broken
        or env.db().scalar("SELECT count(*) FROM pg_stat_activity WHERE pid = :pid", pid=pid) == 0
    )
    assert "blocked        no" in cli("status", "--dataset", "inc")[1]


def test_a_reused_pid_is_never_terminated(short_lease: Env) -> None:
    """The lease names this pid, but a backend that started at another time: whoever holds
    the lock now is not the silent holder of the lease, so nobody is ended."""
    env = short_lease
    env.put(key(STAMPS[0]), csv_bytes([row("INC1")]))
    holder, pid = silent_holder(env, shift="-1 hour")
    with pytest.raises(SyncBusy, match=rf"held by pid {pid}, vanished sync .* no lease"):
        sync(env.runtime(), "inc")
    assert holder.scalar("SELECT pg_backend_pid()") == pid  # still alive
    assert env.db().scalar("SELECT count(*) FROM tickets.import_meta") == 0


@pytest.fixture
def paused() -> Iterator[tuple[threading.Event, threading.Event]]:
    """A sync in a worker thread stops after its first commit until ``go`` is set."""
    at_commit, go = threading.Event(), threading.Event()
    worker = "tickets-holder"

    def pause(step: Step, _key: str) -> None:
        if step is Step.COMMITTED and threading.current_thread().name.startswith(worker):
            at_commit.set()
            assert go.wait(30), "the test never let the holder go on"

    with failpoints.on(pause):
        yield at_commit, go
    go.set()


def in_thread(function: object, *args: object) -> tuple[ThreadPoolExecutor, Future[SyncReport]]:
    pool = ThreadPoolExecutor(1, thread_name_prefix="tickets-holder")
    return pool, pool.submit(function, *args)  # type: ignore[arg-type]


def test_a_live_holder_picks_up_what_a_busy_sync_came_for(
    env: Env, paused: tuple[threading.Event, threading.Event]
) -> None:
    at_commit, go = paused
    env.put(key(STAMPS[0]), csv_bytes([row("INC1")]))
    pool, holding = in_thread(sync, env.runtime(), "inc")
    assert at_commit.wait(30)

    env.put(key(STAMPS[1]), csv_bytes([row("INC2")]))  # arrives while the holder holds
    with pytest.raises(SyncBusy, match="it lists the dataset again before it lets go") as busy:
        sync(env.runtime(), "inc", SyncOptions(hand_over=True))
    assert busy.value.handed_over

    go.set()
    report = holding.result(timeout=30)
    pool.shutdown()
    assert [r.key for r in report.applied] == [key(STAMPS[0]), key(STAMPS[1])]
    assert env.list_keys("automations/inc/changes/") == []


def test_a_dry_run_holder_takes_no_news(env: Env) -> None:
    """A dry run applies nothing: a busy message must not be handed to it."""
    env.put(key(STAMPS[0]), csv_bytes([row("INC1")]))
    env.put(key(STAMPS[1]), csv_bytes([row("INC2")]))
    holder = Database.connect(env.database_url)
    holder.scalar(HOLD)
    holder.run(
        "INSERT INTO tickets.dataset_leases (dataset, holder_pid, holder_started, takes_news)"
        " SELECT 'inc', pid, backend_start, false FROM pg_stat_activity"
        " WHERE pid = pg_backend_pid()"
    )
    with pytest.raises(SyncBusy) as busy:
        sync(env.runtime(), "inc", SyncOptions(hand_over=True))
    assert not busy.value.handed_over


def test_a_quiet_holder_is_not_trusted_with_news(env: Env) -> None:
    """Heard from 10 s ago, stale after 20 s: perhaps dead already. The busy sync is not
    handed over (its message would wait for a holder that never lists again)."""
    env.put(key(STAMPS[0]), csv_bytes([row("INC1")]))
    holder = Database.connect(env.database_url)
    holder.scalar(HOLD)
    holder.run(
        "INSERT INTO tickets.dataset_leases"
        " (dataset, holder_pid, holder_started, takes_news, stale_seconds, heartbeat_at)"
        " SELECT 'inc', pid, backend_start, true, 20, now() - interval '10 seconds'"
        " FROM pg_stat_activity WHERE pid = pg_backend_pid()"
    )
    with pytest.raises(SyncBusy, match="heartbeat 10 s ago") as busy:
        sync(env.runtime(), "inc", SyncOptions(hand_over=True))
    assert not busy.value.handed_over
    assert holder.scalar("SELECT news FROM tickets.dataset_leases") == 0


def test_a_holder_taken_over_stops_with_lock_lost_and_never_applies_again(
    env: Env, paused: tuple[threading.Event, threading.Event]
) -> None:
    """The takeover ends the holder's backend; its retry layer sees a lost connection, but
    the lease says the dataset was taken: LockLost (exit 75), no reconnect-and-apply."""
    at_commit, go = paused
    # A slow heartbeat, so the test decides when the holder looks dead.
    env.set(LOCK_HEARTBEAT_SECONDS="10", LOCK_STALE_SECONDS="30")
    for number, stamp in enumerate(STAMPS):
        env.put(key(stamp), csv_bytes([row(f"INC{number}")]))
    pool, holding = in_thread(sync, env.runtime(), "inc")
    assert at_commit.wait(30)  # file 1 committed; the holder is between files

    # Its heartbeat looks dead (as if its network were gone): a contender takes over.
    db = env.db()
    db.run("UPDATE tickets.dataset_leases SET heartbeat_at = now() - interval '1 hour'")
    contender = sync(env.runtime(), "inc")
    assert [r.key for r in contender.applied] == [key(STAMPS[1]), key(STAMPS[2])]

    go.set()
    with pytest.raises(LockLost, match="was taken over by another sync"):
        holding.result(timeout=30)
    pool.shutdown()
    applied = db.run("SELECT source_key FROM tickets.import_meta ORDER BY id")
    assert applied == [[key(stamp)] for stamp in STAMPS]  # each once, in order


def test_a_reconnect_ends_its_own_previous_session_that_still_holds_the_lock(
    env: Env, caplog: pytest.LogCaptureFixture
) -> None:
    """A connection closed on the client's side mid-file (a download cut mid-COPY, a
    network error) leaves its backend holding the lock until the server notices: at once
    for an idle backend, only after its statement for a busy one. The reconnect must not
    take that for another sync's takeover (it used to stop with LockLost): it ends its
    own previous backend, named by the lease, takes the lock and retries the file."""
    for n, stamp in enumerate(STAMPS):
        env.put(key(stamp), csv_bytes([row(f"INC{n}", f"2026-06-22 16:0{n}:00")]))
    runtime = env.runtime()
    old_pids: list[int] = []

    def lose_the_connection_while_its_backend_is_busy(step: Step, at: str) -> None:
        if step is Step.STAGED and at == key(STAMPS[1]) and not old_pids:
            db = runtime.db()
            old_pids.append(int(db.scalar("SELECT pg_backend_pid()")))
            db._con.send_QUERY("SELECT pg_sleep(30)")  # the backend is busy, not reading
            db._con._sock.flush()
            db.close()
            raise ConnectionResetError("connection reset mid-file")

    with failpoints.on(lose_the_connection_while_its_backend_is_busy):
        report = sync(runtime, "inc")
    assert [r.key for r in report.applied] == [key(s) for s in STAMPS]
    assert env.db().run(
        "SELECT source_key FROM tickets.import_meta WHERE dataset = 'inc' ORDER BY id"
    ) == [[key(s)] for s in STAMPS]
    assert (
        old_pids
        and env.db().scalar(
            "SELECT count(*) FROM pg_stat_activity WHERE pid = :pid", pid=old_pids[0]
        )
        == 0
    )
    assert any(
        f"ending this sync's previous session (pid {old_pids[0]})" in r.getMessage()
        for r in caplog.records
    )
