"""The CSV contract and the header check (plan_header)."""

from __future__ import annotations

from collections.abc import Sequence

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from tickets_ingest.core.schema import (
    ALARM_COLUMN,
    COLUMN_KINDS,
    CSV_COLUMNS,
    DEFAULT_DROP_FIELDS,
    KEY_COLUMN,
    MAX_KEY_LENGTH,
    NORMALIZED_COLUMNS,
    RECENCY_COLUMN,
    SENTINEL_PREFIX,
    VALUE_SHAPES,
    HeaderPlan,
    Kind,
    key_problem,
    plan_header,
)
from tickets_ingest.errors import FileRejected
from tickets_ingest.models import DriftPolicy, HeaderDrift

KEY = "automations/inc/changes/2026-06-22T15-50-39.csv"


def check_header(key: str, header: Sequence[str]) -> tuple[str, ...]:
    """The file's columns under the default policy, reject."""
    return plan_header(key, header).columns


# Copied from the source contract (shared/reference/ticket-export-stream.md).
CONTRACT = """
ticket_id, source_type, service_type, bucket, raw_status, normalized_status,
created_at_service, scheduled_at, closed_at, last_seen_at, first_seen_at,
week_start, week_end, cluster, region, location_name, latitude, longitude,
department, assigned_team, owner, sla_status, mttr, is_auto_created,
is_auto_closed, is_alarm, is_actionable, source_s3_bucket, source_s3_key,
source_snapshot_id, created_at, updated_at
"""


class TestContract:
    def test_columns_match_the_contract_in_order(self) -> None:
        assert tuple(c.strip() for c in CONTRACT.replace("\n", "").split(",")) == CSV_COLUMNS
        assert len(CSV_COLUMNS) == 32
        assert len(set(CSV_COLUMNS)) == 32

    def test_every_column_has_a_kind(self) -> None:
        assert tuple(COLUMN_KINDS) == CSV_COLUMNS
        assert all(isinstance(kind, Kind) for kind in COLUMN_KINDS.values())

    @pytest.mark.parametrize(
        ("column", "kind"),
        [
            ("ticket_id", Kind.TEXT),
            ("region", Kind.TEXT),
            ("raw_status", Kind.TEXT),
            ("mttr", Kind.NUMERIC),
            ("latitude", Kind.DOUBLE),
            ("longitude", Kind.DOUBLE),
            ("week_start", Kind.DATE),
            ("week_end", Kind.DATE),
            ("created_at", Kind.TIMESTAMPTZ),
            ("updated_at", Kind.TIMESTAMPTZ),
            ("closed_at", Kind.TIMESTAMPTZ),
            ("created_at_service", Kind.TIMESTAMPTZ),
            ("is_alarm", Kind.BOOLEAN),
            ("is_auto_closed", Kind.BOOLEAN),
            ("source_snapshot_id", Kind.TEXT),
        ],
    )
    def test_kinds(self, column: str, kind: Kind) -> None:
        assert COLUMN_KINDS[column] is kind

    def test_kind_values_are_sql_types(self) -> None:
        assert {k.value for k in Kind} == {
            "text",
            "timestamptz",
            "date",
            "double precision",
            "numeric",
            "boolean",
        }

    def test_special_columns(self) -> None:
        assert KEY_COLUMN == "ticket_id"
        assert RECENCY_COLUMN == "updated_at"
        assert ALARM_COLUMN == "is_alarm"
        assert COLUMN_KINDS[RECENCY_COLUMN] is Kind.TIMESTAMPTZ
        assert COLUMN_KINDS[ALARM_COLUMN] is Kind.BOOLEAN
        assert SENTINEL_PREFIX == "EXPORT STOPPED"

    def test_normalized_columns_are_text(self) -> None:
        assert NORMALIZED_COLUMNS == ("region", "raw_status")
        assert all(COLUMN_KINDS[c] is Kind.TEXT for c in NORMALIZED_COLUMNS)

    def test_default_drop_fields_are_droppable(self) -> None:
        assert set(DEFAULT_DROP_FIELDS) <= set(CSV_COLUMNS)
        assert KEY_COLUMN not in DEFAULT_DROP_FIELDS
        assert RECENCY_COLUMN not in DEFAULT_DROP_FIELDS


class TestCheckHeader:
    def test_exporter_order(self) -> None:
        assert check_header(KEY, list(CSV_COLUMNS)) == CSV_COLUMNS

    def test_any_order_returned_as_in_the_file(self) -> None:
        header = list(reversed(CSV_COLUMNS))
        assert check_header(KEY, header) == tuple(header)

    def test_surrounding_spaces_ignored(self) -> None:
        header = [f"  {c}\t" for c in CSV_COLUMNS]
        assert check_header(KEY, header) == CSV_COLUMNS

    def test_accepts_a_tuple(self) -> None:
        assert check_header(KEY, CSV_COLUMNS) == CSV_COLUMNS

    def test_missing(self) -> None:
        header = [c for c in CSV_COLUMNS if c not in {"region", "mttr"}]
        with pytest.raises(FileRejected) as info:
            check_header(KEY, header)
        error = info.value
        assert error.key == KEY
        assert error.line == 1
        assert error.reason == "bad header: missing column(s) 'region', 'mttr'"

    def test_unknown(self) -> None:
        with pytest.raises(FileRejected) as info:
            check_header(KEY, [*CSV_COLUMNS, "extra", ""])
        assert info.value.reason == "bad header: unknown column(s) 'extra', ''"
        assert info.value.line == 1

    def test_duplicated(self) -> None:
        with pytest.raises(FileRejected) as info:
            check_header(KEY, [*CSV_COLUMNS, "region", " ticket_id "])
        assert info.value.reason == "bad header: duplicated column(s) 'region', 'ticket_id'"

    def test_all_problems_reported_together(self) -> None:
        header = [c for c in CSV_COLUMNS if c != "updated_at"] + ["owner", "Updated_At"]
        with pytest.raises(FileRejected) as info:
            check_header(KEY, header)
        reason = info.value.reason
        assert reason.startswith("bad header: ")
        assert "duplicated column(s) 'owner'" in reason
        assert "unknown column(s) 'Updated_At'" in reason
        assert "missing column(s) 'updated_at'" in reason
        assert reason.index("duplicated") < reason.index("unknown") < reason.index("missing")
        assert str(info.value).startswith(f"{KEY}, line 1: bad header")

    def test_names_are_case_sensitive(self) -> None:
        with pytest.raises(FileRejected, match="unknown column"):
            check_header(KEY, [c.upper() for c in CSV_COLUMNS])

    def test_empty_header(self) -> None:
        with pytest.raises(FileRejected, match="missing column") as info:
            check_header(KEY, [])
        for column in CSV_COLUMNS:
            assert repr(column) in info.value.reason

    def test_bom_in_a_name_is_not_whitespace(self) -> None:
        header = ["\ufeffticket_id", *CSV_COLUMNS[1:]]
        with pytest.raises(FileRejected, match="unknown column"):
            check_header(KEY, header)

    @settings(max_examples=30, deadline=None, database=None)
    @given(st.permutations(CSV_COLUMNS))
    def test_every_permutation_accepted(self, header: list[str]) -> None:
        assert check_header(KEY, header) == tuple(header)

    @settings(max_examples=30, deadline=None, database=None)
    @given(st.permutations(CSV_COLUMNS), st.integers(0, 31))
    def test_any_single_missing_column_is_named(self, header: list[str], drop: int) -> None:
        missing = header.pop(drop)
        with pytest.raises(FileRejected) as info:
            check_header(KEY, header)
        assert info.value.reason == f"bad header: missing column(s) {missing!r}"


class TestValueShapes:
    """The export's literal shapes (what migration 0003's tickets.literal lets through)."""

    def test_every_kind_with_special_words_has_a_shape(self) -> None:
        assert set(VALUE_SHAPES) == {Kind.TIMESTAMPTZ, Kind.DATE, Kind.DOUBLE, Kind.NUMERIC}

    @pytest.mark.parametrize(
        ("kind", "value"),
        [
            (Kind.TIMESTAMPTZ, "2026-06-22 15:50:39"),
            (Kind.TIMESTAMPTZ, "2026-06-22T12:50:39Z"),
            (Kind.TIMESTAMPTZ, "2026-06-22 15:50:39.5+03"),
            (Kind.TIMESTAMPTZ, " 2026-06-22 15:50:39+03:00 "),
            (Kind.DATE, "2026-06-15"),
            (Kind.DOUBLE, "-1.264123"),
            (Kind.DOUBLE, "1e-5"),
            (Kind.NUMERIC, "6.25"),
            (Kind.NUMERIC, ""),
        ],
    )
    def test_literals_match(self, kind: Kind, value: str) -> None:
        assert VALUE_SHAPES[kind].matches(value)

    @pytest.mark.parametrize(
        "word",
        ["now", "today", "tomorrow", "yesterday", "epoch", "infinity", "-infinity", "J2461214"],
    )
    def test_special_words_do_not_match_a_timestamp_or_date(self, word: str) -> None:
        for kind in (Kind.TIMESTAMPTZ, Kind.DATE):
            assert not VALUE_SHAPES[kind].matches(word)
            assert not VALUE_SHAPES[kind].matches(word.upper())

    @pytest.mark.parametrize("word", ["NaN", "nan", "Infinity", "-Infinity", "inf", "+inf"])
    def test_special_words_do_not_match_a_number(self, word: str) -> None:
        for kind in (Kind.DOUBLE, Kind.NUMERIC):
            assert not VALUE_SHAPES[kind].matches(word)

    def test_a_shape_is_the_whole_value(self) -> None:
        assert not VALUE_SHAPES[Kind.DATE].matches("2026-06-15x")
        assert not VALUE_SHAPES[Kind.DOUBLE].matches("1.5\n")


class TestKeyRule:
    @pytest.mark.parametrize(
        ("ticket_id", "problem"),
        [
            ("INC1 ", "leading or trailing whitespace"),
            (" INC1", "leading or trailing whitespace"),
            ("INC1\u00a0", "leading or trailing whitespace"),
            ("\u2009INC1", "leading or trailing whitespace"),
            ("INC1\u200b", "leading or trailing whitespace"),
            ("\ufeffINC1", "leading or trailing whitespace"),
            ("INC1\t", "a control character"),
            ("IN\nC1", "a control character"),
            ("INC1\r\n", "a control character"),
            ("INC\x00", None),  # NUL cannot reach the database (COPY refuses the file)
            ("INC\x1b[0m", "a control character"),
            ("INC\x9b", "a control character"),
            ("K" * (MAX_KEY_LENGTH + 1), f"longer than {MAX_KEY_LENGTH} characters"),
        ],
    )
    def test_refused(self, ticket_id: str, problem: str | None) -> None:
        assert key_problem(ticket_id) == problem

    @pytest.mark.parametrize("ticket_id", ["INC1", "INC 1", "K" * MAX_KEY_LENGTH, "ÉCHO-7/ä"])
    def test_accepted(self, ticket_id: str) -> None:
        assert key_problem(ticket_id) is None


class TestPlanHeader:
    """The header under SCHEMA_DRIFT=rescue (reject is check_header, above)."""

    def test_a_clean_header_has_no_drift(self) -> None:
        plan = plan_header(KEY, list(CSV_COLUMNS), DriftPolicy.RESCUE)
        assert plan == HeaderPlan(CSV_COLUMNS)
        assert plan.added == () and plan.missing == ()

    def test_added_and_missing_are_named_in_order(self) -> None:
        header = ["site", *(c for c in CSV_COLUMNS if c not in {"owner", "mttr"}), " priority "]
        plan = plan_header(KEY, header, DriftPolicy.RESCUE)
        assert plan.columns == tuple(h.strip() for h in header)
        assert plan.drift == HeaderDrift(added=("site", "priority"), missing=("owner", "mttr"))
        assert plan.drift.as_metadata() == {
            "added": ["site", "priority"],
            "missing": ["owner", "mttr"],
        }

    def test_reject_is_the_default_policy(self) -> None:
        with pytest.raises(FileRejected, match="unknown column"):
            plan_header(KEY, [*CSV_COLUMNS, "priority"])

    @pytest.mark.parametrize(
        ("header", "reason"),
        [
            (
                [c for c in CSV_COLUMNS if c != KEY_COLUMN],
                "bad header: missing column(s) 'ticket_id' "
                "(required even with SCHEMA_DRIFT=rescue)",
            ),
            (
                [c for c in CSV_COLUMNS if c not in {KEY_COLUMN, RECENCY_COLUMN}],
                "bad header: missing column(s) 'ticket_id', 'updated_at' "
                "(required even with SCHEMA_DRIFT=rescue)",
            ),
            ([*CSV_COLUMNS, "x", " x"], "bad header: duplicated column(s) 'x'"),
            ([*CSV_COLUMNS, "", " "], "bad header: empty column name(s) at position(s) 33, 34"),
            ([*CSV_COLUMNS, "a\tb"], "bad header: control character(s) in column name(s) 'a\\tb'"),
        ],
    )
    def test_what_rescue_still_rejects(self, header: list[str], reason: str) -> None:
        with pytest.raises(FileRejected) as info:
            plan_header(KEY, header, DriftPolicy.RESCUE)
        assert info.value.reason == reason
        assert info.value.line == 1

    @settings(max_examples=30, deadline=None, database=None)
    @given(st.sets(st.sampled_from(CSV_COLUMNS[1:-1]), max_size=30))
    def test_any_missing_column_but_the_required_is_left_alone(self, dropped: set[str]) -> None:
        header = [c for c in CSV_COLUMNS if c not in dropped]
        plan = plan_header(KEY, header, DriftPolicy.RESCUE)
        assert set(plan.missing) == dropped and plan.added == ()
