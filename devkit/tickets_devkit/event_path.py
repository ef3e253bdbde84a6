"""The event path of template.yaml, built in the AWS emulator: bucket -> EventBridge rule
per dataset -> SQS FIFO queue (group = dataset) with a FIFO dead-letter queue, plus the
idempotency table; and a poller that feeds the queue to the handler exactly as Lambda's
event source mapping does (batches of up to 10, partial batch failures, retries)."""

from __future__ import annotations

import json
import uuid
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from typing import Any

QUEUE = "tickets-ingest.fifo"
DLQ = "tickets-ingest-dlq.fifo"
TABLE = "tickets-ingest-idempotency"
MAX_RECEIVE_COUNT = 5


@dataclass
class EventPath:
    sqs: Any
    queue_url: str
    queue_arn: str
    dlq_url: str
    dlq_arn: str
    table: str
    region: str

    def env(self) -> dict[str, str]:
        return {
            "QUEUE_URL": self.queue_url,
            "IDEMPOTENCY_TABLE": self.table,
            "DLQ_URL": self.dlq_url,
        }


def build_event_path(
    session: Any, bucket: str, datasets: Iterable[str], *, region: str
) -> EventPath:
    """Create (idempotently) what template.yaml creates, in the emulator behind ``session``."""
    s3 = session.client("s3")
    sqs = session.client("sqs")
    events = session.client("events")
    dynamodb = session.client("dynamodb")

    s3.put_bucket_notification_configuration(
        Bucket=bucket, NotificationConfiguration={"EventBridgeConfiguration": {}}
    )
    dlq_url = sqs.create_queue(
        QueueName=DLQ,
        Attributes={
            "FifoQueue": "true",
            "ContentBasedDeduplication": "true",
            "MessageRetentionPeriod": str(14 * 24 * 3600),
        },
    )["QueueUrl"]
    dlq_arn = sqs.get_queue_attributes(QueueUrl=dlq_url, AttributeNames=["QueueArn"])["Attributes"][
        "QueueArn"
    ]
    queue_url = sqs.create_queue(
        QueueName=QUEUE,
        Attributes={
            "FifoQueue": "true",
            # EventBridge FIFO targets have no dedup id field: the queue must derive one.
            "ContentBasedDeduplication": "true",
            "VisibilityTimeout": "1800",
            "RedrivePolicy": json.dumps(
                {"deadLetterTargetArn": dlq_arn, "maxReceiveCount": MAX_RECEIVE_COUNT}
            ),
        },
    )["QueueUrl"]
    queue_arn = sqs.get_queue_attributes(QueueUrl=queue_url, AttributeNames=["QueueArn"])[
        "Attributes"
    ]["QueueArn"]
    for dataset in datasets:
        rule = f"tickets-ingest-{dataset}-changes"
        events.put_rule(
            Name=rule,
            EventPattern=json.dumps(
                {
                    "source": ["aws.s3"],
                    "detail-type": ["Object Created"],
                    "detail": {
                        "bucket": {"name": [bucket]},
                        "object": {"key": [{"prefix": f"automations/{dataset}/changes/"}]},
                    },
                }
            ),
            State="ENABLED",
        )
        events.put_targets(
            Rule=rule,
            Targets=[
                {"Id": "queue", "Arn": queue_arn, "SqsParameters": {"MessageGroupId": dataset}}
            ],
        )
    existing = dynamodb.list_tables()["TableNames"]
    if TABLE not in existing:
        dynamodb.create_table(
            TableName=TABLE,
            KeySchema=[{"AttributeName": "id", "KeyType": "HASH"}],
            AttributeDefinitions=[{"AttributeName": "id", "AttributeType": "S"}],
            BillingMode="PAY_PER_REQUEST",
        )
    return EventPath(sqs, queue_url, queue_arn, dlq_url, dlq_arn, TABLE, region)


@dataclass
class PollStats:
    batches: int = 0
    delivered: int = 0
    acknowledged: int = 0
    failed: int = 0
    responses: list[dict[str, Any]] = field(default_factory=list)


def as_lambda_record(message: dict[str, Any], queue_arn: str, region: str) -> dict[str, Any]:
    """An SQS message as it appears in a Lambda event from the event source mapping."""
    return {
        "messageId": message["MessageId"],
        "receiptHandle": message["ReceiptHandle"],
        "body": message["Body"],
        "attributes": message.get("Attributes", {}),
        "messageAttributes": message.get("MessageAttributes", {}),
        "md5OfBody": message.get("MD5OfBody", ""),
        "eventSource": "aws:sqs",
        "eventSourceARN": queue_arn,
        "awsRegion": region,
    }


def poll(
    path: EventPath,
    handler: Callable[[dict[str, Any], Any], dict[str, Any]],
    context_factory: Callable[[], Any],
    *,
    max_batches: int = 50,
    batch_size: int = 10,
) -> PollStats:
    """Drain the queue like the event source mapping: receive a batch, invoke, delete what
    succeeded, make failed records visible again at once (instead of waiting out the
    visibility timeout), until the queue is empty or ``max_batches`` ran."""
    stats = PollStats()
    for _ in range(max_batches):
        received = path.sqs.receive_message(
            QueueUrl=path.queue_url,
            MaxNumberOfMessages=batch_size,
            AttributeNames=["All"],
            MessageAttributeNames=["All"],
            WaitTimeSeconds=0,
        ).get("Messages", [])
        if not received:
            break
        stats.batches += 1
        stats.delivered += len(received)
        event = {"Records": [as_lambda_record(m, path.queue_arn, path.region) for m in received]}
        try:
            response = handler(event, context_factory())
        except Exception:  # the whole invocation failed: every record is retried
            response = {"batchItemFailures": [{"itemIdentifier": m["MessageId"]} for m in received]}
        stats.responses.append(response)
        failed = {f["itemIdentifier"] for f in response.get("batchItemFailures", [])}
        for message in received:
            if message["MessageId"] in failed:
                stats.failed += 1
                path.sqs.change_message_visibility(
                    QueueUrl=path.queue_url,
                    ReceiptHandle=message["ReceiptHandle"],
                    VisibilityTimeout=0,
                )
            else:
                stats.acknowledged += 1
                path.sqs.delete_message(
                    QueueUrl=path.queue_url, ReceiptHandle=message["ReceiptHandle"]
                )
    return stats


@dataclass
class FakeLambdaContext:
    """The attributes Powertools reads from a Lambda context, with a real time budget."""

    remaining_ms: Callable[[], int] = lambda: 300_000
    function_name: str = "tickets-ingest-local"
    function_version: str = "$LATEST"
    memory_limit_in_mb: int = 1024
    invoked_function_arn: str = (
        "arn:aws:lambda:eu-west-1:123456789012:function:tickets-ingest-local"
    )
    aws_request_id: str = field(default_factory=lambda: str(uuid.uuid4()))
    log_group_name: str = "/aws/lambda/tickets-ingest-local"
    log_stream_name: str = "local"

    def get_remaining_time_in_millis(self) -> int:
        return self.remaining_ms()
