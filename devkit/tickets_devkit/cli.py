"""``tickets-devkit``: the ingester on embedded defaults, for people and for measurements.

``run``      the demo: PostgreSQL + the AWS emulator, the event path of template.yaml,
             a generated stream uploaded out of order, the handler fed like Lambda would,
             status and a few rows; then everything stops (``--keep`` keeps it running)
``invoke``   run ``app.lambda_handler`` once with an event file (events/*.json)
``upload``   put a file into a running demo stack's bucket (a new S3 event)
``measure``  time and peak memory of one baseline sync, in a child process
``bench``    the benchmark table (see ``tickets-devkit bench --help``)
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import tempfile
from collections.abc import Sequence
from datetime import UTC, datetime
from pathlib import Path

import boto3

from tickets_devkit import demo
from tickets_devkit.event_path import FakeLambdaContext
from tickets_devkit.generator import BASELINE_ROWS, TicketStream, file_key, write_baseline_to
from tickets_devkit.local import BUCKET, environment, local_stack


def invoke(args: argparse.Namespace) -> int:
    """Run the handler with one event against a fresh local stack holding a small stream."""
    event = json.loads(Path(args.event).read_text(encoding="utf-8"))
    # LogLevel=INFO, a template parameter: the handler logs why each message was ignored.
    with (
        local_stack() as stack,
        environment(stack.env()),
        demo.lambda_stack(stack, log_level="INFO") as local,
    ):
        inc = TicketStream("inc", seed=args.seed)
        stack.upload([inc.baseline(args.rows), inc.delta(22), inc.delta(131)])
        stack.upload([TicketStream("crq", seed=args.seed + 1).baseline(max(args.rows // 10, 10))])
        local.path.sqs.purge_queue(QueueUrl=local.path.queue_url)  # only this event drives it
        with environment({"POWERTOOLS_METRICS_DISABLED": "false"}):  # show the EMF lines
            demo.say(f"\n$ lambda_handler({args.event})")
            response = local.handler(event, FakeLambdaContext())
        demo.say(json.dumps(response, indent=2, default=str))
        demo.command("status")
    return 0


def upload(args: argparse.Namespace) -> int:
    """Put FILE under automations/<dataset>/changes/<now, Nairobi>.csv (or --name)."""
    name = args.name or file_key(args.dataset, datetime.now(UTC)).rsplit("/", 1)[-1]
    key = f"automations/{args.dataset}/changes/{name}"
    bucket = os.environ.get("TICKETS_BUCKET", BUCKET)
    boto3.client("s3").upload_file(args.file, bucket, key)
    print(f"uploaded {args.file} -> s3://{bucket}/{key}")
    return 0


def measure(args: argparse.Namespace) -> int:
    """Time one ``tickets-ingest sync --apply`` of a baseline, and its peak RSS."""
    from tickets_devkit.bench import run_measured  # noqa: PLC0415

    with local_stack(fsync=True) as stack, tempfile.TemporaryDirectory() as tmp:
        path = Path(tmp) / "baseline.csv"
        with path.open("wb") as handle:
            size = write_baseline_to(handle, args.rows, seed=args.seed)
        stack.s3().upload_file(str(path), BUCKET, "automations/inc/changes/2026-06-22T15-50-39.csv")
        path.unlink()
        env = {**os.environ, **stack.env("inc")}
        run_measured(["migrate"], env)  # the schema first, so the timed run is the sync alone
        _, wall, peak_kib = run_measured(["sync", "--apply", "--dataset", "inc"], env)
        print(
            f"rows {args.rows:,}  file {size / 1e6:.1f} MB  wall {wall:.2f} s (process start, "
            f"imports, connect, list, stream, COPY, upsert, commit, archive)  "
            f"peak RSS {peak_kib / 1024:.0f} MB"
        )
    return 0


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="tickets-devkit",
        description=__doc__,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    commands = parser.add_subparsers(dest="command", required=True)
    run_parser = commands.add_parser("run", help="the demo on embedded defaults")
    run_parser.add_argument("--rows", type=int, default=BASELINE_ROWS, help="INC baseline rows")
    run_parser.add_argument("--seed", type=int, default=7)
    run_parser.add_argument("--keep", action="store_true", help="keep the stack running")
    run_parser.add_argument(
        "--database-url",
        help="use this PostgreSQL instead of starting one (its 'tickets' schema is written)",
    )
    run_parser.add_argument(
        "--endpoint-url",
        help="use this AWS emulator (moto server, LocalStack) instead of starting one; "
        "the demo never creates resources in a real AWS account",
    )
    invoke_parser = commands.add_parser("invoke", help="run the Lambda handler with an event file")
    invoke_parser.add_argument("event", help="e.g. events/sqs-fifo-object-created.json")
    invoke_parser.add_argument("--rows", type=int, default=2000)
    invoke_parser.add_argument("--seed", type=int, default=7)
    upload_parser = commands.add_parser("upload", help="put a file into the demo stack's bucket")
    upload_parser.add_argument("file")
    upload_parser.add_argument("--dataset", default="inc")
    upload_parser.add_argument("--name", help="file name (default: now, YYYY-MM-DDTHH-mm-ss.csv)")
    measure_parser = commands.add_parser("measure", help="time and peak memory of a baseline")
    measure_parser.add_argument("--rows", type=int, default=BASELINE_ROWS)
    measure_parser.add_argument("--seed", type=int, default=7)
    commands.add_parser("bench", help="the benchmark (tickets-devkit bench --help)")
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    argv = list(sys.argv[1:] if argv is None else argv)
    if argv[:1] == ["bench"]:
        from tickets_devkit import bench  # noqa: PLC0415 - heavy, and has its own options

        return bench.main(argv[1:])
    args = build_parser().parse_args(argv)
    handlers = {"run": demo.run, "invoke": invoke, "upload": upload, "measure": measure}
    return handlers[args.command](args)


if __name__ == "__main__":
    raise SystemExit(main())
