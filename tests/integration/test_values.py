"""Hostile values against a real PostgreSQL (issue 11, points 1, 2, 3, 6 and 8).

1. older data never wins: the recency guard holds for every file, an empty updated_at is
   set aside, and a refused last occurrence takes its ticket's earlier ones with it;
2. one key rule, applied before a key is stored, de-duplicated or compared;
3. only the export's literal shapes are typed values (no ``now``, ``infinity``, ``NaN``);
6. a failure while applying a file names it, and one its content caused blocks it;
8. a quoted value holding a line ``\\.`` is data.
"""

from __future__ import annotations

import io
import json
import secrets
from datetime import datetime, timedelta, timezone
from typing import Any

import pytest

from tests.conftest import Env
from tests.e2e.conftest import LambdaWorld, world  # noqa: F401 - registers the fixture
from tests.support.emf import emf_documents
from tests.support.rows import csv_bytes, key, row
from tickets_devkit.event_path import FakeLambdaContext
from tickets_ingest.core.schema import (
    COLUMN_KINDS,
    MAX_KEY_LENGTH,
    VALUE_SHAPES,
    Kind,
    key_problem,
)
from tickets_ingest.dal.db import DatabaseError, sqlstate
from tickets_ingest.errors import FileFailed, FileRejected
from tickets_ingest.handlers.cli import EXIT_FAILED, main
from tickets_ingest.logic.sync import sync
from tickets_ingest.models import ExportType

EAT = timezone(timedelta(hours=3))
T0 = key("2026-06-22T10-00-00")
T1 = key("2026-06-22T12-00-00")
T2 = key("2026-06-22T13-00-00")
LATE = key("2026-06-22T11-00-00")


def at(hour: int, minute: int = 0) -> datetime:
    return datetime(2026, 6, 22, hour, minute, tzinfo=EAT)


def filler(count: int, prefix: str = "OK") -> list[dict[str, str]]:
    return [row(f"{prefix}{i:03d}", "2026-06-22 11:30:00") for i in range(count)]


def stored_row(env: Env, ticket_id: str) -> dict[str, Any] | None:
    rows = env.db().run(
        "SELECT updated_at, raw_status, latitude, source_key FROM tickets.incidents "
        "WHERE ticket_id = :t",
        t=ticket_id,
    )
    if not rows:
        return None
    return dict(zip(("updated_at", "raw_status", "latitude", "source_key"), rows[0], strict=True))


def rejected_rows(env: Env) -> list[tuple[str, int, str]]:
    return [
        (r[0], r[1], r[2])
        for r in env.db().run(
            "SELECT source_key, line_number, error FROM tickets.rejected_rows ORDER BY id"
        )
    ]


def cli(*argv: str) -> tuple[int, str]:
    out = io.StringIO()
    return main(list(argv), out=out), out.getvalue()


# --- 1. older data never wins ---------------------------------------------------------


def test_a_rejected_last_occurrence_does_not_let_an_older_row_win(env: Env) -> None:
    """The issue's example: INC1 stored at 10:30; the next in-order delta holds INC1 at
    10:00 and then INC1 at 11:00 with a bad latitude, among 198 good rows."""
    env.put(T0, csv_bytes([row("INC1", "2026-06-22 10:30:00", raw_status="Assigned")]))
    rows = filler(99, "A")
    rows.append(row("INC1", "2026-06-22 10:00:00", raw_status="Pending"))  # line 101
    rows += filler(99, "B")
    rows.append(row("INC1", "2026-06-22 11:00:00", latitude="north-ish"))  # line 201
    env.put(T1, csv_bytes(rows))

    report = sync(env.runtime(), "inc")

    assert report.ok and [r.key for r in report.applied] == [T0, T1]
    counts = report.applied[1].counts
    assert (counts.read, counts.rejected, counts.upserted) == (200, 2, 198)
    assert stored_row(env, "INC1") == {
        "updated_at": at(10, 30),
        "raw_status": "Assigned",
        "latitude": -1.264,
        "source_key": T0,
    }
    assert rejected_rows(env) == [
        (T1, 101, "ticket_id: set aside with its last occurrence in the file (line 201, rejected)"),
        (
            T1,
            201,
            'latitude: "north-ish" is not a literal double precision as the export writes '
            "it (a decimal number)",
        ),
    ]


@pytest.mark.parametrize(
    ("refused", "column"),
    [
        ({"latitude": "north-ish"}, "latitude"),  # found by the slow path
        ({"updated_at": ""}, "updated_at"),  # found by the first scan
        ({"updated_at": "now"}, "updated_at"),  # a special word
        ({"mttr": "NaN"}, "mttr"),
        ({"ticket_id": "INC1"}, None),  # not refused: the last occurrence wins as before
    ],
)
def test_no_earlier_occurrence_stands_in_for_a_refused_last_one(
    env: Env, refused: dict[str, str], column: str | None
) -> None:
    env.set(MAX_REJECTED_SHARE="1")
    env.put(T0, csv_bytes([row("INC1", "2026-06-22 09:00:00", raw_status="Assigned")]))
    last = {
        "updated_at": "2026-06-22 11:30:00",
        "last_seen_at": "2026-06-22 11:30:00",  # row() copies updated_at there otherwise
        "raw_status": "Resolved",
        **refused,
    }
    env.put(
        T1,
        csv_bytes(
            [
                row("INC1", "2026-06-22 10:00:00", raw_status="Pending"),  # line 2
                row("INC2", "2026-06-22 10:00:00"),
                row("INC1", "2026-06-22 10:30:00", raw_status="In Progress"),  # line 4
                row(last.pop("ticket_id", "INC1"), last.pop("updated_at"), **last),  # line 5
            ]
        ),
    )

    report = sync(env.runtime(), "inc")

    assert report.ok
    stored = stored_row(env, "INC1")
    assert stored is not None
    assert stored_row(env, "INC2") is not None
    if column is None:
        assert stored["raw_status"] == "Resolved"
        assert rejected_rows(env) == []
        return
    assert (stored["updated_at"], stored["raw_status"], stored["source_key"]) == (
        at(9),
        "Assigned",
        T0,
    )
    errors = rejected_rows(env)
    assert [(line, error.split(":", 1)[0]) for _, line, error in errors] == [
        (2, "ticket_id"),
        (4, "ticket_id"),
        (5, column),
    ]
    assert all("(line 5, rejected)" in error for _, _, error in errors[:2])
    assert report.applied[1].counts.rejected == 3


@pytest.mark.parametrize("position", [ExportType.BASELINE, ExportType.DELTA, ExportType.LATE])
def test_an_older_row_never_overwrites_a_newer_one_whatever_the_files_position(
    env: Env, position: ExportType
) -> None:
    runtime = env.runtime()
    newer = row("INC1", "2026-06-22 10:30:00", raw_status="Resolved")
    older = row("INC1", "2026-06-22 10:00:00", raw_status="Pending")
    if position is ExportType.BASELINE:
        # The table holds rows from before a re-seed; the new stream's baseline is older.
        env.put(key("2026-06-21T10-00-00"), csv_bytes([newer]))
        sync(runtime, "inc")
        env.db().run("DELETE FROM tickets.import_meta")
        target = T0
    elif position is ExportType.DELTA:
        env.put(T0, csv_bytes([newer]))
        target = T1
    else:
        env.put(T0, csv_bytes([row("INC0")]))
        env.put(T1, csv_bytes([newer]))
        sync(runtime, "inc")
        target = LATE
    env.put(target, csv_bytes([older, row("INC2", "2026-06-22 10:00:00")]))

    report = sync(runtime, "inc")

    [result] = [r for r in report.applied if r.key == target]
    assert result.export_type is position
    assert (result.counts.upserted, result.counts.skipped_older) == (1, 1)
    stored = stored_row(env, "INC1")
    assert stored is not None
    assert (stored["updated_at"], stored["raw_status"]) == (at(10, 30), "Resolved")
    # Not older: a tie replaces (the same instant, written again, is the newest we know).
    env.put(T2, csv_bytes([row("INC1", "2026-06-22 10:30:00", raw_status="Closed")]))
    sync(runtime, "inc")
    stored = stored_row(env, "INC1")
    assert stored is not None and stored["raw_status"] == "Closed"


def test_an_empty_updated_at_is_set_aside_naming_line_and_column(env: Env) -> None:
    env.put(T0, csv_bytes([row("INC1", "2026-06-22 10:30:00")]))
    env.put(T1, csv_bytes([*filler(120), row("INC1", "   ")]))  # line 122

    report = sync(env.runtime(), "inc")

    assert report.ok
    assert rejected_rows(env) == [
        (T1, 122, "updated_at: empty (the recency guard cannot compare it)")
    ]
    stored = stored_row(env, "INC1")
    assert stored is not None and stored["updated_at"] == at(10, 30)


# --- 2. one key rule ------------------------------------------------------------------

BAD_KEYS = [
    "INC1 ",
    " INC1",
    "INC1\u00a0",  # no-break space
    "\u3000INC1",  # ideographic space
    "INC1\u200b",  # zero-width space
    "\ufeffINC1",  # a BOM before the key
    "IN\tC1",
    "INC1\n",
    "INC\x01",
    "INC\x7f",
    "INC\x85",  # C1 control (NEL)
    "K" * (MAX_KEY_LENGTH + 1),
    "K" * 3000,  # an index row too big for the primary key: issue 11 point 6
]
GOOD_KEYS = ["K" * MAX_KEY_LENGTH, "INC 1", "INC-1/ä", "ÉCHO_7"]


@pytest.mark.parametrize("ticket_id", BAD_KEYS, ids=repr)
def test_a_key_that_only_looks_like_another_is_refused(env: Env, ticket_id: str) -> None:
    env.set(MAX_REJECTED_SHARE="1")
    env.put(T0, csv_bytes([row("INC1", "2026-06-22 10:00:00")]))
    env.put(T1, csv_bytes([row("INC2"), row(ticket_id, "2026-06-22 11:00:00")]))

    report = sync(env.runtime(), "inc")

    assert report.ok and report.rejected is None
    keys = [r[0] for r in env.db().run("SELECT ticket_id FROM tickets.incidents ORDER BY 1")]
    assert keys == ["INC1", "INC2"]
    problem = key_problem(ticket_id)
    assert problem is not None
    [(source, line, error)] = rejected_rows(env)
    assert (source, line) == (T1, 3)
    assert error.startswith(f"ticket_id: {problem}")  # SQL and core.schema say the same


@pytest.mark.parametrize("ticket_id", GOOD_KEYS, ids=repr)
def test_a_key_within_the_rule_is_stored_as_written(env: Env, ticket_id: str) -> None:
    assert key_problem(ticket_id) is None
    env.put(T0, csv_bytes([row(ticket_id)]))
    assert sync(env.runtime(), "inc").ok
    assert env.db().run("SELECT ticket_id FROM tickets.incidents") == [[ticket_id]]
    assert rejected_rows(env) == []


def test_padded_twins_do_not_become_tickets(env: Env) -> None:
    """The issue's example: "INC1 " and " INC1" were stored as two tickets beside INC1."""
    env.put(T0, csv_bytes([row("INC1", "2026-06-22 10:00:00")]))
    env.put(
        T1,
        csv_bytes(
            [
                *filler(198),
                row("INC1 ", "2026-06-22 11:00:00"),
                row(" INC1", "2026-06-22 11:00:00"),
            ]
        ),
    )
    report = sync(env.runtime(), "inc")
    assert report.ok
    assert env.db().scalar("SELECT count(*) FROM tickets.incidents WHERE ticket_id ~ 'INC1'") == 1
    assert [(line, error) for _, line, error in rejected_rows(env)] == [
        (200, "ticket_id: leading or trailing whitespace"),
        (201, "ticket_id: leading or trailing whitespace"),
    ]


# --- 3. literal values only -----------------------------------------------------------

SAMPLES: dict[Kind, tuple[list[str], list[str]]] = {
    # (accepted, refused)
    Kind.TIMESTAMPTZ: (
        [
            "2026-06-22 10:00:00",
            "2026-06-22T10:00:00Z",
            "2026-06-22 10:00:00+03",
            "2026-06-22 10:00:00-0300",
            "2026-06-22 10:00:00.123456+00:00",
            " 2026-06-22 10:00:00 ",
            "",
            "   ",
        ],
        [
            "now",
            "NOW",
            " now ",
            "today",
            "tomorrow",
            "yesterday",
            "epoch",
            "infinity",
            "-infinity",
            "Infinity",
            "J2461214",
            "allballs",
            "2026-06-22",
            "2026-06-22 allballs",
            "20260622 101010",
            "2026-06-22 10:00",
            "2026-06-22 10:00:00 EAT",
            "2026-06-22 10:00:00 +03",
            "2026-06-22 10:00:00BC",
            "26-06-22 10:00:00",
            "2026-06-2- 10:00:00",
            "2026-06-22 1 :00:00",
            "2026-06-22  0:00:00",
            "2026-06-22 10:00:-0",
            "06/22/2026 10:00:00",
        ],
    ),
    Kind.DATE: (
        ["2026-06-15", " 2026-06-15", ""],
        [
            "today",
            "epoch",
            "infinity",
            "-infinity",
            "J2461214",
            "20260615",
            "2026.166",
            "2026--6-15",
            "2026-06-1-",
            "2026-06-15 10:00:00",
            "June 15, 2026",
        ],
    ),
    Kind.DOUBLE: (
        ["-1.264123", "36.8", "0", "1e5", "-2.5E-3", ".5", "5.", " 7 ", ""],
        ["NaN", "nan", "Infinity", "-Infinity", "inf", "-inf", "+1.0", "1,5", "0x1F", "--1", "1-"],
    ),
    Kind.NUMERIC: (
        ["6.25", "0.00", "12", ""],
        ["NaN", "nAn", "Infinity", "-Infinity", "inf", "1_000", "0x10", "6.25.1", "-"],
    ),
}


def test_the_sql_shapes_are_the_schemas(env: Env) -> None:
    db = env.db()
    for kind in Kind:
        shape = VALUE_SHAPES.get(kind)
        expected = f"^ *({shape.pattern})? *$" if shape else ""
        assert db.scalar("SELECT tickets.value_shape(:k)", k=kind.value) == expected, kind


@pytest.mark.parametrize("kind", list(SAMPLES), ids=lambda k: k.name)
def test_a_value_is_typed_only_when_it_has_its_shape(env: Env, kind: Kind) -> None:
    """Python's shapes, the SQL pattern and the cast path's quick checks agree: an accepted
    value casts, a refused one raises a class 22 error (the slow path then sets the row
    aside) and tickets.input_error names the shape."""
    db = env.db()
    db.run("SELECT set_config('TimeZone', 'Africa/Nairobi', false)")
    accepted, refused = SAMPLES[kind]
    shape = VALUE_SHAPES[kind]
    for value in accepted:
        assert shape.matches(value), value
        db.run(f"SELECT CAST(tickets.literal(:v, :k) AS {kind.value})", v=value, k=kind.value)
        assert db.scalar("SELECT tickets.input_error(:v, :k)", v=value, k=kind.value) is None
    for value in refused:
        assert not shape.matches(value), value
        with pytest.raises(DatabaseError) as info:
            db.run(f"SELECT CAST(tickets.literal(:v, :k) AS {kind.value})", v=value, k=kind.value)
        assert sqlstate(info.value).startswith("22"), (value, info.value)
        problem = db.scalar("SELECT tickets.input_error(:v, :k)", v=value, k=kind.value)
        assert problem == (
            f'"{value}" is not a literal {kind.value} as the export writes it ({shape.described})'
        )


SAMPLE_COLUMNS = {
    Kind.TIMESTAMPTZ: "closed_at",
    Kind.DATE: "week_start",
    Kind.DOUBLE: "latitude",
    Kind.NUMERIC: "mttr",
}


@pytest.mark.parametrize("kind", list(SAMPLES), ids=lambda k: k.name)
def test_the_upserts_cast_path_takes_exactly_the_shapes(env: Env, kind: Kind) -> None:
    """The same samples through a file: the upsert's own quick checks (a per-row character
    class, per-value layouts) let through exactly what has the shape."""
    env.set(MAX_REJECTED_SHARE="1")
    column = SAMPLE_COLUMNS[kind]
    accepted, refused = SAMPLES[kind]
    values = [*accepted, *refused]
    env.put(T0, csv_bytes([row(f"S{i:02d}", **{column: v}) for i, v in enumerate(values)]))

    report = sync(env.runtime(), "inc")

    assert report.ok
    kept = {r[0] for r in env.db().run("SELECT ticket_id FROM tickets.incidents")}
    assert kept == {f"S{i:02d}" for i in range(len(accepted))}
    lines = [line for _, line, _ in rejected_rows(env)]
    assert lines == [2 + len(accepted) + i for i in range(len(refused))]


def test_special_words_are_set_aside_with_line_and_column(env: Env) -> None:
    env.set(MAX_REJECTED_SHARE="1")
    words = [
        ("updated_at", "now"),
        ("updated_at", "tomorrow"),
        ("closed_at", "infinity"),
        ("closed_at", "-infinity"),
        ("created_at", "epoch"),
        ("scheduled_at", "yesterday"),
        ("week_start", "J2461214"),
        ("week_end", "today"),
        ("latitude", "NaN"),
        ("longitude", "-Infinity"),
        ("mttr", "infinity"),
    ]
    env.put(T0, csv_bytes([row("OK1")]))
    seen = "2026-06-22 15:00:00"  # row() copies updated_at to last_seen_at otherwise
    env.put(
        T1,
        csv_bytes([row(f"W{i}", last_seen_at=seen, **{c: v}) for i, (c, v) in enumerate(words)]),
    )

    report = sync(env.runtime(), "inc")

    assert report.ok
    assert report.applied[1].counts.rejected == len(words)
    assert env.db().run("SELECT ticket_id FROM tickets.incidents") == [["OK1"]]
    got = rejected_rows(env)
    assert [line for _, line, _ in got] == list(range(2, 2 + len(words)))
    for (_, _, error), (column, word) in zip(got, words, strict=True):
        kind = COLUMN_KINDS[column]
        assert error.startswith(f'{column}: "{word}" is not a literal {kind.value}'), error


def test_a_late_now_does_not_beat_a_newer_row_and_infinity_is_never_stored(env: Env) -> None:
    """The issue's examples: a late file's updated_at=now beat a newer row through the
    recency guard; a stored updated_at=infinity kept every later update out for ever."""
    env.set(MAX_REJECTED_SHARE="1")
    runtime = env.runtime()
    env.put(T0, csv_bytes([row("INC1", "2026-06-22 09:00:00")]))
    env.put(T1, csv_bytes([row("INC1", "2026-06-22 11:55:00", raw_status="Resolved")]))
    sync(runtime, "inc")
    seen = "2026-06-22 11:00:00"
    env.put(LATE, csv_bytes([row("INC1", "now", raw_status="Pending", last_seen_at=seen)]))
    env.put(T2, csv_bytes([row("INC2", "infinity", last_seen_at=seen)]))

    report = sync(runtime, "inc")

    assert [r.key for r in report.applied] == [LATE, T2]
    stored = stored_row(env, "INC1")
    assert stored is not None
    assert (stored["updated_at"], stored["raw_status"]) == (at(11, 55), "Resolved")
    assert stored_row(env, "INC2") is None
    assert [(s, line) for s, line, _ in rejected_rows(env)] == [(LATE, 2), (T2, 2)]


# --- 6. a failure while applying a file names it ---------------------------------------


def _random_text(size: int) -> str:
    """Text that does not compress (so an index cannot hold it)."""
    return secrets.token_urlsafe(size)[:size]


@pytest.mark.parametrize(
    ("setup", "values", "reason", "state"),
    [
        (
            "ALTER TABLE tickets.incidents ADD CONSTRAINT owner_named CHECK (owner <> 'nobody')",
            {"owner": "nobody"},
            'violates check constraint "owner_named"',
            "23514",
        ),
        (
            "CREATE INDEX incidents_by_owner ON tickets.incidents (owner)",
            {"owner": _random_text(6000)},
            "index row size",
            "54000",
        ),
    ],
    ids=["check constraint (23)", "index row too big (54)"],
)
def test_a_file_whose_content_the_database_refuses_is_blocked_by_name(
    env: Env,
    capsys: pytest.CaptureFixture[str],
    setup: str,
    values: dict[str, str],
    reason: str,
    state: str,
) -> None:
    env.db().run(setup)
    env.put(T0, csv_bytes([row("INC1")]))
    env.put(T1, csv_bytes([row("INC2", **values)]))
    env.put(T2, csv_bytes([row("INC3")]))

    report = sync(env.runtime(), "inc")

    blocked = report.rejected
    assert blocked is not None and blocked.key == T1
    assert reason in blocked.reason and f"SQLSTATE {state}" in blocked.reason
    assert [r.key for r in report.applied] == [T0]  # T2 waits behind it
    db = env.db()
    assert db.run("SELECT source_key FROM tickets.blocked_files") == [[T1]]
    assert db.run("SELECT ticket_id FROM tickets.incidents") == [["INC1"]]

    capsys.readouterr()
    code, _ = cli("sync", "--dataset", "inc", "--apply")
    err = capsys.readouterr().err
    assert code == EXIT_FAILED and "Traceback" not in err
    assert err.strip().splitlines()[-1].startswith(f"tickets-ingest: rejected {T1}")
    code, out = cli("status", "--dataset", "inc", "--json")
    assert code == EXIT_FAILED
    status = json.loads(out)
    assert status["blocked"]["key"] == T1 and status["pending"] == [T1, T2]


def test_the_function_counts_a_refused_file_as_files_rejected(
    world: LambdaWorld,  # noqa: F811 - the fixture's name
    capsys: pytest.CaptureFixture[str],
) -> None:
    env = world.env
    env.db().run("ALTER TABLE tickets.incidents ADD CONSTRAINT named CHECK (owner <> 'nobody')")
    env.put(T0, csv_bytes([row("INC1")]))
    env.put(T1, csv_bytes([row("INC2", owner="nobody")]))
    world.path.sqs.purge_queue(QueueUrl=world.path.queue_url)
    capsys.readouterr()

    result = world.handler({"dataset": "inc"}, FakeLambdaContext(remaining_ms=lambda: 300_000))

    assert result["ok"] is False and T1 in result["rejected"]
    [metrics] = emf_documents(capsys.readouterr().out, "inc")
    assert metrics["FilesRejected"] == 1 and metrics["FilesApplied"] == 1
    assert env.db().run("SELECT source_key FROM tickets.blocked_files") == [[T1]]


def _raising_trigger(env: Env, errcode: str) -> None:
    env.db().run(
        "CREATE FUNCTION public.refuse() RETURNS trigger LANGUAGE plpgsql AS $$ BEGIN "
        f"RAISE EXCEPTION 'refused by a trigger' USING ERRCODE = '{errcode}'; END $$; "
        "CREATE TRIGGER refuse BEFORE INSERT ON tickets.incidents "
        "FOR EACH ROW WHEN (NEW.ticket_id = 'INC2') EXECUTE FUNCTION public.refuse()"
    )


def test_a_database_failure_that_is_not_the_files_names_the_file(
    env: Env, capsys: pytest.CaptureFixture[str]
) -> None:
    _raising_trigger(env, "P0001")  # raise_exception: the database's own doing
    env.put(T0, csv_bytes([row("INC1")]))
    env.put(T1, csv_bytes([row("INC2")]))

    capsys.readouterr()
    code, _ = cli("sync", "--dataset", "inc", "--apply")
    err = capsys.readouterr().err

    assert code == EXIT_FAILED and "Traceback" not in err
    last = err.strip().splitlines()[-1]
    assert last.startswith(f"tickets-ingest: {T1}: applying it failed, nothing of it committed")
    assert "refused by a trigger" in last and "SQLSTATE P0001" in last
    db = env.db()
    assert db.run("SELECT source_key FROM tickets.import_meta") == [[T0]]
    assert db.run("SELECT * FROM tickets.blocked_files") == []  # not the file's fault


@pytest.mark.parametrize("errcode", ["55P03", "57014"])
def test_lock_and_cancel_errors_are_not_taken_for_content(env: Env, errcode: str) -> None:
    """lock_not_available and query_canceled (lock_timeout, statement_timeout) are left to
    the lock-wait handling: they say nothing about the file, so they never block it."""
    _raising_trigger(env, errcode)
    env.put(T0, csv_bytes([row("INC2")]))
    with pytest.raises(Exception) as info:
        sync(env.runtime(), "inc")
    assert not isinstance(info.value, FileRejected | FileFailed)
    assert env.db().run("SELECT * FROM tickets.blocked_files") == []


# --- 8. a quoted line holding only \. is data -------------------------------------------


@pytest.mark.parametrize("line_ending", ["\n", "\r\n"], ids=["LF", "CRLF"])
def test_a_quoted_end_marker_line_round_trips(env: Env, line_ending: str) -> None:
    value = f"first line{line_ending}\\.{line_ending}last line"
    env.put(
        T0,
        csv_bytes(
            [row("INC1", owner=value), row("INC2", owner="\\."), row("INC3")],
            line_ending=line_ending,
        ),
    )
    report = sync(env.runtime(), "inc")
    assert report.ok and report.applied[0].counts.upserted == 3
    owners = dict(env.db().run("SELECT ticket_id, owner FROM tickets.incidents"))
    assert owners == {"INC1": value, "INC2": "\\.", "INC3": "Wanjiku Kamau"}
