"""The demo behind ``make run``: the real architecture on one machine, no cloud, no Docker.

PostgreSQL and the AWS emulator start; the database secret is stored; template.yaml itself
is deployed into the emulator's CloudFormation (SAM's translator, then moto): the
EventBridge rules, the FIFO queue and its dead-letter queue, the idempotency table and the
function's environment are the template's. The schema is migrated as the deploy step; a
generated INC stream (baseline + deltas) and a CRQ stream are uploaded out of order; a
poller feeds the queue to ``app.lambda_handler`` exactly as Lambda's event source mapping
would. Then status, a few rows, and everything stops (``--keep`` leaves it running, the
poller included, with the emulator on a fixed port for devkit/local-env.json).
"""

from __future__ import annotations

import argparse
import io
import json
import sys
import threading
import time
from collections import Counter
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import Any

import boto3

from tickets_devkit.event_path import (
    SECRET_NAME,
    EventPath,
    FakeLambdaContext,
    deploy_stack,
    local_parameters,
    poll,
)
from tickets_devkit.generator import NAIROBI, StreamFile, TicketStream
from tickets_devkit.local import BUCKET, LocalStack, environment, local_stack
from tickets_ingest.dal.db import Database
from tickets_ingest.handlers import cli as ingest_cli
from tickets_ingest.settings import parse_database_url

KEEP_PORT = 5000  # devkit/local-env.json's AWS_ENDPOINT_URL: `make run ARGS=--keep`
JUNK_AND_LEGACY = {
    "automations/inc/changes/notes.txt": b"exporter notes, not data\n",
    "automations/inc/changes/2026-06-22T18-00-00.csv.tmp": b"partial upload\n",
    "automations/inc/full/.keep": b"",
    "automations/inc/2026-06-18T17-00-05.csv": b"old full snapshot (legacy)\n",
    "automations/crq/2026-06-18T17-00-05.csv": b"old CRQ root snapshot (legacy)\n",
}


def say(text: str) -> None:
    print(text, flush=True)


def command(*args: str) -> int:
    say(f"\n$ tickets-ingest {' '.join(args)}")
    return ingest_cli.main(list(args))


@dataclass
class LambdaStack:
    """The local stack with the event path built, and the handler ready to be fed."""

    stack: LocalStack
    path: EventPath
    handler: Callable[[dict[str, Any], Any], dict[str, Any]]

    def drain(self, label: str = "poller") -> None:
        stats = poll(self.path, self.handler, FakeLambdaContext, max_batches=200)
        if stats.delivered:
            retried = " (retried; dead-lettered after 5 receives)" if stats.failed else ""
            say(
                f"{label}: {stats.delivered} message(s) in {stats.batches} batch(es): "
                f"{stats.acknowledged} acknowledged, {stats.failed} failed{retried}"
            )


def database_secret(stack: LocalStack) -> None:
    """Store the local database's credentials as the deployed function finds them."""
    params = parse_database_url(stack.database_url)
    secret = {
        "host": params.host,
        "port": params.port,
        "username": params.user,
        "password": params.password or "local",  # the local server trusts any password
        "dbname": params.database,
    }
    client = boto3.client("secretsmanager")
    try:
        client.create_secret(Name=SECRET_NAME, SecretString=json.dumps(secret))
    except client.exceptions.ResourceExistsException:
        client.put_secret_value(SecretId=SECRET_NAME, SecretString=json.dumps(secret))


@contextmanager
def lambda_stack(stack: LocalStack, *, log_level: str = "WARNING") -> Iterator[LambdaStack]:
    """Deploy template.yaml into the emulator, migrate (the deploy step: the function's
    AUTO_MIGRATE is off) and import the handler with the function's environment."""
    database_secret(stack)
    session = boto3.Session(region_name=stack.aws.region)
    path = deploy_stack(session, local_parameters(stack.aws.region, LogLevel=log_level))
    with environment({**stack.env(), **path.env()}):  # quietly: run() says it was done
        if ingest_cli.main(["migrate"], out=io.StringIO()) != 0:
            raise RuntimeError("tickets-ingest migrate failed on the local stack")
    variables = {
        **path.handler_env(stack.aws.endpoint_url),
        # Not the function's settings: the local run has no X-Ray daemon, and EMF lines
        # would drown the demo's output (`make invoke` shows them).
        "POWERTOOLS_METRICS_DISABLED": "true",
        "POWERTOOLS_TRACE_DISABLED": "true",
    }
    with environment(variables):
        sys.path.insert(0, str(ingest_app_dir()))
        from app import lambda_handler  # noqa: PLC0415 - configured by the environment above

        yield LambdaStack(stack, path, lambda_handler)


def ingest_app_dir() -> Any:
    """functions/ingest/, where app.py lives next to the tickets_ingest package."""
    from pathlib import Path  # noqa: PLC0415

    import tickets_ingest  # noqa: PLC0415

    return Path(tickets_ingest.__file__).resolve().parents[1]


def run(args: argparse.Namespace) -> int:
    started = time.monotonic()
    say(
        "starting PostgreSQL and the AWS emulator (S3, EventBridge, SQS FIFO, DynamoDB, "
        "Secrets Manager) ..."
    )
    port = KEEP_PORT if args.keep and args.endpoint_url is None else 0
    with (
        local_stack(
            database_url=args.database_url, endpoint_url=args.endpoint_url, aws_port=port
        ) as stack,
        environment(stack.env()),
        lambda_stack(stack) as local,
    ):
        where = parse_database_url(stack.database_url).describe()
        say(f"  PostgreSQL {where}, AWS emulator at {stack.aws.endpoint_url}")
        say(
            f"  deployed template.yaml as stack tickets-ingest-local (existing bucket "
            f"'{local.path.bucket}', EventBridge on): rules {', '.join(local.path.rules)}; "
            f"queue {local.path.queue_url.rsplit('/', 1)[-1]} + its DLQ; table "
            f"{local.path.table}; schema migrated as the deploy step"
        )
        skipped = ", ".join(t.split("::", 1)[1] for t in local.path.not_emulated)
        say(f"  (the emulator does not create: {skipped})")
        files = upload_streams(local.stack, args.rows, args.seed)
        counts = Counter(f.split("/")[1] for f in files)
        say(
            f"uploaded {counts['inc']} INC and {counts['crq']} CRQ files, newest first, plus "
            "junk and legacy keys; each upload is an S3 event on its way to the queue"
        )
        command("sync", "--dataset", "inc")  # the plan, as an operator would look first
        say("\nthe event source mapping delivers the queue to app.lambda_handler:")
        local.drain()
        code = command("status")
        sample_rows(stack)
        if args.keep:
            keep_running(local)
    say(f"\nstopped everything; {time.monotonic() - started:.1f} s in all")
    return 0 if code == 0 else code


def demo_streams(rows: int, seed: int, now: datetime | None = None) -> list[StreamFile]:
    """Streams dated as a live export's would be: the newest file minutes before ``now``,
    so ``status`` shows the lag of a healthy pipe, not months."""
    now = (now or datetime.now(NAIROBI)).replace(microsecond=0)
    inc = TicketStream("inc", seed=seed, start=now - timedelta(minutes=50))
    files = [inc.baseline(rows)] + [
        inc.delta(n, repeat_ids=n // 10, minutes_later=15) for n in (1, 22, 131)
    ]
    crq = TicketStream("crq", seed=seed + 1, start=now - timedelta(minutes=40))
    return [*files, crq.baseline(max(rows // 10, 10)), crq.delta(15, minutes_later=30)]


def upload_streams(stack: LocalStack, rows: int, seed: int) -> list[str]:
    files = demo_streams(rows, seed)
    stack.upload(sorted(files, key=lambda f: f.key.rsplit("/", 1)[-1], reverse=True))
    client = stack.s3()
    for key, body in JUNK_AND_LEGACY.items():
        client.put_object(Bucket=BUCKET, Key=key, Body=body)
    return [f.key for f in files]


def sample_rows(stack: LocalStack) -> None:
    say("\n$ psql -c 'SELECT ... FROM tickets.incidents ORDER BY updated_at DESC LIMIT 5'")
    db = Database.connect(stack.database_url, application_name="tickets-devkit demo")
    try:
        rows = db.run(
            "SELECT ticket_id, raw_status, region, cluster, "
            "to_char(updated_at AT TIME ZONE 'Africa/Nairobi', 'YYYY-MM-DD HH24:MI'), "
            "source_key FROM tickets.incidents ORDER BY updated_at DESC, ticket_id LIMIT 5"
        )
        for r in rows:
            say(f"  {r[0]}  {r[1]:<12} {r[2]:<12} {r[3]:<14} {r[4]} EAT  {r[5].rsplit('/', 1)[-1]}")
        total = db.scalar("SELECT count(*) FROM tickets.incidents")
        say(f"  ({total:,} incidents in all)")
    finally:
        db.close()


def keep_running(local: LambdaStack) -> None:
    stop = threading.Event()

    def poller() -> None:
        while not stop.is_set():
            local.drain("event source mapping")
            stop.wait(1.0)

    thread = threading.Thread(target=poller, name="poller", daemon=True)
    thread.start()
    say("\nthe stack keeps running and the poller keeps feeding the handler. In another shell:")
    env = {**local.stack.env(), **local.path.env(), "TICKETS_BUCKET": local.path.bucket}
    for name in (
        "AWS_ENDPOINT_URL",
        "AWS_DEFAULT_REGION",
        "AWS_ACCESS_KEY_ID",
        "AWS_SECRET_ACCESS_KEY",
        "DATABASE_URL",
        "TICKETS_BUCKET",
        "DATASETS",
        "QUEUE_URL",
        "DLQ_URL",
    ):
        say(f"  export {name}={env[name]}")
    say(
        "  .venv/bin/tickets-ingest status\n"
        "  .venv/bin/tickets-devkit upload --dataset inc FILE.csv   # a new file: an S3 event\n"
        "  sam local invoke IngestFunction -n devkit/local-env.json --docker-network host \\\n"
        "      -e events/sqs-fifo-object-created.json   # with Docker, after sam build\n"
        "(docs/runbook.md walks through a poison file on this stack.) Ctrl-C stops it all."
    )
    try:
        while True:
            time.sleep(3600)
    except KeyboardInterrupt:
        stop.set()
        thread.join(timeout=5)
