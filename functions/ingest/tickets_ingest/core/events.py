"""What an invocation or a queue message asks for. Pure: no I/O, nothing trusted.

A message only ever means "dataset X may have news": the sync re-lists ``changes/`` from the
watermark, so a lost, duplicated or reordered message costs latency, never data. Keys from
events are still checked: only a stream file under an enabled dataset's ``changes/`` in the
configured bucket triggers anything.
"""

from __future__ import annotations

import enum
import json
from collections.abc import Collection, Mapping
from dataclasses import dataclass
from typing import Any

from tickets_ingest.core.keys import dataset_of_key, parse_stream_key


class Invocation(enum.Enum):
    BATCH = "sqs-batch"  # the FIFO queue's event source mapping
    DIRECT = "direct"  # {"dataset": "inc"}: an operator or `sam local invoke`
    SWEEP = "sweep"  # the schedule: every enabled dataset
    UNKNOWN = "unknown"


def invocation_kind(event: Mapping[str, Any]) -> Invocation:
    records = event.get("Records")
    if (
        isinstance(records, list)
        and records
        and all(isinstance(r, dict) and r.get("eventSource") == "aws:sqs" for r in records)
    ):
        return Invocation.BATCH
    if event.get("sweep") is True or (
        event.get("detail-type") == "Scheduled Event"
        and event.get("source") in {"aws.events", "aws.scheduler"}
    ):
        return Invocation.SWEEP
    if isinstance(event.get("dataset"), str) and set(event) <= {"dataset"}:
        return Invocation.DIRECT
    return Invocation.UNKNOWN


# Messages this program queues itself: a continuation (the time budget ran out), a sweep,
# a resume (an operator resumed a paused dataset: catch up now).
QUEUED_KINDS = frozenset({"continuation", "sweep", "resume"})


def queued_message(kind: str, dataset: str, token: str) -> str:
    """The body of a message this program sends to the dataset's group (``token`` makes it
    unique: it is the idempotency key's tail)."""
    if kind not in QUEUED_KINDS:
        raise ValueError(f"not a queued message kind: {kind!r}")
    return json.dumps({"kind": kind, "dataset": dataset, "token": token})


@dataclass(frozen=True)
class News:
    """Dataset ``dataset`` should be synced now."""

    dataset: str
    reason: str  # object-created | continuation | sweep | resume
    idempotency_key: str  # what the message means, stable across redrives
    correlation_id: str | None = None
    key: str | None = None  # the object that triggered it, if any


@dataclass(frozen=True)
class Ignored:
    reason: str


def interpret_message(body: str, *, bucket: str, datasets: Collection[str]) -> News | Ignored:
    """Read one queue message body."""
    try:
        message = json.loads(body)
    except (TypeError, ValueError, RecursionError):  # RecursionError: absurdly nested JSON
        return Ignored("body is not JSON")
    if not isinstance(message, dict):
        return Ignored("body is not a JSON object")
    kind = message.get("kind")
    if isinstance(kind, str) and kind in QUEUED_KINDS:
        dataset = message.get("dataset")
        if not isinstance(dataset, str) or dataset not in datasets:
            return Ignored(f"{kind} for a dataset that is not enabled: {dataset!r}")
        token = str(message.get("token", ""))
        return News(dataset, kind, f"{kind}:{dataset}:{token}", correlation_id=token or None)
    if message.get("source") == "aws.s3" and message.get("detail-type") == "Object Created":
        return _object_created(message, bucket=bucket, datasets=datasets)
    return Ignored("not an S3 Object Created event, a continuation or a sweep")


def _object_created(
    message: Mapping[str, Any], *, bucket: str, datasets: Collection[str]
) -> News | Ignored:
    detail = message.get("detail")
    if not isinstance(detail, dict):
        return Ignored("event without detail")
    bucket_part = detail.get("bucket")
    obj = detail.get("object")
    if not isinstance(bucket_part, dict) or not isinstance(obj, dict):
        return Ignored("event detail without bucket and object")
    event_bucket = bucket_part.get("name")
    key = obj.get("key")
    # AWS spells it "etag"; the moto emulator "eTag".
    etag = str(obj.get("etag") or obj.get("eTag") or "").strip('"')
    if event_bucket != bucket:
        return Ignored(f"bucket {event_bucket!r} is not {bucket!r}")
    if not isinstance(key, str):
        return Ignored("event without an object key")
    dataset = dataset_of_key(key)
    if dataset is None:
        return Ignored(f"key {key!r} is not under automations/<dataset>/changes/")
    if dataset not in datasets:
        return Ignored(f"dataset {dataset!r} of {key!r} is not enabled")
    if parse_stream_key(dataset, key) is None:
        return Ignored(f"{key!r} is not a stream file name (YYYY-MM-DDTHH-mm-ss.csv)")
    return News(
        dataset=dataset,
        reason="object-created",
        idempotency_key=f"s3://{bucket}/{key}@{etag}",
        correlation_id=str(message.get("id") or "") or None,
        key=key,
    )
