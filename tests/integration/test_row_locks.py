"""A row or table lock held by another session never wedges the dataset (issue 11, point 5).

The file's transaction waits at most APPLY_LOCK_TIMEOUT_SECONDS for it, then rolls back;
the dataset lock is let go at once; the one-line error names the file and what holds the
lock (pid, application_name, query). Once the other session lets go, the next sync
applies the file. And no fixed client timeout: the socket has none, TCP keepalives and
TCP_USER_TIMEOUT notice a dead peer instead.
"""

from __future__ import annotations

import io
import json
import socket

import pytest

from tests.conftest import Env
from tests.support.rows import csv_bytes, key, row
from tickets_ingest.dal.db import Database
from tickets_ingest.handlers.cli import EXIT_FAILED, EXIT_OK, main

FIRST, SECOND = key("2026-06-22T15-50-39"), key("2026-06-22T16-00-00")
HOLDERS = {
    "FOR UPDATE": "SELECT * FROM tickets.incidents WHERE ticket_id = 'INC1' FOR UPDATE",
    "LOCK TABLE": "LOCK TABLE tickets.incidents IN ACCESS EXCLUSIVE MODE",
}


def cli(*argv: str) -> tuple[int, str]:
    out = io.StringIO()
    return main(list(argv), out=out), out.getvalue()


@pytest.fixture
def applied_once(env: Env) -> Env:
    env.set(APPLY_LOCK_TIMEOUT_SECONDS="0.5", LOCK_HEARTBEAT_SECONDS="0.1", LOCK_STALE_SECONDS="5")
    env.put(FIRST, csv_bytes([row("INC1", "2026-06-22 15:00:00"), row("INC2")]))
    assert cli("sync", "--dataset", "inc", "--apply")[0] == EXIT_OK
    env.put(SECOND, csv_bytes([row("INC1", "2026-06-22 16:00:00")]))
    return env


@pytest.mark.parametrize("how", list(HOLDERS))
def test_a_lock_held_elsewhere_fails_the_file_names_the_holder_and_frees_the_dataset(
    applied_once: Env, how: str, capsys: pytest.CaptureFixture[str]
) -> None:
    env = applied_once
    other = Database.connect(env.database_url, application_name="dba console")
    other_pid = other.scalar("SELECT pg_backend_pid()")
    other.run("BEGIN")
    other.run(HOLDERS[how])

    code, _ = cli("sync", "--dataset", "inc", "--apply")
    err = capsys.readouterr().err
    assert code == EXIT_FAILED
    line = err.strip().splitlines()[-1]
    assert line.startswith(f"tickets-ingest: {SECOND}: waited longer than ")
    assert "APPLY_LOCK_TIMEOUT_SECONDS=0.5 for a row or table lock" in line
    # Sampled by the lease heartbeat while the apply waited (pg_blocking_pids).
    assert f"pid {other_pid} (dba console, idle in transaction since " in line
    assert how in line  # the holder's query
    assert "nothing of it was committed, the dataset is free" in line
    assert "Traceback" not in err

    # Free at once: no advisory lock left, status names no holder, nothing committed.
    db = env.db()
    assert db.scalar("SELECT count(*) FROM pg_locks WHERE locktype = 'advisory'") == 0
    code, out = cli("status", "--dataset", "inc", "--json")
    status = json.loads(out)  # one dataset asked for: one object
    assert status["lock"] is None and status["pending"] == [SECOND]
    assert db.scalar("SELECT count(*) FROM tickets.import_meta") == 1

    other.run("ROLLBACK")
    assert cli("sync", "--dataset", "inc", "--apply")[0] == EXIT_OK
    assert db.scalar("SELECT count(*) FROM tickets.import_meta") == 2
    assert db.scalar("SELECT source_key FROM tickets.incidents WHERE ticket_id = 'INC1'") == SECOND
    other.close()


def test_no_client_timeout_and_a_dead_peer_is_noticed_by_tcp(env: Env) -> None:
    """pg8000's fixed timeout=60 killed legitimately long statements; now the socket has no
    timeout, and both ends give up on a silent peer after about DB_DEAD_PEER_SECONDS."""
    env.set(DB_DEAD_PEER_SECONDS="30")
    db = env.runtime().db()
    sock = db._con._usock
    assert sock.gettimeout() is None
    assert sock.getsockopt(socket.SOL_SOCKET, socket.SO_KEEPALIVE) == 1
    assert sock.getsockopt(socket.IPPROTO_TCP, socket.TCP_KEEPIDLE) == 10
    assert sock.getsockopt(socket.IPPROTO_TCP, socket.TCP_KEEPINTVL) == 5
    assert sock.getsockopt(socket.IPPROTO_TCP, socket.TCP_KEEPCNT) == 4
    assert sock.getsockopt(socket.IPPROTO_TCP, socket.TCP_USER_TIMEOUT) == 30_000
    # The server's end, set per session (never as startup options: RDS Proxy refuses them).
    assert db.run(
        "SELECT current_setting('tcp_keepalives_idle'), current_setting('tcp_keepalives_count'),"
        " current_setting('tcp_user_timeout')"
    ) == [["10", "4", "30000"]]  # ms


def test_server_keepalives_can_be_left_to_the_server(env: Env) -> None:
    env.set(DB_SERVER_KEEPALIVES="false")
    db = env.runtime().db()
    assert db.scalar("SELECT current_setting('tcp_user_timeout')") == "0"


def test_a_statement_past_the_statement_timeout_fails_the_file_and_the_next_run_applies_it(
    applied_once: Env, capsys: pytest.CaptureFixture[str]
) -> None:
    """APPLY_STATEMENT_TIMEOUT_SECONDS bounds a statement that is slow for any reason but a
    lock (which APPLY_LOCK_TIMEOUT_SECONDS bounds first): here a trigger a DBA added."""
    env = applied_once
    env.set(APPLY_STATEMENT_TIMEOUT_SECONDS="1")
    db = env.db()
    db.run(
        "CREATE FUNCTION tickets.slow_down() RETURNS trigger LANGUAGE plpgsql AS "
        "$$ BEGIN PERFORM pg_sleep(30); RETURN NULL; END $$"
    )
    db.run(
        "CREATE TRIGGER slow_down BEFORE INSERT ON tickets.incidents "
        "FOR EACH STATEMENT EXECUTE FUNCTION tickets.slow_down()"
    )

    code, _ = cli("sync", "--dataset", "inc", "--apply")
    err = capsys.readouterr().err
    assert code == EXIT_FAILED
    line = err.strip().splitlines()[-1]
    assert line.startswith(
        f"tickets-ingest: {SECOND}: a statement ran longer than APPLY_STATEMENT_TIMEOUT_SECONDS=1; "
    )
    assert "the heartbeat sampled no wait on another session's lock" in line
    assert "held by" not in line
    assert "nothing of it was committed, the dataset is free" in line
    assert "Traceback" not in err
    assert db.scalar("SELECT count(*) FROM tickets.import_meta") == 1
    assert db.scalar("SELECT source_key FROM tickets.incidents WHERE ticket_id = 'INC1'") == FIRST
    assert db.scalar("SELECT count(*) FROM pg_locks WHERE locktype = 'advisory'") == 0

    db.run("DROP TRIGGER slow_down ON tickets.incidents")
    db.run("DROP FUNCTION tickets.slow_down()")
    assert cli("sync", "--dataset", "inc", "--apply")[0] == EXIT_OK
    assert db.scalar("SELECT count(*) FROM tickets.import_meta") == 2
    assert db.scalar("SELECT source_key FROM tickets.incidents WHERE ticket_id = 'INC1'") == SECOND
