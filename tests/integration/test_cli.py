"""The operator CLI: what people type, what they see, and the exit codes scripts rely on."""

from __future__ import annotations

import io
import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

from tests.conftest import Env
from tests.support.leases import HOLD
from tests.support.rows import csv_bytes, key, row
from tickets_ingest import failpoints
from tickets_ingest.failpoints import Step
from tickets_ingest.handlers.cli import EXIT_BUSY, EXIT_FAILED, EXIT_OK, EXIT_USAGE, main


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


# --- issue 11.9: bad arguments and configuration: exit 2, one line naming the culprit -----

BAD_INPUTS = [
    (["sync", "--dataset", "inc", "--wait", "inf"], {}, "--wait"),
    (["sync", "--dataset", "inc", "--wait", "3000000"], {}, "--wait"),
    (["sync", "--dataset", "inc", "--wait", "nan"], {}, "--wait"),
    (["sync", "--dataset", "inc", "--wait=-1"], {}, "--wait"),
    (["history", "--dataset", "inc", "--limit=-1"], {}, "--limit"),
    (["history", "--dataset", "inc", "--limit", "0"], {}, "--limit"),
    (["history", "--dataset", "inc", "--limit", "99999999999999999999"], {}, "--limit"),
    (["status"], {"DATABASE_URL": "postgresql://u:p@[::1/tickets"}, "DATABASE_URL"),
    (["status"], {"DATABASE_URL": "postgresql://u:p@127.0.0.1:0/tickets"}, "DATABASE_URL"),
    (["status"], {"DB_CA_BUNDLE": "/etc/hostname"}, "DB_CA_BUNDLE"),
    (["status"], {"SOURCE_TIMEZONE": "posixrules"}, "SOURCE_TIMEZONE"),
    (["status"], {"SOURCE_TIMEZONE": "localtime"}, "SOURCE_TIMEZONE"),
    (["status"], {"LOCK_WAIT_SECONDS": "nan"}, "LOCK_WAIT_SECONDS"),
    (["status"], {"FUTURE_TOLERANCE_SECONDS": "-inf"}, "FUTURE_TOLERANCE_SECONDS"),
    (["status"], {"TIME_BUDGET_MARGIN_SECONDS": "inf"}, "TIME_BUDGET_MARGIN_SECONDS"),
]


@pytest.mark.parametrize(("argv", "variables", "culprit"), BAD_INPUTS)
def test_bad_input_exits_2_with_one_line(
    env: Env, argv: list[str], variables: dict[str, str], culprit: str
) -> None:
    """The real program, as a person runs it: exit code 2 and one stderr line naming it."""
    if variables.get("DB_CA_BUNDLE") == "/etc/hostname" and not Path("/etc/hostname").is_file():
        pytest.skip("this machine has no /etc/hostname")
    environment = {**os.environ, **variables}
    done = subprocess.run(
        [sys.executable, "-m", "tickets_ingest.handlers.cli", *argv],
        env=environment,
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )
    assert done.returncode == EXIT_USAGE, done.stderr
    assert done.stderr.count("\n") == 1, done.stderr
    assert done.stderr.startswith("tickets-ingest")
    assert culprit in done.stderr
    assert "Traceback" not in done.stderr and done.stdout == ""
    assert ":p@" not in done.stderr  # never the password in the URL


# --- "also seen": what an operator sees for a conflict and for an object changed mid-run --


def test_a_conflict_exits_1_with_one_line_and_everything_else_applies(
    env: Env, capsys: pytest.CaptureFixture[str]
) -> None:
    first = key("2026-06-22T15-50-39")
    env.put(first, csv_bytes([row("INC1")]))
    assert run("sync", "--apply")[0] == EXIT_OK
    again = env.put(first, csv_bytes([row("INC1", raw_status="Resolved")]))  # re-export
    env.put(key("2026-06-22T15-53-04"), csv_bytes([row("INC2")]))
    capsys.readouterr()

    code, out = run("sync", "--dataset", "inc", "--apply")
    err = capsys.readouterr().err
    assert code == EXIT_FAILED
    assert "applied: 1 read, 1 upserted" in out  # the other file applied all the same
    assert env.db().scalar("SELECT count(*) FROM tickets.incidents") == 2
    [line] = err.splitlines()
    assert line.startswith(f"tickets-ingest: CONFLICT {first}: applied with ETag ")
    assert f"now {again}; not applied, left in changes/" in line

    code, out = run("status", "--dataset", "inc")
    err = capsys.readouterr().err
    assert code == EXIT_FAILED
    assert "CONFLICT       2026-06-22T15-50-39.csv" in out
    assert err.splitlines() == [line]

    code, _ = run("quarantine", "--dataset", "inc", "--key", first, "--reason", "re-export")
    assert code == EXIT_OK
    assert run("status", "--dataset", "inc")[0] == EXIT_OK
    assert run("sync", "--dataset", "inc", "--apply")[0] == EXIT_OK


def test_an_object_changed_mid_run_exits_1_and_the_next_run_applies_it(
    env: Env, capsys: pytest.CaptureFixture[str]
) -> None:
    pending = key("2026-06-22T15-50-39")
    env.put(pending, csv_bytes([row("INC1")]))

    def reupload(step: Step, _key: str) -> None:
        if step is Step.LISTED:
            env.put(pending, csv_bytes([row("INC1", raw_status="Resolved")]))

    with failpoints.on(reupload):
        code, _ = run("sync", "--dataset", "inc", "--apply")
    err = capsys.readouterr().err
    assert code == EXIT_FAILED
    assert err.splitlines() == [
        f"tickets-ingest: {pending} changed or vanished after it was listed; nothing of it "
        "was applied and this run stops here; the next run re-plans"
    ]
    assert env.db().scalar("SELECT count(*) FROM tickets.import_meta") == 0
    assert run("sync", "--dataset", "inc", "--apply")[0] == EXIT_OK
    assert env.db().scalar("SELECT raw_status FROM tickets.incidents") == "Resolved"
