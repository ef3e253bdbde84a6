"""Model-based test: random histories of one dataset, the engine against a pure model.

A hypothesis state machine uploads a baseline, then deltas, late files, re-uploads of
applied keys (conflicts), identical re-uploads and overwrites of pending files; it calls
sync (or does not: a missing event; or twice: a duplicated event) from two runtimes, in
dry-run or with a time budget, and injects at a random step boundary a crash, an upload
landing mid-sync or a concurrent sync. After every step the table, the ledger and the
bucket must equal tests/support/model.py's; every sync must follow the model's plan, reach
the same step boundaries and report the same files and counts.

TICKETS_MODEL_EXAMPLES sets the number of histories (default 100, about a minute in CI;
2000 for a heavy run).
"""

from __future__ import annotations

import os
import threading
import time
from collections import Counter
from collections.abc import Iterator
from dataclasses import dataclass, replace
from datetime import datetime, timedelta
from typing import Any, ClassVar

import pytest
from hypothesis import HealthCheck, settings
from hypothesis import strategies as st
from hypothesis.stateful import (
    RuleBasedStateMachine,
    initialize,
    invariant,
    rule,
    run_state_machine_as_test,
)

from tests.conftest import BUCKET, Env
from tests.support.model import (
    ARCHIVE_STEPS,
    CHANGES,
    DATASET,
    LATE,
    MAIN_STEPS,
    PROCESSED,
    Counts,
    Model,
    ModelObjectChanged,
    RowSpec,
    Stored,
    StreamFile,
    SyncOutcome,
    sentinel_row,
    stream_key,
)
from tickets_ingest import failpoints
from tickets_ingest.errors import ObjectChanged, SyncBusy
from tickets_ingest.failpoints import Step
from tickets_ingest.logic.runtime import Runtime
from tickets_ingest.logic.sync import SyncOptions, sync
from tickets_ingest.models import RowCounts, StreamObject, SyncReport
from tickets_ingest.settings import load_settings

EXAMPLES = int(os.environ.get("TICKETS_MODEL_EXAMPLES", "100"))
STEPS = 10
DAY = datetime(2026, 6, 22)
SLOT = 600  # seconds between consecutive in-order keys; late keys fall in between

TICKETS = ["INC1", "INC2", "INC3", "INC4", "INC5", "INC6"]
STATUSES = ["Assigned", "assigned", "  In   Progress ", "WIP", "in-progress", "Resolved"]
STATUSES += ["CLOSED", "Escalated", ""]
REGIONS = ["Nairobi", "nbi", " NRB ", "Mombasa", "msa", "rift-valley", "Turkana", ""]
NOT_ALARM = ["false", "f", "", "0", "no", "FALSE"]
ALARM = ["true", "t", "TRUE", " yes ", "1"]

ACTIONS = ("crash", "put_current", "put_new", "put_existing", "concurrent")
STATS: Counter[str] = Counter()


class Crash(Exception):
    """Raised from a failpoint callback: the process dies at that step boundary."""


# --- strategies -----------------------------------------------------------------------

row_specs = st.builds(
    RowSpec,
    ticket_id=st.sampled_from(TICKETS),
    # A small range: ties are common. None writes an empty updated_at: set aside, with the
    # earlier records of its ticket when it is the last one.
    minute=st.sampled_from([*range(0, 31), None]),
    time_format=st.integers(0, 3),
    raw_status=st.sampled_from(STATUSES),
    region=st.sampled_from(REGIONS),
    alarm=st.sampled_from(NOT_ALARM * 2 + ALARM),
)


@st.composite
def file_rows(draw: Any) -> tuple[RowSpec, ...]:
    """1-10 records (repeated ids and a few alarms likely), sometimes a sentinel row."""
    rows = draw(st.lists(row_specs, min_size=1, max_size=10))
    sentinel_at = draw(st.sampled_from([None, None, None, None, *range(len(rows) + 1)]))
    if sentinel_at is not None:
        rows.insert(sentinel_at, sentinel_row())
    return tuple(rows)


@dataclass(frozen=True)
class Trigger:
    """Where to disturb a sync: at one step boundary of one of the files it handles."""

    file: int  # which file of the plan (files to archive, then files to apply); -1: listing
    step: int  # which of that file's step boundaries
    action: str
    pick: int  # which key, for put_existing


triggers = st.builds(
    Trigger,
    file=st.integers(-1, 6),
    step=st.integers(0, 7),  # an applied file's 5 main steps and 3 archive steps
    action=st.sampled_from(ACTIONS),
    pick=st.integers(0, 50),
)


def stamp_of(seconds: int) -> str:
    return (DAY + timedelta(seconds=seconds)).strftime("%Y-%m-%dT%H-%M-%S")


def seconds_of(key: str) -> int:
    name = key.rsplit("/", 1)[-1][:-4]
    return int((datetime.strptime(name, "%Y-%m-%dT%H-%M-%S") - DAY).total_seconds())


# --- the world as it is ---------------------------------------------------------------


def reset_world(env: Env, db: Any) -> None:
    """Empty the tables and the bucket: each history starts from nothing."""
    db.run(
        "DELETE FROM tickets.incidents; DELETE FROM tickets.import_meta; "
        "DELETE FROM tickets.rejected_rows; DELETE FROM tickets.blocked_files"
    )
    keys = env.list_keys("")
    if keys:
        env.s3.delete_objects(
            Bucket=BUCKET, Delete={"Objects": [{"Key": k} for k in keys], "Quiet": True}
        )


def bucket_state(env: Env) -> dict[str, str]:
    listing = env.s3.list_objects_v2(Bucket=BUCKET, Prefix="")
    assert not listing.get("IsTruncated")
    return {o["Key"]: o["ETag"].strip('"') for o in listing.get("Contents", [])}


def table_state(db: Any) -> dict[str, Stored]:
    rows = db.run(
        "SELECT ticket_id, raw_status, region, updated_at, owner, source_key FROM tickets.incidents"
    )
    return {r[0]: Stored(*r[1:]) for r in rows}


def counts_of(counts: RowCounts) -> Counts:
    return Counts(
        read=counts.read,
        upserted=counts.upserted,
        skipped_older=counts.skipped_older,
        alarm_filtered=counts.alarm_filtered,
        sentinel_filtered=counts.sentinel_filtered,
        rejected=counts.rejected,
        duplicate_ids=counts.duplicate_ids,
    )


def plan_of(plan: Any) -> tuple[Any, ...]:
    return (
        plan.watermark,
        tuple((p.obj.key, p.obj.etag, p.export_type.value) for p in plan.to_apply),
        tuple((o.key, o.etag) for o in plan.to_archive),
        tuple(c.obj.key for c in plan.conflicts),
    )


# --- the machine ----------------------------------------------------------------------


class StreamMachine(RuleBasedStateMachine):
    env: ClassVar[Env]
    checker: ClassVar[Runtime]  # reads the world for the checks; never syncs
    # Two processes (a warm Lambda container and an operator's CLI, say), kept across
    # histories like warm containers; one that crashed is replaced by a fresh one.
    runtimes: ClassVar[list[Runtime | None]]

    def __init__(self) -> None:
        super().__init__()
        reset_world(self.env, self.checker.db())
        self.model = Model()
        self.next_slot = 0
        self.serial = 0
        self.files: dict[str, StreamFile] = {}  # etag -> content, for identical re-uploads
        STATS["examples"] += 1

    # --- helpers ---------------------------------------------------------------------

    def _runtime(self, which: int) -> Runtime:
        runtime = self.runtimes[which]
        if runtime is None:
            runtime = self.runtimes[which] = Runtime(load_settings())
        return runtime

    def _crashed(self, which: int) -> None:
        """The process died: its connection goes, the next event gets a fresh runtime."""
        runtime = self.runtimes[which]
        if runtime is not None:
            runtime.close()
        self.runtimes[which] = None

    def _file(self, rows: tuple[RowSpec, ...]) -> StreamFile:
        self.serial += 1
        tag = f"u{self.serial}"
        owned = tuple(
            r if r.sentinel else replace(r, owner=f"{tag}.{i}") for i, r in enumerate(rows)
        )
        file = StreamFile(owned, tag)
        self.files[file.etag] = file
        return file

    def _next_key(self) -> str:
        self.next_slot += 1
        return stream_key(stamp_of(self.next_slot * SLOT))

    def _put(self, key: str, file: StreamFile) -> None:
        etag = self.env.put(key, file.body)
        assert etag == self.model.put(key, file)
        STATS["uploads"] += 1

    def _count(self, rule: str) -> None:
        STATS[f"rule {rule}"] += 1

    # --- uploads ---------------------------------------------------------------------

    @initialize(rows=file_rows())
    def upload_baseline(self, rows: tuple[RowSpec, ...]) -> None:
        self._count("upload_baseline")
        self._put(self._next_key(), self._file(rows))

    @rule(rows=file_rows())
    def upload_delta(self, rows: tuple[RowSpec, ...]) -> None:
        self._count("upload_delta")
        self._put(self._next_key(), self._file(rows))

    # The rules below draw the same shape of data whatever the state (an index taken
    # modulo the choices, no preconditions): what happens in the engine between two steps
    # is partly timing (see Model.sync), so the state may differ when hypothesis replays.

    @rule(rows=file_rows(), at=st.integers(0, 10**6))
    def upload_late(self, rows: tuple[RowSpec, ...], at: int) -> None:
        """A file named before the watermark, uploaded after newer files were applied."""
        watermark = self.model.watermark
        if watermark is None:
            self.upload_delta(rows)
            return
        self._count("upload_late")
        used = self.model.used_keys()
        seconds = at % seconds_of(watermark)
        while stream_key(stamp_of(seconds)) in used:
            seconds -= 1  # the first slot is at SLOT seconds: free seconds remain below it
        self._put(stream_key(stamp_of(seconds)), self._file(rows))

    @rule(rows=file_rows(), pick=st.integers(0, 50))
    def reupload_applied_changed(self, rows: tuple[RowSpec, ...], pick: int) -> None:
        """New content under a key already applied: a conflict, never applied."""
        applied = sorted(self.model.applied)
        if not applied:
            self.upload_delta(rows)
            return
        self._count("reupload_applied_changed")
        self._put(applied[pick % len(applied)], self._file(rows))

    @rule(pick=st.integers(0, 50))
    def reupload_applied_identical(self, pick: int) -> None:
        """The same bytes again (an at-least-once uploader): archived, not re-applied."""
        applied = sorted(self.model.applied)
        if not applied:
            return
        self._count("reupload_applied_identical")
        key = applied[pick % len(applied)]
        self._put(key, self.files[self.model.applied[key]])

    @rule(rows=file_rows(), pick=st.integers(0, 50))
    def overwrite_pending(self, rows: tuple[RowSpec, ...], pick: int) -> None:
        """A file replaced before it was ever applied: its last version is what applies."""
        pending = sorted(k for k in self.model.changes if k not in self.model.applied)
        if not pending:
            self.upload_delta(rows)
            return
        self._count("overwrite_pending")
        self._put(pending[pick % len(pending)], self._file(rows))

    # --- events ----------------------------------------------------------------------

    @rule(
        which=st.integers(0, 1),
        dry_run=st.sampled_from([False] * 5 + [True]),
        budget=st.sampled_from([None] * 5 + [0, 1, 2]),
    )
    def event(self, which: int, dry_run: bool, budget: int | None) -> None:
        """One notification: a sync (a dry run, or one with a short time budget)."""
        self._count("event")
        self._sync(which, None, (), dry_run=dry_run, budget=budget)

    @rule(which=st.integers(0, 1), trigger=triggers, rows=file_rows())
    def disturbed_event(self, which: int, trigger: Trigger, rows: tuple[RowSpec, ...]) -> None:
        """A sync disturbed at one step boundary: a crash, an upload or a concurrent sync."""
        self._count("disturbed_event")
        if not self.model.has_work():
            self.upload_delta(rows)  # something to disturb
        self._sync(which, trigger, rows, dry_run=False, budget=None)

    @rule(
        which=st.integers(0, 1),
        file=st.integers(-1, 6),
        step=st.integers(0, 7),
        rows=file_rows(),
    )
    def crashing_event(self, which: int, file: int, step: int, rows: tuple[RowSpec, ...]) -> None:
        """A sync whose process dies at one step boundary; the next event starts afresh."""
        self._count("crashing_event")
        if not self.model.has_work():
            self.upload_delta(rows)
        self._sync(which, Trigger(file, step, "crash", 0), (), dry_run=False, budget=None)

    @rule(which=st.integers(0, 1))
    def duplicated_event(self, which: int) -> None:
        """The same notification twice: the second sync finds nothing to do."""
        self._count("duplicated_event")
        self._sync(which, None, (), dry_run=False, budget=None)
        _, report = self._sync(which, None, (), dry_run=False, budget=None)
        assert report is not None and not report.applied and not report.archived

    def _target(self, trigger: Trigger | None) -> tuple[Step, str] | None:
        """The (step, key) boundary a trigger aims at, from the plan the sync will follow."""
        if trigger is None:
            return None
        plan = self.model.plan()
        files: list[tuple[str, tuple[Step, ...]]] = [(k, ARCHIVE_STEPS) for k, _ in plan.to_archive]
        files += [(k, MAIN_STEPS[1:] + ARCHIVE_STEPS) for k, _, _ in plan.to_apply]
        if trigger.file < 0 or not files:
            return Step.LISTED, DATASET
        key, steps = files[trigger.file % len(files)]
        return steps[trigger.step % len(steps)], key

    def _sync(
        self,
        which: int,
        trigger: Trigger | None,
        rows: tuple[RowSpec, ...],
        *,
        dry_run: bool,
        budget: int | None,
    ) -> tuple[str, SyncReport | None]:
        STATS["syncs"] += 1
        runtime = self._runtime(which)
        planned = self.model.plan()
        assert trigger is None or not dry_run
        target = self._target(trigger)
        # Keys this sync will not touch: an upload to one of them lands deterministically.
        busy = {k for k, _, _ in planned.to_apply} | {k for k, _ in planned.to_archive}
        untouched = sorted(self.model.used_keys() - busy)
        late = {k for k, _, kind in planned.to_apply if kind == LATE}
        before = table_state(self.checker.db()) if late else {}
        main_thread = threading.get_ident()
        real_events: list[tuple[Step, str, bool]] = []  # step, key, in the applying thread
        fired: list[tuple[str, str | None, StreamFile | None]] = []  # action, key, file
        lock = threading.Lock()

        def act(step: Step, key: str) -> None:
            assert trigger is not None
            action = trigger.action
            STATS[f"fired {action} at {step.value}"] += 1
            if action == "crash":
                fired.append((action, None, None))
                raise Crash(f"{step.value} {key}")
            if action == "concurrent":
                fired.append((action, None, None))
                other = Runtime(load_settings())
                try:
                    with pytest.raises(SyncBusy):
                        sync(other, DATASET)
                finally:
                    other.close()
                return
            if action == "put_current":
                put_key = key if key.startswith(CHANGES) else None
            elif action == "put_new":
                put_key = self._next_key()
            else:
                put_key = untouched[trigger.pick % len(untouched)] if untouched else None
            if put_key is None:
                fired.append((action, None, None))
                return
            file = self._file(rows or (RowSpec("INC1"),))
            fired.append((action, put_key, file))
            assert self.env.put(put_key, file.body) == file.etag

        def callback(step: Step, key: str) -> None:
            with lock:
                real_events.append((step, key, threading.get_ident() == main_thread))
                if (step, key) != target or fired:
                    return
                act(step, key)

        started = 0

        def may_start(obj: StreamObject) -> bool:
            nonlocal started
            started += 1
            return budget is None or started <= budget

        options = SyncOptions(dry_run=dry_run, may_start_file=may_start)
        report: SyncReport | None = None
        with failpoints.on(callback):
            try:
                report = sync(runtime, DATASET, options)
                outcome = "ok"
            except Crash:
                outcome = "crash"
                self._crashed(which)
            except ObjectChanged:
                outcome = "object changed"
        STATS[f"sync {outcome}"] += 1
        if late:
            # Checked on the table alone: a late file never replaces a newer row.
            for ticket_id, now in table_state(self.checker.db()).items():
                old = before.get(ticket_id)
                if now.source_key in late and old is not None and old != now:
                    assert old.updated_at is None or (
                        now.updated_at is not None and now.updated_at >= old.updated_at
                    ), (ticket_id, old, now)

        # The model lives the same history: the same action at the same boundary.
        def hook(step: Step, key: str) -> None:
            if fired and (step, key) == target:
                action, put_key, file = fired[0]
                if action == "crash":
                    raise Crash(step.value)
                if put_key is not None and file is not None:
                    self.model.put(put_key, file)

        expected = SyncOutcome()
        detect_at = sum(1 for step, _, _ in real_events if step is Step.BODY_OPENED)
        try:
            self.model.sync(
                hook, dry_run=dry_run, budget=budget, detect_at=detect_at, outcome=expected
            )
            expected_outcome = "ok"
        except Crash:
            expected_outcome = "crash"
        except ModelObjectChanged:
            expected_outcome = "object changed"

        # The same step boundaries: in order in the applying thread, as a set in the
        # background; a file's archive only ever starts after its commit.
        in_main = [(s, k) for s, k, main in real_events if main]
        in_background = [(s, k) for s, k, main in real_events if not main]
        assert in_main == [e for e in expected.events if e[0] in MAIN_STEPS]
        assert Counter(in_background) == Counter(
            e for e in expected.events if e[0] in ARCHIVE_STEPS
        )
        order = [(s, k) for s, k, _ in real_events]
        for step, key in in_background:
            if (Step.COMMITTED, key) in order:
                assert order.index((Step.COMMITTED, key)) < order.index((step, key))
            if step is Step.BATCHED:
                assert order.index((Step.COPIED, key)) < order.index((step, key))
            if step is Step.DELETED:
                assert order.index((Step.BATCHED, key)) < order.index((step, key))
        assert outcome == expected_outcome
        if report is not None:
            assert plan_of(report.plan) == (
                planned.watermark,
                planned.to_apply,
                planned.to_archive,
                planned.conflicts,
            )
            assert [(r.key, r.export_type.value, counts_of(r.counts)) for r in report.applied] == (
                expected.applied
            )
            assert report.archived == expected.archived
            assert report.stopped_early == expected.stopped_early
            assert report.watermark_after == expected.watermark_after
            assert report.rejected is None
            if trigger is None and not dry_run and budget is None:
                # A clean, complete sync leaves only conflicts in changes/.
                assert sorted(self.model.changes) == self.model.conflicts()
        return outcome, report

    # --- the check after every step --------------------------------------------------

    @invariant()
    def world_equals_model(self) -> None:
        STATS["steps checked"] += 1
        db = self.checker.db()
        model = self.model

        assert table_state(db) == model.table

        ledger = db.run(
            "SELECT source_key, etag, export_type, metadata ->> 'source_max_key', rows_read, "
            "rows_upserted, rows_skipped_older, rows_alarm_filtered, rows_sentinel_filtered, "
            "rows_rejected, rows_duplicate FROM tickets.import_meta "
            "WHERE dataset = :dataset ORDER BY id",
            dataset=DATASET,
        )
        keys = [r[0] for r in ledger]
        assert len(keys) == len(set(keys)), f"a file was applied twice: {keys}"
        assert [(r[0], r[1], r[2], r[3], Counts(*r[4:])) for r in ledger] == [
            (e.key, e.etag, e.export_type, e.source_max_key, e.counts) for e in model.ledger
        ]

        objects = bucket_state(self.env)
        changes = {k: v for k, v in objects.items() if k.startswith(CHANGES)}
        processed = {k: v for k, v in objects.items() if k.startswith(PROCESSED)}
        assert changes == {k: o.etag for k, o in model.changes.items()}, "changes/ differs"
        assert processed == model.processed, "processed/ differs"
        assert all(k.startswith((CHANGES, PROCESSED)) for k in objects), sorted(objects)

        # A conflicting version (an applied key re-uploaded) is never applied.
        conflicting = {(k, model.changes[k].etag) for k in model.plan().conflicts}
        assert not conflicting & {(r[0], r[1]) for r in ledger}
        # Records set aside (an empty updated_at, and the earlier records of its ticket)
        # are kept in rejected_rows; no file is ever blocked by them (MAX_REJECTED_SHARE=1).
        assert db.one(
            "SELECT (SELECT count(*) FROM tickets.rejected_rows), "
            "(SELECT count(*) FROM tickets.blocked_files)"
        ) == [sum(e.counts.rejected for e in model.ledger), 0]


@pytest.fixture
def machine_world(env: Env) -> Iterator[Env]:
    """StreamMachine's world: this test's database and bucket, S3's copy semantics."""
    # The emulator refuses a stale conditional copy as S3 does (tickets_devkit.emulator).
    # The database is migrated already: the runtime started after each crash skips the
    # migration check (it costs as much as the rest of a small sync).
    env.set(AUTO_MIGRATE="false")
    # Small files with a record set aside stay below any share: the model sets them aside.
    env.set(MAX_REJECTED_SHARE="1")
    StreamMachine.env = env
    StreamMachine.checker = env.runtime()
    StreamMachine.runtimes = [None, None]
    yield env
    for runtime in StreamMachine.runtimes:
        if runtime is not None:
            runtime.close()


def test_random_histories_match_the_model(machine_world: Env) -> None:
    STATS.clear()
    started = time.monotonic()
    run_state_machine_as_test(
        StreamMachine,
        settings=settings(
            max_examples=EXAMPLES,
            stateful_step_count=STEPS,
            deadline=None,
            database=None,
            derandomize=False,
            suppress_health_check=[
                HealthCheck.function_scoped_fixture,
                HealthCheck.too_slow,
                HealthCheck.filter_too_much,
                HealthCheck.data_too_large,
            ],
        ),
    )
    summary = ", ".join(f"{k}: {v}" for k, v in sorted(STATS.items()))
    print(f"\nmodel test: {time.monotonic() - started:.1f}s; {summary}")


def test_reupload_between_archive_copy_and_delete_is_not_lost(machine_world: Env) -> None:
    """The machine's minimal failing history, kept as a plain test (a stateful @example).

    A new version of an applied file lands after the archive move copied the applied
    version to processed/ and before it deletes the key from changes/. An unconditional
    DeleteObject removed the new version, which was then neither applied, nor archived,
    nor reported as a conflict; the delete is now conditional on the applied ETag.
    """
    state = StreamMachine()
    state.upload_baseline(rows=(RowSpec("INC1"),))
    state.world_equals_model()
    copied = Trigger(file=0, step=5, action="put_current", pick=0)  # at COPIED
    state.disturbed_event(which=0, trigger=copied, rows=(RowSpec("INC1"),))
    state.world_equals_model()


def test_reupload_before_the_batch_delete_is_not_lost(machine_world: Env) -> None:
    """The same with the batch delete: a new version lands after the copy, just before the
    DeleteObjects goes; its per-key ETag condition keeps the new version in changes/."""
    state = StreamMachine()
    state.upload_baseline(rows=(RowSpec("INC1"),))
    state.world_equals_model()
    batched = Trigger(file=0, step=6, action="put_current", pick=0)  # at BATCHED
    state.disturbed_event(which=0, trigger=batched, rows=(RowSpec("INC1"),))
    state.world_equals_model()
    assert state.model.conflicts() == [state.model.ledger[0].key]
