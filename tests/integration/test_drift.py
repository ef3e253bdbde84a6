"""SCHEMA_DRIFT against a real PostgreSQL and the S3 emulator: rescue keeps unknown columns
in ``rescued`` and leaves missing ones alone; reject names every difference."""

from __future__ import annotations

import json
from collections.abc import Sequence
from typing import Any

import pytest

from tests.conftest import Env
from tests.e2e.conftest import LambdaWorld, world  # noqa: F401 - registers the fixture
from tests.support.emf import emf_documents
from tests.support.rows import csv_bytes, key, row
from tickets_devkit.event_path import FakeLambdaContext
from tickets_ingest.core.schema import CSV_COLUMNS
from tickets_ingest.errors import SchemaMismatch
from tickets_ingest.logic.sync import SyncOptions, sync
from tickets_ingest.models import HeaderDrift

TEXT = ("raw_status", "owner", "assigned_team", "department")


def columns(*, added: Sequence[str] = (), without: Sequence[str] = ()) -> tuple[str, ...]:
    return (*(c for c in CSV_COLUMNS if c not in without), *added)


def stored(env: Env, table: str = "incidents") -> dict[str, dict[str, Any]]:
    rows = env.db().run(
        f"SELECT ticket_id, {', '.join(TEXT)}, rescued FROM tickets.{table} ORDER BY ticket_id"
    )
    return {r[0]: dict(zip((*TEXT, "rescued"), r[1:], strict=True)) for r in rows}


def drift_metadata(env: Env) -> list[tuple[str, dict[str, list[str]] | None]]:
    return [
        (r[0].rsplit("/", 1)[-1], r[1])
        for r in env.db().run(
            "SELECT source_key, metadata -> 'schema_drift' FROM tickets.import_meta "
            "WHERE dataset = 'inc' ORDER BY id"
        )
    ]


def rescue(env: Env, policy: str = "rescue") -> None:
    env.set(SCHEMA_DRIFT=policy)


def test_an_added_column_is_rescued_and_a_later_file_without_it_keeps_it(env: Env) -> None:
    rescue(env)
    env.put(
        key("2026-06-22T15-50-39"),
        csv_bytes(
            [{**row("INC1"), "priority": "P1"}, {**row("INC2"), "priority": ""}],
            columns(added=["priority"]),
        ),
    )
    env.put(
        key("2026-06-22T15-53-04"),
        csv_bytes([row("INC1", "2026-06-22 15:52:00", owner="Otieno")]),
    )
    env.put(
        key("2026-06-22T17-10-41"),
        csv_bytes(
            [{**row("INC1", "2026-06-22 17:00:00"), "priority": "P2", "site": 'NBO "7"'}],
            columns(added=["site", "priority"]),
        ),
    )

    report = sync(env.runtime(), "inc", SyncOptions())

    assert report.ok
    assert [r.drift for r in report.applied] == [
        HeaderDrift(added=("priority",), missing=()),
        None,
        HeaderDrift(added=("site", "priority"), missing=()),
    ]
    table = stored(env)
    # The clean file in between cleared nothing; the last one merged, newest value wins.
    assert table["INC1"]["rescued"] == {"priority": "P2", "site": 'NBO "7"'}
    assert table["INC1"]["owner"] == "Wanjiku Kamau"  # the third file carried the default
    # An empty value is rescued as null: the key stays visible.
    assert table["INC2"]["rescued"] == {"priority": None}
    assert drift_metadata(env) == [
        ("2026-06-22T15-50-39.csv", {"added": ["priority"], "missing": []}),
        ("2026-06-22T15-53-04.csv", None),
        ("2026-06-22T17-10-41.csv", {"added": ["site", "priority"], "missing": []}),
    ]
    assert env.list_keys("automations/inc/changes/") == []


def test_a_removed_column_keeps_its_stored_values(env: Env) -> None:
    rescue(env)
    env.put(
        key("2026-06-22T15-50-39"),
        csv_bytes([row("INC1", owner="Achieng"), row("INC2", owner="Kip")]),
    )
    env.put(
        key("2026-06-22T15-53-04"),
        csv_bytes(
            [
                row("INC1", "2026-06-22 15:52:00", raw_status="Resolved"),
                row("INC3", "2026-06-22 15:52:00"),
            ],
            columns(without=["owner", "department"]),
        ),
    )

    report = sync(env.runtime(), "inc", SyncOptions())

    assert report.ok
    assert report.applied[1].drift == HeaderDrift(added=(), missing=("department", "owner"))
    table = stored(env)
    assert table["INC1"]["raw_status"] == "Resolved"  # the file's columns update
    assert table["INC1"]["owner"] == "Achieng"  # never NULL because the column went away
    assert table["INC1"]["department"] == "NOC"
    assert table["INC2"]["owner"] == "Kip"
    # A new ticket has nothing to keep: its missing columns are NULL.
    assert table["INC3"]["owner"] is None
    assert table["INC3"]["department"] is None
    assert table["INC1"]["rescued"] is None  # nothing was rescued for it
    assert drift_metadata(env)[1] == (
        "2026-06-22T15-53-04.csv",
        {"added": [], "missing": ["department", "owner"]},
    )


def _fold(files: list[tuple[tuple[str, ...], list[dict[str, str]]]]) -> dict[str, dict[str, Any]]:
    """The reference: what the table must hold after the files, in order, written from the
    issue's contract (not from the engine's SQL)."""
    table: dict[str, dict[str, Any]] = {}
    for header, records in files:
        for record in records:
            current = table.setdefault(
                record["ticket_id"], {**dict.fromkeys(TEXT), "rescued": None, "at": ""}
            )
            if record["updated_at"] < current["at"]:
                continue  # the recency guard
            current["at"] = record["updated_at"]
            for column in TEXT:
                if column in header:
                    current[column] = record[column] or None
            unknown = {c: record[c] or None for c in header if c not in CSV_COLUMNS}
            if unknown:
                current["rescued"] = {**(current["rescued"] or {}), **unknown}
    return {
        ticket: {c: v for c, v in values.items() if c != "at"} for ticket, values in table.items()
    }


def test_added_and_removed_columns_in_one_stream_equal_the_reference(env: Env) -> None:
    rescue(env)
    files: list[tuple[tuple[str, ...], list[dict[str, str]]]] = [
        (columns(), [row("INC1", owner="A"), row("INC2", owner="B"), row("INC3", owner="C")]),
        (
            columns(added=["priority"]),
            [
                {**row("INC1", "2026-06-22 16:00:00", raw_status="Pending"), "priority": "P3"},
                {**row("INC4", "2026-06-22 16:00:00", owner="D"), "priority": "P1"},
            ],
        ),
        (
            columns(without=["owner", "assigned_team"], added=["priority", "site"]),
            [
                {**row("INC1", "2026-06-22 17:00:00", raw_status="Resolved"), "priority": "P2"}
                | {"site": "Westlands"},
                {**row("INC2", "2026-06-22 17:00:00"), "priority": "", "site": "CBD"},
                # Older than what is stored: the guard keeps it out, rescued and all.
                {**row("INC4", "2026-06-22 15:00:00", raw_status="Old"), "priority": "P9"}
                | {"site": "old"},
            ],
        ),
        (columns(without=["department"]), [row("INC3", "2026-06-22 18:00:00", owner="C2")]),
        (columns(), [row("INC2", "2026-06-22 19:00:00", owner="B2", department="Field")]),
    ]
    stamps = ["15-50-39", "15-53-04", "17-10-41", "18-00-00", "19-00-00"]
    for stamp, (header, records) in zip(stamps, files, strict=True):
        env.put(key(f"2026-06-22T{stamp}"), csv_bytes(records, header))

    report = sync(env.runtime(), "inc", SyncOptions())

    assert report.ok
    assert len(report.applied) == 5
    assert stored(env) == _fold(files)
    assert [m is not None for _, m in drift_metadata(env)] == [False, True, True, True, False]


@pytest.mark.parametrize(
    ("header", "named"),
    [
        (columns(without=["ticket_id"], added=["priority"]), "missing column(s) 'ticket_id'"),
        (columns(without=["updated_at"]), "missing column(s) 'updated_at'"),
        (columns(added=["region"]), "duplicated column(s) 'region'"),
        (columns(added=["priority", "priority"]), "duplicated column(s) 'priority'"),
        (columns(added=[""]), "empty column name(s) at position(s) 33"),
        (columns(added=["bad\x07name"]), "control character(s) in column name(s)"),
    ],
    ids=["no key", "no recency", "duplicated known", "duplicated unknown", "empty", "control"],
)
def test_rescue_still_rejects_what_it_cannot_apply(
    env: Env, header: tuple[str, ...], named: str
) -> None:
    rescue(env)
    bad = key("2026-06-22T15-50-39")
    env.put(bad, csv_bytes([{**row("INC1"), "priority": "P1", "bad\x07name": "x"}], header))

    report = sync(env.runtime(), "inc", SyncOptions())

    assert report.rejected is not None
    assert report.rejected.key == bad
    assert report.rejected.line == 1
    assert named in report.rejected.reason
    assert env.db().scalar("SELECT count(*) FROM tickets.incidents") == 0


def test_reject_is_the_default_and_names_every_unknown_and_missing_column(env: Env) -> None:
    bad = key("2026-06-22T15-50-39")
    header = columns(without=["owner", "mttr"], added=["priority", "site"])
    env.put(bad, csv_bytes([{**row("INC1"), "priority": "P1", "site": "x"}], header))

    report = sync(env.runtime(), "inc", SyncOptions())

    assert report.rejected is not None
    assert report.rejected.reason == (
        "bad header: unknown column(s) 'priority', 'site'; missing column(s) 'owner', 'mttr'"
    )
    assert report.rejected.line == 1


def test_the_policy_is_per_dataset(env: Env) -> None:
    rescue(env, "inc:rescue,crq:reject")
    header = columns(added=["priority"])
    env.put(key("2026-06-22T15-50-39"), csv_bytes([{**row("INC1"), "priority": "P1"}], header))
    env.put(
        key("2026-06-22T15-50-39", "crq"),
        csv_bytes([{**row("CRQ1"), "priority": "P1"}], header),
    )
    runtime = env.runtime()

    assert sync(runtime, "inc", SyncOptions()).ok
    crq = sync(runtime, "crq", SyncOptions())

    assert stored(env)["INC1"]["rescued"] == {"priority": "P1"}
    assert crq.rejected is not None
    assert "unknown column(s) 'priority'" in crq.rejected.reason


def test_a_bad_row_in_a_drifting_file_is_named_by_line_and_column(env: Env) -> None:
    rescue(env)
    env.set(MAX_REJECTED_SHARE="0.5")
    drifting = key("2026-06-22T15-50-39")
    header = columns(without=["owner"], added=["priority"])
    records = [
        {**row("INC1"), "priority": "P1"},
        {**row("INC2", closed_at="yesterday"), "priority": "two\nlines"},
        {**row("INC3"), "priority": "P3"},
    ]
    env.put(drifting, csv_bytes(records, header))

    report = sync(env.runtime(), "inc", SyncOptions())

    assert report.ok
    assert [r.counts.upserted for r in report.applied] == [2]
    line, error, raw_line = env.db().run(
        "SELECT line_number, error, raw_line FROM tickets.rejected_rows"
    )[0]
    assert line == 3
    assert error.startswith("closed_at: ")
    # The raw line is the file's own, rescued value included, in the file's column order.
    assert raw_line.endswith(',"two\nlines"')
    assert raw_line.startswith("INC2,")
    assert set(stored(env)) == {"INC1", "INC3"}


def test_a_short_row_names_the_rescued_column_as_the_file_does(env: Env) -> None:
    rescue(env)
    drifting = key("2026-06-22T15-50-39")
    body = csv_bytes([{**row("INC1"), "priority": "P1"}], columns(added=["priority"]))
    short = csv_bytes([row("INC2")]).split(b"\r\n")[1]  # one value fewer than the header
    env.put(drifting, body + short + b"\r\n")

    report = sync(env.runtime(), "inc", SyncOptions())

    assert report.rejected is not None
    assert report.rejected.line == 3
    # PostgreSQL names the column in the message here (its context gives the line only).
    assert report.rejected.reason == 'missing data for column "priority"'
    assert "rescue_" not in report.rejected.reason


def test_rescue_needs_the_rescued_column(env: Env) -> None:
    db = env.db()
    db.run("CREATE TABLE tickets.bare_incidents (LIKE tickets.incidents INCLUDING ALL)")
    db.run("ALTER TABLE tickets.bare_incidents DROP COLUMN rescued")
    try:
        env.set(SCHEMA_DRIFT="inc:rescue", DATASET_TABLES="inc=bare_incidents")
        with pytest.raises(SchemaMismatch, match=r"lacks column rescued .*SCHEMA_DRIFT=rescue"):
            sync(env.runtime(), "inc", SyncOptions())
        # Under reject the table is fine as it is.
        env.set(SCHEMA_DRIFT="reject")
        env.put(key("2026-06-22T15-50-39"), csv_bytes([row("INC1")]))
        assert sync(env.runtime(), "inc", SyncOptions()).ok
    finally:
        db.run("DROP TABLE tickets.bare_incidents")


def test_rescued_is_plain_jsonb(env: Env) -> None:
    """What an operator's backfill reads (docs/runbook.md, "Schema drift")."""
    rescue(env)
    env.put(
        key("2026-06-22T15-50-39"),
        csv_bytes([{**row("INC1"), "priority": "P1"}], columns(added=["priority"])),
    )
    assert sync(env.runtime(), "inc", SyncOptions()).ok
    db = env.db()
    assert db.scalar("SELECT rescued ->> 'priority' FROM tickets.incidents") == "P1"
    assert db.scalar("SELECT jsonb_typeof(rescued) FROM tickets.incidents") == "object"
    assert json.loads(db.scalar("SELECT CAST(rescued AS text) FROM tickets.incidents")) == {
        "priority": "P1"
    }


def test_the_function_counts_drifting_files(
    world: LambdaWorld,  # noqa: F811 - the fixture's name
    capsys: pytest.CaptureFixture[str],
) -> None:
    env = world.env
    rescue(env)
    env.put(key("2026-06-22T15-50-39"), csv_bytes([row("INC1")]))
    env.put(
        key("2026-06-22T15-53-04"),
        csv_bytes([{**row("INC2"), "priority": "P1"}], columns(added=["priority"])),
    )
    env.put(key("2026-06-22T17-10-41"), csv_bytes([row("INC3")], columns(without=["owner"])))
    world.path.sqs.purge_queue(QueueUrl=world.path.queue_url)
    capsys.readouterr()

    result = world.handler({"dataset": "inc"}, FakeLambdaContext(remaining_ms=lambda: 300_000))

    assert result["ok"] is True
    [metrics] = emf_documents(capsys.readouterr().out, "inc")
    assert metrics["FilesApplied"] == 3 and metrics["FilesDrifted"] == 2
