"""End to end: objects put into the bucket reach the handler through EventBridge and the FIFO
queue, exactly as deployed; the table and the archive end as the fold of the stream."""

from __future__ import annotations

import io
import json

import boto3

from tests.conftest import Env
from tests.e2e.conftest import LambdaWorld
from tests.support.oracle import fold, table_state
from tests.support.rows import csv_bytes, key, row
from tickets_devkit.event_path import as_lambda_record
from tickets_devkit.generator import TicketStream
from tickets_ingest.core.schema import CSV_COLUMNS, DEFAULT_DROP_FIELDS
from tickets_ingest.handlers.cli import main as cli

COLUMNS = [c for c in CSV_COLUMNS if c not in DEFAULT_DROP_FIELDS]


def incidents(env: Env) -> dict[str, dict[str, object]]:
    return table_state(env.db(), "incidents", COLUMNS)


def test_burst_uploaded_out_of_order_applies_in_order(world: LambdaWorld) -> None:
    stream = TicketStream("inc", seed=3)
    files = [stream.baseline(800)] + [stream.delta(30, repeat_ids=3) for _ in range(6)]
    for stream_file in reversed(files):  # newest first: the worst order
        world.env.put(stream_file.key, stream_file.body)

    stats = world.poll()

    assert stats.delivered == len(files) and stats.failed == 0
    assert incidents(world.env) == fold(f.body for f in files)
    assert world.env.list_keys("automations/inc/changes/") == []
    assert len(world.env.list_keys("automations/inc/processed/")) == len(files)
    # One sync did all the work; the other records found nothing left.
    ledger = world.env.db().scalar("SELECT count(*) FROM tickets.import_meta")
    assert ledger == len(files)
    assert world.queue_depth() == 0


def test_lost_events_are_caught_up_by_the_next_event_or_the_sweep(world: LambdaWorld) -> None:
    stream = TicketStream("inc", seed=4)
    files = [stream.baseline(200), stream.delta(10), stream.delta(10)]
    world.env.put(files[0].key, files[0].body)
    world.poll()
    # Two events lost: the queue is purged before anyone reads it.
    world.env.put(files[1].key, files[1].body)
    world.path.sqs.purge_queue(QueueUrl=world.path.queue_url)
    assert world.poll().delivered == 0
    assert world.env.db().scalar("SELECT count(*) FROM tickets.import_meta") == 1

    # The scheduled sweep catches up.
    result = world.invoke({"sweep": True})
    assert result["inc"]["ok"] and len(result["inc"]["applied"]) == 1

    # Lost again; this time the next upload's event brings both.
    world.env.put(files[2].key, files[2].body)
    assert incidents(world.env) == fold(f.body for f in files[:2])
    world.poll()
    assert incidents(world.env) == fold(f.body for f in files)


def test_poison_file_dead_letters_then_quarantine_and_redrive_restore_the_flow(
    world: LambdaWorld,
) -> None:
    env = world.env
    baseline = csv_bytes([row("INC1"), row("INC2")])
    poison = b"ticket_id,what\r\nINC3,nonsense\r\n"
    later = csv_bytes([row("INC2", "2026-06-22 18:00:00", raw_status="Resolved"), row("INC4")])
    crq = csv_bytes([row("CRQ1")])
    env.put(key("2026-06-22T15-50-39"), baseline)
    world.poll()
    env.put(key("2026-06-22T16-00-00"), poison)
    env.put(key("2026-06-22T17-00-00"), later)
    env.put(key("2026-06-22T16-30-00", "crq"), crq)

    stats = world.poll(max_batches=20)

    # The poison message was retried, then dead-lettered together with the inc message held
    # behind it; crq, another message group, flowed regardless.
    assert stats.failed >= 5
    assert world.queue_depth() == 0
    assert world.queue_depth(world.path.dlq_url) == 2
    assert table_state(env.db(), "change_requests", COLUMNS).keys() == {"CRQ1"}
    assert incidents(env) == fold([baseline])
    status = _status(env)
    assert status["blocked"]["key"] == key("2026-06-22T16-00-00")
    assert "bad header" in status["blocked"]["reason"]

    assert (
        cli(
            [
                "quarantine",
                "--dataset",
                "inc",
                "--key",
                "2026-06-22T16-00-00.csv",
                "--reason",
                "exporter wrote a debug header",
            ],
            out=io.StringIO(),
        )
        == 0
    )
    assert cli(["redrive", "--by-hand"], out=io.StringIO()) == 0
    world.poll()

    assert incidents(env) == fold([baseline, later])
    assert world.queue_depth(world.path.dlq_url) == 0
    assert key("2026-06-22T16-00-00").replace("changes", "quarantine") in env.list_keys()
    decision = env.db().one(
        "SELECT export_type, metadata FROM tickets.import_meta WHERE source_key = :k",
        k=key("2026-06-22T16-00-00"),
    )
    assert decision[0] == "quarantine"
    assert decision[1]["why"] == "exporter wrote a debug header" and decision[1]["who"]
    assert _status(env)["blocked"] is None

    # The upstream team fixes the file and uploads it again under its name: a late file.
    env.put(key("2026-06-22T16-00-00"), csv_bytes([row("INC3", "2026-06-22 15:59:00")]))
    world.poll()
    assert incidents(env) == fold(
        [baseline, later, csv_bytes([row("INC3", "2026-06-22 15:59:00")])]
    )
    kinds = env.db().run("SELECT export_type FROM tickets.import_meta ORDER BY id")
    assert [k[0] for k in kinds] == ["baseline", "baseline", "quarantine", "delta", "late"]


def _status(env: Env) -> dict[str, object]:
    out = io.StringIO()
    cli(["status", "--dataset", "inc", "--json"], out=out)
    status: dict[str, object] = json.loads(out.getvalue())
    return status


def test_time_budget_stops_between_files_and_continues_through_the_queue(
    world: LambdaWorld,
) -> None:
    stream = TicketStream("inc", seed=8)
    files = [stream.baseline(100)] + [stream.delta(5) for _ in range(4)]
    for stream_file in files:
        world.env.put(stream_file.key, stream_file.body)
    world.path.sqs.purge_queue(QueueUrl=world.path.queue_url)
    # Less time left than the margin once listed: not a single file may start.
    result = world.invoke_with_time_spent({"dataset": "inc"}, 30_000)
    assert result["ok"] and result["stopped_early"] and result["applied"] == []
    assert world.queue_depth() == 1  # the continuation message
    stats = world.poll()
    assert stats.delivered == 1 and stats.failed == 0
    assert incidents(world.env) == fold(f.body for f in files)


def test_the_same_event_twice_syncs_once(world: LambdaWorld) -> None:
    world.env.put(key("2026-06-22T15-50-39"), csv_bytes([row("INC1")]))
    message = world.path.sqs.receive_message(
        QueueUrl=world.path.queue_url, AttributeNames=["All"], MaxNumberOfMessages=1
    )["Messages"][0]
    event = {"Records": [as_lambda_record(message, world.path.queue_arn, world.path.region)]}
    first = world.invoke(event)
    # Redelivered (a redrive gives it a new messageId): idempotency keys on bucket/key/ETag.
    event["Records"][0]["messageId"] = "another-id"
    world.env.put(key("2026-06-22T15-53-04"), csv_bytes([row("INC2")]))
    second = world.invoke(event)
    assert first == second == {"batchItemFailures": []}
    # The second delivery was answered from the idempotency record: no second sync ran,
    # so the file uploaded in between is still pending.
    assert world.env.db().scalar("SELECT count(*) FROM tickets.import_meta") == 1
    dynamodb = boto3.client("dynamodb", region_name=world.path.region)
    records = dynamodb.scan(TableName=world.path.table)["Items"]
    assert [r["status"]["S"] for r in records] == ["COMPLETED"]
