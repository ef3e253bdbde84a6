"""Least privilege in the database, with real PostgreSQL roles.

An owner role owns the database and runs `tickets-ingest migrate` (the deploy step). A
runtime role gets exactly what `tickets-ingest grants --role NAME` prints, nothing else
(PUBLIC's default CONNECT/TEMPORARY on the database and EXECUTE on functions are revoked
first, so every right it has comes from the printed statements). Every operator command
then runs as the runtime role, and it can create nothing.
"""

from __future__ import annotations

import io
import itertools
import json
import os
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from urllib.parse import urlsplit, urlunsplit

import boto3
import pg8000.native
import pytest

from tests.conftest import Env, PostgresServer, plain_text_unless_asked
from tests.support.leases import HOLD, SILENT_LEASE
from tests.support.rows import csv_bytes, key, row
from tickets_ingest.dal.db import Database, DatabaseError
from tickets_ingest.handlers.cli import EXIT_BUSY, EXIT_FAILED, EXIT_OK, EXIT_PAUSED, main

_names = itertools.count()


@dataclass
class Roles:
    owner_url: str
    runtime_url: str
    runtime: str


def _url(server: PostgresServer, user: str, database: str) -> str:
    parts = urlsplit(server.url_for(database))
    netloc = f"{user}@{parts.hostname}:{parts.port}"
    return urlunsplit(parts._replace(netloc=netloc))


@pytest.fixture
def roles(pg_server: PostgresServer) -> Iterator[Roles]:
    suffix = f"{os.getpid()}_{next(_names)}"
    owner, runtime, database = f"lp_owner_{suffix}", f"lp_runtime_{suffix}", f"lp_{suffix}"
    admin = pg_server.admin()
    try:
        admin.run(f"CREATE ROLE {owner} LOGIN")
        admin.run(f"CREATE ROLE {runtime} LOGIN")
        admin.run(f"CREATE DATABASE {database} OWNER {owner}")
        admin.run(f"REVOKE ALL ON DATABASE {database} FROM PUBLIC")
    finally:
        admin.close()
    # Functions the owner creates are not executable by PUBLIC either.
    in_db = _connect(_url(pg_server, "postgres", database))
    try:
        in_db.run(
            f"ALTER DEFAULT PRIVILEGES FOR ROLE {owner} REVOKE EXECUTE ON FUNCTIONS FROM PUBLIC"
        )
    finally:
        in_db.close()
    yield Roles(_url(pg_server, owner, database), _url(pg_server, runtime, database), runtime)
    admin = pg_server.admin()
    try:
        admin.run(f"DROP DATABASE IF EXISTS {database} WITH (FORCE)")
        admin.run(f"DROP ROLE IF EXISTS {runtime}")
        admin.run(f"DROP ROLE IF EXISTS {owner}")
    finally:
        admin.close()


def _connect(url: str) -> pg8000.native.Connection:
    parts = urlsplit(url)
    return pg8000.native.Connection(
        user=parts.username,
        host=parts.hostname,
        port=parts.port,
        database=parts.path[1:],
        ssl_context=plain_text_unless_asked(url),
    )


def cli(env: Env, url: str, *argv: str, auto_migrate: bool = False) -> tuple[int, str]:
    env.set(DATABASE_URL=url, AUTO_MIGRATE="true" if auto_migrate else "false")
    out = io.StringIO()
    code = main(list(argv), out=out)
    return code, out.getvalue()


def grant(env: Env, roles: Roles) -> list[str]:
    """Migrate as the owner, then run exactly the printed grants as the owner."""
    assert cli(env, roles.owner_url, "migrate") == (EXIT_OK, cli_migrated_text())
    code, out = cli(env, roles.owner_url, "grants", "--role", roles.runtime)
    assert code == EXIT_OK
    statements = [line for line in out.splitlines() if line and not line.startswith("--")]
    owner = _connect(roles.owner_url)
    try:
        for statement in statements:
            owner.run(statement)
    finally:
        owner.close()
    return out.splitlines()


def cli_migrated_text() -> str:
    from tickets_ingest.dal.migrate import available_migrations  # noqa: PLC0415

    names = ", ".join(f"{m.version:04d}_{m.name}" for m in available_migrations())
    return f"applied: {names}\n"


def test_grants_name_every_object_of_the_schema(env: Env, roles: Roles) -> None:
    lines = grant(env, roles)
    text = "\n".join(lines)
    role = f'"{roles.runtime}"'
    assert f"GRANT USAGE ON SCHEMA tickets TO {role};" in lines
    assert f"GRANT SELECT ON TABLE tickets.schema_migrations TO {role};" in lines
    tables = ("blocked_files", "change_requests", "dataset_pauses", "import_meta", "incidents")
    for table in (*tables, "rejected_rows"):
        assert f"tickets.{table}" in text
    assert "GRANT CONNECT, TEMPORARY ON DATABASE" in text
    assert "tickets.input_error(value text, kind text)" in text
    assert f"-- GRANT pg_signal_backend TO {role};" in lines  # optional: a comment
    # docs/deploy.md shows the same statements (for role tickets_ingest, database tickets).
    docs = (Path(__file__).resolve().parents[2] / "docs" / "deploy.md").read_text()
    shown = docs.split("```sql\n", 1)[1].split("```", 1)[0].splitlines()
    database = urlsplit(roles.owner_url).path[1:]
    assert [
        line.replace(role, '"tickets_ingest"').replace(f"DATABASE {database} ", "DATABASE tickets ")
        for line in lines
    ] == shown, "docs/deploy.md#database-roles is out of date: paste the new output there"


def test_runtime_role_runs_every_operator_command_without_ddl(env: Env, roles: Roles) -> None:
    grant(env, roles)
    rt = roles.runtime_url
    env.put(key("2026-06-22T15-50-39"), csv_bytes([row("INC1"), row("INC2")]))
    env.put(key("2026-06-22T16-00-00"), b"ticket_id,nonsense\r\nINC3,x\r\n")  # blocks inc

    code, out = cli(env, rt, "sync", "--dataset", "inc", "--apply")
    assert code == EXIT_FAILED and "REJECTED" in out  # the first file applied, the second blocks
    code, out = cli(env, rt, "status", "--dataset", "inc", auto_migrate=True)  # nothing pending
    assert code == EXIT_FAILED and "BLOCKED" in out
    code, out = cli(env, rt, "quarantine", "--dataset", "inc", "--key", "2026-06-22T16-00-00.csv",
                    "--reason", "bad header")  # fmt: skip
    assert code == EXIT_OK and "quarantined" in out
    env.put(key("2026-06-22T17-00-00"), csv_bytes([row("INC3", "2026-06-22 17:00:00")]))
    assert cli(env, rt, "sync", "--dataset", "inc", "--apply")[0] == EXIT_OK
    assert cli(env, rt, "status", "--dataset", "inc")[0] == EXIT_OK
    assert cli(env, rt, "history", "--dataset", "inc")[0] == EXIT_OK

    # Planned work: pause, a refused apply, resume (QUEUE_URL unset: it syncs here).
    code, out = cli(env, rt, "pause", "--dataset", "inc", "--reason", "vacuum")
    assert code == EXIT_OK and "paused by" in out
    assert cli(env, rt, "sync", "--dataset", "inc", "--apply")[0] == EXIT_PAUSED
    assert cli(env, rt, "status", "--dataset", "inc")[0] == EXIT_OK
    code, out = cli(env, rt, "resume", "--dataset", "inc")
    assert code == EXIT_OK and "catch-up: synced here" in out

    # A database restore: replay from processed/ re-applies with the recency guard.
    code, out = cli(env, rt, "replay", "--dataset", "inc", "--from", "2026-06-22T15-50-39.csv",
                    "--apply")  # fmt: skip
    assert code == EXIT_OK, out

    # Redrive by hand (moto has no message-move API) needs no database right beyond these.
    sqs = boto3.client("sqs")
    fifo = {"FifoQueue": "true", "ContentBasedDeduplication": "true"}
    queue = sqs.create_queue(QueueName="lp.fifo", Attributes=fifo)["QueueUrl"]
    dlq = sqs.create_queue(QueueName="lp-dlq.fifo", Attributes=fifo)["QueueUrl"]
    sqs.send_message(QueueUrl=dlq, MessageBody='{"kind": "sweep", "dataset": "inc"}',
                     MessageGroupId="inc")  # fmt: skip
    env.set(QUEUE_URL=queue, DLQ_URL=dlq)
    code, out = cli(env, rt, "redrive", "--by-hand")
    assert code == EXIT_OK and "moved 1 message(s)" in out

    db = Database.connect(rt)
    try:
        assert db.scalar("SELECT count(*) FROM tickets.incidents") == 3
        for ddl in (
            "CREATE TABLE tickets.sneaky (id int)",
            "CREATE SCHEMA sneaky",
            "ALTER TABLE tickets.incidents ADD COLUMN sneaky int",
        ):
            with pytest.raises(DatabaseError, match=r"permission denied|must be owner"):
                db.run(ddl)
    finally:
        db.close()


def _behind_by_the_last_migration(env: Env, roles: Roles) -> str:
    """Grants in place, then the newest migration "not yet applied" (a new release)."""
    grant(env, roles)
    owner = _connect(roles.owner_url)
    try:
        rows = owner.run(
            "DELETE FROM tickets.schema_migrations WHERE version = "
            "(SELECT max(version) FROM tickets.schema_migrations) RETURNING version, name"
        )
    finally:
        owner.close()
    return f"{rows[0][0]:04d}_{rows[0][1]}"


def test_without_auto_migrate_a_schema_behind_says_to_run_migrate(
    env: Env, roles: Roles, capsys: pytest.CaptureFixture[str]
) -> None:
    missing = _behind_by_the_last_migration(env, roles)
    code, _ = cli(env, roles.runtime_url, "status")
    err = capsys.readouterr().err
    assert code == EXIT_FAILED
    assert f"lacks migration(s) {missing}" in err
    assert "run `tickets-ingest migrate` as the schema owner" in err
    assert "Traceback" not in err


def test_a_runtime_role_cannot_migrate_and_says_who_must(
    env: Env, roles: Roles, capsys: pytest.CaptureFixture[str]
) -> None:
    missing = _behind_by_the_last_migration(env, roles)
    code, _ = cli(env, roles.runtime_url, "sync", "--apply", auto_migrate=True)
    err = capsys.readouterr().err
    assert code == EXIT_FAILED
    assert f"lacks migration(s) {missing}: run `tickets-ingest migrate` as the schema owner" in err


def test_temporary_is_needed_files_are_staged_in_temp_tables(env: Env, roles: Roles) -> None:
    """Why the grants include TEMPORARY: without it no file can be applied."""
    grant(env, roles)
    owner = _connect(roles.owner_url)
    try:
        database = urlsplit(roles.owner_url).path[1:]
        owner.run(f'REVOKE TEMPORARY ON DATABASE {database} FROM "{roles.runtime}"')
    finally:
        owner.close()
    env.put(key("2026-06-22T15-50-39"), csv_bytes([row("INC1")]))
    code, _ = cli(env, roles.runtime_url, "sync", "--dataset", "inc", "--apply")
    assert code == EXIT_FAILED
    db = Database.connect(roles.runtime_url)
    try:
        with pytest.raises(DatabaseError, match="permission denied to create temporary tables"):
            db.run("CREATE TEMP TABLE t (x int)")
    finally:
        db.close()


def test_a_silent_sync_of_another_role_is_taken_over_only_with_the_two_optional_grants(
    env: Env, roles: Roles, pg_server: PostgresServer, capsys: pytest.CaptureFixture[str]
) -> None:
    """The sync that went silent ran as another role (the deploy's owner, an operator's own).
    Matching its lease needs pg_read_all_stats (another role's backend_start is hidden),
    ending its session pg_signal_backend: `grants` prints both as options. Without them
    the contender says which is missing and leaves everything as it found it."""
    grant(env, roles)
    env.set(LOCK_HEARTBEAT_SECONDS="0.1", LOCK_STALE_SECONDS="1")
    env.put(key("2026-06-22T15-50-39"), csv_bytes([row("INC1")]))
    holder = Database.connect(roles.owner_url, application_name="vanished sync")
    holder.scalar(HOLD)
    holder.run(SILENT_LEASE, shift="0 seconds")
    pid = int(holder.scalar("SELECT pg_backend_pid()"))

    def refused(*expected: str) -> None:
        code, _ = cli(env, roles.runtime_url, "sync", "--dataset", "inc", "--apply")
        err = capsys.readouterr().err
        assert code == EXIT_BUSY and "Traceback" not in err, err
        assert all(part in err for part in expected), err
        assert holder.scalar("SELECT pg_backend_pid()") == pid  # alive: nothing was ended
        owner = Database.connect(roles.owner_url)
        try:  # the lease still names the silent holder, and nothing was applied
            assert owner.scalar("SELECT holder_pid FROM tickets.dataset_leases") == pid
            assert owner.scalar("SELECT count(*) FROM tickets.import_meta") == 0
        finally:
            owner.close()

    # 1. It cannot see the holder's backend_start, so cannot tell its lease is the holder's.
    refused(
        f"(held by pid {pid}, vanished sync, a session of another role that this role may "
        "not look into, so its lease cannot be checked: not taken over automatically (to "
        "take over the syncs of other roles, GRANT pg_read_all_stats and pg_signal_backend"
    )
    code, out = cli(env, roles.runtime_url, "status", "--dataset", "inc", "--json")
    assert code == EXIT_FAILED  # a lock that no sync will take over: it needs an operator
    lock = json.loads(out)["lock"]
    assert lock["pid"] == pid and lock["hidden"] and not lock["has_lease"]
    assert lock["client_addr"] is None

    admin = pg_server.admin()
    try:
        # 2. It sees the lease is silent, claims it, may not end the session: gives it back.
        admin.run(f"GRANT pg_read_all_stats TO {roles.runtime}")
        refused(
            f"is held by a silent sync (pid {pid}, no heartbeat for 360",  # 3600 s and more
            " s) whose session this role may not end: connect as the same role, or GRANT "
            "pg_signal_backend",
        )
        # 3. Both: it takes the dataset over and applies.
        admin.run(f"GRANT pg_signal_backend TO {roles.runtime}")
    finally:
        admin.close()
    assert cli(env, roles.runtime_url, "sync", "--dataset", "inc", "--apply")[0] == EXIT_OK
    owner = Database.connect(roles.owner_url)
    try:
        assert owner.scalar("SELECT count(*) FROM tickets.import_meta") == 1
        ended = owner.scalar("SELECT count(*) FROM pg_stat_activity WHERE pid = :pid", pid=pid)
        assert holder.broken or ended == 0
    finally:
        owner.close()
