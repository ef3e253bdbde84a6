"""Quarantine: an operator moves a rejected file aside so the stream moves on.

Real PostgreSQL and the S3 emulator; operator.quarantine and `tickets-ingest quarantine`.
"""

from __future__ import annotations

import io
import json
from datetime import UTC, datetime
from typing import Any

import pytest

from tests.conftest import Env
from tests.support.rows import csv_bytes, key, row
from tickets_ingest.dal import ledger as ledger_dal
from tickets_ingest.errors import ConfigError, IngestError, SyncBusy
from tickets_ingest.handlers.cli import EXIT_BUSY, EXIT_FAILED, EXIT_OK, EXIT_USAGE, main
from tickets_ingest.logic.operator import Quarantined, quarantine
from tickets_ingest.logic.sync import sync
from tickets_ingest.models import ExportType

HOLD = "SELECT pg_advisory_lock(hashtextextended('tickets-ingest:inc', 0))"
FIRST, BAD, LATER = "2026-06-22T15-50-39", "2026-06-22T15-53-04", "2026-06-22T17-10-41"
BAD_NAME = f"{BAD}.csv"
BAD_BODY = b"ticket_id,nonsense\r\nINC1,x\r\n"
QUARANTINED = f"automations/inc/quarantine/{BAD_NAME}"


def ledger_rows(env: Env, dataset: str = "inc") -> list[dict[str, Any]]:
    rows = env.db().run(
        "SELECT source_key, etag, export_type, rows_read, rows_upserted, rows_skipped_older, "
        "metadata FROM tickets.import_meta WHERE dataset = :d ORDER BY id",
        d=dataset,
    )
    names = ["key", "etag", "type", "read", "upserted", "skipped_older", "metadata"]
    result = []
    for r in rows:
        entry = dict(zip(names, r, strict=True))
        if isinstance(entry["metadata"], str):
            entry["metadata"] = json.loads(entry["metadata"])
        result.append(entry)
    return result


def blocked(env: Env, dataset: str = "inc") -> list[list[Any]]:
    return env.db().run(
        "SELECT source_key, reason FROM tickets.blocked_files WHERE dataset = :d", d=dataset
    )


def stored(env: Env) -> dict[str, tuple[str, datetime]]:
    rows = env.db().run("SELECT ticket_id, raw_status, updated_at FROM tickets.incidents")
    return {r[0]: (r[1], r[2]) for r in rows}


def blocked_stream(env: Env) -> str:
    """FIRST applies, BAD is rejected and blocks, LATER waits. BAD's ETag."""
    env.put(key(FIRST), csv_bytes([row("INC1"), row("INC2")]))
    etag = env.put(key(BAD), BAD_BODY)
    env.put(
        key(LATER),
        csv_bytes([row("INC1", "2026-06-22 17:00:00", raw_status="Resolved"), row("INC3")]),
    )
    report = sync(env.runtime(), "inc")
    assert [r.obj.key for r in report.plan.to_apply] == [key(FIRST), key(BAD), key(LATER)]
    assert [r.key for r in report.applied] == [key(FIRST)]
    assert report.rejected is not None and report.rejected.key == key(BAD)
    assert [b[0] for b in blocked(env)] == [key(BAD)]
    # Blocked: a second run stops at the same file again.
    again = sync(env.runtime(), "inc")
    assert again.applied == [] and again.rejected is not None
    return etag


def run_cli(*argv: str) -> tuple[int, str]:
    out = io.StringIO()
    return main(list(argv), out=out), out.getvalue()


def test_quarantine_by_name_unblocks_and_the_stream_moves_on(env: Env) -> None:
    etag = blocked_stream(env)
    before = datetime.now(UTC)

    done = quarantine(env.runtime(), "inc", BAD_NAME, "exporter wrote a broken header", "alice")

    assert done == Quarantined(
        dataset="inc", key=key(BAD), etag=etag, moved_to=QUARANTINED, was_blocking=True
    )
    assert env.list_keys("automations/inc/changes/") == [key(LATER)]
    assert env.list_keys("automations/inc/quarantine/") == [QUARANTINED]
    assert env.s3.get_object(Bucket="tickets", Key=QUARANTINED)["Body"].read() == BAD_BODY
    assert blocked(env) == []

    record = ledger_rows(env)[-1]
    assert (record["key"], record["etag"], record["type"]) == (key(BAD), etag, "quarantine")
    assert (record["read"], record["upserted"]) == (0, 0)
    meta = record["metadata"]
    assert meta["who"] == "alice"
    assert meta["why"] == "exporter wrote a broken header"
    assert meta["moved_to"] == QUARANTINED
    assert "bad header" in meta["blocked_reason"]
    when = datetime.fromisoformat(meta["when"])
    assert before <= when <= datetime.now(UTC)

    report = sync(env.runtime(), "inc")
    assert report.ok
    assert [(r.key, r.export_type) for r in report.applied] == [(key(LATER), ExportType.DELTA)]
    assert report.watermark_after == key(LATER)
    assert stored(env)["INC1"][0] == "Resolved" and "INC3" in stored(env)
    assert env.list_keys("automations/inc/changes/") == []
    assert [r["type"] for r in ledger_rows(env)] == ["baseline", "quarantine", "delta"]


def test_quarantine_does_not_move_the_watermark(env: Env) -> None:
    blocked_stream(env)
    runtime = env.runtime()
    quarantine(runtime, "inc", BAD_NAME, "broken", "alice")
    assert ledger_dal.watermark(runtime.db(), "inc") == key(FIRST)


def test_quarantine_by_full_key(env: Env) -> None:
    blocked_stream(env)
    done = quarantine(env.runtime(), "inc", key(BAD), "broken", "alice")
    assert done.was_blocking and done.moved_to == QUARANTINED
    assert blocked(env) == []


def test_quarantine_the_first_file_makes_the_next_one_the_baseline(env: Env) -> None:
    env.put(key(BAD), BAD_BODY)
    env.put(key(LATER), csv_bytes([row("INC3")]))
    assert not sync(env.runtime(), "inc").ok
    quarantine(env.runtime(), "inc", BAD_NAME, "broken", "alice")
    report = sync(env.runtime(), "inc")
    assert [(r.key, r.export_type) for r in report.applied] == [(key(LATER), ExportType.BASELINE)]


def test_quarantine_a_pending_file_that_is_not_blocking(env: Env) -> None:
    """The block stays (it is another file's), and no blocked_reason is recorded."""
    blocked_stream(env)
    done = quarantine(env.runtime(), "inc", f"{LATER}.csv", "duplicate export", "bob")
    assert not done.was_blocking
    assert [b[0] for b in blocked(env)] == [key(BAD)]
    record = ledger_rows(env)[-1]
    assert record["type"] == "quarantine" and record["key"] == key(LATER)
    assert record["metadata"]["blocked_reason"] is None
    assert env.list_keys("automations/inc/changes/") == [key(BAD)]


def test_who_defaults_to_tickets_operator(env: Env) -> None:
    blocked_stream(env)
    env.set(TICKETS_OPERATOR="ops-carol")
    quarantine(env.runtime(), "inc", BAD_NAME, "broken")
    assert ledger_rows(env)[-1]["metadata"]["who"] == "ops-carol"


def test_reupload_after_the_watermark_passed_applies_as_late(env: Env) -> None:
    blocked_stream(env)
    quarantine(env.runtime(), "inc", BAD_NAME, "broken header", "alice")
    assert sync(env.runtime(), "inc").watermark_after == key(LATER)

    # The fixed file, same name: INC1 is older than what LATER stored, INC2 newer, INC9 new.
    fixed = csv_bytes(
        [
            row("INC1", "2026-06-22 15:52:00", raw_status="Pending"),
            row("INC2", "2026-06-22 15:52:00", raw_status="Pending"),
            row("INC9", "2026-06-22 15:52:00"),
        ]
    )
    fixed_etag = env.put(key(BAD), fixed)
    report = sync(env.runtime(), "inc")

    assert report.ok
    [result] = report.applied
    assert (result.key, result.etag, result.export_type) == (key(BAD), fixed_etag, ExportType.LATE)
    assert (result.counts.read, result.counts.upserted, result.counts.skipped_older) == (3, 2, 1)
    table = stored(env)
    assert table["INC1"][0] == "Resolved"  # the newer row from LATER is kept
    assert table["INC2"][0] == "Pending"
    assert "INC9" in table
    assert report.watermark_after == key(LATER)  # a late file never moves it
    assert [r["type"] for r in ledger_rows(env)] == [
        "baseline",
        "quarantine",
        "delta",
        "late",
    ]
    assert env.list_keys("automations/inc/changes/") == []
    assert f"automations/inc/processed/{BAD_NAME}" in env.list_keys("automations/inc/processed/")
    assert env.list_keys("automations/inc/quarantine/") == [QUARANTINED]  # the bad copy stays


def test_reupload_that_is_still_broken_blocks_again(env: Env) -> None:
    blocked_stream(env)
    quarantine(env.runtime(), "inc", BAD_NAME, "broken", "alice")
    sync(env.runtime(), "inc")
    env.put(key(BAD), BAD_BODY)
    report = sync(env.runtime(), "inc")
    assert report.rejected is not None and report.rejected.key == key(BAD)
    assert [b[0] for b in blocked(env)] == [key(BAD)]


def test_quarantine_the_same_name_twice(env: Env) -> None:
    """A re-upload that is still broken can be quarantined again; both decisions are kept."""
    first_etag = blocked_stream(env)
    quarantine(env.runtime(), "inc", BAD_NAME, "broken", "alice")
    sync(env.runtime(), "inc")
    second_body = BAD_BODY + b"INC2,y\r\n"
    second_etag = env.put(key(BAD), second_body)
    assert not sync(env.runtime(), "inc").ok
    done = quarantine(env.runtime(), "inc", BAD_NAME, "still broken", "bob")
    assert done.was_blocking and done.etag == second_etag
    records = [r for r in ledger_rows(env) if r["type"] == "quarantine"]
    assert [(r["etag"], r["metadata"]["who"]) for r in records] == [
        (first_etag, "alice"),
        (second_etag, "bob"),
    ]
    assert blocked(env) == []
    # The first bad copy is kept; the second lands beside it, named with its ETag.
    assert env.s3.get_object(Bucket="tickets", Key=QUARANTINED)["Body"].read() == BAD_BODY
    beside = QUARANTINED.replace(".csv", f".{second_etag[:12]}.csv")
    assert done.moved_to == beside
    assert env.s3.get_object(Bucket="tickets", Key=beside)["Body"].read() == second_body


def assert_nothing_changed(env: Env, ledger_before: int) -> None:
    assert len(ledger_rows(env)) == ledger_before
    assert [b[0] for b in blocked(env)] == [key(BAD)]
    assert env.list_keys("automations/inc/changes/") == [key(BAD), key(LATER)]
    assert env.list_keys("automations/inc/quarantine/") == []


@pytest.mark.parametrize(
    ("key_or_name", "message"),
    [
        ("2026-06-22T18-00-00.csv", "is not in the bucket"),  # a stream name, but absent
        (key("2026-06-22T18-00-00"), "is not in the bucket"),
        ("notes.txt", "is not a stream file"),
        (f"{BAD}.csv.tmp", "is not a stream file"),
        ("2026-02-30T10-00-00.csv", "is not a stream file"),
        (f"automations/inc/processed/{FIRST}.csv", "is not a stream file"),
        (f"automations/inc/changes/../changes/{BAD_NAME}", "is not a stream file"),
        (f"automations/inc/changes/sub/{BAD_NAME}", "is not a stream file"),
        (f"/automations/inc/changes/{BAD_NAME}", "is not a stream file"),
        (f"automations/crq/changes/{BAD_NAME}", "is not a stream file of dataset 'inc'"),
        ("", "is not a stream file"),
    ],
)
def test_refused_keys_change_nothing(env: Env, key_or_name: str, message: str) -> None:
    blocked_stream(env)
    env.put(key(BAD, "crq"), BAD_BODY)  # exists, but belongs to another dataset
    before = len(ledger_rows(env))
    with pytest.raises(IngestError) as info:
        quarantine(env.runtime(), "inc", key_or_name, "broken", "alice")
    assert message in str(info.value)
    assert not isinstance(info.value, SyncBusy)
    assert_nothing_changed(env, before)
    assert env.list_keys("automations/crq/") == [key(BAD, "crq")]


def test_already_quarantined_file_is_not_there(env: Env) -> None:
    blocked_stream(env)
    runtime = env.runtime()
    quarantine(runtime, "inc", BAD_NAME, "broken", "alice")
    with pytest.raises(IngestError, match="is not in the bucket"):
        quarantine(runtime, "inc", BAD_NAME, "broken again", "alice")
    assert [r["type"] for r in ledger_rows(env)].count("quarantine") == 1


@pytest.mark.parametrize("reason", ["", "   ", "\t\n"])
def test_empty_reason_is_refused(env: Env, reason: str) -> None:
    blocked_stream(env)
    before = len(ledger_rows(env))
    with pytest.raises(IngestError, match="say why"):
        quarantine(env.runtime(), "inc", BAD_NAME, reason, "alice")
    assert_nothing_changed(env, before)


def test_dataset_not_enabled(env: Env) -> None:
    env.put(key(BAD, "fuel"), BAD_BODY)
    with pytest.raises(ConfigError, match="not enabled"):
        quarantine(env.runtime(), "fuel", BAD_NAME, "broken", "alice")
    assert env.list_keys("automations/fuel/") == [key(BAD, "fuel")]


def test_busy_dataset_raises_sync_busy_and_changes_nothing(env: Env) -> None:
    blocked_stream(env)
    before = len(ledger_rows(env))
    holder = env.db()
    holder.scalar(HOLD)
    with pytest.raises(SyncBusy) as info:
        quarantine(env.runtime(), "inc", BAD_NAME, "broken", "alice")
    assert info.value.dataset == "inc"
    assert_nothing_changed(env, before)
    # Once the other session lets go, the same call works.
    holder.scalar("SELECT pg_advisory_unlock(hashtextextended('tickets-ingest:inc', 0))")
    assert quarantine(env.runtime(), "inc", BAD_NAME, "broken", "alice").was_blocking


def test_other_datasets_lock_does_not_matter(env: Env) -> None:
    blocked_stream(env)
    env.db().scalar("SELECT pg_advisory_lock(hashtextextended('tickets-ingest:crq', 0))")
    assert quarantine(env.runtime(), "inc", BAD_NAME, "broken", "alice").was_blocking


# --- the CLI ---------------------------------------------------------------------------


def test_cli_quarantine(env: Env, capsys: pytest.CaptureFixture[str]) -> None:
    etag = blocked_stream(env)
    env.set(TICKETS_OPERATOR="ops-dave")
    code, out = run_cli("quarantine", "--dataset", "inc", "--key", BAD_NAME, "--reason", "bad")
    assert code == EXIT_OK
    lines = out.splitlines()
    assert lines[0] == f"quarantined {key(BAD)} (ETag {etag}) -> {QUARANTINED}"
    assert lines[1] == "dataset inc is no longer blocked; the next sync moves on"
    assert lines[2].startswith("next: redrive the dead-letter queue")
    assert ledger_rows(env)[-1]["metadata"]["who"] == "ops-dave"

    code, out = run_cli("status", "--dataset", "inc")
    assert code == EXIT_OK
    assert "blocked        no" in out
    code, _ = run_cli("sync", "--apply")
    assert code == EXIT_OK
    assert stored(env)["INC1"][0] == "Resolved"


def test_cli_quarantine_not_blocking_says_nothing_about_unblocking(env: Env) -> None:
    blocked_stream(env)
    code, out = run_cli(
        "quarantine", "--dataset", "inc", "--key", key(LATER), "--reason", "duplicate"
    )
    assert code == EXIT_OK
    assert "no longer blocked" not in out


@pytest.mark.parametrize(
    ("argv", "expected"),
    [
        (["--key", "2026-06-22T18-00-00.csv", "--reason", "x"], "is not in the bucket"),
        (["--key", "notes.txt", "--reason", "x"], "is not a stream file"),
        (["--key", key(BAD, "crq"), "--reason", "x"], "is not a stream file of dataset 'inc'"),
        (["--key", BAD_NAME, "--reason", ""], "say why"),
        (["--key", BAD_NAME, "--reason", "  "], "say why"),
    ],
)
def test_cli_refusals_exit_1_with_one_line(
    env: Env, capsys: pytest.CaptureFixture[str], argv: list[str], expected: str
) -> None:
    blocked_stream(env)
    capsys.readouterr()
    before = len(ledger_rows(env))
    code, out = run_cli("quarantine", "--dataset", "inc", *argv)
    err = capsys.readouterr().err
    assert code == EXIT_FAILED
    assert out == ""
    assert err.strip().count("\n") == 0, err
    assert err.startswith("tickets-ingest: ") and expected in err
    assert "Traceback" not in err
    assert_nothing_changed(env, before)


def test_cli_dataset_not_enabled_exits_2(env: Env, capsys: pytest.CaptureFixture[str]) -> None:
    code, _ = run_cli("quarantine", "--dataset", "fuel", "--key", BAD_NAME, "--reason", "x")
    err = capsys.readouterr().err
    assert code == EXIT_USAGE
    assert "not enabled" in err and "Traceback" not in err


def test_cli_busy_exits_75(env: Env, capsys: pytest.CaptureFixture[str]) -> None:
    blocked_stream(env)
    before = len(ledger_rows(env))
    env.db().scalar(HOLD)
    capsys.readouterr()
    code, _ = run_cli("quarantine", "--dataset", "inc", "--key", BAD_NAME, "--reason", "x")
    err = capsys.readouterr().err
    assert code == EXIT_BUSY
    assert "another sync of dataset 'inc' is running" in err
    assert "Traceback" not in err
    assert_nothing_changed(env, before)
