"""The stream generator: CSV contract, realism, determinism and delta semantics."""

from __future__ import annotations

import csv
import io
import itertools
import re
from collections import Counter, defaultdict
from datetime import date, datetime, timedelta

import pytest

from tickets_devkit.generator import (
    BASELINE_ROWS,
    NAIROBI,
    StreamFile,
    TicketStream,
    csv_lines,
    write_baseline_to,
)
from tickets_ingest.core.schema import (
    COLUMN_KINDS,
    CSV_COLUMNS,
    SENTINEL_PREFIX,
    VALUE_SHAPES,
    Kind,
    key_problem,
)

TS_FORMAT = "%Y-%m-%d %H:%M:%S"
TIMESTAMP_COLUMNS = tuple(c for c, k in COLUMN_KINDS.items() if k is Kind.TIMESTAMPTZ)
CLEAN_STATUSES = {"open", "in_progress", "pending", "resolved", "closed", "cancelled"}
CLOSED_STATUSES = {"resolved", "closed", "cancelled"}


def parse(body: bytes) -> tuple[list[str], list[list[str]]]:
    """Header and data rows, every row checked to have exactly 32 fields."""
    records = list(csv.reader(io.StringIO(body.decode("utf-8"), newline="")))
    assert all(len(record) == len(CSV_COLUMNS) for record in records)
    return records[0], records[1:]


def dict_rows(stream_file: StreamFile) -> list[dict[str, str]]:
    header, rows = parse(stream_file.body)
    return [dict(zip(header, row, strict=True)) for row in rows]


def ts(value: str) -> datetime:
    return datetime.strptime(value, TS_FORMAT)


@pytest.fixture(scope="module")
def full_baseline() -> tuple[StreamFile, list[dict[str, str]]]:
    stream_file = TicketStream().baseline()
    return stream_file, dict_rows(stream_file)


@pytest.fixture
def small() -> TicketStream:
    stream = TicketStream(seed=7)
    stream.baseline(400)
    return stream


# -- the baseline at full size ----------------------------------------------


def test_full_baseline_matches_the_observed_export(
    full_baseline: tuple[StreamFile, list[dict[str, str]]],
) -> None:
    stream_file, rows = full_baseline
    assert stream_file.rows == len(rows) == BASELINE_ROWS
    assert stream_file.key == "automations/inc/changes/2026-06-22T15-50-39.csv"
    assert stream_file.timestamp == datetime(2026, 6, 22, 15, 50, 39, tzinfo=NAIROBI)
    # ~15.7 MB, i.e. ~450 bytes a row.
    assert 15_000_000 < len(stream_file.body) < 16_500_000
    assert stream_file.body.endswith(b"\r\n")
    assert b"\r\n" not in stream_file.body.replace(b"\r\n", b"")  # CRLF only
    alarms = sum(row["is_alarm"] == "true" for row in rows)
    assert 0.02 <= alarms / len(rows) <= 0.06
    assert len({row["ticket_id"] for row in rows}) == len(rows)


def test_full_baseline_has_messy_values_and_clean_normalized_status(
    full_baseline: tuple[StreamFile, list[dict[str, str]]],
) -> None:
    _, rows = full_baseline
    statuses = Counter(row["raw_status"] for row in rows)
    regions = Counter(row["region"] for row in rows)
    clean_statuses = {"Assigned", "In Progress", "Pending", "Resolved", "Closed", "Cancelled"}
    messy_status = sum(n for value, n in statuses.items() if value not in clean_statuses)
    messy_region = sum(n for value, n in regions.items() if value != value.strip().title())
    assert 0.015 < messy_status / len(rows) < 0.05
    assert 0.015 < messy_region / len(rows) < 0.05
    # Messiness is case and whitespace only: it all normalizes to a known value.
    assert {" ".join(v.split()).title() for v in statuses} == clean_statuses
    assert {row["normalized_status"] for row in rows} == CLEAN_STATUSES
    assert "Rift Valley" in regions


def test_full_baseline_exercises_csv_quoting(
    full_baseline: tuple[StreamFile, list[dict[str, str]]],
) -> None:
    stream_file, rows = full_baseline
    assert any("," in row["location_name"] for row in rows)
    assert any('"' in row["location_name"] for row in rows)
    # Empty values are empty unquoted fields.
    assert b',"",' not in stream_file.body
    assert b",," in stream_file.body


# -- row content --------------------------------------------------------------


def test_rows_are_realistic_and_internally_consistent(small: TicketStream) -> None:
    rows = dict_rows(small.files[0])
    for row in rows:
        assert re.fullmatch(r"INC\d{12}", row["ticket_id"])
        for column in TIMESTAMP_COLUMNS:
            if row[column]:
                ts(row[column])
        assert row["created_at_service"] and row["created_at"] and row["updated_at"]
        assert ts(row["updated_at"]) >= ts(row["created_at"])
        assert ts(row["last_seen_at"]) >= ts(row["updated_at"])
        week_start = date.fromisoformat(row["week_start"])
        week_end = date.fromisoformat(row["week_end"])
        assert week_start.weekday() == 0
        assert week_end - week_start == timedelta(days=6)
        assert week_start <= ts(row["created_at"]).date() <= week_end
        closed = row["normalized_status"] in CLOSED_STATUSES
        assert bool(row["closed_at"]) == closed
        assert bool(row["mttr"]) == (row["normalized_status"] in {"resolved", "closed"})
        if row["mttr"]:
            assert re.fullmatch(r"\d+\.\d\d", row["mttr"])
        assert re.fullmatch(r"-?\d+\.\d{6}", row["latitude"])
        assert re.fullmatch(r"-?\d+\.\d{6}", row["longitude"])
        assert -4.7 <= float(row["latitude"]) <= 4.6
        assert 33.9 <= float(row["longitude"]) <= 41.9
        for column in ("is_auto_created", "is_auto_closed", "is_alarm", "is_actionable"):
            assert row[column] in {"true", "false"}
        assert row["sla_status"] in {"Within SLA", "Breached", "At Risk"}
        assert row["source_s3_bucket"] == "tickets"
        assert row["source_s3_key"] == small.files[0].key
        assert row["owner"] and row["assigned_team"] and row["department"]


def test_crq_dataset_uses_its_own_prefix_and_key() -> None:
    stream_file = TicketStream(dataset="crq").baseline(50)
    rows = dict_rows(stream_file)
    assert stream_file.key.startswith("automations/crq/changes/")
    assert all(row["ticket_id"].startswith("CRQ") for row in rows)
    with pytest.raises(ValueError, match="unknown dataset"):
        TicketStream(dataset="nope")


def test_sentinel_row_comes_first_and_counts() -> None:
    stream_file = TicketStream().baseline(100, sentinel=True)
    _, rows = parse(stream_file.body)
    assert stream_file.rows == len(rows) == 100
    assert rows[0][0] == f"{SENTINEL_PREFIX}: export truncated at 100 rows"
    assert rows[0][1:] == [""] * (len(CSV_COLUMNS) - 1)
    assert not any(row[0].startswith(SENTINEL_PREFIX) for row in rows[1:])


def test_header_and_row_count(small: TicketStream) -> None:
    header, rows = parse(small.files[0].body)
    assert tuple(header) == CSV_COLUMNS
    assert len(rows) == small.files[0].rows == 400


# -- determinism ----------------------------------------------------------------


def test_same_seed_same_bytes_and_different_seed_different_bytes() -> None:
    def run(seed: int) -> list[bytes]:
        stream = TicketStream(seed=seed)
        files = [stream.baseline(300), stream.delta(20, repeat_ids=2), stream.delta(5)]
        return [f.body for f in files]

    assert run(1) == run(1)
    first, second = run(1), run(2)
    assert all(a != b for a, b in zip(first, second, strict=True))


# -- deltas ---------------------------------------------------------------------


def test_delta_rows_advance_updated_at(small: TicketStream) -> None:
    before = small.tickets
    delta = small.delta(60, new_share=0.25)
    rows = dict_rows(delta)
    assert delta.rows == len(rows) == 60
    assert len({row["ticket_id"] for row in rows}) == 60
    new = [row for row in rows if row["ticket_id"] not in before]
    assert len(new) == 15
    for row in rows:
        assert row["source_s3_key"] == delta.key
        assert ts(row["updated_at"]) <= delta.timestamp.replace(tzinfo=None)
        previous = before.get(row["ticket_id"])
        if previous is None:
            assert ts(row["created_at"]) > small.files[0].timestamp.replace(tzinfo=None)
        else:
            assert ts(row["updated_at"]) > ts(previous["updated_at"])
            assert row["created_at"] == previous["created_at"]
    # The current state reflects the newest file.
    after = small.tickets
    assert all(after[row["ticket_id"]] == row for row in rows)
    assert len(after) == len(before) + 15


def test_deltas_progress_statuses() -> None:
    stream = TicketStream(seed=3)
    stream.baseline(300)
    before = stream.tickets
    changed = 0
    for _ in range(5):
        for row in dict_rows(stream.delta(40, new_share=0.0)):
            changed += row["normalized_status"] != before[row["ticket_id"]]["normalized_status"]
    assert changed > 40


def test_repeat_ids_last_occurrence_is_newest(small: TicketStream) -> None:
    delta = small.delta(30, repeat_ids=12)
    rows = dict_rows(delta)
    assert delta.rows == len(rows) == 42
    seen: dict[str, list[datetime]] = defaultdict(list)
    for row in rows:
        seen[row["ticket_id"]].append(ts(row["updated_at"]))
    assert len(seen) == 30
    assert sum(len(times) - 1 for times in seen.values()) == 12
    for times in seen.values():
        assert times == sorted(times) and len(set(times)) == len(times)
    state = small.tickets
    last = {row["ticket_id"]: row for row in rows}  # last occurrence wins
    assert all(state[tid] == row for tid, row in last.items())


def test_file_keys_sort_in_creation_order() -> None:
    stream = TicketStream(seed=5)
    stream.baseline(20)
    stream.delta(1, minutes_later=2.42)
    for _ in range(6):
        stream.delta(3)
    keys = [f.key for f in stream.files]
    stamps = [f.timestamp for f in stream.files]
    assert keys == sorted(keys) and len(set(keys)) == len(keys)
    assert stamps == sorted(stamps)
    assert keys[1] == "automations/inc/changes/2026-06-22T15-53-04.csv"
    for stream_file in stream.files:
        assert stream_file.timestamp.tzinfo == NAIROBI
        stamp = stream_file.timestamp.strftime("%Y-%m-%dT%H-%M-%S")
        assert stream_file.key == f"automations/inc/changes/{stamp}.csv"
    gaps = [b - a for a, b in itertools.pairwise(stamps)]
    assert all(timedelta(minutes=1) <= gap <= timedelta(minutes=90) for gap in gaps)


def test_delta_needs_a_baseline_and_baseline_comes_once() -> None:
    stream = TicketStream()
    with pytest.raises(RuntimeError):
        stream.delta(1)
    stream.baseline(5)
    with pytest.raises(RuntimeError):
        stream.baseline(5)


def test_tickets_includes_alarm_rows() -> None:
    stream = TicketStream(seed=11)
    rows = dict_rows(stream.baseline(500))
    alarm_ids = {row["ticket_id"] for row in rows if row["is_alarm"] == "true"}
    assert alarm_ids
    assert alarm_ids <= set(stream.tickets)


# -- encoding helpers -------------------------------------------------------------


def test_write_baseline_to_streams_the_same_file() -> None:
    sink = io.BytesIO()
    written = write_baseline_to(sink, 1_000, seed=4)
    body = sink.getvalue()
    assert written == len(body)
    header, rows = parse(body)
    assert tuple(header) == CSV_COLUMNS
    assert len(rows) == 1_000
    assert body == TicketStream(seed=4).baseline(1_000).body


def test_write_rows_fills_missing_columns_and_rejects_unknown() -> None:
    stream = TicketStream()
    body = stream.write_rows([{"ticket_id": "INC1", "location_name": 'A, "B"'}])
    header, rows = parse(body)
    assert tuple(header) == CSV_COLUMNS
    assert rows[0][0] == "INC1" and rows[0][15] == 'A, "B"'
    assert rows[0].count("") == len(CSV_COLUMNS) - 2
    with pytest.raises(ValueError, match="unknown columns"):
        stream.write_rows([{"ticket_idd": "x"}])


@pytest.mark.parametrize(
    "row",
    [
        [],
        ["a", "b", ""],
        ["", "", ""],
        [""],
        ["only"],
        ["x,y", "z"],
        ['say "hi"', "q"],
        ["line\nbreak", "cr\rhere"],
        ["  padded ", " "],
        ["ünïcode", "€"],
    ],
)
def test_csv_lines_matches_csv_writer(row: list[str]) -> None:
    expected = io.StringIO()
    csv.writer(expected).writerow(row)
    assert list(csv_lines([row])) == [expected.getvalue()]


def test_every_value_written_has_the_literal_shape_the_ingester_accepts() -> None:
    """VALUE_SHAPES and the key rule describe what the exporter writes: none of its rows
    may be set aside for them (deltas with repeats included)."""
    stream = TicketStream(seed=11)
    files = [stream.baseline(2000, sentinel=True), stream.delta(300, repeat_ids=20)]
    for stream_file in files:
        for record in dict_rows(stream_file):
            if record["ticket_id"].startswith(SENTINEL_PREFIX):
                continue
            assert key_problem(record["ticket_id"]) is None, record["ticket_id"]
            assert record["updated_at"], record["ticket_id"]
            for column, kind in COLUMN_KINDS.items():
                shape = VALUE_SHAPES.get(kind)
                assert shape is None or shape.matches(record[column]), (column, record[column])
