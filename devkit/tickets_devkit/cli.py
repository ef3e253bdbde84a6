"""``tickets-devkit``: run the ingester locally on embedded defaults, and measure it.

``run``      start PostgreSQL + the S3 emulator, write a generated stream (INC baseline of
             34,849 rows and deltas, a CRQ stream, junk and legacy keys), show the plan,
             apply it, show status and a few rows, stop everything.
``measure``  time a sync of the generated baseline and its peak memory, in a separate
             process so the figure is the ingester's alone.
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
import time
from collections.abc import Sequence
from pathlib import Path

import boto3

from tickets_devkit.event_path import FakeLambdaContext, build_event_path
from tickets_devkit.generator import BASELINE_ROWS, TicketStream, write_baseline_to
from tickets_devkit.local import BUCKET, LocalStack, environment, local_stack
from tickets_ingest.handlers import cli as ingest_cli

JUNK_AND_LEGACY = {
    "automations/inc/changes/notes.txt": b"exporter notes, not data\n",
    "automations/inc/changes/2026-06-22T18-00-00.csv.tmp": b"partial upload\n",
    "automations/inc/full/.keep": b"",
    "automations/inc/2026-06-18T17-00-05.csv": b"old full snapshot (legacy)\n",
    "automations/crq/2026-06-18T17-00-05.csv": b"old CRQ root snapshot (legacy)\n",
}


def _banner(text: str) -> None:
    print(f"\n$ {text}", flush=True)


def _ingest(*args: str) -> int:
    _banner("tickets-ingest " + " ".join(args))
    return ingest_cli.main(list(args))


def run(args: argparse.Namespace) -> int:
    started = time.monotonic()
    print("starting a local PostgreSQL and the AWS emulator (moto) ...", flush=True)
    with local_stack() as stack, environment(stack.env()):
        inc = TicketStream("inc", seed=args.seed)
        inc_files = [inc.baseline(args.rows, sentinel=False)]
        inc_files += [inc.delta(n) for n in (1, 22, 131)]
        crq = TicketStream("crq", seed=args.seed + 1)
        crq_files = [crq.baseline(max(args.rows // 10, 10)), crq.delta(15)]
        stack.upload(inc_files + crq_files)
        client = stack.s3()
        for key, body in JUNK_AND_LEGACY.items():
            client.put_object(Bucket=BUCKET, Key=key, Body=body)
        print(
            f"wrote {len(inc_files)} INC files ({inc_files[0].rows:,} baseline rows, "
            f"{len(inc_files[0].body) / 1e6:.1f} MB) and {len(crq_files)} CRQ files "
            f"to s3://{BUCKET}/automations/, plus junk and legacy keys",
            flush=True,
        )
        _ingest("sync", "--dataset", "inc")
        code = _ingest("sync", "--apply")
        _ingest("status")
        _sample_rows(stack)
        if args.keep:
            _keep_running(stack)
    print(f"\nstopped everything; {time.monotonic() - started:.1f} s in all", flush=True)
    return code


def _sample_rows(stack: LocalStack) -> None:
    import pg8000.native  # noqa: PLC0415 - only this command needs a raw connection

    _banner("psql: SELECT ... FROM tickets.incidents ORDER BY updated_at DESC LIMIT 5")
    port = stack.postgres.port
    con = pg8000.native.Connection(user="postgres", host="127.0.0.1", port=port, database="tickets")
    try:
        rows = con.run(
            "SELECT ticket_id, raw_status, region, cluster, updated_at, source_key "
            "FROM tickets.incidents ORDER BY updated_at DESC, ticket_id LIMIT 5"
        )
        for r in rows:
            print(
                f"  {r[0]}  {r[1]:<12} {r[2]:<12} {r[3]:<14} {r[4]:%Y-%m-%d %H:%M %Z}  "
                f"{r[5].rsplit('/', 1)[-1]}"
            )
        total = con.run("SELECT count(*) FROM tickets.incidents")[0][0]
        print(f"  ({total:,} incidents in all)")
    finally:
        con.close()


def _keep_running(stack: LocalStack) -> None:
    print("\nthe stack keeps running; in another shell:")
    for name, value in stack.env().items():
        print(f"  export {name}={value}")
    print("  tickets-ingest status\npress Ctrl-C to stop it", flush=True)
    try:
        while True:
            time.sleep(3600)
    except KeyboardInterrupt:
        pass


def measure(args: argparse.Namespace) -> int:
    """Time one ``tickets-ingest sync --apply`` of a baseline in a child process."""
    with local_stack(fsync=True) as stack, tempfile.TemporaryDirectory() as tmp:
        path = Path(tmp) / "baseline.csv"
        with path.open("wb") as handle:
            size = write_baseline_to(handle, args.rows, seed=args.seed)
        key = "automations/inc/changes/2026-06-22T15-50-39.csv"
        stack.s3().upload_file(str(path), BUCKET, key)
        path.unlink()
        env = {**os.environ, **stack.env("inc")}
        command = [
            "sync",
            "--apply",
            "--json",
            "--dataset",
            "inc",
        ]
        # Warm the schema (migrations) so the timed run is the sync alone.
        subprocess.run(
            [sys.executable, "-m", "tickets_ingest.handlers.cli", "migrate"],
            env=env,
            check=True,
            capture_output=True,
        )
        clock = time.perf_counter()
        done, peak_kib = _run_measured(command, env)
        wall = time.perf_counter() - clock
        if done.returncode != 0:
            print(done.stdout, done.stderr, file=sys.stderr)
            return done.returncode
        [report] = json.loads(done.stdout)
        [applied] = report["applied"]
        print(
            f"rows {args.rows:,}  file {size / 1e6:.1f} MB  "
            f"wall {wall:.2f} s (process start, connect, list, stream, COPY, upsert, "
            f"commit, archive)  apply {applied['duration_ms']} ms  "
            f"peak RSS {peak_kib / 1024:.0f} MB  "
            f"upserted {applied['rows']['upserted']:,}"
        )
    return 0


# Runs the CLI, then reports the process's own high-water mark. Not ru_maxrss: on Linux a
# child inherits its parent's maxrss across fork+exec, so a big parent would count twice.
_MEASURED = """
import sys
from tickets_ingest.handlers.cli import main
code = main(sys.argv[1:])
with open("/proc/self/status") as status:
    peak = next(line.split()[1] for line in status if line.startswith("VmHWM:"))
print(f"VmHWM_KIB={peak}", file=sys.stderr)
sys.exit(code)
"""


def _run_measured(
    args: list[str], env: dict[str, str]
) -> tuple[subprocess.CompletedProcess[str], int]:
    """Run ``tickets-ingest ARGS`` in a child; its result and its own peak RSS in KiB."""
    done = subprocess.run(
        [sys.executable, "-c", _MEASURED, *args],
        env=env,
        capture_output=True,
        text=True,
        check=False,
    )
    marker = [line for line in done.stderr.splitlines() if line.startswith("VmHWM_KIB=")]
    return done, int(marker[-1].split("=")[1]) if marker else 0


def invoke(args: argparse.Namespace) -> int:
    """Run ``app.lambda_handler`` in-process with an event file, against the local stack."""
    event = json.loads(Path(args.event).read_text(encoding="utf-8"))
    with local_stack() as stack, environment(stack.env()):
        session = boto3.Session(region_name=stack.aws.region)
        path = build_event_path(session, BUCKET, ["inc", "crq"], region=stack.aws.region)
        inc = TicketStream("inc", seed=args.seed)
        stack.upload([inc.baseline(args.rows), inc.delta(22), inc.delta(131)])
        stack.upload([TicketStream("crq", seed=args.seed + 1).baseline(max(args.rows // 10, 10))])
        path.sqs.purge_queue(QueueUrl=path.queue_url)  # only the given event drives the run
        local = {**path.env(), "POWERTOOLS_TRACE_DISABLED": "true", "LOCK_WAIT_SECONDS": "10"}
        with environment(local):
            sys.path.insert(0, str(Path(ingest_app_dir())))
            from app import lambda_handler  # noqa: PLC0415 - after the environment is set

            _banner(f"lambda_handler({args.event})")
            response = lambda_handler(event, FakeLambdaContext())
            print(json.dumps(response, indent=2, default=str))
            _ingest("status")
    return 0


def ingest_app_dir() -> Path:
    """functions/ingest/, where app.py lives (next to the tickets_ingest package)."""
    import tickets_ingest  # noqa: PLC0415

    return Path(tickets_ingest.__file__).resolve().parents[1]


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        prog="tickets-devkit",
        description=__doc__,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    commands = parser.add_subparsers(dest="command", required=True)
    run_parser = commands.add_parser("run", help="the demo on embedded defaults")
    run_parser.add_argument("--rows", type=int, default=BASELINE_ROWS)
    run_parser.add_argument("--seed", type=int, default=7)
    run_parser.add_argument("--keep", action="store_true", help="keep the stack running")
    measure_parser = commands.add_parser("measure", help="time and peak memory of a baseline")
    measure_parser.add_argument("--rows", type=int, default=BASELINE_ROWS)
    measure_parser.add_argument("--seed", type=int, default=7)
    invoke_parser = commands.add_parser("invoke", help="run the Lambda handler with an event file")
    invoke_parser.add_argument("event", help="e.g. events/sqs-fifo-object-created.json")
    invoke_parser.add_argument("--rows", type=int, default=2000)
    invoke_parser.add_argument("--seed", type=int, default=7)
    commands.add_parser(
        "bench", help="the benchmark (see tickets-devkit bench --help)", add_help=False
    )
    if argv is None:
        argv = sys.argv[1:]
    if argv and argv[0] == "bench":
        from tickets_devkit import bench  # noqa: PLC0415 - heavy, and has its own options

        return bench.main(list(argv[1:]))
    args = parser.parse_args(argv)
    commands_by_name = {"run": run, "measure": measure, "invoke": invoke}
    return commands_by_name[args.command](args)


if __name__ == "__main__":
    raise SystemExit(main())
