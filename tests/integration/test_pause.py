"""Pause and resume a dataset (planned work on the target): the CLI's commands, messages
and exit codes, what a sync does while paused, and how status shows it."""

from __future__ import annotations

import io
import json
import threading

import pytest

from tests.conftest import Env
from tests.support.rows import csv_bytes, key, row
from tickets_ingest import failpoints
from tickets_ingest.errors import DatasetPaused
from tickets_ingest.failpoints import Step
from tickets_ingest.handlers.cli import EXIT_OK, EXIT_PAUSED, main
from tickets_ingest.logic.sync import sync

T0, T1, T2 = "2026-06-22T15-50-39", "2026-06-22T16-00-00", "2026-06-22T16-10-00"


def run(*argv: str) -> tuple[int, str]:
    out = io.StringIO()
    code = main(list(argv), out=out)
    return code, out.getvalue()


def ledger(env: Env) -> list[tuple[str, str, str | None, str | None]]:
    return [
        (r[0], r[1], r[2], r[3])
        for r in env.db().run(
            "SELECT export_type, source_key, metadata ->> 'who', metadata ->> 'why' "
            "FROM tickets.import_meta WHERE dataset = 'inc' ORDER BY id"
        )
    ]


def test_pause_refuses_apply_keeps_the_dry_run_and_resume_catches_up(
    env: Env, capsys: pytest.CaptureFixture[str]
) -> None:
    env.put(key(T0), csv_bytes([row("INC1")]))
    assert run("sync", "--dataset", "inc", "--apply")[0] == EXIT_OK
    capsys.readouterr()

    code, out = run("pause", "--dataset", "inc", "--reason", "VACUUM FULL", "--by", "ana")
    assert code == EXIT_OK
    assert out.startswith("dataset inc paused by ana since ")
    assert ": VACUUM FULL\n" in out
    assert "nothing applies to it until `tickets-ingest resume --dataset inc`" in out

    env.put(key(T1), csv_bytes([row("INC2")]))
    env.put(key(T2), csv_bytes([row("INC1", "2026-06-22 16:10:00", raw_status="Resolved")]))
    code, out = run("sync", "--dataset", "inc", "--apply")
    err = capsys.readouterr().err.strip().splitlines()
    assert code == EXIT_PAUSED == 3
    assert out == ""
    assert len(err) == 1 and err[0].startswith("tickets-ingest: dataset 'inc' is paused by ana")
    assert err[0].endswith(
        ": VACUUM FULL; nothing applied (tickets-ingest resume --dataset inc catches up)"
    )
    assert env.db().scalar("SELECT count(*) FROM tickets.incidents") == 1

    # A dry run still shows the plan, with real counts; it exits 0.
    code, out = run("sync", "--dataset", "inc")
    assert code == EXIT_OK
    assert "dry run: nothing was changed" in out
    assert f"{T1}.csv  delta" in out and f"{T2}.csv  delta" in out
    assert "would apply: 1 read, 1 upserted" in out
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and err[0].startswith("tickets-ingest: dataset 'inc' is paused by ana")
    assert err[0].endswith(
        ": VACUUM FULL; this dry run only plans, --apply would apply nothing and exit 3 "
        "(tickets-ingest resume --dataset inc lifts the pause)"
    )

    # Other datasets are synced; the exit code still says one was paused.
    env.put("automations/crq/changes/2026-06-22T15-50-39.csv", csv_bytes([row("CRQ1")]))
    code, _ = run("sync", "--apply")
    assert code == EXIT_PAUSED
    assert env.db().scalar("SELECT count(*) FROM tickets.change_requests") == 1

    # Pausing again keeps the first pause.
    code, out = run("pause", "--dataset", "inc", "--reason", "other", "--by", "bo")
    assert code == EXIT_OK
    assert "was already paused by ana since" in out and "VACUUM FULL; unchanged" in out

    code, out = run("resume", "--dataset", "inc", "--by", "bo")
    assert code == EXIT_OK
    assert "dataset inc resumed (it was paused by ana since" in out
    assert "catch-up: synced here (QUEUE_URL is unset)" in out
    assert out.count("applied: 1 read, 1 upserted") == 2
    rows = env.db().run("SELECT ticket_id, raw_status FROM tickets.incidents ORDER BY ticket_id")
    assert rows == [["INC1", "Resolved"], ["INC2", "Assigned"]]

    assert ledger(env) == [
        ("baseline", key(T0), None, None),
        ("pause", "automations/inc/changes/", "ana", "VACUUM FULL"),
        ("resume", "automations/inc/changes/", "bo", "VACUUM FULL"),
        ("delta", key(T1), None, None),
        ("delta", key(T2), None, None),
    ]
    code, out = run("history", "--dataset", "inc", "--type", "pause")
    assert code == EXIT_OK and "pause  by ana: VACUUM FULL" in out
    code, out = run("history", "--dataset", "inc")
    assert "resume  by bo, paused by ana for " in out

    code, out = run("resume", "--dataset", "inc")
    assert (code, out) == (EXIT_OK, "dataset inc is not paused; nothing to resume\n")


def test_pause_needs_a_reason(env: Env, capsys: pytest.CaptureFixture[str]) -> None:
    assert run("pause", "--dataset", "inc", "--reason", "  ")[0] == 1
    assert "say why: --reason is recorded" in capsys.readouterr().err
    with pytest.raises(SystemExit) as usage:
        run("pause", "--dataset", "inc")
    assert usage.value.code == 2
    assert env.db().scalar("SELECT count(*) FROM tickets.dataset_pauses") == 0


def test_status_shows_paused_with_pending_files_and_exits_0(
    env: Env, capsys: pytest.CaptureFixture[str]
) -> None:
    env.put(key(T0), csv_bytes([row("INC1")]))
    assert run("sync", "--dataset", "inc", "--apply")[0] == EXIT_OK
    assert run("pause", "--dataset", "inc", "--reason", "restore test", "--by", "ana")[0] == 0
    env.put(key(T1), csv_bytes([row("INC2")]))
    capsys.readouterr()

    code, out = run("status", "--dataset", "inc")
    assert code == EXIT_OK  # planned work, not an outage
    assert "  PAUSED         paused by ana since " in out
    assert ": restore test (planned work: nothing applies" in out
    assert "(paused: not applying)" in out
    assert f"pending        1: {T1}.csv" in out
    assert "blocked        no" in out
    assert capsys.readouterr().err == ""

    code, out = run("status", "--dataset", "inc", "--json")
    status = json.loads(out)
    assert code == EXIT_OK
    assert status["paused"]["by"] == "ana" and status["paused"]["reason"] == "restore test"
    assert status["paused"]["since"].startswith("20")
    assert status["pending"] == [key(T1)]
    assert status["recent"][0]["export_type"] == "pause"

    run("resume", "--dataset", "inc")
    code, out = run("status", "--dataset", "inc", "--json")
    assert json.loads(out)["paused"] is None and json.loads(out)["pending"] == []


def test_a_pause_while_a_sync_runs_stops_it_before_its_next_file(env: Env) -> None:
    for n, stamp in enumerate((T0, T1, T2)):
        env.put(key(stamp), csv_bytes([row(f"INC{n}")]))
    committed, go = threading.Event(), threading.Event()

    def hold_after_first_commit(step: Step, _key: str) -> None:
        if step is Step.COMMITTED and not committed.is_set():
            committed.set()
            assert go.wait(30)

    result: dict[str, BaseException] = {}

    def syncing() -> None:
        try:
            sync(env.runtime(), "inc")
        except DatasetPaused as exc:
            result["error"] = exc

    with failpoints.on(hold_after_first_commit):
        worker = threading.Thread(target=syncing)
        worker.start()
        assert committed.wait(30)
        code, out = run("pause", "--dataset", "inc", "--reason", "migration", "--by", "ana")
        go.set()
        worker.join(30)
    assert code == EXIT_OK
    assert "a sync holds it now (pid " in out and "it stops before its next file" in out
    error = result["error"]
    assert isinstance(error, DatasetPaused) and error.stopped_before == key(T1)
    assert "what it applied before stays committed" in str(error)
    assert env.db().run("SELECT ticket_id FROM tickets.incidents") == [["INC0"]]
    # The committed file was archived all the same; the others wait in changes/.
    assert env.list_keys("automations/inc/changes/") == [key(T1), key(T2)]
