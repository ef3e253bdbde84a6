"""plan_sync: pending (baseline, then delta), late, to_archive, conflicts, ignored; by key."""

from __future__ import annotations

from datetime import datetime, timedelta

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from tickets_ingest.core.keys import SOURCE_TZ, changes_prefix, parse_stream_key, processed_key
from tickets_ingest.core.plan import (
    classify_listing,
    normalize_etag,
    plan_missing,
    plan_replay,
    plan_sync,
)
from tickets_ingest.models import Conflict, ExportType, Plan, PlannedFile, StreamObject

START = datetime(2026, 6, 22, 15, 50, 39)


def key(minutes: int, dataset: str = "inc") -> str:
    moment = START + timedelta(minutes=minutes)
    return changes_prefix(dataset) + moment.strftime("%Y-%m-%dT%H-%M-%S") + ".csv"


def obj(k: str, etag: str | None = None, size: int = 10) -> StreamObject:
    timestamp = parse_stream_key(k.split("/")[1], k)
    assert timestamp is not None
    return StreamObject(key=k, etag=etag or f"etag-{k[-12:-4]}", size=size, timestamp=timestamp)


def keys_of(planned: tuple[PlannedFile, ...]) -> list[str]:
    return [p.obj.key for p in planned]


def types_of(planned: tuple[PlannedFile, ...]) -> list[ExportType]:
    return [p.export_type for p in planned]


class TestNormalizeEtag:
    @pytest.mark.parametrize(
        ("raw", "bare"),
        [
            ('"abc123"', "abc123"),
            ("abc123", "abc123"),
            ('"d41d8cd98f00b204e9800998ecf8427e-3"', "d41d8cd98f00b204e9800998ecf8427e-3"),
            ("", ""),
        ],
    )
    def test_strips_quotes(self, raw: str, bare: str) -> None:
        assert normalize_etag(raw) == bare


class TestClassifyListing:
    def test_splits_stream_files_from_the_rest(self) -> None:
        listing = [
            (key(10), '"e2"', 200),
            ("automations/inc/changes/latest.csv", '"x"', 1),
            (key(0), '"e1"', 100),
            ("automations/inc/changes/2026-06-22T15-50-39.csv.tmp", '"y"', 2),
            ("automations/inc/changes/", '"z"', 0),
        ]
        files, ignored = classify_listing("inc", listing)
        assert [(f.key, f.etag, f.size) for f in files] == [
            (key(10), "e2", 200),
            (key(0), "e1", 100),
        ]
        assert files[1].timestamp == datetime(2026, 6, 22, 15, 50, 39, tzinfo=SOURCE_TZ)
        assert ignored == sorted(
            [
                "automations/inc/changes/latest.csv",
                "automations/inc/changes/2026-06-22T15-50-39.csv.tmp",
                "automations/inc/changes/",
            ]
        )

    def test_other_dataset_keys_are_ignored(self) -> None:
        files, ignored = classify_listing("inc", [(key(0, "crq"), "e", 1)])
        assert files == []
        assert ignored == [key(0, "crq")]

    def test_empty_listing(self) -> None:
        assert classify_listing("inc", []) == ([], [])

    def test_unquoted_etag_kept(self) -> None:
        files, _ = classify_listing("inc", [(key(0), "bare", 1)])
        assert files[0].etag == "bare"


class TestPlanSync:
    def test_fresh_stream_baseline_then_deltas_in_key_order(self) -> None:
        files = [obj(key(30)), obj(key(0)), obj(key(2)), obj(key(80))]
        plan = plan_sync("inc", files, {}, None)
        assert keys_of(plan.to_apply) == [key(0), key(2), key(30), key(80)]
        assert types_of(plan.to_apply) == [
            ExportType.BASELINE,
            ExportType.DELTA,
            ExportType.DELTA,
            ExportType.DELTA,
        ]
        assert plan.pending == plan.to_apply
        assert plan.late == ()
        assert plan.to_archive == ()
        assert plan.conflicts == ()
        assert plan.watermark is None
        assert plan.dataset == "inc"

    def test_single_file_onto_empty_watermark_is_baseline(self) -> None:
        plan = plan_sync("inc", [obj(key(0))], {}, None)
        assert types_of(plan.to_apply) == [ExportType.BASELINE]

    def test_empty(self) -> None:
        plan = plan_sync("inc", [], {}, None)
        assert plan == Plan(
            dataset="inc",
            watermark=None,
            to_apply=(),
            to_archive=(),
            conflicts=(),
            ignored=(),
        )

    def test_after_watermark_everything_is_delta(self) -> None:
        files = [obj(key(5)), obj(key(10))]
        plan = plan_sync("inc", files, {}, key(0))
        assert types_of(plan.to_apply) == [ExportType.DELTA, ExportType.DELTA]
        assert plan.watermark == key(0)

    def test_late_files_at_or_before_watermark(self) -> None:
        files = [obj(key(0)), obj(key(5)), obj(key(10)), obj(key(20))]
        plan = plan_sync("inc", files, {}, key(10))
        assert keys_of(plan.to_apply) == [key(0), key(5), key(10), key(20)]
        assert types_of(plan.to_apply) == [
            ExportType.LATE,
            ExportType.LATE,
            ExportType.LATE,  # equal to the watermark but never applied
            ExportType.DELTA,
        ]
        assert keys_of(plan.late) == [key(0), key(5), key(10)]
        assert keys_of(plan.pending) == [key(20)]

    def test_watermark_need_not_be_listed(self) -> None:
        # The watermark's own file was archived to processed/ long ago.
        plan = plan_sync("inc", [obj(key(3)), obj(key(7))], {}, key(5))
        assert types_of(plan.to_apply) == [ExportType.LATE, ExportType.DELTA]

    def test_applied_same_etag_is_archived(self) -> None:
        files = [obj(key(0), "a"), obj(key(5), "b"), obj(key(10), "c")]
        plan = plan_sync("inc", files, {key(0): "a", key(5): "b"}, key(5))
        assert [o.key for o in plan.to_archive] == [key(0), key(5)]
        assert keys_of(plan.to_apply) == [key(10)]
        assert types_of(plan.to_apply) == [ExportType.DELTA]

    def test_applied_with_another_etag_is_a_conflict(self) -> None:
        files = [obj(key(0), "new"), obj(key(10), "c")]
        plan = plan_sync("inc", files, {key(0): "old"}, key(0))
        assert plan.conflicts == (Conflict(obj=files[0], applied_etag="old"),)
        assert plan.to_archive == ()
        assert keys_of(plan.to_apply) == [key(10)]

    def test_conflict_after_watermark_too(self) -> None:
        # A late file applied earlier (recorded in the ledger) and since overwritten.
        files = [obj(key(20), "new")]
        plan = plan_sync("inc", files, {key(20): "old"}, key(10))
        assert [c.obj.key for c in plan.conflicts] == [key(20)]
        assert plan.to_apply == ()

    def test_applied_files_do_not_consume_the_baseline_elsewhere(self) -> None:
        files = [obj(key(0)), obj(key(1))]
        plan = plan_sync("inc", files, {}, key(0))
        assert ExportType.BASELINE not in types_of(plan.to_apply)

    def test_everything_sorted_regardless_of_input_order(self) -> None:
        files = [
            obj(key(9), "x9"),
            obj(key(1), "x1"),
            obj(key(7), "x7"),
            obj(key(3), "x3"),
            obj(key(5), "x5"),
            obj(key(2), "x2"),
        ]
        applied = {key(9): "x9", key(1): "x1", key(7): "other", key(3): "other"}
        plan = plan_sync("inc", files, applied, key(4))
        assert [o.key for o in plan.to_archive] == [key(1), key(9)]
        assert [c.obj.key for c in plan.conflicts] == [key(3), key(7)]
        assert keys_of(plan.to_apply) == [key(2), key(5)]
        assert types_of(plan.to_apply) == [ExportType.LATE, ExportType.DELTA]

    def test_ignored_are_sorted_and_passed_through(self) -> None:
        plan = plan_sync("inc", [], {}, None, ignored=["b", "a", "c"])
        assert plan.ignored == ("a", "b", "c")

    def test_accepts_any_iterable(self) -> None:
        plan = plan_sync("inc", iter([obj(key(1)), obj(key(0))]), {}, None)
        assert keys_of(plan.to_apply) == [key(0), key(1)]


# --- properties ---------------------------------------------------------------------------


@st.composite
def scenarios(
    draw: st.DrawFn,
) -> tuple[list[StreamObject], dict[str, str], str | None]:
    offsets = draw(st.lists(st.integers(0, 5000), unique=True, max_size=25))
    files: list[StreamObject] = []
    applied: dict[str, str] = {}
    for offset in offsets:
        k = key(offset)
        etag = f"e{offset}"
        files.append(obj(k, etag))
        state = draw(st.sampled_from(["new", "applied", "changed"]))
        if state == "applied":
            applied[k] = etag
        elif state == "changed":
            applied[k] = etag + "-old"
    # Ledger entries for files already gone from changes/ do not matter.
    for offset in draw(st.lists(st.integers(5001, 6000), max_size=3)):
        applied[key(offset)] = "gone"
    files = draw(st.permutations(files))
    watermark = draw(st.one_of(st.none(), st.integers(-1, 5001).map(key)))
    return files, applied, watermark


@settings(max_examples=40, deadline=None, database=None)
@given(scenarios())
def test_plan_invariants(scenario: tuple[list[StreamObject], dict[str, str], str | None]) -> None:
    files, applied, watermark = scenario
    plan = plan_sync("inc", files, applied, watermark)

    applied_keys = keys_of(plan.to_apply)
    archived_keys = [o.key for o in plan.to_archive]
    conflict_keys = [c.obj.key for c in plan.conflicts]

    # Every file lands in exactly one bucket, unchanged.
    buckets = applied_keys + archived_keys + conflict_keys
    assert sorted(buckets) == sorted(f.key for f in files)
    assert len(set(buckets)) == len(buckets)
    by_key = {f.key: f for f in files}
    for planned in plan.to_apply:
        assert planned.obj is by_key[planned.obj.key]

    # Ordered by key.
    assert applied_keys == sorted(applied_keys)
    assert archived_keys == sorted(archived_keys)
    assert conflict_keys == sorted(conflict_keys)

    # The right bucket.
    for planned in plan.to_apply:
        assert planned.obj.key not in applied
    for archived in plan.to_archive:
        assert applied[archived.key] == archived.etag
    for conflict in plan.conflicts:
        assert conflict.applied_etag == applied[conflict.obj.key]
        assert conflict.applied_etag != conflict.obj.etag

    # Export types.
    types = types_of(plan.to_apply)
    assert types.count(ExportType.BASELINE) <= 1
    assert ExportType.REPLAY not in types
    if watermark is None:
        assert ExportType.LATE not in types
        if types:
            assert types[0] is ExportType.BASELINE
    else:
        assert ExportType.BASELINE not in types
        for planned in plan.to_apply:
            late = planned.obj.key <= watermark
            assert (planned.export_type is ExportType.LATE) == late
            if not late:
                assert planned.export_type is ExportType.DELTA

    # pending/late partition to_apply.
    assert len(plan.pending) + len(plan.late) == len(plan.to_apply)
    assert all(p.export_type is not ExportType.LATE for p in plan.pending)

    # The input order does not matter.
    assert plan_sync("inc", list(reversed(files)), applied, watermark) == plan


# --- future-dated files (held) ------------------------------------------------------------

NOW = (START + timedelta(minutes=100)).replace(tzinfo=SOURCE_TZ)


class TestHeld:
    def test_a_file_beyond_the_tolerance_is_held_and_blocks_nothing(self) -> None:
        future = changes_prefix("inc") + "2099-06-22T11-00-00.csv"
        files = [obj(key(0)), obj(future), obj(key(50)), obj(key(99))]
        plan = plan_sync("inc", files, {}, None, now=NOW, future_tolerance_seconds=3600)
        assert [h.obj.key for h in plan.held] == [future]
        assert "FUTURE_TOLERANCE_SECONDS" in plan.held[0].reason
        assert "2099-06-22 11:00:00 EAT" in plan.held[0].reason
        # Files after it (by name) are not blocked by it: plain deltas, not late.
        assert keys_of(plan.to_apply) == [key(0), key(50), key(99)]
        assert types_of(plan.to_apply) == [ExportType.BASELINE, ExportType.DELTA, ExportType.DELTA]

    def test_within_the_tolerance_applies(self) -> None:
        files = [obj(key(100 + 60))]  # one hour ahead: clock skew, not a wrong date
        plan = plan_sync("inc", files, {}, key(0), now=NOW, future_tolerance_seconds=3600)
        assert plan.held == ()
        assert keys_of(plan.pending) == [key(160)]

    def test_just_beyond_the_tolerance_is_held(self) -> None:
        files = [obj(key(100 + 60).replace("-39.csv", "-40.csv"))]
        plan = plan_sync("inc", files, {}, key(0), now=NOW, future_tolerance_seconds=3600)
        assert len(plan.held) == 1 and plan.to_apply == ()

    def test_it_becomes_pending_when_its_time_comes(self) -> None:
        files = [obj(key(200))]
        early = plan_sync("inc", files, {}, key(0), now=NOW, future_tolerance_seconds=0)
        assert len(early.held) == 1
        later = NOW + timedelta(minutes=100)
        plan = plan_sync("inc", files, {}, key(0), now=later, future_tolerance_seconds=0)
        assert plan.held == () and keys_of(plan.pending) == [key(200)]

    def test_does_not_take_the_baseline(self) -> None:
        files = [obj(key(500)), obj(key(1))]
        plan = plan_sync("inc", files, {}, None, now=NOW, future_tolerance_seconds=60)
        assert types_of(plan.to_apply) == [ExportType.BASELINE]
        assert keys_of(plan.to_apply) == [key(1)]

    def test_an_applied_future_file_is_archived_or_a_conflict_not_held(self) -> None:
        # Applied before holding existed: the ledger decides, as for any applied file.
        files = [obj(key(500), "a"), obj(key(600), "new")]
        applied = {key(500): "a", key(600): "old"}
        plan = plan_sync("inc", files, applied, key(600), now=NOW, future_tolerance_seconds=60)
        assert plan.held == ()
        assert [o.key for o in plan.to_archive] == [key(500)]
        assert [c.obj.key for c in plan.conflicts] == [key(600)]

    def test_late_and_future_at_once_is_held(self) -> None:
        # A watermark pinned in the future makes a future file "late"; it is still held.
        files = [obj(key(300))]
        plan = plan_sync("inc", files, {}, key(900), now=NOW, future_tolerance_seconds=60)
        assert len(plan.held) == 1 and plan.to_apply == ()

    def test_without_now_nothing_is_held(self) -> None:
        plan = plan_sync("inc", [obj(changes_prefix("inc") + "2099-06-22T11-00-00.csv")], {}, None)
        assert plan.held == () and len(plan.to_apply) == 1


# --- replay --missing ---------------------------------------------------------------------


def archived(minutes: int, etag: str = "e") -> tuple[str, str, int]:
    return (processed_key("inc", key(minutes).rsplit("/", 1)[-1]), f'"{etag}"', 10)


class TestPlanMissing:
    def test_exactly_the_archived_files_the_ledger_lacks_in_order(self) -> None:
        listing = [archived(130), archived(0), archived(120), archived(110), archived(100)]
        # The restored ledger knows 10-00 and 12-00 (here 0 and 120); the late 11-00 (110)
        # and 13-00 (130) were applied after the backup.
        known = {key(0), key(100), key(120)}
        planned = plan_missing("inc", listing, known)
        assert [p.source_key for p in planned] == [key(110), key(130)]
        assert [p.obj.key for p in planned] == [
            processed_key("inc", key(110).rsplit("/", 1)[-1]),
            processed_key("inc", key(130).rsplit("/", 1)[-1]),
        ]
        assert {p.export_type for p in planned} == {ExportType.REPLAY}
        assert planned[0].obj.etag == "e"

    def test_nothing_missing(self) -> None:
        assert plan_missing("inc", [archived(0)], {key(0)}) == ()
        assert plan_missing("inc", [], set()) == ()

    def test_ignores_what_is_not_an_archived_stream_file(self) -> None:
        listing = [
            ("automations/inc/processed/notes.txt", "x", 1),
            ("automations/inc/changes/2026-06-22T15-50-39.csv", "x", 1),
            ("automations/crq/processed/2026-06-22T15-50-39.csv", "x", 1),
        ]
        assert plan_missing("inc", listing, set()) == ()

    def test_replay_from_a_name_would_miss_the_late_file(self) -> None:
        listing = [archived(0), archived(110), archived(120), archived(130)]
        by_name = plan_replay("inc", listing, key(130).rsplit("/", 1)[-1])
        assert [p.source_key for p in by_name] == [key(130)]
        missing = plan_missing("inc", listing, {key(0), key(120)})
        assert [p.source_key for p in missing] == [key(110), key(130)]


@settings(max_examples=40, deadline=None, database=None)
@given(
    st.lists(st.integers(0, 500), unique=True, max_size=20),
    st.lists(st.integers(0, 500), unique=True, max_size=20),
)
def test_missing_is_archived_minus_known(archived_at: list[int], known_at: list[int]) -> None:
    planned = plan_missing("inc", [archived(m) for m in archived_at], {key(m) for m in known_at})
    assert [p.source_key for p in planned] == sorted(
        key(m) for m in set(archived_at) - set(known_at)
    )
