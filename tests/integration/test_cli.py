"""The operator CLI: what people type, what they see, and the exit codes scripts rely on."""

from __future__ import annotations

import io
import json

import pytest

from tests.conftest import Env
from tests.support.rows import csv_bytes, key, row
from tickets_ingest.handlers.cli import EXIT_BUSY, EXIT_FAILED, EXIT_OK, EXIT_USAGE, main

HOLD = "SELECT pg_advisory_lock(hashtextextended('tickets-ingest:inc', 0))"


def run(*argv: str) -> tuple[int, str]:
    out = io.StringIO()
    code = main(list(argv), out=out)
    return code, out.getvalue()


def test_sync_without_apply_is_a_dry_run(env: Env, capsys: pytest.CaptureFixture[str]) -> None:
    env.put(key("2026-06-22T15-50-39"), csv_bytes([row("INC1"), row("INC2", is_alarm="true")]))
    env.put("automations/inc/changes/notes.txt", b"hello")
    code, out = run("sync", "--dataset", "inc")
    assert code == EXIT_OK
    assert "dry run: nothing was changed" in out
    assert "2026-06-22T15-50-39.csv  baseline" in out
    assert "would apply: 2 read, 1 upserted, 1 alarms dropped" in out
    assert "ignored (not a stream file): automations/inc/changes/notes.txt" in out
    assert env.db().scalar("SELECT count(*) FROM tickets.incidents") == 0

    code, out = run("sync", "--dataset", "inc", "--apply")
    assert code == EXIT_OK
    assert "applied: 2 read, 1 upserted" in out
    assert "watermark after:  automations/inc/changes/2026-06-22T15-50-39.csv" in out
    assert env.db().scalar("SELECT count(*) FROM tickets.incidents") == 1


def test_rejected_file_exits_non_zero_with_one_line(
    env: Env, capsys: pytest.CaptureFixture[str]
) -> None:
    env.put(key("2026-06-22T15-50-39"), b"ticket_id,nonsense\r\nINC1,x\r\n")
    code, out = run("sync", "--apply")
    err = capsys.readouterr().err
    assert code == EXIT_FAILED
    assert "REJECTED" in out
    last = err.strip().splitlines()[-1]
    assert last.startswith(
        "tickets-ingest: rejected automations/inc/changes/2026-06-22T15-50-39.csv, "
        "line 1: bad header"
    )
    assert "Traceback" not in err

    code, out = run("status", "--dataset", "inc", "--json")
    status = json.loads(out)
    assert code == EXIT_FAILED  # a blocked dataset needs attention
    assert {"dataset", "watermark", "pending", "blocked", "applied_files", "rejected_rows"} <= set(
        status
    )
    assert status["blocked"]["key"] == key("2026-06-22T15-50-39")
    assert status["pending"] == [key("2026-06-22T15-50-39")]


def test_status_human_and_json(env: Env) -> None:
    env.put(key("2026-06-22T15-50-39"), csv_bytes([row("INC1")]))
    assert run("sync", "--apply")[0] == EXIT_OK
    env.put(key("2026-06-22T15-53-04"), csv_bytes([row("INC2")]))
    code, out = run("status", "--dataset", "inc")
    assert code == EXIT_OK
    assert "watermark      automations/inc/changes/2026-06-22T15-50-39.csv" in out
    assert "pending        1: 2026-06-22T15-53-04.csv" in out
    assert "blocked        no" in out
    code, out = run("status", "--json")
    both = json.loads(out)
    assert [s["dataset"] for s in both] == ["inc", "crq"]
    assert both[0]["applied_files"] == 1 and both[0]["lag_seconds"] > 0


def test_busy_dataset_exits_75(env: Env, capsys: pytest.CaptureFixture[str]) -> None:
    env.db().scalar(HOLD)
    code, _ = run("sync", "--dataset", "inc", "--apply")
    assert code == EXIT_BUSY
    assert "another sync of dataset 'inc' is running" in capsys.readouterr().err


def test_bad_configuration_exits_2_naming_the_variable(
    env: Env, capsys: pytest.CaptureFixture[str]
) -> None:
    env.set(MAX_REJECTED_SHARE="lots")
    code, _ = run("status")
    assert code == EXIT_USAGE
    assert "MAX_REJECTED_SHARE='lots' is not a number" in capsys.readouterr().err
    env.set(MAX_REJECTED_SHARE="0.01")
    code, _ = run("sync", "--dataset", "fuel")
    assert code == EXIT_USAGE


def test_unreachable_database_never_shows_the_password(
    env: Env, capsys: pytest.CaptureFixture[str], caplog: pytest.LogCaptureFixture
) -> None:
    env.set(DATABASE_URL="postgresql://ingest:s3cr3t-pw@127.0.0.1:1/tickets")
    code, out = run("status")
    err = capsys.readouterr().err
    assert code == EXIT_FAILED
    assert "database" in err
    assert "s3cr3t-pw" not in err + out + caplog.text
    assert "Traceback" not in err


def test_migrate_is_idempotent(env: Env) -> None:
    code, out = run("migrate")
    assert code == EXIT_OK and "schema is up to date" in out
