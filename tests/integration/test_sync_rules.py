"""sync() against a real PostgreSQL and the S3 emulator: the engine's rules, one by one."""

from __future__ import annotations

import datetime as dt

import pytest

from tests.conftest import Env
from tests.support.rows import csv_bytes, key, row
from tickets_ingest import failpoints
from tickets_ingest.dal.s3 import DownloadCut
from tickets_ingest.errors import ConfigError, TransientFault
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
    assert env.list_keys("automations/inc/changes/") == []
    assert env.list_keys("automations/inc/processed/") == [
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
    assert env.list_keys("automations/inc/changes/") == [key("2026-06-22T15-50-39")]


def test_late_file_applies_with_recency_guard(env: Env) -> None:
    runtime = env.runtime()
    env.put(key("2026-06-22T15-50-39"), csv_bytes([row("INC1"), row("INC2")]))
    env.put(
        key("2026-06-22T17-10-41"),
        csv_bytes([row("INC1", "2026-06-22 17:00:00", raw_status="Resolved")]),
    )
    sync(runtime, "inc")
    # Arrives after the watermark moved past it: INC1's row is older than what is stored,
    # INC2's is newer, INC9 is new.
    env.put(
        key("2026-06-22T16-00-00"),
        csv_bytes(
            [
                row("INC1", "2026-06-22 15:59:00", raw_status="Pending"),
                row("INC2", "2026-06-22 15:59:00", raw_status="Pending"),
                row("INC9", "2026-06-22 15:59:00"),
            ]
        ),
    )
    report = sync(runtime, "inc")

    [result] = report.applied
    assert result.export_type is ExportType.LATE
    assert (result.counts.upserted, result.counts.skipped_older) == (2, 1)
    table = stored(env)
    assert table["INC1"]["raw_status"] == "Resolved"  # newer stored row kept
    assert table["INC2"]["raw_status"] == "Pending"
    assert "INC9" in table
    assert report.watermark_after == key("2026-06-22T17-10-41")  # a late file never moves it
    assert ledger(env)[-1][:2] == ("2026-06-22T16-00-00.csv", "late")


def test_conflicting_etag_is_reported_and_left_alone(env: Env) -> None:
    runtime = env.runtime()
    original = csv_bytes([row("INC1")])
    env.put(key("2026-06-22T15-50-39"), original)
    sync(runtime, "inc")
    # Same name uploaded again with other content: never re-applied, never deleted.
    env.put(key("2026-06-22T15-50-39"), csv_bytes([row("INC1", raw_status="Closed")]))
    report = sync(runtime, "inc")
    assert report.applied == []
    assert [c.obj.key for c in report.plan.conflicts] == [key("2026-06-22T15-50-39")]
    assert stored(env)["INC1"]["raw_status"] == "Assigned"
    assert key("2026-06-22T15-50-39") in env.list_keys("automations/inc/changes/")


def test_crash_after_commit_before_archive_only_archives_next_time(env: Env) -> None:
    runtime = env.runtime()
    env.put(key("2026-06-22T15-50-39"), csv_bytes([row("INC1")]))
    real_copy = runtime.bucket.copy_applied

    def crash(*args: object, **kwargs: object) -> bool:
        raise KeyboardInterrupt("killed between commit and archive")

    runtime.bucket.copy_applied = crash  # type: ignore[method-assign]
    with pytest.raises(KeyboardInterrupt):
        sync(runtime, "inc")
    assert len(ledger(env)) == 1  # committed
    assert env.list_keys("automations/inc/changes/") == [key("2026-06-22T15-50-39")]

    runtime.bucket.copy_applied = real_copy  # type: ignore[method-assign]
    report = sync(env.runtime(), "inc")
    assert report.applied == []
    assert report.archived == [key("2026-06-22T15-50-39")]
    assert len(ledger(env)) == 1
    assert env.list_keys("automations/inc/changes/") == []


class _DiesMidway:
    """An S3 body whose connection drops after ``limit`` bytes, every time (as dal/s3.py
    reports a download that breaks off)."""

    def __init__(self, body: object, limit: int) -> None:
        self._body = body
        self._left = limit

    def read(self, size: int = -1) -> bytes:
        if self._left <= 0:
            reset = ConnectionResetError("S3 connection reset mid-body")
            raise DownloadCut("download broke off") from reset
        data: bytes = self._body.read(min(size, self._left))  # type: ignore[attr-defined]
        self._left -= len(data)
        return data

    def close(self) -> None:
        self._body.close()  # type: ignore[attr-defined]


def test_crash_mid_file_applies_nothing_and_next_run_recovers(env: Env) -> None:
    rows = [row(f"INC{i:05d}") for i in range(3000)]
    env.put(key("2026-06-22T15-50-39"), csv_bytes(rows))
    env.set(RETRY_ATTEMPTS="2")  # the cut is retried once, then the run gives up
    runtime = env.runtime()
    real_open = runtime.bucket.open
    runtime.bucket.open = lambda k, e: _DiesMidway(real_open(k, e), 100_000)  # type: ignore[method-assign]
    with pytest.raises(TransientFault, match=r"GET failed after 2 attempts .*ConnectionReset"):
        sync(runtime, "inc")
    assert stored(env) == {}
    assert ledger(env) == []

    report = sync(env.runtime(), "inc")
    assert report.ok and len(stored(env)) == 3000


def test_repeated_ticket_id_last_occurrence_wins(env: Env) -> None:
    env.put(
        key("2026-06-22T15-50-39"),
        csv_bytes(
            [
                row("INC1", "2026-06-22 10:00:00", raw_status="Assigned"),
                row("INC2"),
                row("INC1", "2026-06-22 11:00:00", raw_status="In Progress"),
                row("INC1", "2026-06-22 12:00:00", raw_status="Resolved"),
            ]
        ),
    )
    report = sync(env.runtime(), "inc")
    [result] = report.applied
    assert (result.counts.read, result.counts.upserted, result.counts.duplicate_ids) == (4, 2, 2)
    assert stored(env)["INC1"]["raw_status"] == "Resolved"


def test_alarm_and_sentinel_rows_are_dropped_and_counted(
    env: Env, caplog: pytest.LogCaptureFixture
) -> None:
    sentinel = dict.fromkeys(row("x"), "") | {"ticket_id": "EXPORT STOPPED: row limit reached"}
    env.put(
        key("2026-06-22T15-50-39"),
        csv_bytes([sentinel, row("INC1"), row("INC2", is_alarm="true"), row("INC3", is_alarm="")]),
    )
    report = sync(env.runtime(), "inc")
    [result] = report.applied
    assert (result.counts.sentinel_filtered, result.counts.alarm_filtered) == (1, 1)
    assert sorted(stored(env)) == ["INC1", "INC3"]
    assert "export was truncated" in caplog.text


def test_region_and_status_are_normalized(env: Env) -> None:
    env.put(
        key("2026-06-22T15-50-39"),
        csv_bytes(
            [
                row("INC1", region="  rift   VALLEY ", raw_status="in  progress"),
                row("INC2", region="NRB", raw_status=" RESOLVED"),
                row("INC3", region="  Turkana\tNorth ", raw_status="Escalated  to L2"),
                row("INC4", region="   ", raw_status=""),
            ]
        ),
    )
    sync(env.runtime(), "inc")
    table = stored(env)
    assert (table["INC1"]["region"], table["INC1"]["raw_status"]) == ("Rift Valley", "In Progress")
    assert (table["INC2"]["region"], table["INC2"]["raw_status"]) == ("Nairobi", "Resolved")
    # Not in the alias table: trimmed and collapsed, otherwise as written.
    assert (table["INC3"]["region"], table["INC3"]["raw_status"]) == (
        "Turkana North",
        "Escalated to L2",
    )
    assert (table["INC4"]["region"], table["INC4"]["raw_status"]) == (None, None)


def test_types_timezones_and_empty_values(env: Env) -> None:
    env.put(
        key("2026-06-22T15-50-39"),
        csv_bytes(
            [
                row("INC1", "2026-06-22 15:00:00", closed_at="", latitude="-1.5", mttr="12.25"),
                row("INC2", "2026-06-22T12:00:00+00:00", closed_at="2026-06-22 16:00:00"),
            ]
        ),
    )
    sync(env.runtime(), "inc")
    table = stored(env)
    assert table["INC1"]["updated_at"] == dt.datetime(2026, 6, 22, 12, 0, tzinfo=dt.UTC)
    assert table["INC1"]["closed_at"] is None
    assert table["INC1"]["latitude"] == -1.5
    assert str(table["INC1"]["mttr"]) == "12.25"
    assert table["INC1"]["is_alarm"] is False
    # An explicit offset wins over the source time zone.
    assert table["INC2"]["updated_at"] == dt.datetime(2026, 6, 22, 12, 0, tzinfo=dt.UTC)


def test_csv_dialect_bom_crlf_quotes_newlines_and_column_order(env: Env) -> None:
    columns = list(reversed(row("x").keys()))
    body = csv_bytes(
        [
            row("INC1", location_name='Kilimani "B" Block, Argwings Kodhek'),
            row("INC2", owner="Line one\nline two", location_name="comma, inside"),
            row("INC3"),
        ],
        columns=columns,
        bom=True,
        line_ending="\r\n",
    )
    env.put(key("2026-06-22T15-50-39"), body)
    report = sync(env.runtime(), "inc")
    assert report.ok
    names = dict(env.db().run("SELECT ticket_id, location_name FROM tickets.incidents"))
    assert names["INC1"] == 'Kilimani "B" Block, Argwings Kodhek'
    owner = env.db().scalar("SELECT owner FROM tickets.incidents WHERE ticket_id = 'INC2'")
    assert owner == "Line one\nline two"


def test_drop_fields_are_not_stored_and_configurable(env: Env) -> None:
    env.set(DROP_FIELDS="source_s3_bucket,source_s3_key,source_snapshot_id,owner")
    env.put(key("2026-06-22T15-50-39"), csv_bytes([row("INC1", owner="Otieno")]))
    sync(env.runtime(), "inc")
    assert env.db().scalar("SELECT owner FROM tickets.incidents") is None
    columns = {
        r[0]
        for r in env.db().run(
            "SELECT column_name FROM information_schema.columns "
            "WHERE table_schema = 'tickets' AND table_name = 'incidents'"
        )
    }
    assert not {"source_s3_bucket", "source_s3_key", "source_snapshot_id"} & columns


def test_non_stream_keys_are_ignored_and_legacy_prefixes_untouched(env: Env) -> None:
    legacy = [
        "automations/inc/2026-06-18T17-00-05.csv",
        "automations/inc/full/.keep",
        "automations/inc/latest.csv/.keep",
        "automations/inc/latest.json/.keep",
        "automations/inc/processed/2026-06-18T17-00-05.csv",
        "automations/crq/2026-06-18T17-00-05.csv",
    ]
    junk = [
        "automations/inc/changes/2026-06-22T15-50-39.csv.tmp",
        "automations/inc/changes/notes.txt",
        "automations/inc/changes/nested/2026-06-22T15-50-39.csv",
        "automations/inc/changes/2026-02-30T10-00-00.csv",
        "automations/inc/changes/2026-06-22T15-50-39 .csv",
    ]
    for k in legacy + junk:
        env.put(k, csv_bytes([row("LEGACY")]))
    env.put(key("2026-06-22T15-50-39"), csv_bytes([row("INC1")]))

    report = sync(env.runtime(), "inc")

    assert sorted(report.plan.ignored) == sorted(junk)
    assert sorted(stored(env)) == ["INC1"]
    remaining = env.list_keys()
    for k in legacy + junk:
        assert k in remaining


def test_crq_goes_to_its_own_table_and_disabled_datasets_are_refused(env: Env) -> None:
    env.put(key("2026-06-22T15-50-39", "crq"), csv_bytes([row("CRQ1")]))
    sync(env.runtime(), "crq")
    assert sorted(stored(env, "change_requests")) == ["CRQ1"]
    assert stored(env) == {}
    env.set(DATASETS="inc")
    with pytest.raises(ConfigError, match="not enabled"):
        sync(env.runtime(), "crq")


def test_reupload_during_archive_is_never_deleted(env: Env) -> None:
    """A new version landing between the copy to processed/ and the delete stays in changes/
    (conditional delete) and is reported as a conflict, never lost and never applied."""
    env.put(key("2026-06-22T15-50-39"), csv_bytes([row("INC1")]))
    newer = csv_bytes([row("INC1", raw_status="Closed")])

    def reupload(step: failpoints.Step, at: str) -> None:
        if step is failpoints.Step.COPIED and at == key("2026-06-22T15-50-39"):
            env.put(at, newer)

    with failpoints.on(reupload):
        report = sync(env.runtime(), "inc")
    assert report.ok and report.archived == []
    assert env.list_keys("automations/inc/changes/") == [key("2026-06-22T15-50-39")]
    plan = sync(env.runtime(), "inc").plan
    assert [c.obj.key for c in plan.conflicts] == [key("2026-06-22T15-50-39")]
    assert stored(env)["INC1"]["raw_status"] == "Assigned"


def test_reupload_before_archive_copy_is_never_archived_as_applied(env: Env) -> None:
    """Between commit and the copy to processed/, a new version lands: the conditional copy
    is refused (as S3 does), nothing unapplied reaches processed/, and it is a conflict."""
    env.put(key("2026-06-22T15-50-39"), csv_bytes([row("INC1")]))
    newer = csv_bytes([row("INC1", raw_status="Closed")])

    def reupload(step: failpoints.Step, at: str) -> None:
        if step is failpoints.Step.COMMITTED and at == key("2026-06-22T15-50-39"):
            env.put(at, newer)

    with failpoints.on(reupload):
        report = sync(env.runtime(), "inc")
    assert report.ok and report.archived == []
    assert env.list_keys("automations/inc/processed/") == []
    assert [c.obj.key for c in sync(env.runtime(), "inc").plan.conflicts] == [
        key("2026-06-22T15-50-39")
    ]
