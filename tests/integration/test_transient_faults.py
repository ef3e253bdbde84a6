"""Transient faults are retried inside the run: S3 through a fault-injecting proxy in front
of the moto server, PostgreSQL connections ended with ``pg_terminate_backend``.

The claims: a stream synced through an S3 that answers SlowDown to about one request in
eight, drops replies and cuts about one download in ten converges in ONE run, every file
applied exactly once (the ledger), the table the in-order fold; a fault that persists
fails the run with one line naming the file, the operation and the cause, and the next
run finishes the job.

Backoff: stamina's testing switch (``stamina.set_testing``) removes the file-level waits
in-process; the subprocess tests use the documented ``RETRY_ATTEMPTS`` setting. botocore's
own request-level backoff stays as in production.
"""

from __future__ import annotations

import os
import re
import time
from collections.abc import Iterator
from typing import Any

import pytest
import stamina

from tests.conftest import Env
from tests.support import faults
from tests.support.faults import CHANGES, DATASET
from tests.support.oracle import fold, table_state
from tests.support.s3_fault_proxy import Fault, S3FaultProxy, classify
from tickets_devkit.generator import StreamFile, TicketStream
from tickets_ingest.core.keys import file_name, processed_key
from tickets_ingest.core.schema import CSV_COLUMNS, DEFAULT_DROP_FIELDS
from tickets_ingest.dal.retry import counts_since, retry_counts
from tickets_ingest.errors import TransientFault
from tickets_ingest.handlers import cli
from tickets_ingest.logic import activity
from tickets_ingest.logic.operator import replay_missing
from tickets_ingest.logic.sync import SyncOptions, sync

# About one request in eight answered SlowDown, one in twenty-five replies dropped after
# the request was done, one in fifty connections reset before it: on every operation.
# And one download in ten cut off halfway.
FLAKY_S3 = [
    Fault("slowdown", 1 / 8),
    Fault("drop", 1 / 25),
    Fault("reset", 1 / 50),
    Fault("cut", 1 / 10, "GetObject"),
]


REPLAYED_COLUMNS = [c for c in CSV_COLUMNS if c not in DEFAULT_DROP_FIELDS]

# TICKETS_FAULT_SEED picks another set of faults (the same each time for one seed).
SEED = int(os.environ.get("TICKETS_FAULT_SEED", "1"))


def long_stream(deltas: int = 30, seed: int = 12) -> list[StreamFile]:
    stream = TicketStream(DATASET, seed=seed)
    return [stream.baseline(1500)] + [stream.delta(40, repeat_ids=3) for _ in range(deltas)]


@pytest.fixture
def no_backoff() -> Iterator[None]:
    """stamina's testing switch: the same number of tries, no waits between them."""
    with stamina.set_testing(True, attempts=5, cap=True):
        yield


def through_proxy(env: Env, proxy: S3FaultProxy) -> None:
    """The code under test reaches S3 through the proxy; ``env.s3`` (the test's own
    client, for setup and checks) still talks to moto directly."""
    env.set(AWS_ENDPOINT_URL=proxy.url)


def ledger_keys(env: Env) -> list[str]:
    return [key for key, _, _ in faults.ledger_rows(env)]


def test_a_flaky_s3_stream_converges_in_one_run(
    env: Env, no_backoff: None, capsys: pytest.CaptureFixture[str]
) -> None:
    files = long_stream()
    etags = faults.upload(env, files)
    with S3FaultProxy(env.aws.endpoint_url, FLAKY_S3, seed=SEED) as proxy:
        through_proxy(env, proxy)
        before = retry_counts()
        started = time.monotonic()
        report = sync(env.runtime(), DATASET)  # ONE run
        elapsed = time.monotonic() - started
        retries = counts_since(before)
        injected = proxy.injected

    assert report.ok and not report.stopped_early
    # Exactly once: one ledger row per file, in order, and the table is the in-order fold.
    assert ledger_keys(env) == [f.key for f in files]
    assert sorted(r.key for r in report.applied) == [f.key for f in files]
    # Every file archived, or (only if its move outlasted the retries) still in changes/
    # as "to archive": applied and in the ledger, moved by the next run.
    left = sorted(set(env.list_keys(CHANGES)))
    assert set(report.archived) | set(left) == {f.key for f in files}
    assert set(report.archived).isdisjoint(left)
    if left:
        follow_up = sync(env.runtime(), DATASET)
        assert follow_up.applied == [] and sorted(follow_up.archived) == left
    faults.assert_converged(env, files, etags)

    # The faults were real and many, of every kind, and every one was retried.
    assert injected.faults["slowdown"] >= 10
    assert injected.faults["cut"] >= 2
    assert injected.faults["drop"] >= 2
    assert retries.get("GET", 0) >= injected.faults["cut"]
    assert injected.faults["reset"] >= 1
    assert sum(retries.values()) == injected.total()  # each fault met one retry, no more
    # Requests: a GET and a COPY per file (and their retries), one batch delete for the
    # whole stream, never a single delete, one LIST.
    assert injected.requests["DeleteObject"] == 0
    assert injected.requests["DeleteObjects"] == 1 + retries.get("BATCH-DELETE", 0)
    assert injected.requests["CopyObject"] == len(files) + retries.get("COPY", 0)
    assert injected.requests["ListObjectsV2"] == 1 + retries.get("LIST", 0)
    with capsys.disabled():
        print(
            f"\none run through a flaky S3: {len(files)} files, {sum(injected.requests.values())} "
            f"requests, faults {dict(sorted(injected.faults.items()))}, retries "
            f"{retries}, {len(left)} left to archive, {elapsed:.1f} s"
        )


def test_a_lost_copy_or_delete_reply_is_a_move_done(env: Env) -> None:
    """The copies and the batch delete happened; only their replies were lost: the retries
    find each target copied / the sources gone (reported deleted), and take that as done."""
    files = faults.small_stream()
    etags = faults.upload(env, files)
    drops = [
        Fault("drop", 1.0, "CopyObject", first=1),
        Fault("drop", 1.0, "DeleteObjects", first=1),
    ]
    with S3FaultProxy(env.aws.endpoint_url, drops, seed=1) as proxy:
        through_proxy(env, proxy)
        report = sync(env.runtime(), DATASET)
        assert proxy.injected.by_operation == {
            ("drop", "CopyObject"): len(files),
            ("drop", "DeleteObjects"): 1,  # one batch for the whole stream
        }
        assert proxy.injected.requests["DeleteObject"] == 0
    assert report.ok and sorted(report.archived) == [f.key for f in files]
    faults.assert_converged(env, files, etags)


def test_archiving_again_what_is_already_archived_succeeds(env: Env) -> None:
    """A retried copy that finds its source gone and the target holding the applied
    version (an earlier try did both steps) is a move done, not an error; a retried batch
    delete finds the key gone: deleted."""
    [baseline] = faults.small_stream()[:1]
    etag = env.put(baseline.key, baseline.body)
    bucket = env.runtime().bucket
    assert bucket.copy_applied(DATASET, baseline.key, etag)  # copied: now delete it
    assert bucket.delete_applied([(baseline.key, etag)]).deleted == [baseline.key]
    assert not bucket.copy_applied(DATASET, baseline.key, etag)  # moved already
    again = bucket.delete_applied([(baseline.key, etag)])
    assert (again.deleted, again.changed, again.failed) == ([baseline.key], [], {})
    assert env.list_keys(f"automations/{DATASET}/") == [
        processed_key(DATASET, file_name(baseline.key))
    ]


def test_a_download_cut_every_time_fails_the_run_naming_file_and_cause(env: Env) -> None:
    files = faults.small_stream()
    etags = faults.upload(env, files)
    middle = files[2]
    with S3FaultProxy(
        env.aws.endpoint_url, [Fault("cut", 1.0, "GetObject", file_name(middle.key))], seed=3
    ) as proxy:
        variables = {**os.environ, "AWS_ENDPOINT_URL": proxy.url, "RETRY_ATTEMPTS": "3"}
        failed = faults.run_cli(variables)
        assert proxy.injected.faults == {"cut": 3}
    assert failed.returncode == 1, failed.stdout + failed.stderr
    assert "Traceback" not in failed.stderr
    last = failed.stderr.strip().splitlines()[-1]
    short = middle.key.removeprefix("automations/")
    assert last.startswith(f"tickets-ingest: {short}: GET failed after 3 attempts over ")
    assert re.search(
        r"\(IncompleteRead(Error: \d+ read, but total bytes expected is|\(\d+ bytes)", last
    )
    assert last.endswith("; nothing of it was committed; the next run retries it")
    # Each retry was logged, naming the file, the operation, the attempt and the cause.
    assert failed.stderr.count(f"WARNING {short}: GET failed (IncompleteRead") == 2
    faults.assert_applied_prefix(env, files, 2)

    clean = faults.run_cli(dict(os.environ))
    assert clean.returncode == 0, clean.stdout + clean.stderr
    faults.assert_converged(env, files, etags)


def test_slowdown_past_the_retry_budget_fails_the_listing_with_its_cause(env: Env) -> None:
    files = faults.small_stream()
    faults.upload(env, files)
    env.set(RETRY_ATTEMPTS="2")
    with S3FaultProxy(
        env.aws.endpoint_url, [Fault("slowdown", 1.0, "ListObjectsV2")], seed=4
    ) as proxy:
        through_proxy(env, proxy)
        with pytest.raises(TransientFault) as failure:
            sync(env.runtime(), DATASET)
        assert proxy.injected.faults == {"slowdown": 2}
    message = str(failure.value)
    assert message.startswith(f"{DATASET}/changes/: LIST failed after 2 attempts over ")
    assert "(SlowDown: Please reduce your request rate.)" in message
    assert message.endswith("; nothing was applied; the next run retries it")
    assert faults.ledger_rows(env) == []


def test_no_retry_starts_that_the_time_budget_cannot_finish(env: Env, no_backoff: None) -> None:
    """With the budget spent while a file is retried, the run stops retrying at once and
    says so; the file is left whole for the next run."""
    files = faults.small_stream()
    etags = faults.upload(env, files)
    middle = files[2]
    asked: list[str] = []

    def time_left(obj: Any) -> bool:
        asked.append(obj.key)
        return asked.count(middle.key) < 2  # the start of the file, then no more

    with S3FaultProxy(
        env.aws.endpoint_url, [Fault("cut", 1.0, "GetObject", file_name(middle.key))], seed=5
    ) as proxy:
        through_proxy(env, proxy)
        with pytest.raises(TransientFault) as failure:
            sync(env.runtime(), DATASET, SyncOptions(may_start_file=time_left))
        assert proxy.injected.faults == {"cut": 1}
    assert "GET failed after 1 attempt over " in str(failure.value)
    assert "the run's time budget leaves no room for another" in str(failure.value)
    faults.assert_applied_prefix(env, files, 2)
    env.set(AWS_ENDPOINT_URL=env.aws.endpoint_url)  # S3 is well again
    faults.sync_until_idle(env.runtime)
    faults.assert_converged(env, files, etags)


def test_an_unexpected_error_is_one_line_without_a_traceback(
    env: Env, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    def broken(*_: Any, **__: Any) -> None:
        raise RuntimeError("something nobody named")

    monkeypatch.setattr(activity, "sync", broken)  # what the CLI's sync calls
    assert cli.main(["sync", "--dataset", DATASET, "--apply"]) == cli.EXIT_FAILED
    err = capsys.readouterr().err
    assert "Traceback" not in err
    assert err.strip() == (
        "tickets-ingest: unexpected RuntimeError: something nobody named; committed files "
        "stay committed, the next run continues (--debug shows the traceback)"
    )


def test_the_proxy_decides_from_the_seed_and_the_request_not_the_order(env: Env) -> None:
    requests = [("GET", "GetObject", f"automations/inc/changes/{i:02d}.csv") for i in range(40)]
    requests += [("PUT", "CopyObject", key) for _, _, key in requests[:20]]

    def decisions(order: list[tuple[str, str, str]]) -> dict[tuple[str, str, str], str | None]:
        proxy = S3FaultProxy(env.aws.endpoint_url, FLAKY_S3, seed=SEED)
        try:
            return {request: proxy.decide(*request) for request in order}
        finally:
            proxy.stop()

    forward = decisions(requests)
    assert decisions(list(reversed(requests))) == forward
    assert set(forward.values()) >= {None, "slowdown"}
    # A cut is only ever chosen for a GET of an object: nothing else has a body to cut.
    assert all(kind != "cut" for (_, op, _), kind in forward.items() if op != "GetObject")


@pytest.mark.parametrize(
    ("method", "path", "query", "headers", "expected"),
    [
        ("GET", "/tickets", "list-type=2&prefix=automations%2Finc%2F", {}, "ListObjectsV2"),
        ("GET", "/tickets/automations/inc/changes/a.csv", "", {}, "GetObject"),
        ("HEAD", "/tickets/automations/inc/changes/a.csv", "", {}, "HeadObject"),
        ("PUT", "/tickets/k", "", {"x-amz-copy-source": "tickets/a"}, "CopyObject"),
        ("PUT", "/tickets/k", "", {}, "PutObject"),
        ("DELETE", "/tickets/k", "", {}, "DeleteObject"),
        ("POST", "/tickets", "delete=", {}, "DeleteObjects"),
    ],
)
def test_the_proxy_tells_the_operations_apart(
    method: str, path: str, query: str, headers: dict[str, str], expected: str
) -> None:
    assert classify(method, path, query, headers)[0] == expected


def test_the_proxy_names_the_keys_of_a_delete_objects() -> None:
    body = (
        b'<?xml version="1.0" encoding="UTF-8"?>'
        b'<Delete xmlns="http://s3.amazonaws.com/doc/2006-03-01/">'
        b'<Object><Key>automations/inc/changes/a.csv</Key><ETag>"e1"</ETag></Object>'
        b'<Object><Key>automations/inc/changes/b.csv</Key><ETag>"e2"</ETag></Object>'
        b"<Quiet>true</Quiet></Delete>"
    )
    assert classify("POST", "/tickets", "delete=", {}, body) == (
        "DeleteObjects",
        "automations/inc/changes/a.csv\nautomations/inc/changes/b.csv",
    )


def test_the_proxy_forwards_to_loopback_only() -> None:
    with pytest.raises(ValueError, match="loopback only"):
        S3FaultProxy("http://s3.eu-west-1.amazonaws.com:443", FLAKY_S3)


def test_a_replay_through_a_flaky_s3_converges_in_one_run(env: Env, no_backoff: None) -> None:
    """The restore path meets the same S3 as a sync and the same retry layer: a replay
    of every archived file (a database restored to empty) through cut downloads, SlowDown
    and dropped replies re-applies each file once, in order, in one run."""
    files = long_stream(deltas=12)
    faults.upload(env, files)
    assert sync(env.runtime(), DATASET).ok
    db = faults.checker(env)
    db.run("TRUNCATE tickets.incidents, tickets.import_meta")  # the restore lost it all
    with S3FaultProxy(env.aws.endpoint_url, FLAKY_S3, seed=SEED) as proxy:
        through_proxy(env, proxy)
        before = retry_counts()
        report = replay_missing(env.runtime(), DATASET, dry_run=False)  # ONE run
        retries = counts_since(before)
        injected = proxy.injected
    assert report.ok and report.rejected is None
    assert len(report.applied) == len(files)
    rows = db.run("SELECT source_key, export_type FROM tickets.import_meta ORDER BY id")
    assert rows == [[f.key, "replay"] for f in files]
    assert table_state(db, "incidents", REPLAYED_COLUMNS) == fold(f.body for f in files)
    assert injected.faults["cut"] >= 1
    assert retries.get("GET", 0) >= injected.faults["cut"]
