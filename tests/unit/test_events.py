"""invocation_kind and interpret_message: what an invocation or a queue message asks for.

Message keys are never trusted: only a stream file of an enabled dataset in the configured
bucket yields ``News``; anything else is ``Ignored`` with a reason, and never an exception
(an exception fails the record, which holds back its FIFO message group).
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest

from tickets_ingest.core.events import (
    Ignored,
    Invocation,
    News,
    interpret_message,
    invocation_kind,
    queued_message,
)

EVENTS = Path(__file__).resolve().parents[2] / "events"
BUCKET = "tickets"
DATASETS = ("inc", "crq")
KEY = "automations/inc/changes/2026-06-22T15-53-04.csv"
ETAG = "0f343b0931126a20f133d67c2b018a3b"
EVENT_ID = "b1c2d3e4-0001-4a5b-9c8d-000000000001"


def object_created(
    key: Any = KEY,
    *,
    bucket: Any = BUCKET,
    etag: str | None = ETAG,
    etag_field: str = "etag",
    event_id: str | None = EVENT_ID,
) -> dict[str, Any]:
    """An EventBridge "Object Created" event as S3 sends it to the queue."""
    obj: dict[str, Any] = {"key": key, "size": 873, "sequencer": "0066F2B0C2A1B3D4E5"}
    if etag is not None:
        obj[etag_field] = etag
    event: dict[str, Any] = {
        "version": "0",
        "detail-type": "Object Created",
        "source": "aws.s3",
        "account": "123456789012",
        "time": "2026-06-22T12:53:05Z",
        "region": "eu-west-1",
        "resources": [f"arn:aws:s3:::{bucket}"],
        "detail": {
            "version": "0",
            "bucket": {"name": bucket},
            "object": obj,
            "request-id": "N4N7GDK58NMKJ12R",
            "requester": "123456789012",
            "reason": "PutObject",
        },
    }
    if event_id is not None:
        event["id"] = event_id
    return event


def interpret(message: Any, datasets: tuple[str, ...] = DATASETS) -> News | Ignored:
    body = message if isinstance(message, str) else json.dumps(message)
    return interpret_message(body, bucket=BUCKET, datasets=datasets)


def ignored(message: Any, datasets: tuple[str, ...] = DATASETS) -> str:
    result = interpret(message, datasets)
    assert isinstance(result, Ignored), result
    assert result.reason  # always says why
    return result.reason


def sqs_record(body: str, message_id: str = "m-1", source: str = "aws:sqs") -> dict[str, Any]:
    return {
        "messageId": message_id,
        "receiptHandle": "AQEB",
        "body": body,
        "attributes": {"MessageGroupId": "inc"},
        "messageAttributes": {},
        "eventSource": source,
        "eventSourceARN": "arn:aws:sqs:eu-west-1:123456789012:tickets-ingest.fifo",
        "awsRegion": "eu-west-1",
    }


class TestObjectCreated:
    def test_stream_file_of_an_enabled_dataset_is_news(self) -> None:
        assert interpret(object_created()) == News(
            dataset="inc",
            reason="object-created",
            idempotency_key=f"s3://{BUCKET}/{KEY}@{ETAG}",
            correlation_id=EVENT_ID,
            key=KEY,
        )

    def test_other_enabled_dataset(self) -> None:
        key = "automations/crq/changes/2026-06-22T17-15-41.csv"
        news = interpret(object_created(key))
        assert isinstance(news, News)
        assert (news.dataset, news.key) == ("crq", key)

    @pytest.mark.parametrize("field", ["etag", "eTag"])  # AWS, moto
    @pytest.mark.parametrize("etag", [ETAG, f'"{ETAG}"'])
    def test_etag_spellings_and_quotes_give_the_same_key(self, field: str, etag: str) -> None:
        news = interpret(object_created(etag=etag, etag_field=field))
        assert isinstance(news, News)
        assert news.idempotency_key == f"s3://{BUCKET}/{KEY}@{ETAG}"

    def test_idempotency_key_ignores_the_sqs_message_id(self) -> None:
        """A redriven message gets a new SQS message id; what it means does not change."""
        body = json.dumps(object_created())
        first, redriven = (
            interpret_message(r["body"], bucket=BUCKET, datasets=DATASETS)
            for r in (sqs_record(body, "original-id"), sqs_record(body, "redriven-id"))
        )
        assert isinstance(first, News) and first == redriven

    def test_a_new_upload_of_the_same_key_is_a_new_idempotency_key(self) -> None:
        a = interpret(object_created(etag="a" * 32))
        b = interpret(object_created(etag="b" * 32))
        assert isinstance(a, News) and isinstance(b, News)
        assert a.idempotency_key != b.idempotency_key

    def test_correlation_id_is_the_event_id_or_none(self) -> None:
        news = interpret(object_created(event_id=None))
        assert isinstance(news, News) and news.correlation_id is None
        news = interpret(object_created(event_id=""))
        assert isinstance(news, News) and news.correlation_id is None

    def test_another_bucket(self) -> None:
        assert "'fuel' is not 'tickets'" in ignored(object_created(bucket="fuel"))

    def test_no_bucket(self) -> None:
        event = object_created()
        del event["detail"]["bucket"]
        assert "without bucket and object" in ignored(event)

    def test_dataset_not_enabled(self) -> None:
        key = "automations/fuel/changes/2026-06-22T15-53-04.csv"
        assert "not enabled" in ignored(object_created(key))
        assert "not enabled" in ignored(object_created(KEY), datasets=("crq",))

    @pytest.mark.parametrize(
        "key",
        [
            # path traversal
            "automations/inc/changes/../processed/2026-06-22T15-53-04.csv",
            "automations/inc/changes/..",
            "automations/../changes/2026-06-22T15-53-04.csv",
            "automations/inc/../inc/changes/2026-06-22T15-53-04.csv",
            "automations/inc/changes/./2026-06-22T15-53-04.csv",
            # encoded slashes are not slashes
            "automations%2Finc%2Fchanges%2F2026-06-22T15-53-04.csv",
            "automations/inc/changes%2F2026-06-22T15-53-04.csv",
            "automations/inc/changes/..%2Fprocessed%2F2026-06-22T15-53-04.csv",
            # nested folders and double slashes
            "automations/inc/changes/sub/2026-06-22T15-53-04.csv",
            "automations/inc/changes//2026-06-22T15-53-04.csv",
            "automations//inc/changes/2026-06-22T15-53-04.csv",
            "x/automations/inc/changes/2026-06-22T15-53-04.csv",
            # the other folders of a dataset
            "automations/inc/processed/2026-06-22T15-53-04.csv",
            "automations/inc/quarantine/2026-06-22T15-53-04.csv",
            # legacy snapshots at the dataset's root, and the root itself
            "automations/inc/2026-06-22T15-53-04.csv",
            "automations/inc/inc.csv",
            "automations/inc_snapshot.csv",
            "automations/inc/changes/",
            # names that merely look like stream files
            "automations/inc/changes/2026-06-22T15-53-04.csv.tmp",
            "automations/inc/changes/2026-06-22T15-53-04.CSV",
            "automations/inc/changes/2026-06-22T15-53-04.csv ",
            "automations/inc/changes/2026-06-22T15-53-04.csv\n",
            "automations/inc/changes/ 2026-06-22T15-53-04.csv",
            "automations/inc/changes/.2026-06-22T15-53-04.csv",
            "automations/inc/changes/2026-06-22 15-53-04.csv",
            "automations/inc/changes/2026-06-22T15:53:04.csv",
            "automations/inc/changes/2026-02-30T10-00-00.csv",
            "automations/inc/changes/2026-06-22T25-00-00.csv",
            "automations/inc/changes/notes.txt",
            # Unicode digits (fullwidth, Arabic-Indic) are not [0-9]
            "automations/inc/changes/\uff12\uff10\uff12\uff16-06-22T15-53-04.csv",
            "automations/inc/changes/\u0662\u0660\u0662\u0666-06-22T15-53-04.csv",
            # case and odd dataset names
            "Automations/inc/changes/2026-06-22T15-53-04.csv",
            "automations/INC/changes/2026-06-22T15-53-04.csv",
            "automations/inc/Changes/2026-06-22T15-53-04.csv",
            "automations/in c/changes/2026-06-22T15-53-04.csv",
            # leading slash, empty
            "/automations/inc/changes/2026-06-22T15-53-04.csv",
            "",
        ],
    )
    def test_keys_that_are_not_stream_files(self, key: str) -> None:
        ignored(object_created(key))

    @pytest.mark.parametrize("key", [None, 123, ["automations/inc/changes/x.csv"], {"k": 1}])
    def test_non_string_key(self, key: Any) -> None:
        assert ignored(object_created(key)) == "event without an object key"

    def test_missing_key(self) -> None:
        event = object_created()
        del event["detail"]["object"]["key"]
        assert ignored(event) == "event without an object key"

    @pytest.mark.parametrize("detail", [None, "x", [1], 3])
    def test_detail_that_is_not_an_object(self, detail: Any) -> None:
        event = object_created()
        event["detail"] = detail
        assert ignored(event) == "event without detail"

    @pytest.mark.parametrize("value", ["tickets", ["tickets"], 7])
    def test_bucket_that_is_not_an_object_is_ignored_not_an_error(self, value: Any) -> None:
        event = object_created()
        event["detail"]["bucket"] = value
        ignored(event)

    @pytest.mark.parametrize("value", [KEY, [KEY], 7])
    def test_object_that_is_not_an_object_is_ignored_not_an_error(self, value: Any) -> None:
        event = object_created()
        event["detail"]["object"] = value
        ignored(event)

    @pytest.mark.parametrize(
        ("field", "value"),
        [
            ("source", "aws.s3.evil"),
            ("source", "custom.app"),
            ("detail-type", "Object Deleted"),
            ("detail-type", "object created"),
        ],
    )
    def test_other_event_types(self, field: str, value: str) -> None:
        event = object_created()
        event[field] = value
        assert ignored(event) == "not an S3 Object Created event, a continuation or a sweep"


class TestBodies:
    @pytest.mark.parametrize("body", ["", "not json", "{", "{'kind': 'sweep'}", "\x00"])
    def test_not_json(self, body: str) -> None:
        assert ignored(body) == "body is not JSON"

    @pytest.mark.parametrize("body", ["[]", json.dumps([object_created()]), "1", '"x"', "null"])
    def test_json_that_is_not_an_object(self, body: str) -> None:
        assert ignored(body) == "body is not a JSON object"

    @pytest.mark.parametrize(
        "message",
        [
            {},
            {"hello": "world"},
            {"Records": [{"s3": {"object": {"key": KEY}}}]},  # an S3 notification, not ours
            {"dataset": "inc"},
            {"kind": "object-created", "dataset": "inc"},
            {"kind": "Continuation", "dataset": "inc"},
        ],
    )
    def test_unrelated_json(self, message: dict[str, Any]) -> None:
        assert ignored(message) == "not an S3 Object Created event, a continuation or a sweep"

    @pytest.mark.parametrize("kind", [["continuation"], {"a": 1}])
    def test_unhashable_kind_is_ignored_not_an_error(self, kind: Any) -> None:
        ignored({"kind": kind, "dataset": "inc"})

    def test_deeply_nested_json_is_ignored_not_an_error(self) -> None:
        """Fits in an SQS message (256 KiB); must not escape as RecursionError."""
        ignored("[" * 100_000)


class TestContinuationAndSweep:
    @pytest.mark.parametrize("kind", ["continuation", "sweep", "resume"])
    def test_enabled_dataset(self, kind: str) -> None:
        token = "automations/inc/changes/2026-06-22T15-53-04.csv|2026-06-22T12:55:00+00:00"
        assert interpret({"kind": kind, "dataset": "inc", "token": token}) == News(
            dataset="inc",
            reason=kind,
            idempotency_key=f"{kind}:inc:{token}",
            correlation_id=token,
        )

    def test_without_token(self) -> None:
        news = interpret({"kind": "continuation", "dataset": "crq"})
        assert news == News("crq", "continuation", "continuation:crq:", correlation_id=None)

    def test_distinct_tokens_are_distinct_messages(self) -> None:
        a = interpret({"kind": "continuation", "dataset": "inc", "token": "1"})
        b = interpret({"kind": "continuation", "dataset": "inc", "token": "2"})
        assert isinstance(a, News) and isinstance(b, News)
        assert a.idempotency_key != b.idempotency_key

    @pytest.mark.parametrize("kind", ["continuation", "sweep", "resume"])
    @pytest.mark.parametrize("dataset", ["fuel", "", None, 3, ["inc"], "INC", "inc "])
    def test_dataset_not_enabled(self, kind: str, dataset: Any) -> None:
        reason = ignored({"kind": kind, "dataset": dataset, "token": "t"})
        assert reason == f"{kind} for a dataset that is not enabled: {dataset!r}"

    def test_missing_dataset(self) -> None:
        assert "not enabled: None" in ignored({"kind": "sweep"})

    @pytest.mark.parametrize("kind", ["continuation", "resume"])
    def test_queued_message_reads_back_as_news(self, kind: str) -> None:
        """What the function (continuation) or ``resume`` queues is what it reads back."""
        news = interpret(json.loads(queued_message(kind, "inc", "tok")))
        assert news == News("inc", kind, f"{kind}:inc:tok", correlation_id="tok")

    def test_queued_message_kind_is_checked(self) -> None:
        with pytest.raises(ValueError, match="not a queued message kind"):
            queued_message("object-created", "inc", "tok")

    def test_dataset_enabled_elsewhere_only(self) -> None:
        ignored({"kind": "continuation", "dataset": "crq", "token": "t"}, datasets=("inc",))


class TestInvocationKind:
    def test_sqs_batch(self) -> None:
        event = {"Records": [sqs_record("{}", "a"), sqs_record("{}", "b")]}
        assert invocation_kind(event) is Invocation.BATCH

    @pytest.mark.parametrize(
        "records",
        [
            [sqs_record("{}"), sqs_record("{}", source="aws:s3")],
            [{"eventSource": "aws:s3", "s3": {}}],  # an S3 notification sent straight here
            [sqs_record("{}"), "not a record"],
            [],
            "Records",
            {"eventSource": "aws:sqs"},
        ],
    )
    def test_not_an_sqs_batch(self, records: Any) -> None:
        assert invocation_kind({"Records": records}) is Invocation.UNKNOWN

    @pytest.mark.parametrize(
        "event",
        [
            {"sweep": True},
            {"detail-type": "Scheduled Event", "source": "aws.events", "detail": {}},
            {"detail-type": "Scheduled Event", "source": "aws.scheduler"},
        ],
    )
    def test_sweep(self, event: dict[str, Any]) -> None:
        assert invocation_kind(event) is Invocation.SWEEP

    @pytest.mark.parametrize(
        "event",
        [
            {"sweep": "true"},
            {"sweep": 1},
            {"sweep": False},
            {"detail-type": "Scheduled Event", "source": "custom.app"},
            {"detail-type": "Object Created", "source": "aws.events"},
        ],
    )
    def test_not_a_sweep(self, event: dict[str, Any]) -> None:
        assert invocation_kind(event) is Invocation.UNKNOWN

    def test_direct(self) -> None:
        assert invocation_kind({"dataset": "inc"}) is Invocation.DIRECT

    @pytest.mark.parametrize(
        "event",
        [{"dataset": "inc", "extra": 1}, {"dataset": 3}, {"dataset": None}, {"dataset": ["inc"]}],
    )
    def test_not_direct(self, event: dict[str, Any]) -> None:
        assert invocation_kind(event) is Invocation.UNKNOWN

    def test_empty(self) -> None:
        assert invocation_kind({}) is Invocation.UNKNOWN


EVENT_FILES = {
    "direct-inc.json": Invocation.DIRECT,
    "scheduled-sweep.json": Invocation.SWEEP,
    "sqs-fifo-object-created.json": Invocation.BATCH,
    "sqs-fifo-redriven.json": Invocation.BATCH,
    "sqs-fifo-two-datasets.json": Invocation.BATCH,
    "sqs-fifo-ignored-keys.json": Invocation.BATCH,
}

# For each batch file: (dataset, key) of every record, None for an ignored record.
BATCH_NEWS: dict[str, list[tuple[str, str] | None]] = {
    "sqs-fifo-object-created.json": [
        ("inc", "automations/inc/changes/2026-06-22T15-53-04.csv"),
        ("inc", "automations/inc/changes/2026-06-22T17-10-41.csv"),
    ],
    "sqs-fifo-redriven.json": [("inc", "automations/inc/changes/2026-06-22T16-00-00.csv")],
    "sqs-fifo-two-datasets.json": [
        ("inc", "automations/inc/changes/2026-06-22T17-15-41.csv"),
        ("crq", "automations/crq/changes/2026-06-22T17-15-41.csv"),
        ("inc", "automations/inc/changes/2026-06-22T17-20-02.csv"),
    ],
    "sqs-fifo-ignored-keys.json": [None] * 6,
}


def load_event(name: str) -> dict[str, Any]:
    event: dict[str, Any] = json.loads((EVENTS / name).read_text(encoding="utf-8"))
    return event


def test_every_event_file_is_covered() -> None:
    assert sorted(p.name for p in EVENTS.glob("*.json")) == sorted(EVENT_FILES)


@pytest.mark.parametrize("name", sorted(EVENT_FILES))
def test_event_file_kind(name: str) -> None:
    assert invocation_kind(load_event(name)) is EVENT_FILES[name]


@pytest.mark.parametrize("name", sorted(BATCH_NEWS))
def test_event_file_records(name: str) -> None:
    records = load_event(name)["Records"]
    results = [interpret_message(r["body"], bucket=BUCKET, datasets=DATASETS) for r in records]
    seen = [(n.dataset, n.key) if isinstance(n, News) else None for n in results]
    assert seen == BATCH_NEWS[name]
    for record, result in zip(records, results, strict=True):
        if isinstance(result, News):
            body = json.loads(record["body"])
            etag = body["detail"]["object"]["etag"]
            assert result.reason == "object-created"
            assert result.idempotency_key == f"s3://{BUCKET}/{result.key}@{etag}"
            assert result.correlation_id == body["id"]
            assert result.correlation_id != record["messageId"]


def test_ignored_keys_file_says_why_for_each_record() -> None:
    reasons = [
        interpret_message(r["body"], bucket=BUCKET, datasets=DATASETS)
        for r in load_event("sqs-fifo-ignored-keys.json")["Records"]
    ]
    assert all(isinstance(r, Ignored) for r in reasons)
    text = [r.reason for r in reasons if isinstance(r, Ignored)]
    assert "processed/" in text[0] and "changes/" in text[0]
    assert ".." in text[1]
    assert "'fuel' is not 'tickets'" in text[2]
    assert "%2F" in text[3]
    assert "notes.txt" in text[4] and "not a stream file name" in text[4]
    assert "'fuel'" in text[5] and "not enabled" in text[5]


def test_redriven_event_means_what_the_original_meant() -> None:
    redriven = load_event("sqs-fifo-redriven.json")["Records"][0]
    original = dict(redriven, messageId="original-message-id")
    a = interpret_message(original["body"], bucket=BUCKET, datasets=DATASETS)
    b = interpret_message(redriven["body"], bucket=BUCKET, datasets=DATASETS)
    assert isinstance(a, News) and a == b
