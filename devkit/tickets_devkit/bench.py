"""``tickets-devkit bench``: our sync path against PostgreSQL's own COPY, measured in one run.

Every figure is a median over ``--runs`` timed runs after one warm-up run, on the same
machine, the same generated data and the same PostgreSQL (fsync on). Where a figure has a
reference, the two are measured in turn (ours, the reference, ours, ...), so a stretch in
which the shared machine runs slow slows both; the note gives the range of the ratios of
the single pairs, which says how far the ratio itself moves on the day. The reference is
what PostgreSQL must do anyway: ``psql \\copy`` of the file into a temporary table plus one
``INSERT ... SELECT ... ON CONFLICT DO UPDATE`` with the same casts, timed by psql itself.
"""

from __future__ import annotations

import argparse
import csv
import io
import json
import os
import re
import statistics
import subprocess
import sys
import tempfile
import threading
import time
from collections import Counter
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit, urlunsplit

from tickets_devkit.forwarder import forwarder_process
from tickets_devkit.generator import (
    BASELINE_ROWS,
    StreamFile,
    TicketStream,
    file_key,
    write_baseline_to,
)
from tickets_devkit.local import BUCKET, LocalStack, environment, local_stack
from tickets_devkit.postgres import find_bindir
from tickets_ingest.core.schema import COLUMN_KINDS, CSV_COLUMNS, DEFAULT_DROP_FIELDS, Kind
from tickets_ingest.dal.s3 import Bucket, Deleted
from tickets_ingest.logic.runtime import Runtime
from tickets_ingest.logic.sync import sync
from tickets_ingest.settings import load_settings, parse_database_url

RESULTS = Path("bench/results")
STEPS = ("baseline", "backlog", "memory", "cold", "peer")  # `--only` names, in run order
README_START = "<!-- bench:start -->"
README_END = "<!-- bench:end -->"
STORED = [c for c in CSV_COLUMNS if c not in DEFAULT_DROP_FIELDS]


@dataclass
class Row:
    measure: str
    ours: str
    reference: str = "-"
    ratio: str = "-"
    target: str = "-"
    note: str = ""


@dataclass(frozen=True)
class Paired:
    """Ours and its reference, timed in turn: ``ours[i]`` and ``reference[i]`` come from the
    same round (the backlog also runs its database-path-alone run in each round)."""

    ours: list[float]
    reference: list[float]

    @property
    def ours_median(self) -> float:
        return statistics.median(self.ours)

    @property
    def reference_median(self) -> float:
        return statistics.median(self.reference)

    @property
    def ratio(self) -> float:
        return self.ours_median / self.reference_median

    def spread(self) -> str:
        """``pairs 1.62-1.81``: the lowest and highest ratio of one run to its partner."""
        ratios = sorted(o / r for o, r in zip(self.ours, self.reference, strict=True))
        if len(ratios) < 2:
            return ""
        return f"pairs {ratios[0]:.2f}-{ratios[-1]:.2f}"


def paired(ours: Callable[[], float], reference: Callable[[], float], runs: int) -> Paired:
    """``runs`` of each, alternating, so that both see the same stretches of a noisy machine."""
    timed = Paired([], [])
    for _ in range(runs):
        timed.ours.append(ours())
        timed.reference.append(reference())
    return timed


@dataclass
class Bench:
    stack: LocalStack
    runs: int
    workdir: Path
    rows: list[Row] = field(default_factory=list)
    _clock: int = 0
    _warm: Runtime | None = None
    # Measured durations the cost row bills (seconds): set by the steps that measure them.
    billed: dict[str, float] = field(default_factory=dict)

    # --- helpers ---------------------------------------------------------------------

    def next_key(self) -> str:
        """A fresh stream key, later than every key used before in this run."""
        self._clock += 1
        stamp = datetime(2026, 6, 22, 15, 50, 39, tzinfo=UTC) + timedelta(minutes=self._clock)
        return file_key("inc", stamp)

    def cpu_seconds(self) -> dict[str, float]:
        """User + system CPU seconds so far of this process (all its threads), the
        PostgreSQL server (postmaster and backends) and the S3 emulator's process."""
        postgres = self.stack.postgres
        emulator = self.stack.aws.pid
        if postgres is None or emulator is None or not Path("/proc").is_dir():
            return {}
        return {
            CPU_USERS[0]: time.process_time(),
            CPU_USERS[1]: _proc_cpu(postgres.pid, children=True),
            CPU_USERS[2]: _proc_cpu(emulator),
        }

    def runtime(self) -> Runtime:
        return Runtime(load_settings(), application_name="tickets-ingest bench")

    def sql(self, statement: str) -> None:
        runtime = self.runtime()
        try:
            runtime.db().run(statement)
        finally:
            runtime.close()

    def reset(self) -> None:
        self.sql(
            "TRUNCATE tickets.incidents, tickets.import_meta, tickets.rejected_rows, "
            "tickets.blocked_files"
        )
        s3 = self.stack.s3()
        for page in s3.get_paginator("list_objects_v2").paginate(Bucket=BUCKET):
            for item in page.get("Contents", []):
                s3.delete_object(Bucket=BUCKET, Key=item["Key"])

    def ours(self, body: Path, *, prepare: Callable[[], None] | None = None) -> float:
        """Seconds for one sync of ``body`` uploaded as the next file (upload not timed)."""
        if prepare is not None:
            prepare()
        self.stack.s3().upload_file(str(body), BUCKET, self.next_key())
        # One process for all runs, like a warm Lambda container: connected and migrated
        # before the first timed run, as the reference's psql session is.
        if self._warm is None:
            self._warm = self.runtime()
            self._warm.db()
        clock = time.perf_counter()
        report = sync(self._warm, "inc")
        elapsed = time.perf_counter() - clock
        if not report.ok or len(report.applied) != 1:
            raise RuntimeError(f"bench sync did not apply the file: {report}")
        return elapsed

    def reference(self, body: Path, *, prepare: Callable[[], None] | None = None) -> float:
        """Seconds psql reports for \\copy into a temp table + the upsert (process start and
        connection excluded, as for ours)."""
        if prepare is not None:
            prepare()
        return self.psql_seconds(_reference_script(body))

    def psql_seconds(self, script: str, *, url: str | None = None) -> float:
        """Run ``script`` in one psql session (to ``url``, else the stack's PostgreSQL);
        the sum of the times psql itself reports."""
        psql = find_bindir() / "psql"
        target = url or self.stack.database_url
        done = subprocess.run(
            [str(psql), "-X", "-q", "-v", "ON_ERROR_STOP=1", "-d", target],
            input=script,
            capture_output=True,
            text=True,
            check=True,
        )
        times = [float(m) for m in re.findall(r"Time: ([0-9.]+) ms", done.stdout)]
        return sum(times) / 1000

    def compare(
        self, name: str, body: Path, target: str, *, prepare: Callable[[], None] | None = None
    ) -> None:
        def ours() -> float:
            return self.ours(body, prepare=prepare)

        def reference() -> float:
            return self.reference(body, prepare=prepare)

        ours(), reference()  # warm-up, not counted
        timed = paired(ours, reference, self.runs)
        self.rows.append(
            Row(
                name,
                _seconds(timed.ours_median),
                _seconds(timed.reference_median),
                f"{timed.ratio:.2f}",
                target,
                note=timed.spread(),
            )
        )


def _seconds(value: float) -> str:
    return f"{value * 1000:.0f} ms" if value < 1 else f"{value:.2f} s"


def _reference_script(body: Path) -> str:
    text = ", ".join(f"{c} text" for c in CSV_COLUMNS)
    casts = []
    for column in STORED:
        kind = COLUMN_KINDS[column]
        if kind is Kind.TEXT:
            casts.append(f"nullif({column}, '')")
        else:
            casts.append(f"nullif({column}, '')::{kind.value}")
    columns = ", ".join(STORED)
    updates = ", ".join(f"{c} = excluded.{c}" for c in STORED[1:])
    path = str(body).replace("'", "''")
    return f"""
SET TimeZone = 'Africa/Nairobi';
SET work_mem = '64MB';
\\timing on
BEGIN;
CREATE TEMP TABLE ref_stage ({text}) ON COMMIT DROP;
\\copy ref_stage FROM '{path}' WITH (FORMAT csv, HEADER true)
INSERT INTO tickets.incidents ({columns}, source_key)
SELECT DISTINCT ON (ticket_id) {", ".join(casts)}, 'reference'
FROM ref_stage WHERE NOT coalesce(nullif(is_alarm, '')::boolean, false)
ORDER BY ticket_id
ON CONFLICT (ticket_id) DO UPDATE SET {updates}, source_key = excluded.source_key;
COMMIT;
"""


def _every_row_changed(body: bytes) -> bytes:
    """The same tickets, each one updated: a later updated_at and another status."""
    reader = csv.DictReader(io.StringIO(body.decode("utf-8"), newline=""))
    out = io.StringIO()
    writer = csv.DictWriter(out, fieldnames=list(CSV_COLUMNS), lineterminator="\r\n")
    writer.writeheader()
    for record in reader:
        if record["updated_at"]:
            stamp = datetime.strptime(record["updated_at"], "%Y-%m-%d %H:%M:%S")
            record["updated_at"] = (stamp + timedelta(hours=1)).strftime("%Y-%m-%d %H:%M:%S")
        record["raw_status"] = "Resolved" if record["raw_status"] != "Resolved" else "Closed"
        record["sla_status"] = "Breached"
        writer.writerow(record)
    return out.getvalue().encode("utf-8")


CPU_USERS = ("ours", "PostgreSQL", "the S3 emulator")


def _proc_cpu(pid: int, *, children: bool = False) -> float:
    """CPU seconds of ``pid`` (and of its running children) from /proc (Linux)."""
    tick = os.sysconf("SC_CLK_TCK")
    total = 0.0
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit():
            continue
        try:
            fields = (entry / "stat").read_text().rsplit(")", 1)[1].split()
        except OSError:  # it ended meanwhile
            continue
        # After the command: state, ppid, ... utime and stime are fields 14 and 15 of stat.
        if int(entry.name) == pid or (children and int(fields[1]) == pid):
            total += (int(fields[11]) + int(fields[12])) / tick
    return total


@dataclass
class _Latency:
    """Adds a fixed delay to every S3 call of the clients it is installed on."""

    seconds: float

    def __call__(self, **_: Any) -> None:
        time.sleep(self.seconds)


def _install_latency(runtime: Runtime, seconds: float) -> None:
    if seconds > 0:
        runtime.bucket.client.meta.events.register("before-send.s3", _Latency(seconds))


@dataclass
class S3Requests:
    """The S3 requests a client sends, by operation (botocore's ``before-send`` event: each
    try, retries included, as S3 bills them). ``with S3Requests(client) as sent:``."""

    client: Any
    counts: Counter[str] = field(default_factory=Counter)
    _lock: threading.Lock = field(default_factory=threading.Lock, repr=False)

    def __enter__(self) -> S3Requests:
        self.client.meta.events.register("before-send.s3", self._sent)
        return self

    def __exit__(self, *_: object) -> None:
        self.client.meta.events.unregister("before-send.s3", self._sent)

    def _sent(self, event_name: str, **_: Any) -> None:
        with self._lock:  # the sync's pipeline sends from several threads
            self.counts[event_name.rsplit(".", 1)[-1]] += 1

    def per_file(self, files: int) -> str:
        """``2.00 (GET 1.00, COPY 1.00, DeleteObjects 0.001, ListObjectsV2 0.001)``."""
        by_operation = ", ".join(
            f"{_OPERATION_NAMES.get(name, name)} {_share(count / files)}"
            for name, count in self.counts.most_common()
        )
        return f"{sum(self.counts.values()) / files:.2f} ({by_operation})"


_OPERATION_NAMES = {"GetObject": "GET", "CopyObject": "COPY", "ListObjectsV2": "LIST"}


def _share(value: float) -> str:
    return f"{value:.2f}" if value >= 0.1 else f"{value:.3f}"  # 1.00, 0.25, 0.001


# --- the measures --------------------------------------------------------------------------


def _sample_files(bench: Bench, rows: int, seed: int) -> tuple[Path, Path]:
    """The baseline and its 131-row delta that the baseline and peer steps both apply,
    written once per run (either step may run alone: `--only peer`)."""
    baseline, delta = bench.workdir / "baseline.csv", bench.workdir / "delta.csv"
    if not (baseline.exists() and delta.exists()):
        stream = TicketStream("inc", seed=seed)
        baseline.write_bytes(stream.baseline(rows).body)
        delta.write_bytes(stream.delta(131).body)
    return baseline, delta


def bench_baseline_and_updates(bench: Bench, rows: int, seed: int) -> None:
    base_path, delta_path = _sample_files(bench, rows, seed)
    bench.compare(
        f"baseline, {rows:,} rows into an empty table", base_path, "<= 1.1", prepare=bench.reset
    )

    updated_path = bench.workdir / "updated.csv"
    updated_path.write_bytes(_every_row_changed(base_path.read_bytes()))
    bench.reset()
    bench.ours(base_path)  # the table holds the baseline; every run updates every row
    bench.compare(f"full update, {rows:,} rows all changed", updated_path, "<= 1.5")

    bench.compare("small delta, 131 rows into the full table", delta_path, "report ms")


# Held in each direction by the forwarder between the sync (and psql) and PostgreSQL. With
# the forwarder's own hop a round trip comes to ~0.5-1 ms, as to a database across a network
# from the function; the row says what it measured.
DB_DELAY_MS = 0.25


def bench_backlog(
    bench: Bench, files: int, latency_ms: float, seed: int, db_delay_ms: float
) -> None:
    """A backlog of small deltas in one sync (the sync minus a no-op sync's time), against
    psql applying the same files one transaction each; again with S3 latency added; and
    again, against psql again, with a network between both and the database."""
    stream = TicketStream("inc", seed=seed)
    baseline = stream.baseline(500)
    deltas = [stream.delta(1 + (i * 7) % 50, minutes_later=1) for i in range(files)]
    bodies = [d.body for d in deltas]
    rounds = min(bench.runs, 3)  # each run is a whole backlog; three suffice
    round_trips: list[float] = []
    requests: list[S3Requests] = []
    cpu_used: list[Counter[str]] = []
    whole: list[float] = []
    alone: list[float] = []
    reference: list[float] = []
    for _ in range(rounds):  # in turn: the whole sync, the database path alone, psql
        run = _backlog_run(bench, baseline, deltas, 0.0)
        whole.append(run.seconds / files)
        requests.append(run.requests)
        cpu_used.append(run.cpu)
        round_trips.append(run.round_trips / files)
        alone.append(_backlog_run(bench, baseline, deltas, 0.0, s3_in_memory=True).seconds / files)
        reference.append(_backlog_reference(bench, baseline.body, bodies) / files)
    backlog, database_path = Paired(whole, reference), Paired(alone, reference)
    with_latency = statistics.median(
        _backlog_run(bench, baseline, deltas, latency_ms / 1000).seconds / files
        for _ in range(rounds)
    )
    bench.billed["backlog_file"] = with_latency  # as from the bucket's region
    bench.rows.append(
        Row(
            f"backlog, {files:,} deltas of 1-50 rows in one sync",
            f"{backlog.ours_median * 1000:.1f} ms/file ({1 / backlog.ours_median:.0f} files/s)",
            f"{backlog.reference_median * 1000:.1f} ms/file",
            f"{backlog.ratio:.2f}",
            target="<= 2.5; >= 150 files/s with S3 latency",
            note=_joined(
                f"with {latency_ms:.0f} ms added to every S3 call: {1 / with_latency:.0f} files/s",
                backlog.spread(),
                f"{statistics.median(round_trips):.1f} database round trips per file",
                _cpu_note(cpu_used, files),
            ),
        )
    )
    # Every run sends the same requests (no faults here): the first run's count says it.
    bench.rows.append(
        Row(
            "S3 requests per applied file, in that backlog",
            requests[0].per_file(files),
            target="<= 2.05",
            note="each request botocore sent during the sync, by operation",
        )
    )
    bench.rows.append(
        Row(
            "that backlog with S3 taken out: the database path alone",
            f"{database_path.ours_median * 1000:.1f} ms/file "
            f"({1 / database_path.ours_median:.0f} files/s)",
            f"{database_path.reference_median * 1000:.1f} ms/file",
            f"{database_path.ratio:.2f}",
            target="report",
            note=_joined(
                "bodies read from memory, archive requests skipped (the listing is real): "
                "where the applying thread, its round trips and PostgreSQL set the pace, as "
                "in a function whose S3 runs on S3's machines; the same psql runs",
                database_path.spread(),
            ),
        )
    )
    _backlog_over_a_network(bench, baseline, deltas, db_delay_ms)


def _backlog_over_a_network(
    bench: Bench, baseline: StreamFile, deltas: list[StreamFile], delay_ms: float
) -> None:
    """The backlog with every database round trip made longer, for ours and psql alike:
    where the lab's loopback hides what each round trip costs."""
    files = len(deltas)
    bodies = [d.body for d in deltas]
    target = parse_database_url(bench.stack.database_url)
    with forwarder_process((target.host, target.port), delay=delay_ms / 1000) as port:
        url = _via(bench.stack.database_url, port)
        with environment({"DATABASE_URL": url}):
            rtt = _round_trip_seconds(bench.runtime())
            timed = paired(
                lambda: _backlog_run(bench, baseline, deltas, 0.0).seconds / files,
                lambda: _backlog_reference(bench, baseline.body, bodies, url=url) / files,
                min(bench.runs, 3),
            )
    direct = _round_trip_seconds(bench.runtime())
    bench.rows.append(
        Row(
            f"that backlog, {delay_ms:g} ms added each way to every database round trip",
            f"{timed.ours_median * 1000:.1f} ms/file ({1 / timed.ours_median:.0f} files/s)",
            f"{timed.reference_median * 1000:.1f} ms/file",
            f"{timed.ratio:.2f}",
            target="report",
            note=_joined(
                f"ours and psql through the same TCP hop: a round trip (SELECT 1) "
                f"{rtt * 1000:.2f} ms, {direct * 1000:.2f} ms without it; as to a database "
                "across a network from the function",
                timed.spread(),
            ),
        )
    )


def _via(database_url: str, port: int) -> str:
    """``database_url`` with its port replaced (the forwarder listens on 127.0.0.1)."""
    parts = urlsplit(database_url)
    netloc = parts.netloc.rsplit("@", 1)
    host = f"127.0.0.1:{port}"
    return urlunsplit(parts._replace(netloc=f"{netloc[0]}@{host}" if len(netloc) > 1 else host))


def _round_trip_seconds(runtime: Runtime, samples: int = 200) -> float:
    try:
        db = runtime.db()
        times = []
        for _ in range(samples):
            clock = time.perf_counter()
            db.run("SELECT 1")
            times.append(time.perf_counter() - clock)
        return statistics.median(times)
    finally:
        runtime.close()


@dataclass
class _BacklogRun:
    seconds: float  # the sync minus a no-op sync
    round_trips: int
    requests: S3Requests
    cpu: Counter[str]


class _MemoryBucket(Bucket):
    """The bucket with its objects' bodies read from memory and the archive's requests
    skipped (every applied file counts as archived); listing stays real. What the sync does
    with S3 taken out: the database path alone."""

    def __init__(self, bucket: Bucket, bodies: dict[str, bytes]) -> None:
        super().__init__(bucket.name, policy=bucket.policy, client=bucket.client)
        self._bodies = bodies

    def open(self, key: str, etag: str) -> Any:
        return io.BytesIO(self._bodies[key])

    def copy_applied(self, dataset: str, key: str, etag: str) -> bool:
        return True

    def delete_applied(self, objects: Any) -> Deleted:
        return Deleted(deleted=[key for key, _ in objects])


def _backlog_run(
    bench: Bench,
    baseline: StreamFile,
    deltas: list[StreamFile],
    s3_latency: float,
    *,
    s3_in_memory: bool = False,
) -> _BacklogRun:
    """One whole backlog: the baseline synced (not timed), the deltas put, one timed sync.
    ``s3_in_memory``: the timed sync reads the bodies from memory and skips the archive."""
    bench.reset()
    s3 = bench.stack.s3()
    s3.put_object(Bucket=BUCKET, Key=baseline.key, Body=baseline.body)
    runtime = bench.runtime()
    sync(runtime, "inc")
    for delta in deltas:
        s3.put_object(Bucket=BUCKET, Key=delta.key, Body=delta.body)
    if s3_in_memory:
        runtime.bucket = _MemoryBucket(runtime.bucket, {d.key: d.body for d in deltas})
    _install_latency(runtime, s3_latency)
    trips = runtime.db().round_trips
    with S3Requests(runtime.bucket.client) as sent:
        cpu = bench.cpu_seconds()
        clock = time.perf_counter()
        report = sync(runtime, "inc")
        elapsed = time.perf_counter() - clock
        cpu_used = Counter(bench.cpu_seconds()) - Counter(cpu)
    trips = runtime.db().round_trips - trips
    if s3_in_memory:  # what the skipped archive would have removed, so the no-op sync is one
        for start in range(0, len(deltas), 1000):
            batch = [{"Key": d.key} for d in deltas[start : start + 1000]]
            s3.delete_objects(Bucket=BUCKET, Delete={"Objects": batch, "Quiet": True})
    clock = time.perf_counter()
    sync(runtime, "inc")  # nothing left: what any sync costs, whatever it applies
    idle = time.perf_counter() - clock
    runtime.close()
    if len(report.applied) != len(deltas) or len(report.archived) != len(deltas):
        raise RuntimeError("backlog run did not apply and archive every file")
    if s3_in_memory and sent.counts.keys() - {"ListObjectsV2"}:
        raise RuntimeError(f"S3 was to be taken out of the sync, yet it sent {sent.counts}")
    return _BacklogRun(elapsed - idle, trips, sent, cpu_used)


def _joined(*parts: str) -> str:
    """A row's note: its non-empty parts, in order."""
    return "; ".join(part for part in parts if part)


def _cpu_note(samples: list[Counter[str]], files: int) -> str:
    """CPU per file of each process in the run (medians): on a small machine the S3
    emulator's share is what a deployed function does not pay for."""
    if not samples or not all(samples):
        return "CPU per file not measured (no /proc)"
    parts = [
        f"{name} {statistics.median(s[name] for s in samples) / files * 1000:.1f} ms"
        for name in CPU_USERS
    ]
    return f"CPU per file: {', '.join(parts)} (on {os.cpu_count()} CPUs)"


def _backlog_reference(
    bench: Bench, baseline: bytes, deltas: list[bytes], *, url: str | None = None
) -> float:
    """Seconds psql reports for applying ``deltas`` one transaction each (\\copy into a
    temp table + the upsert + commit), after the baseline (not timed); ``url``: connected
    there instead of straight to the stack's PostgreSQL."""
    bench.reset()
    paths = []
    for index, body in enumerate([baseline, *deltas]):
        path = bench.workdir / f"backlog-{index:04d}.csv"
        path.write_bytes(body)
        paths.append(path)
    bench.reference(paths[0])
    script = "".join(_reference_script(path) for path in paths[1:])
    seconds = bench.psql_seconds(script, url=url)
    for path in paths:
        path.unlink()
    return seconds


_MEASURED = """
import sys
from tickets_ingest.handlers.cli import main
code = main(sys.argv[1:])
with open("/proc/self/status") as status:
    peak = next(line.split()[1] for line in status if line.startswith("VmHWM:"))
print(f"VmHWM_KIB={peak}", file=sys.stderr)
sys.exit(code)
"""


def run_measured(args: list[str], env: dict[str, str]) -> tuple[int, float, int]:
    """``tickets-ingest ARGS`` in a child: exit code, seconds, its own peak RSS (KiB).

    VmHWM, not ru_maxrss: on Linux a child inherits its parent's maxrss across fork+exec."""
    clock = time.perf_counter()
    done = subprocess.run(
        [sys.executable, "-c", _MEASURED, *args],
        env=env,
        capture_output=True,
        text=True,
        check=False,
    )
    elapsed = time.perf_counter() - clock
    marker = [line for line in done.stderr.splitlines() if line.startswith("VmHWM_KIB=")]
    if done.returncode != 0:
        raise RuntimeError(f"tickets-ingest {' '.join(args)} failed: {done.stderr[-2000:]}")
    return done.returncode, elapsed, int(marker[-1].split("=")[1]) if marker else 0


def bench_memory(bench: Bench, rows: int, seed: int) -> None:
    bench.reset()
    path = bench.workdir / "big.csv"
    with path.open("wb") as handle:
        size = write_baseline_to(handle, rows, seed=seed)
    bench.stack.s3().upload_file(str(path), BUCKET, bench.next_key())
    path.unlink()
    env = {**os.environ, **bench.stack.env("inc")}
    _, seconds, peak_kib = run_measured(["sync", "--apply", "--dataset", "inc"], env)
    bench.rows.append(
        Row(
            f"memory, one {rows:,}-row file ({size / 1e6:.0f} MB)",
            f"{peak_kib / 1024:.0f} MB peak RSS",
            target="< 100 MB",
            note=f"whole process, incl. Python and boto3; synced in {seconds:.1f} s",
        )
    )


_COLD = """
import json, sys, time
clock = time.perf_counter()
sys.path.insert(0, sys.argv[1])
import app
imported = time.perf_counter() - clock


def memory():
    with open("/proc/self/status") as status:
        fields = dict(line.split(":", 1) for line in status)
    return {name: int(fields[name].split()[0]) for name in ("VmHWM", "VmRSS")}


init = memory()
from tickets_devkit.event_path import FakeLambdaContext
times = []
for _ in range(2 + int(sys.argv[2])):
    clock = time.perf_counter()
    app.lambda_handler({"dataset": "inc"}, FakeLambdaContext())
    times.append(time.perf_counter() - clock)
warm = sorted(times[1:])[len(times[1:]) // 2]
print(json.dumps({"import": imported, "first": times[0], "warm": warm, "init": init,
                  "invoked": memory(), "xray": "aws_xray_sdk.core" in sys.modules}))
"""

# What any Python Lambda that talks to S3 pays: the SDK and one client.
_COLD_REFERENCE = """
import json, time
clock = time.perf_counter()
import boto3
boto3.client("s3")
print(json.dumps({"import": time.perf_counter() - clock}))
"""


def _child(script: str, args: list[str], env: dict[str, str]) -> dict[str, Any]:
    done = subprocess.run(
        [sys.executable, "-c", script, *args], env=env, capture_output=True, text=True, check=True
    )
    result: dict[str, Any] = json.loads(done.stdout.strip().splitlines()[-1])
    return result


def bench_cold_start(bench: Bench, warm_calls: int = 20) -> None:
    """A new Lambda container, in a child process: ``import app`` (the INIT phase) with
    tracing off and on, peak RSS after it and after the first invocation, the first and a
    warm no-op invocation (a direct ``{"dataset": "inc"}`` with nothing pending: the median
    of ``warm_calls``). LAMBDA_TASK_ROOT is set as Lambda sets it: the X-Ray SDK and
    Powertools behave as they do in Lambda (outside it the SDK's sampler alone costs
    ~100 ms). The reference, measured in the same run: ``import boto3; boto3.client("s3")``.
    """
    import tickets_ingest  # noqa: PLC0415

    app_dir = str(Path(tickets_ingest.__file__).resolve().parents[1])
    env = {
        **os.environ,
        **bench.stack.env("inc"),
        "LAMBDA_TASK_ROOT": app_dir,
        "POWERTOOLS_METRICS_NAMESPACE": "TicketsIngest",
    }
    off = {**env, "POWERTOOLS_TRACE_DISABLED": "true"}
    on = {**env, "POWERTOOLS_TRACE_DISABLED": "false"}
    args = [app_dir, str(warm_calls)]
    samples: dict[str, list[dict[str, Any]]] = {"off": [], "on": [], "reference": []}
    for run in range(bench.runs + 1):  # the first round pays for cold disk caches
        for name, script, variables in (
            ("off", _COLD, off),
            ("on", _COLD, on),
            ("reference", _COLD_REFERENCE, env),
        ):
            sample = _child(script, args if script is _COLD else [], variables)
            if run:
                samples[name].append(sample)
    if any(s["xray"] for s in samples["off"]) or not all(s["xray"] for s in samples["on"]):
        raise RuntimeError("tracing off must not load the X-Ray SDK, tracing on must")

    def ms(name: str, key: str) -> float:
        return float(statistics.median(s[key] for s in samples[name])) * 1000

    def mib(name: str, phase: str, key: str) -> float:
        return float(statistics.median(s[phase][key] for s in samples[name])) / 1024

    bench.rows.append(
        Row(
            "cold start: import app (tracing off)",
            f"{ms('off', 'import'):.0f} ms",
            # Not a ratio column entry: the chart and its ratios are ours vs psql only.
            f"{ms('reference', 'import'):.0f} ms (import boto3 + an S3 client)",
            target="<= 200 ms",
            note=f"tracing on (X-Ray SDK, patched libraries): {ms('on', 'import'):.0f} ms; "
            f"peak RSS after import {mib('off', 'init', 'VmHWM'):.0f} MB "
            f"(tracing on {mib('on', 'init', 'VmHWM'):.0f} MB), after the first "
            f"invocation {mib('off', 'invoked', 'VmHWM'):.0f} MB",
        )
    )
    bench.billed["warm_noop"] = ms("off", "warm") / 1000
    bench.rows.append(
        Row(
            "first invocation, then a warm no-op (direct, nothing pending)",
            f"{ms('off', 'first'):.0f} ms, then {ms('off', 'warm'):.1f} ms",
            target="warm <= 5 ms",
            note=f"first: connect, schema check, list; tracing on: {ms('on', 'first'):.0f} ms, "
            f"then {ms('on', 'warm'):.1f} ms",
        )
    )


# AWS list prices (USD), first tier, the same in us-east-1 and eu-west-1, as published on
# aws.amazon.com/lambda/pricing and aws.amazon.com/s3/pricing; taken 2026-12-03 (from copies
# of those pages: the pages themselves are not reachable from these machines).
PRICES_TAKEN = "2026-12-03"
LAMBDA_GB_SECOND = {"arm64": 0.0000133334, "x86_64": 0.0000166667}
LAMBDA_REQUEST = 0.20 / 1_000_000
S3_REQUEST = {"GetObject": 0.0004 / 1000, "CopyObject": 0.005 / 1000}  # DeleteObjects is free


def function_size(template: Path | None = None) -> tuple[int, str]:
    """The function's memory (MB, the FunctionMemorySize default) and architecture, read
    from template.yaml: the cost row bills what the template deploys."""
    from tickets_devkit.event_path import FUNCTION, TEMPLATE, load_template  # noqa: PLC0415

    loaded = load_template(template or TEMPLATE)
    memory = int(loaded["Parameters"]["FunctionMemorySize"]["Default"])
    properties = loaded["Resources"][FUNCTION]["Properties"]
    architectures = properties.get("Architectures") or ["x86_64"]
    return memory, str(architectures[0])


def cost_per_thousand(seconds_per_file: float, memory_mb: int, architecture: str) -> float:
    """Lambda's duration charge for 1,000 files at ``seconds_per_file`` each (USD)."""
    return 1000 * seconds_per_file * memory_mb / 1024 * LAMBDA_GB_SECOND[architecture]


def bench_cost(bench: Bench) -> None:
    """Cost per 1,000 files at the template's memory size, from this run's durations: a
    backlog (one invocation applies them all) and a steady stream (one event, one warm
    invocation per file: its apply plus the invocation's own overhead, the warm no-op)."""
    per_file = bench.billed.get("backlog_file")
    if per_file is None:
        return  # the backlog step did not run
    memory, architecture = function_size()
    backlog = cost_per_thousand(per_file, memory, architecture)
    noop = bench.billed.get("warm_noop")
    stream = ""
    if noop is not None:
        each = cost_per_thousand(per_file + noop, memory, architecture) + 1000 * LAMBDA_REQUEST
        stream = f"; one event per file: ${each:.6f}"
    s3 = 1000 * sum(S3_REQUEST.values())  # one GET and one COPY a file (the backlog's row)
    bench.rows.append(
        Row(
            f"Lambda cost per 1,000 files ({memory} MB, {architecture})",
            f"${backlog:.6f} in a backlog{stream}",
            target="report",
            note=f"duration {per_file * 1000:.1f} ms/file with S3 latency"
            + (f" (+ {noop * 1000:.1f} ms a warm invocation)" if noop is not None else "")
            + f" x ${LAMBDA_GB_SECOND[architecture]}/GB-s, ${LAMBDA_REQUEST * 1e6:.2f} per 1M "
            f"requests: AWS list prices taken {PRICES_TAKEN}; S3 bills ${s3:.4f} more for the "
            "GET and COPY of 1,000 files",
        )
    )


def bench_peer(bench: Bench, rows: int, seed: int) -> None:
    """dlt's merge of the same baseline and delta, when its own environment exists."""
    python = Path(".venv-dlt/bin/python")
    if not python.exists():
        bench.rows.append(
            Row("peer: dlt merge", "skipped", note="dlt is not installed: `make bench-dlt-env`")
        )
        return
    baseline, delta = _sample_files(bench, rows, seed)
    script = Path(__file__).resolve().parents[2] / "bench" / "dlt_peer.py"
    # dlt insists on a password; the local server trusts every one.
    dsn = bench.stack.database_url.replace("postgres@", "postgres:local@", 1)

    def dlt_run(body: Path, fresh: bool) -> float:
        done = subprocess.run(
            [
                str(python),
                str(script),
                "--csv",
                str(body),
                "--dsn",
                dsn,
                *(["--fresh"] if fresh else []),
            ],
            capture_output=True,
            text=True,
            check=True,
        )
        return float(json.loads(done.stdout.strip().splitlines()[-1])["seconds"])

    runs = max(1, min(bench.runs, 3))  # dlt is slow; three runs are enough for a median
    base = statistics.median(dlt_run(baseline, fresh=True) for _ in range(runs))
    small = statistics.median(dlt_run(delta, fresh=False) for _ in range(runs))
    ours = next((r for r in bench.rows if r.measure.startswith("baseline")), None)
    versus = (
        f"; ours for the baseline: {ours.ours} ({base / _to_ms(ours.ours) * 1000:.0f}x faster)"
        if ours is not None
        else ""
    )
    bench.rows.append(
        Row(
            "peer: dlt merge (same baseline, same 131-row delta)",
            f"baseline {_seconds(base)}",
            note=f"delta {_seconds(small)}{versus}",
        )
    )


# --- output ----------------------------------------------------------------------------


def render(rows: list[Row], header: str) -> str:
    lines = [
        header,
        "",
        "| measure | ours | reference (psql \\copy + upsert) | ratio | target | note |",
        "|---|---|---|---|---|---|",
    ]
    lines += [
        f"| {r.measure} | {r.ours} | {r.reference} | {r.ratio} | {r.target} | {r.note} |"
        for r in rows
    ]
    return "\n".join(lines) + "\n"


def chart(rows: list[Row], path: Path) -> bool:
    try:
        import matplotlib  # noqa: PLC0415

        matplotlib.use("Agg")
        import matplotlib.pyplot as plt  # noqa: PLC0415
    except ImportError:
        return False
    compared = [r for r in rows if r.ratio != "-"]
    names = [r.measure.split(",")[0] for r in compared]
    ours = [_to_ms(r.ours) for r in compared]
    reference = [_to_ms(r.reference) for r in compared]
    figure, axis = plt.subplots(figsize=(8, 4))
    positions = range(len(names))
    axis.bar([p - 0.2 for p in positions], ours, width=0.4, label="tickets-ingest sync")
    axis.bar([p + 0.2 for p in positions], reference, width=0.4, label="psql \\copy + upsert")
    axis.set_xticks(list(positions), names)
    axis.set_ylabel("milliseconds (median)")
    axis.set_title("tickets-ingest vs PostgreSQL's own COPY, same run, same data")
    axis.legend()
    figure.tight_layout()
    figure.savefig(path, dpi=110)
    plt.close(figure)
    return True


def _to_ms(text: str) -> float:
    value, unit = text.split()[:2]  # "11.6 ms/file (86 files/s)" too
    return float(value) * (1000 if unit == "s" else 1)


def update_readme(table: str, readme: Path = Path("README.md")) -> None:
    content = readme.read_text(encoding="utf-8")
    if README_START not in content:
        return
    before, rest = content.split(README_START, 1)
    _, after = rest.split(README_END, 1)
    readme.write_text(f"{before}{README_START}\n{table}{README_END}{after}", encoding="utf-8")


@dataclass(frozen=True)
class Options:
    rows: int = BASELINE_ROWS
    runs: int = 5
    backlog_files: int = 1000
    latency_ms: float = 30.0
    memory_rows: int = BASELINE_ROWS * 10
    seed: int = 7
    results: Path = RESULTS
    readme: bool = False
    only: tuple[str, ...] = ()  # step names (STEPS); empty: every step
    db_delay_ms: float = DB_DELAY_MS  # held each way on the backlog's database hop


def run(options: Options) -> list[Row]:
    started = time.monotonic()
    with (
        local_stack(fsync=True, aws_own_process=True) as stack,
        environment(stack.env("inc")),
        tempfile.TemporaryDirectory() as tmp,
    ):
        bench = Bench(stack, options.runs, Path(tmp))
        steps: dict[str, Callable[[], None]] = {
            "baseline": lambda: bench_baseline_and_updates(bench, options.rows, options.seed),
            "backlog": lambda: bench_backlog(
                bench, options.backlog_files, options.latency_ms, options.seed, options.db_delay_ms
            ),
            "memory": lambda: bench_memory(bench, options.memory_rows, options.seed),
            "cold": lambda: bench_cold_start(bench),
            "peer": lambda: bench_peer(bench, options.rows, options.seed),
        }
        for name, step in steps.items():
            if options.only and name not in options.only:
                continue
            step()
            print(f"  ... {bench.rows[-1].measure}: {bench.rows[-1].ours}", flush=True)
        bench_cost(bench)  # from what the steps measured, when the backlog ran
        rows = bench.rows
    header = (
        f"Measured {datetime.now(UTC):%Y-%m-%d} on {os.cpu_count()} CPUs, PostgreSQL with "
        f"fsync on, medians of {options.runs} runs after a warm-up "
        f"({time.monotonic() - started:.0f} s in all; `make bench`)."
    )
    table = render(rows, header)
    options.results.mkdir(parents=True, exist_ok=True)
    (options.results / "latest.md").write_text(table, encoding="utf-8")
    chart(rows, options.results / "latest.png")
    if options.readme:
        update_readme(table)
    print(table)
    return rows


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="tickets-devkit bench",
        description=__doc__,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    defaults = Options()
    parser.add_argument("--rows", type=int, default=defaults.rows)
    parser.add_argument("--runs", type=int, default=defaults.runs)
    parser.add_argument("--backlog-files", type=int, default=defaults.backlog_files)
    parser.add_argument("--latency-ms", type=float, default=defaults.latency_ms)
    parser.add_argument(
        "--db-delay-ms",
        type=float,
        default=defaults.db_delay_ms,
        help="held each way on the database hop of the backlog's third run",
    )
    parser.add_argument("--memory-rows", type=int, default=defaults.memory_rows)
    parser.add_argument("--seed", type=int, default=defaults.seed)
    parser.add_argument("--results", type=Path, default=defaults.results)
    parser.add_argument("--readme", action="store_true", help="put the table in README.md")
    parser.add_argument(
        "--only",
        type=_steps,
        default=defaults.only,
        metavar="STEP[,STEP]",
        help=f"run only these steps ({', '.join(STEPS)}); default: all",
    )
    return parser


def _steps(text: str) -> tuple[str, ...]:
    names = tuple(name.strip() for name in text.split(",") if name.strip())
    unknown = [name for name in names if name not in STEPS]
    if unknown or not names:
        raise argparse.ArgumentTypeError(
            f"unknown step(s) {', '.join(unknown) or '(none)'}; choose from {', '.join(STEPS)}"
        )
    return names


def main(argv: list[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    if args.readme and args.only:
        # README.md holds the whole table: a partial run would drop the other rows.
        parser.error("--readme needs every step; leave out --only")
    run(
        Options(
            args.rows,
            args.runs,
            args.backlog_files,
            args.latency_ms,
            args.memory_rows,
            args.seed,
            args.results,
            args.readme,
            args.only,
            args.db_delay_ms,
        )
    )
    return 0
