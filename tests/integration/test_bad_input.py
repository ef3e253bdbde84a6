"""Bad input: file-level problems reject the whole file and stop the dataset there;
row-level problems send the row to tickets.rejected_rows and the rest applies."""

from __future__ import annotations

import pytest

from tests.conftest import Env
from tests.support.rows import csv_bytes, key, row
from tickets_ingest.core.schema import CSV_COLUMNS
from tickets_ingest.handlers.render import blocked_line
from tickets_ingest.logic.status import dataset_status
from tickets_ingest.logic.sync import sync

BASELINE = key("2026-06-22T15-50-39")
BAD = key("2026-06-22T15-53-04")
LATER = key("2026-06-22T17-10-41")
HEADER = ",".join(CSV_COLUMNS).encode()


def good_rows(n: int, prefix: str = "INC") -> list[dict[str, str]]:
    return [row(f"{prefix}{i:05d}") for i in range(n)]


def _line(values: dict[str, str]) -> bytes:
    return csv_bytes([values]).split(b"\r\n")[1]


FILE_LEVEL = {
    "missing column": (
        csv_bytes(good_rows(2), columns=[c for c in CSV_COLUMNS if c != "region"]),
        1,
        "missing column(s) 'region'",
    ),
    "unknown column": (
        csv_bytes(good_rows(2), columns=[*CSV_COLUMNS, "surprise"]),
        1,
        "unknown column(s) 'surprise'",
    ),
    "duplicated column": (
        csv_bytes(good_rows(2), columns=[*CSV_COLUMNS, "region"]),
        1,
        "duplicated column(s) 'region'",
    ),
    "renamed column": (
        HEADER.replace(b"raw_status", b"status") + b"\r\n" + _line(row("INC1")) + b"\r\n",
        1,
        "unknown column(s) 'status'; missing column(s) 'raw_status'",
    ),
    "empty object": (b"", None, "empty object"),
    "not UTF-8": (
        csv_bytes(good_rows(3)).replace(b"Westlands, Sarit", b"Westl\xe4nds, Sarit", 1),
        2,
        'invalid byte sequence for encoding "UTF8"',
    ),
    "quote left open": (
        HEADER + b"\r\n" + _line(row("INC1")) + b'\r\n"INC2,unterminated\r\n',
        None,
        "unterminated CSV quoted field",
    ),
    "extra field in a row": (
        HEADER + b"\r\n" + _line(row("INC1")) + b"\r\n" + _line(row("INC2")) + b",extra\r\n",
        3,
        "extra data after last expected column",
    ),
    "missing field in a row": (
        HEADER + b"\r\n" + _line(row("INC1")).rsplit(b",", 1)[0] + b"\r\n",
        2,
        'missing data for column "updated_at"',
    ),
    "NUL byte": (
        csv_bytes(good_rows(2)).replace(b"Remedy", b"Rem\x00edy", 1),
        2,
        "0x00",
    ),
    "end-of-data marker line": (
        HEADER + b"\r\n" + _line(row("INC1")) + b"\r\n\\.\r\n" + _line(row("INC2")) + b"\r\n",
        None,
        "end-of-data marker",
    ),
}


@pytest.mark.parametrize("case", sorted(FILE_LEVEL))
def test_file_level_problem_rejects_file_and_stops_the_stream(env: Env, case: str) -> None:
    body, line, reason = FILE_LEVEL[case]
    runtime = env.runtime()
    env.put(BASELINE, csv_bytes(good_rows(3)))
    env.put(BAD, body)
    env.put(LATER, csv_bytes([row("INC99")]))

    report = sync(runtime, "inc")

    assert report.rejected is not None
    assert report.rejected.key == BAD
    assert reason in report.rejected.reason
    if line is not None:
        assert report.rejected.line == line
    # The baseline committed; nothing of the bad file, and the later file waits.
    assert [r.key for r in report.applied] == [BASELINE]
    db = env.db()
    assert db.scalar("SELECT count(*) FROM tickets.incidents") == 3
    assert db.scalar("SELECT count(*) FROM tickets.import_meta") == 1
    assert BAD in env.list_keys() and LATER in env.list_keys()

    status = dataset_status(env.runtime(), "inc").to_json()
    assert status["blocked"]["key"] == BAD
    assert reason in status["blocked"]["reason"]
    assert status["pending"] == [BAD, LATER]

    # Retried: still blocked, attempts counted, still nothing applied.
    again = sync(env.runtime(), "inc")
    assert again.rejected is not None and again.rejected.attempts == 2
    assert env.db().scalar("SELECT count(*) FROM tickets.import_meta") == 1

    # The operator replaces the file with a fixed one: the stream resumes, block cleared.
    env.put(BAD, csv_bytes([row("INC50")]))
    fixed = sync(env.runtime(), "inc")
    assert fixed.ok and [r.key for r in fixed.applied] == [BAD, LATER]
    assert dataset_status(env.runtime(), "inc").blocked is None


def test_header_only_file_is_an_empty_delta(env: Env) -> None:
    env.put(BASELINE, csv_bytes(good_rows(2)))
    env.put(BAD, HEADER + b"\r\n")
    report = sync(env.runtime(), "inc")
    assert report.ok
    assert [(r.key, r.counts.read) for r in report.applied] == [(BASELINE, 2), (BAD, 0)]


def test_bad_values_go_to_rejected_rows_and_the_rest_applies(env: Env) -> None:
    rows = good_rows(400)
    rows[10]["closed_at"] = "2026-13-45 25:00:00"
    rows[20]["ticket_id"] = ""
    rows[30]["latitude"] = "north-ish"
    rows[30]["is_actionable"] = "perhaps"
    rows[40]["owner"] = "two\nlines"  # shifts physical line numbers of later rows by one
    rows[50]["week_start"] = "2026-02-30"
    env.set(MAX_REJECTED_SHARE="0.02")
    env.put(BASELINE, csv_bytes(rows))

    report = sync(env.runtime(), "inc")

    assert report.ok
    [result] = report.applied
    assert (result.counts.read, result.counts.rejected, result.counts.upserted) == (400, 4, 396)
    rejected = env.db().run(
        "SELECT line_number, error, raw_line FROM tickets.rejected_rows ORDER BY line_number"
    )
    assert [r[0] for r in rejected] == [12, 22, 32, 53]
    assert "closed_at: " in rejected[0][1] and "out of range" in rejected[0][1]
    assert rejected[1][1] == "ticket_id: empty"
    assert "latitude: " in rejected[2][1] and "is_actionable: " in rejected[2][1]
    assert "week_start: " in rejected[3][1]
    assert rejected[0][2].startswith("INC00010,Remedy,")
    assert rejected[0][2] == _line(rows[10]).decode()


def test_too_many_bad_rows_reject_the_whole_file(env: Env) -> None:
    rows = good_rows(100)
    rows[5]["updated_at"] = "yesterday-ish"
    rows[6]["updated_at"] = "not a time"
    env.put(BASELINE, csv_bytes(rows))

    report = sync(env.runtime(), "inc")

    assert report.rejected is not None
    assert "2 of 100 rows are invalid" in report.rejected.reason
    assert "line 7: updated_at" in report.rejected.reason
    assert report.rejected.line == 7
    db = env.db()
    assert db.scalar("SELECT count(*) FROM tickets.incidents") == 0
    assert db.scalar("SELECT count(*) FROM tickets.rejected_rows") == 0


def test_error_messages_name_file_line_and_column(env: Env) -> None:
    env.put(
        BASELINE,
        HEADER + b"\r\n" + _line(row("INC1")) + b"\r\n" + _line(row("INC2")) + b",x\r\n",
    )
    report = sync(env.runtime(), "inc")
    assert report.rejected is not None
    assert blocked_line(report.rejected) == (
        f"rejected {BASELINE}, line 3: extra data after last expected column"
    )


def test_rejected_file_message_names_the_first_bad_column(env: Env) -> None:
    rows = good_rows(10)
    rows[3]["mttr"] = "12h"
    env.put(BASELINE, csv_bytes(rows))
    report = sync(env.runtime(), "inc")
    assert report.rejected is not None
    assert blocked_line(report.rejected).startswith(
        f"rejected {BASELINE}, line 5, column mttr: 1 of 10 rows are invalid"
    )
