"""Fault injection: whatever fails, whenever, running sync again (and again) converges.

The claim under test: after any failure and enough reruns, the table equals the fold of
every file applied once in order (nothing older over newer), every file is archived in
processed/ exactly once, changes/ is empty, the ledger holds exactly one row per file
(baseline, then deltas), and no file was applied twice. ``faults.assert_converged`` checks
all of it; each scenario injects one kind of failure into a small generated stream
(a 200-row baseline and 4 deltas of 20 rows with repeated ids):

1. an exception at every step boundary x the first, a middle and the last file;
2. a killed process (``os._exit(137)`` via ``TICKETS_FAILPOINT``) at every step, middle file;
3. the database connection dropped mid-COPY, between files, after a COMMIT (its reply
   lost), and while a runtime is idle: reconnected, and the same run goes on;
4. S3 503 SlowDown / 500 InternalError on GetObject, CopyObject, DeleteObjects (the batch
   delete) and ListObjectsV2: absorbed by the client's retries, or outlasting them;
5. the Lambda time budget running out between files, continued through the queue;
6. the same event delivered twice, and syncs racing each other.
"""

from __future__ import annotations

import importlib
import os
import threading
import time
from collections.abc import Callable, Iterator
from typing import Any

import pytest
import stamina
from aws_lambda_powertools.utilities.batch.exceptions import BatchProcessingError

from tests.conftest import Env
from tests.e2e.conftest import LambdaWorld, world  # noqa: F401 - registers the fixture
from tests.support import faults
from tests.support.faults import DATASET, InjectedCrash
from tickets_devkit.event_path import FakeLambdaContext, as_lambda_record, poll
from tickets_devkit.generator import StreamFile
from tickets_ingest import failpoints
from tickets_ingest.dal import s3 as s3_module
from tickets_ingest.dal.db import InterfaceError
from tickets_ingest.dal.retry import RetryPolicy
from tickets_ingest.errors import SyncBusy, TransientFault
from tickets_ingest.failpoints import Step
from tickets_ingest.logic import apply
from tickets_ingest.logic.runtime import Runtime
from tickets_ingest.logic.sync import SyncOptions, sync
from tickets_ingest.models import StreamObject

FILES = faults.small_stream()
POSITIONS = {"first": 0, "middle": 2, "last": len(FILES) - 1}
STEPS = list(Step)


def _file(position: str) -> str:
    return FILES[POSITIONS[position]].key.rsplit("/", 1)[-1]


@pytest.fixture
def stream(env: Env) -> tuple[list[StreamFile], dict[str, str]]:
    """The small stream, uploaded under changes/: (files, ETag by key)."""
    return FILES, faults.upload(env, FILES)


def _committed_after_crash(step: Step, index: int) -> tuple[int, int]:
    """How many files may be committed when a crash hits ``step`` of file ``index``.

    Before the commit: the files before it. At COMMITTED: through it. COPIED happens in
    the background copy, which overlaps the next file's apply: that file (and, with an
    exception rather than a kill, later ones) may commit before the crash lands. BATCHED
    and DELETED come with the batch delete, sent once the last file committed (a stream
    this small is one batch): every file is committed by then.
    """
    if step in (Step.BATCHED, Step.DELETED):
        return len(FILES), len(FILES)
    if step is Step.COPIED:
        return index + 1, len(FILES)
    if step is Step.COMMITTED:
        return index + 1, index + 1
    return index, index


# ---------------------------------------------------------------------------------------
# 1. An exception at every step boundary, for the first, a middle and the last file.
# ---------------------------------------------------------------------------------------

CRASHES = [(step, position) for step in STEPS for position in POSITIONS]


@pytest.mark.parametrize(("step", "position"), CRASHES, ids=[f"{s.value}@{p}" for s, p in CRASHES])
def test_crash_at_step_then_rerun_converges(
    env: Env, stream: tuple[list[StreamFile], dict[str, str]], step: Step, position: str
) -> None:
    files, etags = stream
    index = POSITIONS[position]
    crashed = env.runtime()
    if step is Step.LISTED:
        # LISTED comes once per run, before any file: crash the run that would apply the
        # target next (the files before it were applied by an earlier, clean run).
        if index:
            sync(crashed, DATASET, faults.stop_before(files[index].key))
        crash = faults.CrashAt(step)
    else:
        crash = faults.CrashAt(step, _file(position))

    with failpoints.on(crash), pytest.raises(InjectedCrash):
        sync(crashed, DATASET)
    crashed.close()  # the process is gone, and its connection with it
    assert crash.fired == 1
    faults.committed_count(env, files, *_committed_after_crash(step, index))

    fresh = env.runtime()  # a new process
    faults.sync_until_idle(lambda: fresh)
    faults.assert_converged(env, files, etags)


# ---------------------------------------------------------------------------------------
# 2. A killed process: os._exit(137) at every step of the middle file, in a subprocess.
# ---------------------------------------------------------------------------------------

KILLS = [(step, "middle") for step in STEPS]


@pytest.mark.parametrize(("step", "position"), KILLS, ids=[f"{s.value}@{p}" for s, p in KILLS])
def test_killed_process_then_clean_run_converges(
    env: Env, stream: tuple[list[StreamFile], dict[str, str]], step: Step, position: str
) -> None:
    files, etags = stream
    index = POSITIONS[position]
    if step is Step.LISTED:
        sync(env.runtime(), DATASET, faults.stop_before(files[index].key))
        failpoint = f"{step.value}:{DATASET}"
    else:
        failpoint = f"{step.value}:{_file(position)}"

    variables = dict(os.environ)  # DATABASE_URL, AWS_ENDPOINT_URL, ... from the env fixture
    killed = faults.run_cli(variables, failpoint)
    assert killed.returncode == faults.KILLED, killed.stderr
    faults.committed_count(env, files, *_committed_after_crash(step, index))

    # The killed backend goes as soon as the server reads EOF; wait for it rather than race.
    clean = faults.run_cli({**variables, "LOCK_WAIT_SECONDS": "10"})
    assert clean.returncode == 0, clean.stdout + clean.stderr
    faults.assert_converged(env, files, etags)


# ---------------------------------------------------------------------------------------
# 3. The database connection dropped: mid-COPY, between files, and while idle.
# ---------------------------------------------------------------------------------------

DB_DROPS = [
    "mid-read@middle",
    "mid-copy@first",
    "mid-copy@middle",
    "between-files@middle",
    "commit-reply-lost@middle",
    "idle-between-runs",
]


@pytest.fixture
def no_backoff() -> Iterator[None]:
    """stamina's testing switch: the retry policy's tries, without the waits."""
    with stamina.set_testing(True, attempts=5, cap=True):
        yield


@pytest.mark.parametrize("scenario", DB_DROPS)
def test_dropped_database_connection_is_reconnected_and_the_run_goes_on(
    env: Env,
    stream: tuple[list[StreamFile], dict[str, str]],
    scenario: str,
    no_backoff: None,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """The sync's backend is terminated (pg_terminate_backend from a second connection,
    like a failover or a DBA): while a small file is read (before its COPY, which it goes
    with), during a file's streaming COPY, between two files, or right after a COMMIT that
    went through (its reply lost). The same run reconnects, takes the lock again, asks the
    ledger, and goes on: every file applied exactly once, in one run."""
    files, etags = stream
    where = scenario.split("@", maxsplit=1)[0]
    runtime = env.runtime()
    pid = int(runtime.db().scalar("SELECT pg_backend_pid()"))
    killed: list[bool] = []

    def kill() -> None:
        if not killed:  # once: the retry of the file must be able to pass
            killed.append(faults.terminate_backend(env, pid))

    if where in ("mid-read", "mid-copy"):
        if where == "mid-copy":  # these files are small: make them stream, as a large one
            monkeypatch.setattr(apply, "EAGER_COPY_BYTES", 0)
        position = scenario.split("@")[1]
        bodies = faults.kill_mid_copy(runtime, _file(position), kill)
        report = sync(runtime, DATASET)
        # The kill landed while the body was read (mid-copy: while COPY streamed it, from
        # inside a read of it); the file was then read again, from a fresh GET, and applied.
        assert killed == [True] and [b.fired for b in bodies] == [True, True]
    elif where in ("between-files", "commit-reply-lost"):

        def at_commit(step: Step, key: str) -> None:
            if step is Step.COMMITTED and _file("middle") in key and not killed:
                kill()
                if where == "commit-reply-lost":
                    # The COMMIT went through; the client only saw its connection die.
                    raise InterfaceError("network error")

        with failpoints.on(at_commit):
            report = sync(runtime, DATASET)
        assert killed == [True]
    else:  # idle: a warm container's connection dies between two invocations
        sync(runtime, DATASET, faults.stop_before(files[POSITIONS["middle"]].key))
        kill()
        faults.assert_applied_prefix(env, files, POSITIONS["middle"])
        report = sync(runtime, DATASET)  # a warm Lambda container keeps its Runtime
    assert report.ok
    assert int(runtime.db().scalar("SELECT pg_backend_pid()")) != pid  # a new connection
    faults.assert_converged(env, files, etags)
    # The lock taken again on the new connection was given back: others may sync now.
    assert (
        env.runtime()
        .db()
        .scalar(
            "SELECT pg_try_advisory_lock(hashtextextended('tickets-ingest:' || :d, 0))", d=DATASET
        )
    )


# ---------------------------------------------------------------------------------------
# 4. S3 throttling (503 SlowDown) and server errors (500 InternalError).
# ---------------------------------------------------------------------------------------

# dal/retry.py + dal/s3.py: RETRY_ATTEMPTS (5) tries of each request, botocore standard mode.
ATTEMPTS = 5
OPERATIONS = ["GetObject", "CopyObject", "DeleteObjects", "ListObjectsV2"]
# Absorbed: fewer failures than the budget, on the production client: botocore backs off
# (full jitter, ~0.5 s, then ~1 s expected).
ABSORBED = [(op, 500, 2, "") for op in OPERATIONS] + [("CopyObject", 503, 1, "last")]
# Outlasted: every attempt fails; with the documented RETRY_ATTEMPTS=2 to keep it short.
SHORT_BUDGET = 2
OUTLASTED = [(op, 500) for op in OPERATIONS]


def test_the_production_retry_budget_is_what_these_scenarios_assume() -> None:
    config = s3_module.client_config(RetryPolicy())
    assert config.retries == {"total_max_attempts": ATTEMPTS, "mode": "standard"}


@pytest.mark.parametrize(
    ("operation", "status", "failures", "position"),
    ABSORBED,
    ids=[f"{op}-{status}x{n}{'@' + p if p else ''}" for op, status, n, p in ABSORBED],
)
def test_s3_errors_within_the_retry_budget_are_absorbed(
    env: Env,
    stream: tuple[list[StreamFile], dict[str, str]],
    operation: str,
    status: int,
    failures: int,
    position: str,
) -> None:
    files, etags = stream
    assert failures < ATTEMPTS
    runtime = env.runtime()
    part = _file(position) if position else ""
    hook = faults.fail_first(runtime, operation, failures, status, url_part=part)
    report = sync(runtime, DATASET)
    assert hook.failed == failures and hook.sent > failures
    assert report.ok and len(report.applied) == len(files)
    assert report.archived == [f.key for f in files]
    faults.assert_converged(env, files, etags)


@pytest.mark.parametrize(
    ("operation", "status"), OUTLASTED, ids=[f"{op}-{status}" for op, status in OUTLASTED]
)
def test_s3_errors_outlasting_the_retries_then_rerun_converges(
    env: Env,
    stream: tuple[list[StreamFile], dict[str, str]],
    operation: str,
    status: int,
) -> None:
    files, etags = stream
    middle = files[POSITIONS["middle"]]
    env.set(RETRY_ATTEMPTS=str(SHORT_BUDGET))
    runtime = env.runtime()
    # Fail every attempt of one call: the listing, the batch delete (its URL names no
    # file), or the call for the middle file.
    whole = operation in ("ListObjectsV2", "DeleteObjects")
    part = "" if whole else _file("middle")
    hook = faults.fail_first(runtime, operation, SHORT_BUDGET, status, url_part=part)

    if operation in ("GetObject", "ListObjectsV2"):
        name = {"GetObject": "GET", "ListObjectsV2": "LIST"}[operation]
        with pytest.raises(TransientFault, match=f"{name} failed after 2 attempts .*InternalError"):
            sync(runtime, DATASET)
        committed = 0 if operation == "ListObjectsV2" else POSITIONS["middle"]
        faults.assert_applied_prefix(env, files, committed)
    else:
        # A failed archive never fails the run: the files are committed; the next run
        # moves them. A failed copy leaves its file; a failed batch delete, all of its batch.
        report = sync(runtime, DATASET)
        assert report.ok and len(report.applied) == len(files)
        left = [f.key for f in files] if whole else [middle.key]
        assert set(left).isdisjoint(report.archived)
        assert env.list_keys(faults.CHANGES) == left
    assert hook.failed == SHORT_BUDGET

    reports = faults.sync_until_idle(lambda: runtime)
    assert len(reports) == 2  # one run finishes the job, the next finds nothing to do
    faults.assert_converged(env, files, etags)


# ---------------------------------------------------------------------------------------
# 5. The Lambda time budget running out between files.
# ---------------------------------------------------------------------------------------

LAMBDA_SCENARIOS = [
    "no-file-fits",
    "one-file-per-invocation",
    "connection-dropped-between-invocations",
]


class OneFileBudget:
    """Contexts whose time budget runs out as soon as one file has committed."""

    def __init__(self) -> None:
        self.current: dict[str, bool] = {"spent": False}
        self.contexts = 0

    def context(self) -> FakeLambdaContext:
        state = {"spent": False}
        self.current = state
        self.contexts += 1
        return FakeLambdaContext(remaining_ms=lambda: 30_000 if state["spent"] else 300_000)

    def __call__(self, step: Step, key: str) -> None:
        if step is Step.COMMITTED:
            self.current["spent"] = True


@pytest.fixture
def lambda_world(world: LambdaWorld) -> LambdaWorld:  # noqa: F811 - imported above
    """The Lambda world of tests/e2e: the event path in the emulator and the handler."""
    return world


@pytest.fixture
def lambda_stream(lambda_world: LambdaWorld) -> Iterator[tuple[list[StreamFile], dict[str, str]]]:
    yield FILES, faults.upload(lambda_world.env, FILES)


@pytest.mark.parametrize("scenario", LAMBDA_SCENARIOS)
def test_lambda_time_budget_and_continuations_converge(
    lambda_world: LambdaWorld, lambda_stream: tuple[list[StreamFile], dict[str, str]], scenario: str
) -> None:
    files, etags = lambda_stream
    env = lambda_world.env
    if scenario == "no-file-fits":
        # Only the continuation will be in the queue, not the upload events.
        lambda_world.path.sqs.purge_queue(QueueUrl=lambda_world.path.queue_url)
        # Below the 60 s margin once listed: not one file may start.
        result = lambda_world.invoke_with_time_spent({"dataset": DATASET}, 30_000)
        assert result["ok"] and result["stopped_early"] and result["applied"] == []
        assert lambda_world.queue_depth() == 1
        stats = lambda_world.poll()
        assert stats.delivered == 1 and stats.failed == 0
    elif scenario == "one-file-per-invocation":
        budget = OneFileBudget()
        with failpoints.on(budget):
            result = lambda_world.handler({"dataset": DATASET}, budget.context())
            assert result["ok"] and result["stopped_early"] and len(result["applied"]) == 1
            # The upload events and a chain of continuations, each invocation one file.
            stats = poll(lambda_world.path, lambda_world.handler, budget.context, max_batches=30)
        assert stats.failed == 0 and lambda_world.queue_depth() == 0
        assert budget.contexts >= len(files)
    else:
        # A warm container applies part of the stream, then its database connection dies
        # (failover, idle timeout, proxy restart); the next invocations must reconnect.
        aws = importlib.import_module("tickets_ingest.handlers.aws")
        budget = OneFileBudget()
        with failpoints.on(budget):
            assert lambda_world.handler({"dataset": DATASET}, budget.context())["stopped_early"]
        pid = int(aws.runtime().db().scalar("SELECT pg_backend_pid()"))
        assert faults.terminate_backend(env, pid)
        stats = lambda_world.poll(max_batches=10)  # the upload events and the continuation
        dead = lambda_world.queue_depth(lambda_world.path.dlq_url)
        assert stats.failed == 0, (
            f"{stats.failed} of {stats.delivered} deliveries failed "
            f"({stats.batches} invocations); {dead} message(s) dead-lettered"
        )
    faults.assert_converged(env, files, etags)


# ---------------------------------------------------------------------------------------
# 6. The same event delivered twice, and syncs racing each other.
# ---------------------------------------------------------------------------------------

DELIVERIES = ["same-events-twice", "redelivered-after-a-crash"]
RACES = ["race-waiting", "race-busy-then-rerun", "race-holder-crashes"]


def _as_record(
    lambda_world: LambdaWorld, message: dict[str, Any], message_id: str
) -> dict[str, Any]:
    record = as_lambda_record(message, lambda_world.path.queue_arn, lambda_world.path.region)
    return {**record, "messageId": message_id}


def _receive_all(lambda_world: LambdaWorld, count: int) -> list[dict[str, Any]]:
    messages: list[dict[str, Any]] = []
    while len(messages) < count:
        batch = lambda_world.path.sqs.receive_message(
            QueueUrl=lambda_world.path.queue_url, AttributeNames=["All"], MaxNumberOfMessages=10
        ).get("Messages", [])
        assert batch, f"only {len(messages)} of {count} upload events arrived"
        messages += batch
    return messages


@pytest.mark.parametrize("scenario", DELIVERIES)
def test_the_same_events_delivered_again_apply_each_file_once(
    lambda_world: LambdaWorld, lambda_stream: tuple[list[StreamFile], dict[str, str]], scenario: str
) -> None:
    files, etags = lambda_stream
    messages = _receive_all(lambda_world, len(files))
    records = [_as_record(lambda_world, m, m["MessageId"]) for m in messages]
    if scenario == "same-events-twice":
        first = lambda_world.invoke({"Records": records})
        # Delivered again (a redrive gives new message ids): answered from the idempotency
        # records, no second sync.
        again = [_as_record(lambda_world, m, f"again-{i}") for i, m in enumerate(messages)]
        second = lambda_world.invoke({"Records": again})
        assert first == second == {"batchItemFailures": []}
        faults.assert_converged(lambda_world.env, files, etags)
    else:
        # The first delivery dies mid-file: its record fails, and so does the rest of its
        # FIFO group; every record failed, so the invocation fails and all come again.
        crash = faults.CrashAt(Step.STAGED, _file("middle"))
        with failpoints.on(crash), pytest.raises(BatchProcessingError):
            lambda_world.invoke({"Records": records})
        assert crash.fired == 1
        faults.assert_applied_prefix(lambda_world.env, files, POSITIONS["middle"])
        assert lambda_world.invoke({"Records": records}) == {"batchItemFailures": []}
    # And once more by the queue itself, after the visibility timeout.
    for message in messages:
        lambda_world.path.sqs.change_message_visibility(
            QueueUrl=lambda_world.path.queue_url,
            ReceiptHandle=message["ReceiptHandle"],
            VisibilityTimeout=0,
        )
    stats = lambda_world.poll()
    assert stats.delivered == len(files) and stats.failed == 0
    faults.assert_converged(lambda_world.env, files, etags)


def _race(
    env: Env, racers: int, body: Callable[[int, Runtime], Any]
) -> tuple[list[Any], list[BaseException]]:
    runtimes = [env.runtime() for _ in range(racers)]
    for runtime in runtimes:
        runtime.db()  # connect (and check the schema) before the start line
    start = threading.Barrier(racers)
    results: list[Any] = [None] * racers
    errors: list[BaseException] = []

    def run(i: int) -> None:
        start.wait()
        try:
            results[i] = body(i, runtimes[i])
        except BaseException as exc:  # collected, asserted by the test
            errors.append(exc)

    threads = [threading.Thread(target=run, args=(i,), name=f"racer-{i}") for i in range(racers)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(60)
    return results, errors


@pytest.mark.parametrize("scenario", RACES)
def test_racing_syncs_apply_each_file_once(
    env: Env, stream: tuple[list[StreamFile], dict[str, str]], scenario: str
) -> None:
    files, etags = stream
    if scenario == "race-waiting":
        env.set(LOCK_WAIT_SECONDS="30")
        results, errors = _race(env, 3, lambda _, runtime: sync(runtime, DATASET))
        assert errors == []
        applied = [r.key for report in results for r in report.applied]
        assert sorted(applied) == [f.key for f in files]  # each file by exactly one racer
    elif scenario == "race-busy-then-rerun":
        env.set(LOCK_WAIT_SECONDS="0")
        results, errors = _race(env, 3, lambda _, runtime: sync(runtime, DATASET))
        assert all(isinstance(e, SyncBusy) for e in errors), errors
        faults.sync_until_idle(env.runtime)
    else:
        # The lock holder dies mid-file while the others wait for the lock; they take over.
        env.set(LOCK_WAIT_SECONDS="30")
        crashes: list[faults.CrashAt] = []
        first_in = threading.Lock()

        def racer(i: int, runtime: Runtime) -> Any:
            def slow_first(obj: StreamObject) -> bool:
                # Whoever starts the middle file first crashes in it, after its upsert.
                if obj.key == files[POSITIONS["middle"]].key and first_in.acquire(False):
                    crashes.append(
                        faults.CrashAt(Step.UPSERTED, obj.name, threading.current_thread())
                    )
                    time.sleep(0.2)  # let the others queue up on the lock
                return True

            options = SyncOptions(may_start_file=slow_first)
            try:
                return sync(runtime, DATASET, options)
            except InjectedCrash:
                runtime.close()
                raise

        def dispatch(step: Step, key: str) -> None:
            for crash in list(crashes):
                crash(step, key)

        with failpoints.on(dispatch):
            results, errors = _race(env, 3, racer)
        assert len(crashes) == 1 and crashes[0].fired == 1
        assert len(errors) == 1 and isinstance(errors[0], InjectedCrash), errors
        faults.sync_until_idle(env.runtime)
    faults.assert_converged(env, files, etags)


# ---------------------------------------------------------------------------------------
# The count.
# ---------------------------------------------------------------------------------------

SCENARIOS = (
    [f"crash:{s.value}@{p}" for s, p in CRASHES]
    + [f"kill:{s.value}@{p}" for s, p in KILLS]
    + [f"db:{s}" for s in DB_DROPS]
    + [f"s3-absorbed:{op}-{status}x{n}@{p or 'first-call'}" for op, status, n, p in ABSORBED]
    + [f"s3-outlasted:{op}-{status}" for op, status in OUTLASTED]
    + [f"lambda:{s}" for s in LAMBDA_SCENARIOS]
    + [f"delivery:{s}" for s in DELIVERIES]
    + [f"race:{s}" for s in RACES]
)
CRASH_POINTS = sorted({(s.value, p) for s, p in CRASHES + KILLS})
EXPECTED_SCENARIOS = 27 + 9 + 6 + 5 + 4 + 3 + 2 + 3


def test_scenario_count() -> None:
    """fault injection: 59 scenarios, 27 crash points (9 step boundaries x first, middle and
    last file; the middle ones both raised in-process and killed with os._exit)."""
    assert len(SCENARIOS) == len(set(SCENARIOS)) == EXPECTED_SCENARIOS
    assert len(CRASH_POINTS) == len(STEPS) * len(POSITIONS)
    print(f"\nfault injection: {len(SCENARIOS)} scenarios, {len(CRASH_POINTS)} crash points")
