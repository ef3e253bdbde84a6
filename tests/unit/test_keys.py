"""Stream keys: only ``automations/<ds>/changes/YYYY-MM-DDTHH-mm-ss.csv`` are stream files."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from tickets_ingest.core.keys import (
    DATASET_PATTERN,
    SOURCE_TZ,
    changes_prefix,
    dataset_of_key,
    file_name,
    key_timestamp,
    parse_stream_key,
    processed_key,
    quarantine_key,
    watermark_age,
)
from tickets_ingest.models import WatermarkAge

BASELINE = "automations/inc/changes/2026-06-22T15-50-39.csv"


def stamp(moment: datetime) -> str:
    """The exporter's name format, built by hand (strftime does not zero-pad years < 1000)."""
    return (
        f"{moment.year:04d}-{moment.month:02d}-{moment.day:02d}"
        f"T{moment.hour:02d}-{moment.minute:02d}-{moment.second:02d}.csv"
    )


moments = st.datetimes(min_value=datetime(1000, 1, 1), max_value=datetime(9999, 12, 31, 23, 59, 59))


class TestPrefixes:
    def test_changes_prefix(self) -> None:
        assert changes_prefix("crq") == "automations/crq/changes/"

    def test_processed_key(self) -> None:
        assert (
            processed_key("inc", "2026-06-22T15-50-39.csv")
            == "automations/inc/processed/2026-06-22T15-50-39.csv"
        )

    def test_quarantine_key(self) -> None:
        assert (
            quarantine_key("crq", "2026-06-22T15-50-39.csv")
            == "automations/crq/quarantine/2026-06-22T15-50-39.csv"
        )

    @pytest.mark.parametrize(
        ("key", "name"),
        [
            (BASELINE, "2026-06-22T15-50-39.csv"),
            ("plain.csv", "plain.csv"),
            ("automations/inc/changes/", ""),
        ],
    )
    def test_file_name(self, key: str, name: str) -> None:
        assert file_name(key) == name


class TestParseStreamKey:
    def test_baseline_key_from_the_reference(self) -> None:
        parsed = parse_stream_key("inc", BASELINE)
        assert parsed == datetime(2026, 6, 22, 15, 50, 39, tzinfo=SOURCE_TZ)

    def test_timestamp_is_aware_nairobi_time(self) -> None:
        parsed = parse_stream_key("inc", BASELINE)
        assert parsed is not None
        assert parsed.tzinfo is SOURCE_TZ
        assert parsed.utcoffset() == timedelta(hours=3)
        assert parsed.astimezone(SOURCE_TZ).replace(tzinfo=None) == datetime(
            2026, 6, 22, 15, 50, 39
        )

    def test_crq_stream(self) -> None:
        key = "automations/crq/changes/2026-06-22T17-15-41.csv"
        assert parse_stream_key("crq", key) == datetime(2026, 6, 22, 17, 15, 41, tzinfo=SOURCE_TZ)

    def test_leap_day(self) -> None:
        key = "automations/inc/changes/2028-02-29T00-00-00.csv"
        assert parse_stream_key("inc", key) == datetime(2028, 2, 29, tzinfo=SOURCE_TZ)

    @pytest.mark.parametrize(
        "key",
        [
            # Other places in the bucket.
            "automations/crq/changes/2026-06-22T15-50-39.csv",  # another dataset
            "automations/inc/2026-06-18T17-00-05.csv",  # legacy root snapshot
            "automations/crq/2026-06-18T17-00-05.csv",
            "automations/inc/processed/2026-06-22T15-50-39.csv",
            "automations/inc/quarantine/2026-06-22T15-50-39.csv",
            "automations/inc/full/2026-06-22T15-50-39.csv",
            "automations/inc/changes/sub/2026-06-22T15-50-39.csv",  # not directly under
            "automations/inc/changes2/2026-06-22T15-50-39.csv",
            "automations/incx/changes/2026-06-22T15-50-39.csv",
            "/automations/inc/changes/2026-06-22T15-50-39.csv",
            "Automations/inc/changes/2026-06-22T15-50-39.csv",
            "fuel_records/2026-06-22T15-50-39.csv",
            # Names that are not the exact format.
            "automations/inc/changes/",
            "automations/inc/changes/latest.csv",
            "automations/inc/changes/latest.json",
            "automations/inc/changes/2026-06-22T15-50-39.csv.tmp",
            "automations/inc/changes/2026-06-22T15-50-39.CSV",
            "automations/inc/changes/2026-06-22T15-50-39.json",
            "automations/inc/changes/2026-06-22T15-50-39",
            "automations/inc/changes/2026-06-22T15-50-39.csv\n",
            "automations/inc/changes/ 2026-06-22T15-50-39.csv",
            "automations/inc/changes/x2026-06-22T15-50-39.csv",
            "automations/inc/changes/2026-06-22T15:50:39.csv",
            "automations/inc/changes/2026-06-22 15-50-39.csv",
            "automations/inc/changes/2026-06-22t15-50-39.csv",
            "automations/inc/changes/2026-6-22T15-50-39.csv",
            "automations/inc/changes/2026-06-22T15-50-9.csv",
            "automations/inc/changes/26-06-22T15-50-39.csv",
            "automations/inc/changes/20260622T155039.csv",
            # Well-formed but impossible dates and times.
            "automations/inc/changes/2026-02-30T10-00-00.csv",
            "automations/inc/changes/2026-02-29T10-00-00.csv",
            "automations/inc/changes/2026-13-01T10-00-00.csv",
            "automations/inc/changes/2026-00-10T10-00-00.csv",
            "automations/inc/changes/2026-06-00T10-00-00.csv",
            "automations/inc/changes/2026-06-22T24-00-00.csv",
            "automations/inc/changes/2026-06-22T15-60-00.csv",
            "automations/inc/changes/2026-06-22T15-50-60.csv",
            "automations/inc/changes/2026-06-22T15-50-61.csv",
        ],
    )
    def test_not_a_stream_file(self, key: str) -> None:
        assert parse_stream_key("inc", key) is None

    @pytest.mark.parametrize(
        "name",
        [
            "\uff12\uff10\uff12\uff16-06-22T15-50-39.csv",  # fullwidth digits
            "\u0662\u0660\u0662\u0666-06-22T15-50-39.csv",  # Arabic-Indic digits
            "2026-06-22T15-50-3\u0669.csv",  # one Arabic-Indic nine
        ],
    )
    def test_non_ascii_digits_are_not_a_stream_file(self, name: str) -> None:
        # Such a key sorts after every ASCII key, so accepting it would make it the watermark
        # and turn every later genuine file into a LATE one.
        assert parse_stream_key("inc", f"automations/inc/changes/{name}") is None
        assert key_timestamp(f"automations/inc/changes/{name}") is None

    @settings(max_examples=30, deadline=None, database=None)
    @given(moments)
    def test_round_trip(self, moment: datetime) -> None:
        key = changes_prefix("inc") + stamp(moment)
        assert parse_stream_key("inc", key) == moment.replace(microsecond=0, tzinfo=SOURCE_TZ)

    @settings(max_examples=30, deadline=None, database=None)
    @given(moments, moments)
    def test_key_order_is_time_order(self, a: datetime, b: datetime) -> None:
        a, b = a.replace(microsecond=0), b.replace(microsecond=0)
        key_a, key_b = changes_prefix("inc") + stamp(a), changes_prefix("inc") + stamp(b)
        assert (key_a < key_b) == (a < b)
        assert (key_a == key_b) == (a == b)
        parsed_a, parsed_b = parse_stream_key("inc", key_a), parse_stream_key("inc", key_b)
        assert parsed_a is not None
        assert parsed_b is not None
        assert (key_a < key_b) == (parsed_a < parsed_b)

    @settings(max_examples=30, deadline=None, database=None)
    @given(st.text(max_size=60))
    def test_arbitrary_names_agree_with_the_other_parsers(self, name: str) -> None:
        key = changes_prefix("inc") + name
        parsed = parse_stream_key("inc", key)
        if parsed is not None:
            assert dataset_of_key(key) == "inc"
            assert key_timestamp(key) == parsed
            assert len(name) == len("2026-06-22T15-50-39.csv")
            assert name.isascii()


class TestKeyTimestamp:
    @pytest.mark.parametrize(
        "key",
        [
            BASELINE,
            "automations/inc/processed/2026-06-22T15-50-39.csv",
            "automations/crq/2026-06-22T15-50-39.csv",
            "2026-06-22T15-50-39.csv",
        ],
    )
    def test_any_stream_style_name(self, key: str) -> None:
        assert key_timestamp(key) == datetime(2026, 6, 22, 15, 50, 39, tzinfo=SOURCE_TZ)

    @pytest.mark.parametrize(
        "key",
        [
            "",
            "automations/inc/changes/",
            "automations/inc/changes/latest.csv",
            "automations/inc/changes/2026-02-30T10-00-00.csv",
            "automations/inc/changes/2026-06-22T15-50-39.csv.tmp",
        ],
    )
    def test_not_stream_style(self, key: str) -> None:
        assert key_timestamp(key) is None


class TestDatasetOfKey:
    @pytest.mark.parametrize(
        ("key", "dataset"),
        [
            (BASELINE, "inc"),
            ("automations/crq/changes/2026-06-22T15-50-39.csv", "crq"),
            ("automations/my_set2/changes/anything", "my_set2"),
        ],
    )
    def test_changes_keys(self, key: str, dataset: str) -> None:
        assert dataset_of_key(key) == dataset

    @pytest.mark.parametrize(
        "key",
        [
            "",
            "automations/inc/2026-06-22T15-50-39.csv",
            "automations/inc/processed/2026-06-22T15-50-39.csv",
            "automations/inc/changes/sub/2026-06-22T15-50-39.csv",
            "other/inc/changes/2026-06-22T15-50-39.csv",
            "automations/INC/changes/2026-06-22T15-50-39.csv",
            "automations/1inc/changes/2026-06-22T15-50-39.csv",
            "automations/in-c/changes/2026-06-22T15-50-39.csv",
            "automations//changes/2026-06-22T15-50-39.csv",
            f"automations/{'a' * 32}/changes/2026-06-22T15-50-39.csv",
        ],
    )
    def test_not_changes_keys(self, key: str) -> None:
        assert dataset_of_key(key) is None

    def test_longest_dataset_name(self) -> None:
        name = "a" * 31
        assert DATASET_PATTERN.fullmatch(name)
        assert dataset_of_key(f"automations/{name}/changes/x.csv") == name


class TestWatermarkAge:
    """Lag is never negative: a watermark ahead of the clock is skew, or a future file."""

    NOW = datetime(2026, 6, 22, 12, 50, 39, tzinfo=UTC)  # 15:50:39 in Nairobi

    def test_behind(self) -> None:
        age = watermark_age(BASELINE, self.NOW + timedelta(minutes=12), 3600)
        assert age == WatermarkAge(lag_seconds=720.0, clock_skew_seconds=None, in_future=False)

    def test_exactly_now(self) -> None:
        assert watermark_age(BASELINE, self.NOW, 0) == WatermarkAge(0.0, None, False)

    def test_ahead_within_the_tolerance_is_clock_skew(self) -> None:
        age = watermark_age(BASELINE, self.NOW - timedelta(minutes=5), 3600)
        assert age == WatermarkAge(lag_seconds=0.0, clock_skew_seconds=300.0, in_future=False)

    def test_ahead_beyond_the_tolerance_is_a_future_watermark(self) -> None:
        future = "automations/inc/changes/2099-06-22T11-00-00.csv"
        age = watermark_age(future, self.NOW, 3600)
        assert age.lag_seconds is None and age.in_future
        assert age.clock_skew_seconds is not None and age.clock_skew_seconds > 2e9

    def test_no_watermark(self) -> None:
        assert watermark_age(None, self.NOW, 3600) == WatermarkAge(None, None, False)
        assert watermark_age("automations/inc/changes/x.csv", self.NOW, 3600).lag_seconds is None

    @settings(max_examples=50, deadline=None, database=None)
    @given(st.integers(-(10**9), 10**9), st.integers(0, 604800))
    def test_never_negative(self, offset: int, tolerance: int) -> None:
        age = watermark_age(BASELINE, self.NOW + timedelta(seconds=offset), tolerance)
        assert age.lag_seconds is None or age.lag_seconds >= 0
        assert age.clock_skew_seconds is None or age.clock_skew_seconds > 0
        assert age.in_future == (age.lag_seconds is None)
