"""``tickets-ingest``: the operator's commands. Parsing and printing; the work is in logic/."""

from __future__ import annotations

import argparse
import json
import logging
import math
import sys
import traceback
from collections.abc import Callable, Sequence
from datetime import UTC, datetime
from typing import Any, NoReturn, TextIO

import boto3
from botocore.exceptions import BotoCoreError, ClientError

from tickets_ingest.dal.db import DatabaseError, InterfaceError, error_fields
from tickets_ingest.errors import ConfigError, DatasetPaused, IngestError, SyncBusy
from tickets_ingest.handlers import render
from tickets_ingest.logic import activity, operator
from tickets_ingest.logic import pause as pausing
from tickets_ingest.logic.grants import runtime_grants
from tickets_ingest.logic.runtime import Runtime
from tickets_ingest.logic.status import dataset_status, history, pause_of
from tickets_ingest.logic.sync import SyncOptions
from tickets_ingest.settings import load_settings

EXIT_OK = 0
EXIT_FAILED = 1  # a file was rejected, or something failed
EXIT_USAGE = 2  # bad arguments or configuration
EXIT_PAUSED = 3  # `sync --apply`: the dataset is paused (planned work); nothing applied to it
EXIT_BUSY = 75  # EX_TEMPFAIL: another sync holds the dataset; try again later


MAX_WAIT_SECONDS = 3600  # as LOCK_WAIT_SECONDS
MAX_HISTORY = 10_000


class _Parser(argparse.ArgumentParser):
    """argparse, but a usage error is one line on stderr (exit 2), as every other error."""

    def error(self, message: str) -> NoReturn:
        self.exit(EXIT_USAGE, f"{self.prog}: {message} (see {self.prog} --help)\n")


def _wait_seconds(text: str) -> float:
    try:
        value = float(text)
    except ValueError:
        value = math.nan
    if not math.isfinite(value) or not 0 <= value <= MAX_WAIT_SECONDS:
        raise argparse.ArgumentTypeError(
            f"{text!r} is not a number of seconds from 0 to {MAX_WAIT_SECONDS}"
        )
    return value


def _history_limit(text: str) -> int:
    try:
        value = int(text)
    except ValueError:
        value = 0
    if not 1 <= value <= MAX_HISTORY:
        raise argparse.ArgumentTypeError(f"{text!r} is not a whole number from 1 to {MAX_HISTORY}")
    return value


def build_parser() -> argparse.ArgumentParser:
    parser = _Parser(
        prog="tickets-ingest",
        description="Apply the ticket CDC stream from S3 to PostgreSQL, in order, exactly once.",
    )
    parser.add_argument("-v", "--verbose", action="store_true", help="log each step")
    parser.add_argument("--debug", action="store_true", help="show tracebacks on errors")
    commands = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")

    run = commands.add_parser("sync", help="show the plan for a dataset; --apply applies it")
    _dataset_args(run)
    run.add_argument("--apply", action="store_true", help="apply the plan (default: dry run)")
    run.add_argument(
        "--wait",
        type=_wait_seconds,
        default=None,
        metavar="SECONDS",
        help="wait this long for a concurrent sync to finish (default: LOCK_WAIT_SECONDS)",
    )
    run.add_argument("--json", action="store_true", help="print the report as JSON")

    status = commands.add_parser("status", help="watermark, pending, blocked, counts, lag")
    _dataset_args(status)
    status.add_argument("--json", action="store_true", help="machine-readable output")

    commands.add_parser("migrate", help="create or upgrade the tickets schema")

    grants = commands.add_parser(
        "grants", help="print the GRANT statements the function's DML-only database role needs"
    )
    grants.add_argument("--role", required=True, metavar="NAME", help="the runtime role")

    ledger = commands.add_parser("history", help="the ledger of file decisions, newest first")
    ledger.add_argument("--dataset", required=True, metavar="NAME")
    ledger.add_argument(
        "--limit",
        type=_history_limit,
        default=20,
        help=f"at most this many, 1 to {MAX_HISTORY} (default 20)",
    )
    ledger.add_argument(
        "--type",
        dest="export_type",
        choices=["baseline", "delta", "late", "replay", "quarantine", "pause", "resume"],
        help="only this kind of decision",
    )
    ledger.add_argument("--since", type=_timestamp, help="only decisions at/after (ISO time)")
    ledger.add_argument("--json", action="store_true", help="machine-readable output")

    back = commands.add_parser(
        "replay",
        help="re-apply archived files from processed/ with the recency guard (after a restore)",
    )
    back.add_argument("--dataset", required=True, metavar="NAME")
    which = back.add_mutually_exclusive_group(required=True)
    which.add_argument(
        "--from",
        dest="from_key",
        metavar="KEY",
        help="first file to replay: a key or a bare name (it and every later archived file)",
    )
    which.add_argument(
        "--missing",
        action="store_true",
        help="exactly the archived files the ledger lacks (after a restore; see status)",
    )
    back.add_argument("--apply", action="store_true", help="apply (default: dry run)")

    hold = commands.add_parser(
        "quarantine",
        help="move a blocking file to quarantine/ and record why, so the stream moves on",
    )
    hold.add_argument("--dataset", required=True, metavar="NAME")
    hold.add_argument("--key", required=True, help="the file: full key or bare name")
    hold.add_argument("--reason", required=True, help="recorded with your name and the time")

    hold_all = commands.add_parser(
        "pause",
        help="hold a dataset for planned work: nothing applies, its messages are acknowledged",
    )
    hold_all.add_argument("--dataset", required=True, metavar="NAME")
    hold_all.add_argument("--reason", required=True, help="recorded with who and when")
    hold_all.add_argument(
        "--by", metavar="NAME", help="who pauses (default: TICKETS_OPERATOR, else the OS user)"
    )

    go_on = commands.add_parser(
        "resume",
        help="lift a pause and catch up at once (a message to the queue, else a sync here)",
    )
    go_on.add_argument("--dataset", required=True, metavar="NAME")
    go_on.add_argument(
        "--by", metavar="NAME", help="who resumes (default: TICKETS_OPERATOR, else the OS user)"
    )

    again = commands.add_parser("redrive", help="move dead-lettered messages back to the queue")
    again.add_argument("--dlq", metavar="URL", help="the dead-letter queue (default: DLQ_URL)")
    again.add_argument("--no-wait", action="store_true", help="start the move and return")
    again.add_argument(
        "--by-hand",
        action="store_true",
        help="receive and resend each message (emulators without the message-move API); "
        "needs QUEUE_URL",
    )
    return parser


def _dataset_args(parser: argparse.ArgumentParser) -> None:
    parser.add_argument(
        "--dataset",
        action="append",
        metavar="NAME",
        help="dataset to act on (repeatable; default: every enabled dataset)",
    )


def main(argv: Sequence[str] | None = None, out: TextIO | None = None) -> int:
    out = out or sys.stdout
    args = build_parser().parse_args(argv)
    logging.basicConfig(
        level=logging.INFO if args.verbose else logging.WARNING,
        format="%(levelname)s %(message)s",
        stream=sys.stderr,
    )
    try:
        settings = load_settings()
        runtime = Runtime(settings, application_name=f"tickets-ingest cli {args.command}")
        try:
            command: Callable[[Runtime, argparse.Namespace, TextIO], int] = _COMMANDS[args.command]
            return command(runtime, args, out)
        finally:
            runtime.close()
    except ConfigError as exc:
        return _fail(f"configuration: {exc}", EXIT_USAGE, args.debug)
    except SyncBusy as exc:
        return _fail(str(exc), EXIT_BUSY, args.debug)
    except DatasetPaused as exc:
        return _fail(str(exc), EXIT_PAUSED, args.debug)
    except IngestError as exc:
        return _fail(str(exc), EXIT_FAILED, args.debug)
    except (DatabaseError, InterfaceError) as exc:
        message = error_fields(exc).get("M") or str(exc)
        return _fail(f"database: {message}", EXIT_FAILED, args.debug)
    except (ClientError, BotoCoreError) as exc:
        return _fail(f"AWS: {exc}", EXIT_FAILED, args.debug)
    except KeyboardInterrupt:
        return _fail("interrupted; committed files stay committed, rerun to continue", 130, False)
    except Exception as exc:  # a bug or a fault nobody named: still one line, no traceback
        return _fail(
            f"unexpected {type(exc).__name__}: {exc}; committed files stay committed, the "
            "next run continues (--debug shows the traceback)",
            EXIT_FAILED,
            args.debug,
        )


def _fail(message: str, code: int, debug: bool) -> int:
    if debug:
        traceback.print_exc()
    print(f"tickets-ingest: {message}", file=sys.stderr)
    return code


def _datasets(runtime: Runtime, args: argparse.Namespace) -> list[str]:
    chosen: list[str] = args.dataset or list(runtime.settings.datasets)
    for dataset in chosen:
        runtime.settings.table_for(dataset)  # ConfigError for a dataset not enabled
    return chosen


def _sync(runtime: Runtime, args: argparse.Namespace, out: TextIO) -> int:
    progress = render.ProgressBar(sys.stderr) if sys.stderr.isatty() else None
    code = EXIT_OK
    reports: list[dict[str, Any]] = []
    for dataset in _datasets(runtime, args):
        options = SyncOptions(
            dry_run=not args.apply,
            lock_wait_seconds=args.wait,
            on_progress=progress.update if progress else None,
        )
        if options.dry_run:
            _say_if_paused(runtime, dataset)
        try:
            report = activity.noted_sync(runtime, dataset, options)  # notes its error
        except DatasetPaused as paused:
            # Planned work: this dataset is skipped, the others are synced.
            print(f"tickets-ingest: {paused}", file=sys.stderr)
            code = EXIT_PAUSED if code == EXIT_OK else code
            continue
        finally:
            if progress:
                progress.clear()
        if args.json:
            reports.append(render.report_json(report))
        else:
            render.print_report(report, out)
        if not report.ok:
            code = EXIT_FAILED
            rejected = report.rejected
            assert rejected is not None
            print(f"tickets-ingest: {render.blocked_line(rejected)}", file=sys.stderr)
        # Everything else was applied; these wait for an operator, so the run says so.
        waiting = [
            *map(render.conflict_line, report.plan.conflicts),
            *map(render.held_line, report.plan.held),
        ]
        for line in waiting:
            code = EXIT_FAILED
            print(f"tickets-ingest: {line}", file=sys.stderr)
    if args.json:
        json.dump(reports, out, indent=2, default=str)
        out.write("\n")
    return code


def _say_if_paused(runtime: Runtime, dataset: str) -> None:
    """A dry run plans a paused dataset all the same; one line says what --apply would do."""
    pause = pause_of(runtime, dataset)
    if pause is not None:
        print(
            f"tickets-ingest: dataset {dataset!r} is {pause.describe()}; this dry run only "
            f"plans, --apply would apply nothing and exit {EXIT_PAUSED} "
            f"(tickets-ingest resume --dataset {dataset} lifts the pause)",
            file=sys.stderr,
        )


def _status(runtime: Runtime, args: argparse.Namespace, out: TextIO) -> int:
    statuses = [dataset_status(runtime, d) for d in _datasets(runtime, args)]
    if args.json:
        payload: Any = [s.to_json() for s in statuses]
        if args.dataset and len(statuses) == 1:
            payload = payload[0]
        json.dump(payload, out, indent=2, default=str)
        out.write("\n")
    else:
        for status in statuses:  # the pipe at a glance first, then each dataset in full
            render.print_summary(status, out)
        for status in statuses:
            print(file=out)
            render.print_status(status, out)
    for status in statuses:
        for line in render.attention_lines(status):
            print(f"tickets-ingest: {line}", file=sys.stderr)
    return EXIT_FAILED if any(s.needs_attention for s in statuses) else EXIT_OK


def _migrate(runtime: Runtime, args: argparse.Namespace, out: TextIO) -> int:
    applied = runtime.migrate()
    print("applied: " + ", ".join(applied) if applied else "schema is up to date", file=out)
    return EXIT_OK


def _grants(runtime: Runtime, args: argparse.Namespace, out: TextIO) -> int:
    for line in runtime_grants(runtime, args.role):
        print(line, file=out)
    return EXIT_OK


def _history(runtime: Runtime, args: argparse.Namespace, out: TextIO) -> int:
    entries = history(
        runtime, args.dataset, limit=args.limit, export_type=args.export_type, since=args.since
    )
    if args.json:
        json.dump([e.to_json() for e in entries], out, indent=2, default=str)
        out.write("\n")
    else:
        render.print_history(args.dataset, entries, out)
    return EXIT_OK


def _replay(runtime: Runtime, args: argparse.Namespace, out: TextIO) -> int:
    if args.missing:
        report = operator.replay_missing(runtime, args.dataset, dry_run=not args.apply)
    else:
        report = operator.replay(runtime, args.dataset, args.from_key, dry_run=not args.apply)
    render.print_report(report, out)
    if not report.ok:
        assert report.rejected is not None
        print(f"tickets-ingest: {render.blocked_line(report.rejected)}", file=sys.stderr)
        return EXIT_FAILED
    return EXIT_OK


def _timestamp(text: str) -> datetime:
    try:
        moment = datetime.fromisoformat(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"{text!r} is not an ISO date/time") from None
    return moment if moment.tzinfo else moment.replace(tzinfo=UTC)


def _quarantine(runtime: Runtime, args: argparse.Namespace, out: TextIO) -> int:
    done = operator.quarantine(runtime, args.dataset, args.key, args.reason)
    print(f"quarantined {done.key} (ETag {done.etag}) -> {done.moved_to}", file=out)
    if done.was_blocking:
        print(f"dataset {done.dataset} is no longer blocked; the next sync moves on", file=out)
    print(
        "next: redrive the dead-letter queue (tickets-ingest redrive) so held-back messages "
        "flow again; a fixed file re-uploaded under the same name applies as a late file",
        file=out,
    )
    return EXIT_OK


def _pause(runtime: Runtime, args: argparse.Namespace, out: TextIO) -> int:
    done = pausing.pause(runtime, args.dataset, args.reason, args.by)
    if done.already:
        print(f"dataset {args.dataset} was already {done.pause.describe()}; unchanged", file=out)
    else:
        print(f"dataset {args.dataset} {done.pause.describe()}", file=out)
        print(
            "nothing applies to it until `tickets-ingest resume --dataset "
            f"{args.dataset}`; its messages are acknowledged, its files wait in changes/",
            file=out,
        )
    if done.running is not None:
        print(
            f"a sync holds it now ({done.running.describe()}): it stops before its next "
            "file; `tickets-ingest status` shows when it let go",
            file=out,
        )
    return EXIT_OK


def _resume(runtime: Runtime, args: argparse.Namespace, out: TextIO) -> int:
    done = pausing.resume(runtime, args.dataset, args.by)
    if done.pause is None:
        print(f"dataset {args.dataset} is not paused; nothing to resume", file=out)
        return EXIT_OK
    print(f"dataset {args.dataset} resumed (it was {done.pause.describe()})", file=out)
    queue_url = runtime.settings.lambda_.queue_url
    try:
        caught = pausing.catch_up(runtime, args.dataset, boto3.client("sqs") if queue_url else None)
    except SyncBusy as busy:
        # The resume is committed; only the catch-up here did not run.
        print(f"tickets-ingest: catch-up not run here: {busy}", file=sys.stderr)
        return EXIT_OK if busy.handed_over else EXIT_BUSY
    if caught.report is None:
        print(
            f"catch-up queued to {caught.queued_to} (group {args.dataset}, message "
            f"{caught.message_id}): the function applies what waits, in order",
            file=out,
        )
        return EXIT_OK
    print("catch-up: synced here (QUEUE_URL is unset)", file=out)
    render.print_report(caught.report, out)
    if not caught.report.ok:
        assert caught.report.rejected is not None
        print(f"tickets-ingest: {render.blocked_line(caught.report.rejected)}", file=sys.stderr)
        return EXIT_FAILED
    return EXIT_OK


def _redrive(runtime: Runtime, args: argparse.Namespace, out: TextIO) -> int:
    settings = runtime.settings.lambda_
    dlq_url = args.dlq or settings.dlq_url
    if not dlq_url:
        raise ConfigError("no dead-letter queue: pass --dlq URL or set DLQ_URL")
    sqs = boto3.client("sqs")
    if args.by_hand:
        if not settings.queue_url:
            raise ConfigError("--by-hand needs QUEUE_URL (the queue to move messages back to)")
        moved = operator.redrive_by_hand(sqs, dlq_url, settings.queue_url)
        print(f"moved {moved} message(s) back to {settings.queue_url}", file=out)
        return EXIT_OK
    arn = sqs.get_queue_attributes(QueueUrl=dlq_url, AttributeNames=["QueueArn"])["Attributes"][
        "QueueArn"
    ]
    for progress in operator.redrive(sqs, arn, wait=not args.no_wait):
        total = "?" if progress.to_move is None else str(progress.to_move)
        line = f"redrive {progress.status}: {progress.moved}/{total} message(s) moved"
        print(line, file=out, flush=True)
    return EXIT_OK


_COMMANDS: dict[str, Callable[[Runtime, argparse.Namespace, TextIO], int]] = {
    "sync": _sync,
    "status": _status,
    "migrate": _migrate,
    "grants": _grants,
    "history": _history,
    "replay": _replay,
    "quarantine": _quarantine,
    "redrive": _redrive,
    "pause": _pause,
    "resume": _resume,
}


if __name__ == "__main__":
    raise SystemExit(main())
