"""The bad-input corpus: every malformed file in tests/data/bad/ and its exact outcome.

Each file goes into a stream as the delta between a good baseline (T0) and a good later
file (T2), then one sync runs. tests/data/bad/manifest.json says, for each file, whether it
is rejected as a whole (``file``: the dataset stops at it, T2 waits), loses some records to
tickets.rejected_rows (``row``: the rest applies, T2 too) or applies (``ok``), and what the
rejection names. Object names that are not stream files are listed there too: those are
ignored wherever they sit under changes/.
"""

from __future__ import annotations

import io
import json
from pathlib import Path
from typing import Any

import pytest

from tests.conftest import Env
from tests.support.oracle import fold, table_state
from tests.support.rows import csv_bytes, key, row
from tickets_ingest.core.schema import CSV_COLUMNS, DEFAULT_DROP_FIELDS
from tickets_ingest.handlers.cli import EXIT_FAILED, EXIT_OK, main
from tickets_ingest.logic.sync import sync

CORPUS = Path(__file__).resolve().parents[1] / "data" / "bad"
MANIFEST: dict[str, Any] = json.loads((CORPUS / "manifest.json").read_text(encoding="utf-8"))
CHANGES = "automations/inc/changes/"
PROCESSED = "automations/inc/processed/"
T0 = key("2026-06-22T15-50-39")
T1 = key("2026-06-22T15-53-04")
T2 = key("2026-06-22T17-10-41")
BASELINE = csv_bytes([row("BASE1"), row("BASE2", raw_status="wip")])
LATER = csv_bytes([row("LATER1", "2026-06-22 17:00:00")])
STORED = [c for c in CSV_COLUMNS if c not in DEFAULT_DROP_FIELDS]

ENTRIES: dict[str, dict[str, Any]] = {**MANIFEST["files"], **MANIFEST["generated"]}


def body_of(name: str) -> bytes:
    if name in MANIFEST["generated"]:
        assert name == "big_field_1mib.csv"
        return csv_bytes([row("BIG1", owner="x" * (1 << 20)), row("BIG2")], line_ending="\n")
    return (CORPUS / name).read_bytes()


def cli(*argv: str) -> tuple[int, str]:
    out = io.StringIO()
    code = main(list(argv), out=out)
    return code, out.getvalue()


def test_the_corpus_is_what_the_manifest_lists() -> None:
    on_disk = {p.name for p in CORPUS.iterdir() if p.name != "manifest.json"}
    assert on_disk == set(MANIFEST["files"])
    for name in on_disk:
        # Small, but two rejected records need 200 rows to stay under the 1 % share.
        assert (CORPUS / name).stat().st_size < 16 * 1024, name
    assert len(ENTRIES) >= 30
    for name, entry in ENTRIES.items():
        assert entry["level"] in {"file", "row", "ok"}, name
        assert {"line", "column", "reason_contains"} <= set(entry), name


@pytest.mark.parametrize("name", sorted(ENTRIES))
def test_bad_file_between_two_good_ones(
    env: Env, capsys: pytest.CaptureFixture[str], name: str
) -> None:
    entry = ENTRIES[name]
    env.put(T0, BASELINE)
    env.put(T1, body_of(name))
    env.put(T2, LATER)

    report = sync(env.runtime(), "inc")

    db = env.db()
    rejected_rows = db.run(
        "SELECT source_key, line_number, error, raw_line FROM tickets.rejected_rows "
        "ORDER BY line_number"
    )
    if entry["level"] == "file":
        blocked = report.rejected
        assert blocked is not None, f"{name} was not rejected"
        assert (blocked.key, blocked.line, blocked.column) == (
            T1,
            entry["line"],
            entry["column"],
        ), blocked
        assert entry["reason_contains"] in blocked.reason
        # Nothing of T1 committed; T2 waits behind it; both stay in changes/.
        assert [r.key for r in report.applied] == [T0]
        assert table_state(db, "incidents", STORED) == fold([BASELINE])
        assert db.run("SELECT source_key FROM tickets.import_meta ORDER BY id") == [[T0]]
        assert env.list_keys(CHANGES) == [T1, T2]
        assert env.list_keys(PROCESSED) == [PROCESSED + T0.rsplit("/", 1)[1]]
        assert rejected_rows == []

        # The operator's view: a retry fails the same way, in one line, no traceback.
        capsys.readouterr()
        code, out = cli("sync", "--dataset", "inc", "--apply")
        err = capsys.readouterr().err
        assert code == EXIT_FAILED
        assert "Traceback" not in err and "Traceback" not in out
        last = err.strip().splitlines()[-1]
        assert last.startswith(f"tickets-ingest: rejected {T1}"), last
        code, out = cli("status", "--dataset", "inc", "--json")
        err = capsys.readouterr().err
        assert code == EXIT_FAILED and "Traceback" not in err
        status = json.loads(out)
        assert status["blocked"]["key"] == T1
        assert entry["reason_contains"] in status["blocked"]["reason"]
        assert (status["blocked"]["line"], status["blocked"]["column"]) == (
            entry["line"],
            entry["column"],
        )
        assert status["blocked"]["attempts"] == 2
        assert status["pending"] == [T1, T2]
        assert status["rejected_rows"] == 0
        return

    assert report.rejected is None, f"{name} was rejected: {report.rejected}"
    assert [r.key for r in report.applied] == [T0, T1, T2]
    counts = report.applied[1].counts
    expected_rejected = entry.get("rejected_rows", [])
    assert (counts.read, counts.upserted, counts.rejected) == (
        entry["read"],
        entry["upserted"],
        len(expected_rejected),
    )
    assert counts.sentinel_filtered == entry.get("sentinel_filtered", 0)
    assert counts.alarm_filtered == entry.get("alarm_filtered", 0)
    assert counts.duplicate_ids == entry.get("duplicate_ids", 0)

    # The rejected records, each on its physical line, the error naming its column.
    assert [(r[0], r[1]) for r in rejected_rows] == [(T1, e["line"]) for e in expected_rejected]
    for (_, _, error, _), expected in zip(rejected_rows, expected_rejected, strict=True):
        assert error.startswith(f"{expected['column']}: "), error
        assert expected["error_contains"] in error, error

    # Everything else applied: the baseline, T1's good records, T2.
    stored = db.scalar("SELECT count(*) FROM tickets.incidents")
    assert stored == 2 + entry["upserted"] + 1
    assert db.scalar("SELECT count(*) FROM tickets.incidents WHERE ticket_id = 'LATER1'") == 1
    for ticket_id, values in entry.get("check", {}).items():
        for column, value in values.items():
            actual = db.scalar(
                f"SELECT {column} FROM tickets.incidents WHERE ticket_id = :t", t=ticket_id
            )
            assert actual == value, (ticket_id, column)
    assert env.list_keys(CHANGES) == []
    assert len(env.list_keys(PROCESSED)) == 3

    capsys.readouterr()
    code, out = cli("status", "--dataset", "inc", "--json")
    assert code == EXIT_OK, out
    status = json.loads(out)
    assert status["blocked"] is None and status["pending"] == []
    assert status["rejected_rows"] == len(expected_rejected)
    assert "Traceback" not in capsys.readouterr().err


@pytest.mark.parametrize("name", sorted(MANIFEST["ignored_keys"]))
def test_names_that_are_not_stream_files_are_ignored(env: Env, name: str) -> None:
    odd = CHANGES + name
    env.put(T0, BASELINE)
    env.put(odd, csv_bytes([row("IGNORED1")]))
    env.put(T2, LATER)

    report = sync(env.runtime(), "inc")

    assert report.ok
    assert odd in report.plan.ignored
    assert [r.key for r in report.applied] == [T0, T2]
    db = env.db()
    assert db.scalar("SELECT count(*) FROM tickets.incidents WHERE ticket_id = 'IGNORED1'") == 0
    assert db.run("SELECT source_key FROM tickets.import_meta ORDER BY id") == [[T0], [T2]]
    # Never moved, never blocking: it stays where it was, the stream went past it.
    assert env.list_keys(CHANGES) == [odd]
    assert sorted(env.list_keys(PROCESSED)) == sorted(
        PROCESSED + k.rsplit("/", 1)[1] for k in (T0, T2)
    )
    again = sync(env.runtime(), "inc")
    assert again.ok and not again.applied and odd in again.plan.ignored
