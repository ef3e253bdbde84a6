"""Fault injection helpers: crashes at named step boundaries, killed processes, dropped
database connections and failing S3 calls, plus the one invariant every scenario ends on.

The invariant (``assert_converged``): the table equals the fold of every file in order,
every file sits in ``processed/`` exactly once, ``changes/`` is empty, the ledger holds
exactly one row per file (baseline first, then deltas, in order, with the right ETags), and
nothing is rejected or blocked.
"""

from __future__ import annotations

import os
import subprocess
import sys
import threading
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from botocore.awsrequest import AWSResponse

from tests.conftest import Env
from tests.support.oracle import fold, table_state
from tickets_devkit.generator import StreamFile, TicketStream
from tickets_ingest.core.keys import file_name, processed_key
from tickets_ingest.core.schema import CSV_COLUMNS, DEFAULT_DROP_FIELDS
from tickets_ingest.dal.db import Database
from tickets_ingest.failpoints import Step
from tickets_ingest.logic.runtime import Runtime
from tickets_ingest.logic.sync import SyncOptions, sync
from tickets_ingest.models import SyncReport

DATASET = "inc"
TABLE = "incidents"
CHANGES = f"automations/{DATASET}/changes/"
COLUMNS = [c for c in CSV_COLUMNS if c not in DEFAULT_DROP_FIELDS]
REPO = Path(__file__).resolve().parents[2]
KILLED = 137  # what failpoints' os._exit reports, like a SIGKILLed process


class InjectedCrash(Exception):
    """Raised from a failpoint callback: the process "dies" at that boundary."""


def small_stream(seed: int = 21) -> list[StreamFile]:
    """A baseline of 200 rows and 4 deltas of 20 rows, each with repeated ids."""
    stream = TicketStream(DATASET, seed=seed)
    files = [stream.baseline(200)]
    files += [stream.delta(20, repeat_ids=4) for _ in range(4)]
    return files


def upload(env: Env, files: Sequence[StreamFile]) -> dict[str, str]:
    """Put every file under changes/; the ETag of each key."""
    return {f.key: env.put(f.key, f.body) for f in files}


# -- crashing at a step boundary ----------------------------------------------------------


@dataclass
class CrashAt:
    """A failpoint callback that raises ``InjectedCrash`` once, at ``step`` for a key
    containing ``key_part`` (and, with ``thread``, only in that thread)."""

    step: Step
    key_part: str = ""
    thread: threading.Thread | None = None
    fired: int = 0
    seen: list[tuple[Step, str]] = field(default_factory=list)

    def __call__(self, step: Step, key: str) -> None:
        if self.thread is not None and threading.current_thread() is not self.thread:
            return
        self.seen.append((step, key))
        if self.fired == 0 and step is self.step and self.key_part in key:
            self.fired += 1
            raise InjectedCrash(f"injected crash at {step.value} of {key}")


def stop_before(key: str) -> SyncOptions:
    """Options that stop a sync cleanly before ``key`` (to stage a crash at LISTED)."""
    return SyncOptions(may_start_file=lambda obj: obj.key < key)


def nothing_to_do(report: SyncReport) -> bool:
    plan = report.plan
    return not plan.to_apply and not plan.to_archive and not report.applied


def sync_until_idle(runtime: Callable[[], Runtime], max_runs: int = 3) -> list[SyncReport]:
    """Run sync until a run finds nothing to do; fail if that takes more than ``max_runs``."""
    reports: list[SyncReport] = []
    for _ in range(max_runs):
        report = sync(runtime(), DATASET)
        reports.append(report)
        assert report.ok, f"a file was rejected: {report.rejected}"
        if nothing_to_do(report):
            return reports
    raise AssertionError(
        f"still work to do after {max_runs} runs: "
        + "; ".join(
            f"apply {[p.obj.name for p in r.plan.to_apply]} archive "
            f"{[o.name for o in r.plan.to_archive]}"
            for r in reports
        )
    )


# -- the invariant ------------------------------------------------------------------------


def checker(env: Env) -> Database:
    """One connection per test for the checks (a connection costs ~80 ms to open)."""
    db: Database | None = getattr(env, "_faults_checker", None)
    if db is None or db.broken:
        db = env.db()
        setattr(env, "_faults_checker", db)  # noqa: B010 - Env has no slot for it
    return db


def ledger_rows(env: Env) -> list[tuple[str, str, str]]:
    rows = checker(env).run(
        "SELECT source_key, export_type, etag FROM tickets.import_meta "
        "WHERE dataset = :d ORDER BY id",
        d=DATASET,
    )
    return [(r[0], r[1], r[2]) for r in rows]


def committed_count(env: Env, files: Sequence[StreamFile], least: int, most: int) -> int:
    """Check that the committed files are a prefix of the stream, ``least`` to ``most``
    files long, and that the table holds exactly their fold; the prefix's length.

    Checks ids and ``updated_at`` only (cheap); ``assert_converged`` compares every column.
    """
    keys = [r[0] for r in ledger_rows(env)]
    count = len(keys)
    assert least <= count <= most, f"{count} files committed, expected {least}..{most}"
    assert keys == [f.key for f in files[:count]], "the ledger is not a prefix of the stream"
    rows = checker(env).run(f"SELECT ticket_id, updated_at FROM tickets.{TABLE}")
    expected = fold(f.body for f in files[:count])
    assert {r[0]: r[1] for r in rows} == {t: v["updated_at"] for t, v in expected.items()}
    return count


def assert_applied_prefix(env: Env, files: Sequence[StreamFile], count: int) -> None:
    """Exactly the first ``count`` files are committed: table and ledger, nothing more."""
    committed_count(env, files, count, count)


def bucket_etags(env: Env, prefix: str) -> dict[str, str]:
    paginator = env.s3.get_paginator("list_objects_v2")
    return {
        item["Key"]: item["ETag"].strip('"')
        for page in paginator.paginate(Bucket="tickets", Prefix=prefix)
        for item in page.get("Contents", [])
    }


def assert_converged(env: Env, files: Sequence[StreamFile], etags: dict[str, str]) -> None:
    # The table is the fold of every file once, in order: nothing lost, nothing applied
    # twice, nothing older over newer (a re-applied older file would change the fold).
    actual = table_state(checker(env), TABLE, COLUMNS)
    expected = fold(f.body for f in files)
    assert actual.keys() == expected.keys(), (
        f"ids missing {sorted(expected.keys() - actual.keys())[:5]}, "
        f"extra {sorted(actual.keys() - expected.keys())[:5]}"
    )
    differing = [t for t in expected if actual[t] != expected[t]]
    assert differing == [], f"{len(differing)} rows differ from the fold, e.g. {differing[:3]}"

    # The archive: each file in processed/ exactly once (the applied version), changes/
    # empty, nothing anywhere else.
    assert bucket_etags(env, f"automations/{DATASET}/") == {
        processed_key(DATASET, file_name(f.key)): etags[f.key] for f in files
    }

    # The ledger: one row per file, in order, baseline then deltas, with the applied ETag.
    expected_ledger = [
        (f.key, "baseline" if i == 0 else "delta", etags[f.key]) for i, f in enumerate(files)
    ]
    assert ledger_rows(env) == expected_ledger
    db = checker(env)
    assert db.run(
        "SELECT (SELECT count(*) FROM tickets.blocked_files),"
        " (SELECT count(*) FROM tickets.rejected_rows),"
        " (SELECT max(metadata ->> 'source_max_key') FROM tickets.import_meta"
        "  WHERE dataset = :d)",
        d=DATASET,
    ) == [[0, 0, files[-1].key]]


# -- a killed process -----------------------------------------------------------------------


def run_cli(
    env_vars: dict[str, str], failpoint: str | None = None, timeout: float = 60
) -> subprocess.CompletedProcess[str]:
    """``tickets-ingest sync --apply --dataset inc`` in a new process."""
    variables = dict(env_vars)
    variables.pop("TICKETS_FAILPOINT", None)
    if failpoint is not None:
        variables["TICKETS_FAILPOINT"] = failpoint
    path = str(REPO / "functions/ingest")
    variables["PYTHONPATH"] = os.pathsep.join(
        p for p in (path, str(REPO), variables.get("PYTHONPATH", "")) if p
    )
    command = ["sync", "--apply", "--dataset", DATASET]
    return subprocess.run(
        [sys.executable, "-m", "tickets_ingest.handlers.cli", *command],
        env=variables,
        cwd=REPO,
        capture_output=True,
        text=True,
        timeout=timeout,
        check=False,
    )


# -- a dropped database connection ------------------------------------------------------------


def terminate_backend(env: Env, pid: int) -> bool:
    """``pg_terminate_backend(pid)`` from another connection (like a failover or a DBA),
    returning once the backend is gone (its socket closed)."""
    db = checker(env)
    if not db.scalar("SELECT pg_terminate_backend(:pid)", pid=pid):
        return False
    deadline = time.monotonic() + 10
    while db.scalar("SELECT count(*) FROM pg_stat_activity WHERE pid = :pid", pid=pid):
        assert time.monotonic() < deadline, f"backend {pid} survived pg_terminate_backend"
        time.sleep(0.005)
    return True


class KillingBody:
    """An S3 body that, once about half of it was read, has the sync's backend terminated.

    Reads are capped at ``chunk`` bytes so even a small file is read in several pieces and
    the kill lands mid-COPY, with data already sent and more to come.
    """

    def __init__(
        self, inner: Any, size: int, on_half: Callable[[], None], chunk: int = 1024
    ) -> None:
        self._inner = inner
        self._half = size // 2
        self._on_half = on_half
        self._chunk = chunk
        self.read_bytes = 0
        self.fired = False

    def read(self, size: int = -1, /) -> bytes:
        if size < 0 or size > self._chunk:
            size = self._chunk
        data: bytes = self._inner.read(size)
        self.read_bytes += len(data)
        if not self.fired and self.read_bytes >= self._half:
            self.fired = True
            self._on_half()
        return data

    def close(self) -> None:
        self._inner.close()


def kill_mid_copy(
    runtime: Runtime, key_part: str, on_half: Callable[[], None]
) -> list[KillingBody]:
    """Wrap ``runtime.bucket.open`` so the body of the key containing ``key_part`` calls
    ``on_half`` halfway through; the wrapped bodies, to inspect."""
    bucket = runtime.bucket
    original = bucket.open
    wrapped: list[KillingBody] = []

    def open_(key: str, etag: str) -> Any:
        body = original(key, etag)
        if key_part not in key:
            return body
        size = int(bucket.client.head_object(Bucket=bucket.name, Key=key)["ContentLength"])
        killing = KillingBody(body, size, on_half)
        wrapped.append(killing)
        return killing

    bucket.open = open_  # type: ignore[method-assign]
    return wrapped


# -- failing S3 calls -----------------------------------------------------------------------


_ERRORS = {
    503: (b"SlowDown", b"Please reduce your request rate."),
    500: (b"InternalError", b"We encountered an internal error. Please try again."),
}


class _Raw:
    def __init__(self, body: bytes) -> None:
        self._body = body

    def stream(self, **_: Any) -> Any:
        yield self._body


def error_response(url: str, status: int) -> AWSResponse:
    code, message = _ERRORS[status]
    body = (
        b'<?xml version="1.0" encoding="UTF-8"?>\n<Error><Code>'
        + code
        + b"</Code><Message>"
        + message
        + b"</Message><RequestId>FAULT</RequestId><HostId>fault</HostId></Error>"
    )
    headers = {"Content-Type": "application/xml", "Content-Length": str(len(body))}
    return AWSResponse(url, status, headers, _Raw(body))


@dataclass
class FailFirst:
    """A ``before-send`` hook answering the first ``n`` sends (whose URL contains
    ``url_part``) with ``status``; no such request reaches the emulator. Later sends pass."""

    n: int
    status: int = 503
    url_part: str = ""
    sent: int = 0
    failed: int = 0

    def __call__(self, request: Any, **_: Any) -> AWSResponse | None:
        self.sent += 1
        if self.failed < self.n and self.url_part in request.url:
            self.failed += 1
            return error_response(request.url, self.status)
        return None


def fail_first(
    runtime: Runtime, operation: str, n: int, status: int = 503, url_part: str = ""
) -> FailFirst:
    """Fail the first ``n`` sends of ``operation`` by the runtime's S3 client."""
    hook = FailFirst(n, status, url_part)
    runtime.bucket.client.meta.events.register(f"before-send.s3.{operation}", hook)
    return hook
