"""The protocol the connection speaks, against the real PostgreSQL: one wait for the server
per statement (prepared statements, simple Queries), COPY in the simple protocol without
leaving a stray ReadyForQuery behind (after success or a server-side error), and the round
trips a small file costs, counted (issue 14: say where each one goes)."""

from __future__ import annotations

import io
from collections.abc import Iterator
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import pytest

from tests.conftest import Env
from tests.support.rows import csv_bytes, key, row
from tickets_ingest.dal import ledger
from tickets_ingest.dal.db import Behind, DatabaseError, InterfaceError, sqlstate
from tickets_ingest.dal.sql import file_session
from tickets_ingest.logic.activity import note_message, noted_sync
from tickets_ingest.logic.sync import sync
from tickets_ingest.models import ExportType, RowCounts

# Where a clean small file's round trips go, in order (the dataset lock's heartbeat runs on
# its own connection and is not counted):
PER_FILE = {
    "BEGIN with the file's SET LOCALs, then the COPY: its statement, the file's data and its "
    "end in one write, then (same Query) set aside rows without a usable key or updated_at, "
    "count, SAVEPOINT, and the pause check; then, pipelined behind that Query in the same "
    "write, the upsert (prepared)": 1,
    "the ledger row (it carries the watermark), clearing the blocked-file register, and "
    "COMMIT (one Query)": 1,
}


def test_a_prepared_statement_is_parsed_once_per_connection(env: Env) -> None:
    db = env.db()
    before = db.round_trips
    assert db.run("SELECT CAST(:n AS int) + 1", n=1) == [[2]]
    assert db.round_trips - before == 2  # prepare, then execute
    before = db.round_trips
    assert db.run("SELECT CAST(:n AS int) + 1", n=41) == [[42]]
    assert db.round_trips - before == 1  # bound and executed only


def test_after_a_copy_the_next_statement_reads_its_own_answer(env: Env) -> None:
    db = env.db()
    db.run("CREATE TEMP TABLE t (a text)")
    with db.transaction():
        assert db.copy_in("COPY t FROM STDIN WITH (FORMAT csv)", [b"x\ny\n"]) == 2
        assert db.run("SELECT count(*) FROM t") == [[2]]
    assert db.run("SELECT 'after'") == [["after"]]


def test_a_copy_the_server_refuses_leaves_the_connection_in_step(env: Env) -> None:
    db = env.db()
    db.run("CREATE TEMP TABLE t (a int)")
    with pytest.raises(DatabaseError) as refused, db.transaction():
        db.copy_in("COPY t FROM STDIN WITH (FORMAT csv)", io.BytesIO(b"1\nnot a number\n"))
    assert "integer" in str(refused.value)
    assert not db.broken
    assert db.run("SELECT count(*) FROM t") == [[0]]
    assert db.run("SELECT CAST(:v AS text)", v="still in step") == [["still in step"]]


def test_an_eager_body_goes_with_its_statement_and_any_other_streams(env: Env) -> None:
    db = env.db()
    db.run("CREATE TEMP TABLE t (a int)")
    with db.transaction():
        before = db.round_trips
        assert db.copy_in("COPY t FROM STDIN WITH (FORMAT csv)", [b"1\n", b"2\n"], eager=True) == 2
        assert db.round_trips - before == 1  # sent right behind the statement
        before = db.round_trips
        pieces = [f"{n}\n".encode() for n in range(3, 9)]
        assert db.copy_in("COPY t FROM STDIN WITH (FORMAT csv)", pieces) == 6
        assert db.round_trips - before == 2  # the server's go-ahead, then the end
        assert db.copy_in("COPY t FROM STDIN WITH (FORMAT csv)", [], eager=True) == 0
    assert db.run("SELECT count(*), sum(a) FROM t") == [[8, 36]]


def test_data_sent_with_a_copy_that_fails_to_start_is_ignored_by_the_server(env: Env) -> None:
    db = env.db()
    with pytest.raises(DatabaseError) as refused, db.transaction():
        db.copy_in("COPY no_such_table FROM STDIN WITH (FORMAT csv)", [b"1\n2\n"], eager=True)
    assert "no_such_table" in str(refused.value)
    assert not db.broken
    assert db.run("SELECT CAST(:v AS text)", v="still in step") == [["still in step"]]


def _cut_download() -> Iterator[bytes]:
    """A file's chunks that break off after the first one, as a cut S3 download does."""
    yield b"1\n"
    raise OSError("download cut")


def test_an_eager_copy_source_that_fails_leaves_the_connection(env: Env) -> None:
    db = env.db()
    db.run("CREATE TEMP TABLE t (a int)")
    with pytest.raises(OSError, match="download cut"), db.transaction():
        db.copy_in("COPY t FROM STDIN WITH (FORMAT csv)", _cut_download(), eager=True)
    assert not db.broken  # nothing was sent: the transaction was rolled back, that is all
    assert db.run("SELECT count(*) FROM t") == [[0]]


def test_a_copy_source_that_fails_midway_closes_the_connection(env: Env) -> None:
    db = env.db()
    db.run("CREATE TEMP TABLE t (a int)")
    with pytest.raises(OSError, match="download cut"), db.transaction():
        db.copy_in("COPY t FROM STDIN WITH (FORMAT csv)", _cut_download())
    assert db.broken  # the protocol cannot be resumed mid-COPY: a new connection follows


def test_a_small_file_costs_the_listed_round_trips(env: Env) -> None:
    runtime = env.runtime()
    env.put(key("2026-06-22T15-50-39"), csv_bytes([row("INC1"), row("INC2")]))
    sync(runtime, "inc")  # baseline; connects, migrates
    minute = iter(range(10, 60))

    def sync_deltas(files: int) -> int:
        """Round trips of one sync of ``files`` new one-row deltas."""
        for _ in range(files):
            at = next(minute)
            env.put(
                key(f"2026-06-22T16-{at}-00"), csv_bytes([row("INC1", f"2026-06-22 16:{at}:00")])
            )
        before = runtime.db().round_trips
        report = sync(runtime, "inc")
        assert len(report.applied) == files
        return runtime.db().round_trips - before

    sync_deltas(1)  # every statement of a file prepared once on this connection
    # The same sync with two more files: what the sync itself costs cancels out.
    per_file = (sync_deltas(3) - sync_deltas(1)) / 2
    assert per_file == sum(PER_FILE.values()), PER_FILE


@pytest.mark.parametrize("eager", [True, False], ids=["sent-with-it", "streamed"])
def test_statements_after_a_copy_go_in_its_query(env: Env, eager: bool) -> None:
    db = env.db()
    db.run("CREATE TEMP TABLE t (a int)")
    with db.transaction():
        before = db.round_trips
        rows = db.copy_in_then(
            "COPY t FROM STDIN WITH (FORMAT csv)",
            [b"1\n", b"2\n"],
            "SELECT count(*), sum(a) FROM t;\nSAVEPOINT after_copy",
            eager=eager,
        )
        assert rows == [[2, 3]]
        assert db.round_trips - before == (1 if eager else 2)  # none of their own
        assert db.run("SELECT 'next'") == [["next"]]  # and nothing left unread
        db.run("ROLLBACK TO SAVEPOINT after_copy")  # the savepoint was declared


@pytest.mark.parametrize("eager", [True, False], ids=["sent-with-it", "streamed"])
def test_statements_after_a_copy_that_fails_do_not_run(env: Env, eager: bool) -> None:
    db = env.db()
    db.run("CREATE TEMP TABLE t (a int)")
    db.run("CREATE TEMP TABLE ran (a int)")
    with pytest.raises(DatabaseError, match="integer"), db.transaction():
        db.copy_in_then(
            "COPY t FROM STDIN WITH (FORMAT csv)",
            [b"1\nnot a number\n"],
            "INSERT INTO ran VALUES (1)",
            eager=eager,
        )
    assert not db.broken
    assert db.run("SELECT (SELECT count(*) FROM t), (SELECT count(*) FROM ran)") == [[0, 0]]


def test_a_statement_at_commit_goes_with_the_commit(env: Env) -> None:
    db = env.db()
    db.run("CREATE TEMP TABLE t (a int)")
    with db.transaction():
        db.run("INSERT INTO t VALUES (1)")
        db.at_commit("INSERT INTO t VALUES (2)")
        before = db.round_trips
    assert db.round_trips - before == 1  # the statement and the COMMIT: one Query
    assert db.run("SELECT array_agg(a ORDER BY a) FROM t") == [[[1, 2]]]


def test_a_statement_at_commit_that_fails_rolls_everything_back(env: Env) -> None:
    db = env.db()
    db.run("CREATE TABLE at_commit_t (a int PRIMARY KEY)")
    try:
        with pytest.raises(DatabaseError, match="duplicate key"), db.transaction():
            db.run("INSERT INTO at_commit_t VALUES (1)")
            db.at_commit("INSERT INTO at_commit_t VALUES (1)")  # fails: the COMMIT must not run
        assert not db.broken
        assert db.run("SELECT count(*) FROM at_commit_t") == [[0]]
        with db.transaction():  # the connection is out of the failed transaction
            db.at_commit("INSERT INTO at_commit_t VALUES (3)")
        assert db.run("SELECT a FROM at_commit_t") == [[3]]
    finally:
        db.run("DROP TABLE at_commit_t")


def test_a_dry_run_runs_the_statement_at_commit_and_keeps_nothing(env: Env) -> None:
    db = env.db()
    db.run("CREATE TEMP TABLE t (a int)")
    with pytest.raises(DatabaseError, match="integer"), db.transaction(commit=False):
        db.at_commit("INSERT INTO t VALUES ('not a number')")  # it runs: the error shows
    with db.transaction(commit=False):
        db.at_commit("INSERT INTO t VALUES (1)")
    assert db.run("SELECT count(*) FROM t") == [[0]]


def test_a_ledger_row_at_commit_keeps_quotes_and_backslashes(env: Env) -> None:
    """The ledger row goes with the COMMIT as literals: a hostile value arrives as it was,
    even where the server's default would read backslashes as escapes."""
    runtime = env.runtime()
    env.put(key("2026-06-22T15-50-39"), csv_bytes([row("INC1")]))
    sync(runtime, "inc")  # migrated
    db = runtime.db()
    db.run("SET standard_conforming_strings = off")  # e.g. a role's old default
    hostile = "it's \\'; DROP TABLE tickets.import_meta; -- \\\\ \" \n end"
    try:
        with db.transaction(setup=file_session("UTC", 1000, 10_000)):
            ledger.record_file(
                db,
                dataset="inc",
                key=f"automations/inc/changes/{hostile}.csv",
                etag="e'tag",
                export_type=ExportType.DELTA,
                counts=RowCounts(read=1),
                bytes_read=1,
                started_at=datetime(2026, 6, 22, 12, 0, tzinfo=UTC),
                duration_ms=1,
                metadata={"note": hostile},
                at_commit=True,
            )
    finally:
        db.run("SET standard_conforming_strings = on")
    assert db.run(
        "SELECT etag, metadata->>'note', started_at FROM tickets.import_meta WHERE source_key = :k",
        k=f"automations/inc/changes/{hostile}.csv",
    ) == [["e'tag", hostile, datetime(2026, 6, 22, 12, 0, tzinfo=UTC)]]


def test_a_deferred_begin_goes_with_the_first_statement(env: Env) -> None:
    db = env.db()
    db.run("CREATE TEMP TABLE t (a int)")
    before = db.round_trips
    with db.transaction(setup="SET LOCAL lock_timeout = '1s'", deferred=True):
        assert db.run("SELECT current_setting('lock_timeout')") == [["1s"]]
        # A later Query is in the same transaction (an implicit one would have ended).
        assert db.run("SELECT current_setting('lock_timeout')") == [["1s"]]
        db.at_commit("INSERT INTO t VALUES (1)")
    assert db.round_trips - before == 3  # BEGIN + SET + SELECT, SELECT, INSERT + COMMIT
    assert db.run("SELECT count(*), current_setting('lock_timeout') FROM t") == [[1, "0"]]


def test_a_deferred_begin_whose_first_statement_fails_is_rolled_back(env: Env) -> None:
    db = env.db()
    db.run("CREATE TEMP TABLE t (a int)")
    with pytest.raises(DatabaseError, match="integer"), db.transaction(deferred=True):
        db.copy_in_then("COPY t FROM STDIN WITH (FORMAT csv)", [b"1\nx\n"], "SELECT 1", eager=True)
    assert not db.broken
    # Out of the failed transaction: a statement runs (in an aborted one it would fail).
    assert db.run("SELECT count(*) FROM t") == [[0]]


def test_a_deferred_begin_before_a_prepared_statement_still_opens_the_transaction(
    env: Env,
) -> None:
    db = env.db()
    db.run("CREATE TEMP TABLE t (a int)")
    with pytest.raises(RuntimeError, match="changed my mind"), db.transaction(deferred=True):
        db.run("INSERT INTO t VALUES (CAST(:a AS int))", a=1)
        raise RuntimeError("changed my mind")
    assert db.run("SELECT count(*) FROM t") == [[0]]  # the INSERT was in the transaction


def test_a_deferred_transaction_that_sent_nothing_sends_no_rollback(env: Env) -> None:
    db = env.db()
    before = db.round_trips
    with pytest.raises(RuntimeError), db.transaction(deferred=True):
        raise RuntimeError("before any statement")
    assert db.round_trips == before
    assert db.run("SELECT 'next'") == [["next"]]


def test_a_statement_behind_a_copy_runs_in_its_round_trip(env: Env) -> None:
    db = env.db()
    db.run("CREATE TEMP TABLE t (a int)")
    insert = Behind("INSERT INTO t SELECT CAST(:n AS int) + max(a) FROM t RETURNING a", {"n": 10})
    db.run("SELECT 1 FROM t WHERE a = CAST(:n AS int)", n=0)  # warm: prepare is one trip
    with db.transaction(deferred=True):
        db.copy_in_then("COPY t FROM STDIN WITH (FORMAT csv)", [b"0\n"], "SELECT 0", eager=True)
        db.run("TRUNCATE t")
        db.run("SELECT 1 FROM t")  # the transaction is open now: no deferred BEGIN below
        before = db.round_trips
        rows = db.copy_in_then(
            "COPY t FROM STDIN WITH (FORMAT csv)",
            [b"1\n2\n"],
            "SELECT count(*) FROM t;\nSAVEPOINT ahead",
            eager=True,
            behind=insert,
        )
        # prepared, then the COPY, its statements and the one behind: one wait
        assert db.round_trips - before == 2
        assert rows == [[2]]  # the Query's rows only
        assert insert.rows == [[12]] and insert.error is None  # it saw what the COPY stored
        assert insert.one() == [12]
        assert db.run("SELECT array_agg(a ORDER BY a) FROM t") == [[[1, 2, 12]]]  # in step
        before = db.round_trips
        db.copy_in_then(
            "COPY t FROM STDIN WITH (FORMAT csv)", [b"3\n"], "SELECT 1", eager=True, behind=insert
        )
        assert db.round_trips - before == 1  # prepared once per connection
    assert db.run("SELECT array_agg(a ORDER BY a) FROM t") == [[[1, 2, 3, 12, 22]]]


def test_a_statement_behind_a_copy_that_fails_finds_the_transaction_aborted(env: Env) -> None:
    """A COPY that fails leaves the statement behind it nothing to do, even as the Query
    that opened the transaction: it never runs (nor commits) on its own."""
    db = env.db()
    db.run("CREATE TEMP TABLE t (a int)")
    db.run("CREATE TEMP TABLE ran (a int)")
    insert = Behind("INSERT INTO ran VALUES (CAST(:n AS int)) RETURNING a", {"n": 1})
    with pytest.raises(DatabaseError, match="integer") as raised, db.transaction(deferred=True):
        db.copy_in_then(
            "COPY t FROM STDIN WITH (FORMAT csv)",
            [b"1\nnot a number\n"],
            "SELECT 1",
            eager=True,
            behind=insert,
        )
    assert sqlstate(raised.value) == "22P02"  # the COPY's own error, line and all
    assert sqlstate(insert.error) == "25P02"  # in_failed_sql_transaction: it did nothing
    assert not db.broken
    assert db.run("SELECT (SELECT count(*) FROM t), (SELECT count(*) FROM ran)") == [[0, 0]]


def test_a_statement_behind_a_copy_keeps_its_own_error(env: Env) -> None:
    db = env.db()
    db.run("CREATE TEMP TABLE t (a text)")
    cast = Behind("SELECT CAST(a AS int) + CAST(:n AS int) FROM t", {"n": 1})
    with db.transaction(deferred=True):
        rows = db.copy_in_then(
            "COPY t FROM STDIN WITH (FORMAT csv)",
            [b"1\nx\n"],
            "SELECT count(*) FROM t;\nSAVEPOINT ahead",
            eager=True,
            behind=cast,
        )
        assert rows == [[2]]  # the COPY and its Query succeeded
        assert cast.rows is None and sqlstate(cast.error) == "22P02"
        with pytest.raises(DatabaseError, match="integer"):
            cast.one()
        db.run("ROLLBACK TO SAVEPOINT ahead")  # the COPY's work is kept
        assert db.run("SELECT count(*) FROM t") == [[2]]
    assert db.run("SELECT count(*) FROM t") == [[2]]


def test_a_statement_behind_a_copy_needs_a_transaction(env: Env) -> None:
    db = env.db()
    db.run("CREATE TEMP TABLE t (a int)")
    insert = Behind("INSERT INTO t VALUES (CAST(:n AS int))", {"n": 1})
    with pytest.raises(RuntimeError, match="transaction"):
        db.copy_in_then(
            "COPY t FROM STDIN WITH (FORMAT csv)", [b"1\n"], "SELECT 1", eager=True, behind=insert
        )
    with pytest.raises(ValueError, match="sent with its data"), db.transaction():
        db.copy_in_then("COPY t FROM STDIN WITH (FORMAT csv)", [b"1\n"], "SELECT 1", behind=insert)
    assert not db.broken
    assert db.run("SELECT count(*) FROM t") == [[0]]  # nothing was sent


def test_a_statement_behind_a_copy_is_prepared_under_the_transactions_lock_timeout(
    env: Env,
) -> None:
    """Preparing reads the definitions of the tables the statement names, so it waits for
    their locks: it happens inside the transaction, where lock_timeout bounds it."""
    db = env.db()
    db.run("CREATE TABLE behind_locked (a int)")
    other = env.db()
    try:
        db.run("CREATE TEMP TABLE t (a int)")
        other.run("BEGIN")
        other.run("LOCK TABLE behind_locked IN ACCESS EXCLUSIVE MODE")
        insert = Behind("INSERT INTO behind_locked VALUES (CAST(:n AS int))", {"n": 1})
        with (
            pytest.raises(DatabaseError, match="lock timeout") as raised,
            db.transaction(setup="SET LOCAL lock_timeout = '200ms'", deferred=True),
        ):
            db.copy_in_then(
                "COPY t FROM STDIN WITH (FORMAT csv)",
                [b"1\n"],
                "SELECT 1",
                eager=True,
                behind=insert,
            )
        assert sqlstate(raised.value) == "55P03"
        assert not db.broken
        other.run("ROLLBACK")
        with db.transaction(setup="SET LOCAL lock_timeout = '200ms'", deferred=True):
            db.copy_in_then(
                "COPY t FROM STDIN WITH (FORMAT csv)",
                [b"1\n"],
                "SELECT 1",
                eager=True,
                behind=insert,
            )
        assert insert.error is None
        assert db.run("SELECT count(*) FROM behind_locked") == [[1]]
    finally:
        other.run("ROLLBACK")
        db.run("DROP TABLE behind_locked")


def test_a_kept_connection_is_checked_before_a_sync_unless_just_vouched_for(env: Env) -> None:
    """The check (SELECT 1) is for a warm container's connection that died while idle; one
    that has just answered the invocation's first statement (its activity note, which
    reconnects if it must) is not asked again, if nothing ran since."""
    runtime = env.runtime()
    db = runtime.db()
    db.run("SELECT 2")
    before = db.round_trips
    assert runtime.db(verify=True) is db
    assert db.round_trips == before + 1  # not vouched for: checked
    runtime.vouch()
    assert runtime.db(verify=True) is db
    assert db.round_trips == before + 1  # vouched for just now: no check
    assert runtime.db(verify=True) is db
    assert db.round_trips == before + 2  # a vouch is good for one check only
    runtime.vouch()
    db.run("SELECT 3")  # something ran since: the vouch no longer says how it is now
    assert runtime.db(verify=True) is db
    assert db.round_trips == before + 4
    runtime.vouch()
    note_message(runtime, "nowhere", "direct")  # a message that notes nothing (not enabled)
    assert runtime.db(verify=True) is db
    assert db.round_trips == before + 5  # a new message: the old vouch no longer holds


def test_an_invocation_checks_its_connection_once(env: Env) -> None:
    """The activity note is the invocation's first statement: the sync after it starts
    with the pause check, not with a SELECT 1."""
    runtime = env.runtime()
    sync(runtime, "inc")
    db = runtime.db()
    sent: list[str] = []
    original = db._call

    def spy(sql: str, **kwargs: Any) -> Any:
        sent.append(" ".join(sql.split()))
        return original(sql, **kwargs)

    db._call = spy  # type: ignore[method-assign]
    note_message(runtime, "inc", "direct")
    noted_sync(runtime, "inc")
    assert sent[0].startswith("INSERT INTO tickets.dataset_activity")
    assert "SELECT 1" not in sent
    assert sent[1].startswith("SELECT paused_by")


def test_a_kept_connection_that_died_while_idle_is_replaced_before_the_sync(env: Env) -> None:
    env.put(key("2026-06-22T15-50-39"), csv_bytes([row("INC1")]))
    runtime = env.runtime()
    sync(runtime, "inc")
    dead = runtime.db()
    pid = dead.scalar("SELECT pg_backend_pid()")
    env.db().run("SELECT pg_terminate_backend(CAST(:pid AS int))", pid=pid)
    env.put(key("2026-06-22T16-00-00"), csv_bytes([row("INC2")]))
    report = sync(runtime, "inc")  # a warm container keeps its Runtime between invocations
    assert [Path(r.key).name for r in report.applied] == ["2026-06-22T16-00-00.csv"]
    assert runtime.db() is not dead and dead.broken


def test_a_statement_behind_a_copy_with_a_missing_parameter_sends_nothing(env: Env) -> None:
    """pg8000 refuses the missing parameter (an InterfaceError, so the connection is given
    up, as for any prepared statement); the COPY before it was never sent."""
    db = env.db()
    db.run("CREATE TABLE behind_missing (a int)")
    try:
        insert = Behind("INSERT INTO behind_missing VALUES (CAST(:n AS int))", {})  # no :n
        before = db.round_trips
        with pytest.raises(InterfaceError, match="placeholder 'n'"), db.transaction():
            db.copy_in_then(
                "COPY behind_missing FROM STDIN WITH (FORMAT csv)",
                [b"1\n"],
                "SELECT 1",
                eager=True,
                behind=insert,
            )
        assert db.round_trips - before == 2  # BEGIN and the prepare: no COPY Query
        assert env.db().run("SELECT count(*) FROM behind_missing") == [[0]]
    finally:
        env.db().run("DROP TABLE behind_missing")


def test_a_query_that_does_not_parse_never_has_a_statement_run_behind_it(env: Env) -> None:
    """PostgreSQL parses a whole Query before running any of it: one that does not parse
    runs no BEGIN, and a statement behind it would run (and commit) on its own. So behind a
    Query text sent for the first time, nothing is pipelined: it waits for the Query."""
    db = env.db()
    db.run("CREATE TEMP TABLE t (a int)")
    db.run("CREATE TABLE behind_unparsed (a int)")
    try:
        insert = Behind("INSERT INTO behind_unparsed VALUES (CAST(:n AS int))", {"n": 1})
        with db.transaction():
            db.copy_in_then(  # prepared, in a transaction that is open already
                "COPY t FROM STDIN WITH (FORMAT csv)",
                [b"1\n"],
                "SELECT 1",
                eager=True,
                behind=insert,
            )
        db.run("TRUNCATE behind_unparsed")
        insert = Behind("INSERT INTO behind_unparsed VALUES (CAST(:n AS int))", {"n": 2})
        with pytest.raises(DatabaseError) as raised, db.transaction(deferred=True):
            db.copy_in_then(
                "COPY t FROM STDIN WITH (FORMAT csv)",
                [b"1\n"],
                "SELEC 1",
                eager=True,
                behind=insert,
            )
        assert sqlstate(raised.value) == "42601"  # syntax_error: BEGIN never ran
        assert insert.rows is None
        assert env.db().run("SELECT count(*) FROM behind_unparsed") == [[0]]  # nothing committed
        # A text that parsed once has what goes behind it pipelined from then on.
        trips = []
        for n in (3, 4):
            before = db.round_trips
            with db.transaction(deferred=True):
                db.copy_in_then(
                    "COPY t FROM STDIN WITH (FORMAT csv)",
                    [b"1\n"],
                    "SELECT 1",
                    eager=True,
                    behind=Behind(insert.sql, {"n": n}),
                )
            trips.append(db.round_trips - before)
        assert trips == [3, 2]  # BEGIN+COPY, the statement, COMMIT; then BEGIN+COPY+it, COMMIT
        assert env.db().run("SELECT array_agg(a ORDER BY a) FROM behind_unparsed") == [[[3, 4]]]
    finally:
        env.db().run("DROP TABLE behind_unparsed")


def test_once_refuses_to_run_inside_a_transaction(env: Env) -> None:
    """Per-connection set-up inside a transaction would be undone by its rollback while
    remembered as done; with a deferred BEGIN it would even open the transaction."""
    db = env.db()
    for deferred in (False, True):
        with (
            pytest.raises(RuntimeError, match="once inside a transaction"),
            db.transaction(deferred=deferred),
        ):
            db.once("CREATE TEMP TABLE IF NOT EXISTS once_probe (id int)")
    db.once("CREATE TEMP TABLE IF NOT EXISTS once_probe (id int)")
    assert db.scalar("SELECT count(*) FROM once_probe") == 0
