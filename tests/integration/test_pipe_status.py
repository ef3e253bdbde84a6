"""The pipe-status view against a real PostgreSQL and the S3 emulator: each execution state
(idle, running, paused, blocked, busy) from the facts that make it, the oldest pending
file, the last applied file, the last error a sync noted, and schema drift read back from
the ledger. The JSON shape itself is pinned by ``tests/unit/test_status_contract.py``."""

from __future__ import annotations

import io
import json
import threading
from typing import Any

import pytest

from tests.conftest import Env
from tests.support.rows import csv_bytes, key, row
from tests.support.s3_fault_proxy import Fault, S3FaultProxy
from tickets_ingest import failpoints
from tickets_ingest.core.schema import CSV_COLUMNS
from tickets_ingest.failpoints import Step
from tickets_ingest.handlers.cli import EXIT_FAILED, EXIT_OK, main
from tickets_ingest.logic.sync import sync

T0, T1, T2, T3 = (
    "2026-06-22T15-50-39",
    "2026-06-22T16-00-00",
    "2026-06-22T16-10-00",
    "2026-06-22T16-20-00",
)
LATE = "2026-06-22T15-55-00"  # older than T1: applied late once T1 is the watermark


def run(*argv: str) -> tuple[int, str]:
    out = io.StringIO()
    code = main(list(argv), out=out)
    return code, out.getvalue()


def status(dataset: str = "inc") -> tuple[int, dict[str, Any]]:
    code, out = run("status", "--dataset", dataset, "--json")
    return code, json.loads(out)


def summary(dataset: str = "inc") -> list[str]:
    """The at-a-glance lines of ``status --dataset`` (before the full report)."""
    _, out = run("status", "--dataset", dataset)
    return out.split("\n\n", 1)[0].splitlines()


def test_idle_then_running_with_the_oldest_pending_file_then_idle(
    env: Env, capsys: pytest.CaptureFixture[str]
) -> None:
    code, fresh = status()
    assert code == EXIT_OK
    assert fresh["state"] == "idle" and fresh["pending_count"] == 0
    assert fresh["oldest_pending"] is None and fresh["last_applied"] is None
    assert fresh["last_message"] is None and fresh["last_error"] is None
    assert fresh["drift"] is None
    assert summary()[0].startswith("inc   IDLE     0 pending  lag ")
    assert summary()[1:] == [
        "      last applied  none",
        "      last message  none recorded",
        "      last error    none recorded",
    ]

    env.put(key(T0), csv_bytes([row("INC1")]))
    env.put(key(T1), csv_bytes([row("INC2", "2026-06-22 16:00:00")]))
    assert run("sync", "--dataset", "inc", "--apply")[0] == EXIT_OK
    env.put(key(T2), csv_bytes([row("INC3", "2026-06-22 16:10:00")]))
    env.put(key(LATE), csv_bytes([row("INC4", "2026-06-22 15:55:00")]))

    code, pending = status()
    assert code == EXIT_OK  # files waiting for the next event are not an outage
    assert pending["state"] == "running"
    assert pending["pending_count"] == 2 == len(pending["pending"])
    # The late file is the oldest pending one, though the listing puts it first anyway.
    oldest = pending["oldest_pending"]
    assert oldest["key"] == key(LATE)
    assert oldest["timestamp"] == "2026-06-22T15:55:00+03:00"  # the name's Nairobi time
    assert oldest["age_seconds"] > 86_400
    applied = pending["last_applied"]
    assert (applied["key"], applied["export_type"]) == (key(T1), "delta")
    assert applied["applied_at"].endswith("+00:00")
    assert 0 <= applied["age_seconds"] < 600
    assert summary()[0].startswith(f"inc   RUNNING  2 pending (oldest {LATE}.csv, ")

    capsys.readouterr()
    assert run("sync", "--dataset", "inc", "--apply")[0] == EXIT_OK
    _, done = status()
    assert done["state"] == "idle" and done["oldest_pending"] is None
    # The newest ledger decision is the last file applied, late or not.
    assert done["last_applied"]["export_type"] in {"delta", "late"}
    assert {done["last_applied"]["key"]} <= {key(T2), key(LATE)}
    assert done["last_error"] is None  # nothing went wrong, nothing was noted


def test_paused_wins_over_pending_and_blocked_and_exits_0(env: Env) -> None:
    env.put(key(T0), csv_bytes([row("INC1")]))
    env.put(key(T1), csv_bytes([row("INC2")], (*CSV_COLUMNS, "priority")))  # rejected
    assert run("sync", "--dataset", "inc", "--apply")[0] == EXIT_FAILED
    assert status()[1]["state"] == "blocked"

    assert run("pause", "--dataset", "inc", "--reason", "fix the export", "--by", "ana")[0] == 0
    code, paused = status()
    assert paused["state"] == "paused"
    assert paused["paused"]["by"] == "ana"
    assert paused["pending_count"] == 1 and paused["blocked"]["key"] == key(T1)
    assert code == EXIT_FAILED  # still a rejected file an operator must act on
    lines = summary()
    assert lines[0].startswith("inc   PAUSED   1 pending (oldest ")
    assert lines[1].startswith("      paused by ana since ") and lines[1].endswith(
        ": fix the export"
    )


def test_a_pause_alone_is_planned_work(env: Env) -> None:
    env.put(key(T0), csv_bytes([row("INC1")]))
    assert run("pause", "--dataset", "inc", "--reason", "vacuum", "--by", "ana")[0] == 0
    code, paused = status()
    assert (code, paused["state"], paused["pending_count"]) == (EXIT_OK, "paused", 1)


def test_a_rejected_file_blocks_and_is_the_last_error_naming_file_and_line(
    env: Env,
) -> None:
    env.put(key(T0), csv_bytes([row("INC1")]))
    env.put(key(T1), csv_bytes([row("INC2")], (*CSV_COLUMNS, "priority")))
    env.put(key(T2), csv_bytes([row("INC3")]))
    assert run("sync", "--dataset", "inc", "--apply")[0] == EXIT_FAILED

    code, blocked = status()
    assert code == EXIT_FAILED
    assert blocked["state"] == "blocked" and blocked["pending_count"] == 2
    error = blocked["last_error"]
    assert (error["kind"], error["key"]) == ("rejected", key(T1))
    # The same line the CLI printed when it stopped there.
    assert (
        error["message"] == f"rejected {key(T1)}, line 1: bad header: unknown column(s) 'priority'"
    )
    assert error["at"].endswith("+00:00") and 0 <= error["age_seconds"] < 600
    assert blocked["last_applied"]["key"] == key(T0)
    lines = summary()
    assert lines[0].startswith("inc   BLOCKED  2 pending")
    assert lines[1].startswith(f"      stopped at: rejected {key(T1)}")
    assert lines[-1].startswith("      last error    ") and "(rejected): rejected " in lines[-1]

    # A dry run notes nothing: it changes nothing, so it is no new trouble.
    env.db().run("DELETE FROM tickets.dataset_activity")
    assert run("sync", "--dataset", "inc")[0] == EXIT_FAILED
    assert status()[1]["last_error"] is None


def test_a_transient_fault_past_its_retries_is_the_last_error_but_not_a_block(env: Env) -> None:
    env.put(key(T0), csv_bytes([row("INC1")]))
    env.set(RETRY_ATTEMPTS="2")
    with S3FaultProxy(
        env.aws.endpoint_url, [Fault("slowdown", 1.0, "ListObjectsV2")], seed=4
    ) as proxy:
        env.set(AWS_ENDPOINT_URL=proxy.url)
        assert run("sync", "--dataset", "inc", "--apply")[0] == EXIT_FAILED
    env.set(AWS_ENDPOINT_URL=env.aws.endpoint_url)

    code, after = status()
    assert after["state"] == "running"  # the next event or sweep retries it
    assert code == EXIT_OK
    error = after["last_error"]
    assert error["kind"] == "TransientFault" and error["key"] is None  # the listing
    assert "LIST failed after 2 attempts" in error["message"]
    assert "(SlowDown: Please reduce your request rate.)" in error["message"]

    # A later good run applies the file; the last error stays, with its age, until another.
    assert run("sync", "--dataset", "inc", "--apply")[0] == EXIT_OK
    _, healed = status()
    assert healed["state"] == "idle" and healed["last_applied"]["key"] == key(T0)
    assert healed["last_error"] == {**error, "age_seconds": healed["last_error"]["age_seconds"]}


def test_a_live_sync_makes_it_busy_with_its_holder(env: Env) -> None:
    for n, stamp in enumerate((T0, T1, T2)):
        env.put(key(stamp), csv_bytes([row(f"INC{n}")]))
    committed, go = threading.Event(), threading.Event()

    def hold_after_first_commit(step: Step, _key: str) -> None:
        if step is Step.COMMITTED and not committed.is_set():
            committed.set()
            assert go.wait(30)

    with failpoints.on(hold_after_first_commit):
        worker = threading.Thread(target=lambda: sync(env.runtime(), "inc"))
        worker.start()
        try:
            assert committed.wait(30)
            code, busy = status()
            lines = summary()
        finally:
            go.set()
            worker.join(30)
    assert code == EXIT_OK  # a live holder is work in progress
    assert busy["state"] == "busy"
    assert busy["lock"]["has_lease"] is True and busy["lock"]["silent"] is False
    assert busy["last_applied"]["key"] == key(T0)
    assert lines[0].startswith("inc   BUSY     2 pending")
    assert lines[1].startswith("      syncing now: pid ")
    assert status()[1]["state"] == "idle"


def test_a_lock_held_without_a_lease_is_blocked(env: Env) -> None:
    env.put(key(T0), csv_bytes([row("INC1")]))
    other = env.db()
    other.run("SELECT pg_advisory_lock(hashtextextended('tickets-ingest:inc', 0))")
    code, held = status()
    assert held["state"] == "blocked" and held["blocked"] is None
    assert held["lock"]["has_lease"] is False
    assert code == EXIT_FAILED  # never taken over automatically: an operator decides
    assert summary()[1].startswith("      the sync lock is held without a lease: pid ")
    other.close()
    assert status()[1]["state"] == "running"


def test_drift_shows_since_its_first_file_until_the_schema_is_stable_again(env: Env) -> None:
    env.set(SCHEMA_DRIFT="rescue")
    added = (*CSV_COLUMNS, "priority")
    without = tuple(c for c in CSV_COLUMNS if c != "owner")
    env.put(key(T0), csv_bytes([row("INC1")]))
    env.put(key(T1), csv_bytes([row("INC2")], added))
    env.put(key(T2), csv_bytes([row("INC3")], added))
    assert run("sync", "--dataset", "inc", "--apply")[0] == EXIT_OK
    _, drifting = status()
    assert drifting["drift"] == {"added": ["priority"], "missing": [], "since": key(T1)}
    assert summary()[0].endswith(f"drift: +priority since {T1}.csv")

    # Another drift starts its own run; the same file twice would not.
    env.put(key(T3), csv_bytes([row("INC4")], without))
    assert run("sync", "--dataset", "inc", "--apply")[0] == EXIT_OK
    _, other = status()
    assert other["drift"] == {"added": [], "missing": ["owner"], "since": key(T3)}

    env.put("automations/inc/changes/2026-06-22T16-30-00.csv", csv_bytes([row("INC5")]))
    assert run("sync", "--dataset", "inc", "--apply")[0] == EXIT_OK
    _, stable = status()
    assert stable["drift"] is None
    assert summary()[0].endswith("drift: none")


def test_every_dataset_without_dataset_is_a_list_in_configured_order(env: Env) -> None:
    code, out = run("status", "--json")
    payload = json.loads(out)
    assert code == EXIT_OK
    assert [s["dataset"] for s in payload] == ["inc", "crq"]
    assert {s["schema_version"] for s in payload} == {1}
