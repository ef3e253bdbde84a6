"""sync() against a real PostgreSQL and the S3 emulator: the engine's rules, one by one."""

from __future__ import annotations

import datetime as dt

import pytest

from tests.conftest import Env
from tests.support.rows import csv_bytes, key, row
from tickets_ingest.logic.sync import SyncOptions, sync
from tickets_ingest.models import ExportType

NAIROBI = dt.timezone(dt.timedelta(hours=3))


def stored(env: Env, table: str = "incidents") -> dict[str, dict[str, object]]:
    db = env.db()
    rows = db.run(
        f"SELECT ticket_id, raw_status, region, updated_at, closed_at, latitude, mttr, "
        f"is_alarm, source_key FROM tickets.{table} ORDER BY ticket_id"
    )
    names = [
        "raw_status",
        "region",
        "updated_at",
        "closed_at",
        "latitude",
        "mttr",
        "is_alarm",
        "source_key",
    ]
    return {r[0]: dict(zip(names, r[1:], strict=True)) for r in rows}


def ledger(env: Env, dataset: str = "inc") -> list[tuple[str, str, int, int]]:
    return [
        (r[0].rsplit("/", 1)[-1], r[1], r[2], r[3])
        for r in env.db().run(
            "SELECT source_key, export_type, rows_read, rows_upserted FROM tickets.import_meta "
            "WHERE dataset = :d ORDER BY id",
            d=dataset,
        )
    ]


def test_baseline_then_deltas_in_order_and_archived(env: Env) -> None:
    env.put(key("2026-06-22T15-50-39"), csv_bytes([row("INC1"), row("INC2")]))
    env.put(
        key("2026-06-22T15-53-04"),
        csv_bytes([row("INC2", "2026-06-22 15:52:00", raw_status="In Progress")]),
    )
    env.put(
        key("2026-06-22T17-10-41"),
        csv_bytes([row("INC2", "2026-06-22 17:00:00", raw_status="Resolved"), row("INC3")]),
    )

    report = sync(env.runtime(), "inc", SyncOptions())

    assert report.ok
    assert [r.export_type for r in report.applied] == [
        ExportType.BASELINE,
        ExportType.DELTA,
        ExportType.DELTA,
    ]
    table = stored(env)
    assert sorted(table) == ["INC1", "INC2", "INC3"]
    assert table["INC2"]["raw_status"] == "Resolved"
    assert table["INC2"]["updated_at"] == dt.datetime(2026, 6, 22, 17, 0, tzinfo=NAIROBI)
    assert table["INC2"]["source_key"] == key("2026-06-22T17-10-41")
    assert ledger(env) == [
        ("2026-06-22T15-50-39.csv", "baseline", 2, 2),
        ("2026-06-22T15-53-04.csv", "delta", 1, 1),
        ("2026-06-22T17-10-41.csv", "delta", 2, 2),
    ]
    assert env.keys("automations/inc/changes/") == []
    assert env.keys("automations/inc/processed/") == [
        "automations/inc/processed/2026-06-22T15-50-39.csv",
        "automations/inc/processed/2026-06-22T15-53-04.csv",
        "automations/inc/processed/2026-06-22T17-10-41.csv",
    ]
    assert report.watermark_after == key("2026-06-22T17-10-41")


def test_rerun_is_a_no_op(env: Env) -> None:
    env.put(key("2026-06-22T15-50-39"), csv_bytes([row("INC1")]))
    runtime = env.runtime()
    sync(runtime, "inc")
    before = stored(env)
    report = sync(runtime, "inc")
    assert report.applied == [] and report.archived == []
    assert stored(env) == before
    assert len(ledger(env)) == 1


@pytest.mark.parametrize("dry_run", [True])
def test_dry_run_changes_nothing_but_reports_counts(env: Env, dry_run: bool) -> None:
    env.put(key("2026-06-22T15-50-39"), csv_bytes([row("INC1"), row("INC2", is_alarm="true")]))
    report = sync(env.runtime(), "inc", SyncOptions(dry_run=dry_run))
    assert [
        (r.counts.read, r.counts.upserted, r.counts.alarm_filtered) for r in report.applied
    ] == [(2, 1, 1)]
    assert stored(env) == {}
    assert ledger(env) == []
    assert env.keys("automations/inc/changes/") == [key("2026-06-22T15-50-39")]
