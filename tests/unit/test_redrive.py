"""Redriving the dead-letter queue: operator.redrive / redrive_by_hand and `tickets-ingest redrive`.

moto has no message-move API, so the SQS client is a real boto3 client with a botocore
Stubber: every call is checked against the SQS model, and nothing goes over the network.
"""

from __future__ import annotations

import io
from collections.abc import Iterator
from typing import Any

import boto3
import pytest
from botocore.exceptions import ClientError
from botocore.stub import ANY, Stubber

from tickets_ingest.errors import IngestError
from tickets_ingest.handlers import cli
from tickets_ingest.logic.operator import RedriveProgress, redrive, redrive_by_hand

REGION = "eu-west-1"
DLQ_ARN = "arn:aws:sqs:eu-west-1:123456789012:tickets-ingest-dlq.fifo"
QUEUE_ARN = "arn:aws:sqs:eu-west-1:123456789012:tickets-ingest.fifo"
DLQ_URL = "https://sqs.eu-west-1.amazonaws.com/123456789012/tickets-ingest-dlq.fifo"
QUEUE_URL = "https://sqs.eu-west-1.amazonaws.com/123456789012/tickets-ingest.fifo"
HANDLE = "eyJ0YXNrSWQiOiJkYjZiNWY0NC0wMDAwIn0="


def make_sqs() -> Any:
    return boto3.client(
        "sqs",
        region_name=REGION,
        aws_access_key_id="testing",
        aws_secret_access_key="testing",
    )


@pytest.fixture
def sqs() -> Iterator[tuple[Any, Stubber]]:
    client = make_sqs()
    with Stubber(client) as stubber:
        yield client, stubber
        stubber.assert_no_pending_responses()


def task(status: str, moved: int, to_move: int | None = 10, **extra: Any) -> dict[str, Any]:
    entry: dict[str, Any] = {
        "TaskHandle": HANDLE,
        "Status": status,
        "SourceArn": DLQ_ARN,
        "DestinationArn": QUEUE_ARN,
        "ApproximateNumberOfMessagesMoved": moved,
        "StartedTimestamp": 1750585985123,
        **extra,
    }
    if to_move is not None:
        entry["ApproximateNumberOfMessagesToMove"] = to_move
    return entry


def expect_start(stubber: Stubber, source_arn: str = DLQ_ARN) -> None:
    stubber.add_response(
        "start_message_move_task", {"TaskHandle": HANDLE}, {"SourceArn": source_arn}
    )


def expect_list(stubber: Stubber, *results: dict[str, Any], source_arn: str = DLQ_ARN) -> None:
    stubber.add_response(
        "list_message_move_tasks",
        {"Results": list(results)},
        {"SourceArn": source_arn, "MaxResults": 1},
    )


class FakeSleep:
    def __init__(self) -> None:
        self.calls: list[float] = []

    def __call__(self, seconds: float) -> None:
        self.calls.append(seconds)


class TestRedrive:
    def test_polls_until_completed_sleeping_between_polls(self, sqs: tuple[Any, Stubber]) -> None:
        client, stubber = sqs
        expect_start(stubber)
        expect_list(stubber, task("RUNNING", 3))
        expect_list(stubber, task("RUNNING", 7))
        expect_list(stubber, task("COMPLETED", 10))
        sleep = FakeSleep()

        progress = redrive(client, DLQ_ARN, poll_seconds=2.5, sleep=sleep)
        assert next(progress) == RedriveProgress("RUNNING", 3, 10)
        assert sleep.calls == []  # reported before waiting
        assert next(progress) == RedriveProgress("RUNNING", 7, 10)
        assert sleep.calls == [2.5]
        assert next(progress) == RedriveProgress("COMPLETED", 10, 10)
        assert sleep.calls == [2.5, 2.5]
        with pytest.raises(StopIteration):
            next(progress)
        assert sleep.calls == [2.5, 2.5]  # no wait after the end

    def test_nothing_happens_before_the_first_next(self, sqs: tuple[Any, Stubber]) -> None:
        client, _ = sqs
        redrive(client, DLQ_ARN, sleep=FakeSleep())  # a generator: not started
        # (the fixture checks no response was consumed: none was queued)

    def test_no_wait_yields_once(self, sqs: tuple[Any, Stubber]) -> None:
        client, stubber = sqs
        expect_start(stubber)
        expect_list(stubber, task("RUNNING", 3))
        sleep = FakeSleep()
        assert list(redrive(client, DLQ_ARN, wait=False, sleep=sleep)) == [
            RedriveProgress("RUNNING", 3, 10)
        ]
        assert sleep.calls == []

    def test_failed_raises_with_the_failure_reason(self, sqs: tuple[Any, Stubber]) -> None:
        client, stubber = sqs
        expect_start(stubber)
        expect_list(stubber, task("RUNNING", 3))
        expect_list(
            stubber, task("FAILED", 4, FailureReason="AWS.SimpleQueueService.NonExistentQueue")
        )
        sleep = FakeSleep()
        seen: list[RedriveProgress] = []
        with pytest.raises(IngestError) as info:
            for progress in redrive(client, DLQ_ARN, sleep=sleep):
                seen.append(progress)
        assert "redrive failed" in str(info.value)
        assert "AWS.SimpleQueueService.NonExistentQueue" in str(info.value)
        assert seen == [RedriveProgress("RUNNING", 3, 10), RedriveProgress("FAILED", 4, 10)]
        assert sleep.calls == [5.0]  # the default poll interval

    def test_failed_without_a_reason(self, sqs: tuple[Any, Stubber]) -> None:
        client, stubber = sqs
        expect_start(stubber)
        expect_list(stubber, task("FAILED", 0))
        with pytest.raises(IngestError, match="no reason given"):
            list(redrive(client, DLQ_ARN, sleep=FakeSleep()))

    def test_failed_raises_even_without_waiting(self, sqs: tuple[Any, Stubber]) -> None:
        client, stubber = sqs
        expect_start(stubber)
        expect_list(stubber, task("FAILED", 0, FailureReason="boom"))
        with pytest.raises(IngestError, match="boom"):
            list(redrive(client, DLQ_ARN, wait=False, sleep=FakeSleep()))

    def test_cancelled_stops(self, sqs: tuple[Any, Stubber]) -> None:
        client, stubber = sqs
        expect_start(stubber)
        expect_list(stubber, task("CANCELLING", 5))
        expect_list(stubber, task("CANCELLED", 5))
        sleep = FakeSleep()
        assert [p.status for p in redrive(client, DLQ_ARN, sleep=sleep)] == [
            "CANCELLING",
            "CANCELLED",
        ]
        assert sleep.calls == [5.0]

    def test_empty_results_yield_unknown_and_stop(self, sqs: tuple[Any, Stubber]) -> None:
        client, stubber = sqs
        expect_start(stubber)
        expect_list(stubber)
        sleep = FakeSleep()
        assert list(redrive(client, DLQ_ARN, sleep=sleep)) == [RedriveProgress("UNKNOWN", 0, None)]
        assert sleep.calls == []

    def test_unknown_total(self, sqs: tuple[Any, Stubber]) -> None:
        client, stubber = sqs
        expect_start(stubber)
        expect_list(stubber, task("COMPLETED", 2, to_move=None))
        assert list(redrive(client, DLQ_ARN, sleep=FakeSleep())) == [
            RedriveProgress("COMPLETED", 2, None)
        ]

    def test_start_refused(self, sqs: tuple[Any, Stubber]) -> None:
        client, stubber = sqs
        stubber.add_client_error(
            "start_message_move_task",
            service_error_code="InvalidParameterValue",
            service_message="Source queue must be configured as a Dead Letter Queue.",
            expected_params={"SourceArn": DLQ_ARN},
        )
        with pytest.raises(ClientError, match="Dead Letter Queue"):
            list(redrive(client, DLQ_ARN, sleep=FakeSleep()))


def dlq_message(n: int, group: str) -> dict[str, Any]:
    return {
        "MessageId": f"m-{n}",
        "ReceiptHandle": f"rh-{n}",
        "MD5OfBody": "0" * 32,
        "Body": f'{{"kind": "sweep", "dataset": "{group}", "token": "{n}"}}',
        "Attributes": {"MessageGroupId": group},
    }


RECEIVE = {
    "QueueUrl": DLQ_URL,
    "MaxNumberOfMessages": 10,
    "AttributeNames": ["MessageGroupId"],
    "WaitTimeSeconds": 0,
}


class TestRedriveByHand:
    def test_moves_every_message_keeping_its_group(self, sqs: tuple[Any, Stubber]) -> None:
        client, stubber = sqs
        first, second = dlq_message(1, "inc"), dlq_message(2, "crq")
        stubber.add_response("receive_message", {"Messages": [first, second]}, RECEIVE)
        for message in (first, second):
            stubber.add_response(
                "send_message",
                {"MessageId": "new-" + message["MessageId"], "MD5OfMessageBody": "0" * 32},
                {
                    "QueueUrl": QUEUE_URL,
                    "MessageBody": message["Body"],
                    "MessageGroupId": message["Attributes"]["MessageGroupId"],
                    "MessageDeduplicationId": ANY,
                },
            )
            stubber.add_response(
                "delete_message",
                {},
                {"QueueUrl": DLQ_URL, "ReceiptHandle": message["ReceiptHandle"]},
            )
        stubber.add_response("receive_message", {}, RECEIVE)
        assert redrive_by_hand(client, DLQ_URL, QUEUE_URL) == 2

    def test_empty_dlq(self, sqs: tuple[Any, Stubber]) -> None:
        client, stubber = sqs
        stubber.add_response("receive_message", {"Messages": []}, RECEIVE)
        assert redrive_by_hand(client, DLQ_URL, QUEUE_URL) == 0


# --- the CLI ---------------------------------------------------------------------------


@pytest.fixture
def cli_env(monkeypatch: pytest.MonkeyPatch) -> None:
    """A local operator's environment: no Lambda, no database access settings."""
    for name in (
        "AWS_LAMBDA_FUNCTION_NAME",
        "AWS_ENDPOINT_URL",
        "AWS_PROFILE",
        "DATABASE_URL",
        "DATASET_TABLES",
        "DB_SECRET_ARN",
        "DB_SSLMODE",
        "DB_CA_BUNDLE",
        "DB_REQUIRE_TLS",
        "DB_IAM_AUTH",
        "DLQ_URL",
        "QUEUE_URL",
        "TIME_BUDGET_MARGIN_SECONDS",
    ):
        monkeypatch.delenv(name, raising=False)
    monkeypatch.setenv("DATASETS", "inc")
    monkeypatch.setenv("AWS_DEFAULT_REGION", REGION)
    monkeypatch.setenv("AWS_ACCESS_KEY_ID", "testing")
    monkeypatch.setenv("AWS_SECRET_ACCESS_KEY", "testing")


@pytest.fixture
def cli_sqs(cli_env: None, monkeypatch: pytest.MonkeyPatch) -> Iterator[Stubber]:
    """The CLI's ``boto3.client("sqs")`` returns a stubbed client (the AWS edge only)."""
    client = make_sqs()
    made: list[tuple[Any, ...]] = []

    def fake_client(*args: Any, **kwargs: Any) -> Any:
        made.append(args)
        return client

    with Stubber(client) as stubber:
        monkeypatch.setattr("tickets_ingest.handlers.cli.boto3.client", fake_client)
        yield stubber
        stubber.assert_no_pending_responses()
    assert all(args == ("sqs",) for args in made)


def expect_queue_arn(stubber: Stubber, url: str = DLQ_URL, arn: str = DLQ_ARN) -> None:
    stubber.add_response(
        "get_queue_attributes",
        {"Attributes": {"QueueArn": arn}},
        {"QueueUrl": url, "AttributeNames": ["QueueArn"]},
    )


def run(*argv: str) -> tuple[int, str]:
    out = io.StringIO()
    code = cli.main(list(argv), out=out)
    return code, out.getvalue()


class TestCli:
    def test_redrive_completed(self, cli_sqs: Stubber) -> None:
        expect_queue_arn(cli_sqs)
        expect_start(cli_sqs)
        expect_list(cli_sqs, task("COMPLETED", 10))
        code, out = run("redrive", "--dlq", DLQ_URL)
        assert code == cli.EXIT_OK
        assert out.splitlines() == ["redrive COMPLETED: 10/10 message(s) moved"]

    def test_redrive_no_wait(self, cli_sqs: Stubber) -> None:
        expect_queue_arn(cli_sqs)
        expect_start(cli_sqs)
        expect_list(cli_sqs, task("RUNNING", 3))
        code, out = run("redrive", "--dlq", DLQ_URL, "--no-wait")
        assert code == cli.EXIT_OK
        assert out.splitlines() == ["redrive RUNNING: 3/10 message(s) moved"]

    def test_redrive_uses_dlq_url(self, cli_sqs: Stubber, monkeypatch: pytest.MonkeyPatch) -> None:
        other = DLQ_URL.replace("tickets-ingest-dlq", "other-dlq")
        other_arn = DLQ_ARN.replace("tickets-ingest-dlq", "other-dlq")
        monkeypatch.setenv("DLQ_URL", other)
        expect_queue_arn(cli_sqs, other, other_arn)
        expect_start(cli_sqs, other_arn)
        expect_list(cli_sqs, task("RUNNING", 1, 2), source_arn=other_arn)
        code, out = run("redrive", "--no-wait")
        assert code == cli.EXIT_OK
        assert out == "redrive RUNNING: 1/2 message(s) moved\n"

    def test_redrive_unknown_total_and_unknown_task(self, cli_sqs: Stubber) -> None:
        expect_queue_arn(cli_sqs)
        expect_start(cli_sqs)
        expect_list(cli_sqs)
        code, out = run("redrive", "--dlq", DLQ_URL)
        assert code == cli.EXIT_OK
        assert out == "redrive UNKNOWN: 0/? message(s) moved\n"

    def test_redrive_failed_exits_1_with_one_line(
        self, cli_sqs: Stubber, capsys: pytest.CaptureFixture[str]
    ) -> None:
        expect_queue_arn(cli_sqs)
        expect_start(cli_sqs)
        expect_list(cli_sqs, task("FAILED", 4, FailureReason="CouldNotDetermineMessageSource"))
        code, out = run("redrive", "--dlq", DLQ_URL)
        err = capsys.readouterr().err
        assert code == cli.EXIT_FAILED
        assert out == "redrive FAILED: 4/10 message(s) moved\n"
        assert err.strip().splitlines() == [
            "tickets-ingest: redrive failed: CouldNotDetermineMessageSource"
        ]

    def test_aws_error_exits_1_without_traceback(
        self, cli_sqs: Stubber, capsys: pytest.CaptureFixture[str]
    ) -> None:
        cli_sqs.add_client_error(
            "get_queue_attributes",
            service_error_code="AWS.SimpleQueueService.NonExistentQueue",
            service_message="The specified queue does not exist.",
            expected_params={"QueueUrl": DLQ_URL, "AttributeNames": ["QueueArn"]},
        )
        code, _ = run("redrive", "--dlq", DLQ_URL)
        err = capsys.readouterr().err
        assert code == cli.EXIT_FAILED
        assert "The specified queue does not exist" in err
        assert "Traceback" not in err

    def test_redrive_by_hand(self, cli_sqs: Stubber, monkeypatch: pytest.MonkeyPatch) -> None:
        monkeypatch.setenv("QUEUE_URL", QUEUE_URL)
        message = dlq_message(1, "inc")
        cli_sqs.add_response("receive_message", {"Messages": [message]}, RECEIVE)
        cli_sqs.add_response(
            "send_message",
            {"MessageId": "new", "MD5OfMessageBody": "0" * 32},
            {
                "QueueUrl": QUEUE_URL,
                "MessageBody": message["Body"],
                "MessageGroupId": "inc",
                "MessageDeduplicationId": ANY,
            },
        )
        cli_sqs.add_response("delete_message", {}, {"QueueUrl": DLQ_URL, "ReceiptHandle": "rh-1"})
        cli_sqs.add_response("receive_message", {}, RECEIVE)
        code, out = run("redrive", "--dlq", DLQ_URL, "--by-hand")
        assert code == cli.EXIT_OK
        assert out == f"moved 1 message(s) back to {QUEUE_URL}\n"

    def test_by_hand_without_queue_url_exits_2(
        self, cli_sqs: Stubber, capsys: pytest.CaptureFixture[str]
    ) -> None:
        code, out = run("redrive", "--dlq", DLQ_URL, "--by-hand")
        assert code == cli.EXIT_USAGE
        assert out == ""
        assert "QUEUE_URL" in capsys.readouterr().err

    def test_no_dlq_exits_2_with_a_message(
        self, cli_sqs: Stubber, capsys: pytest.CaptureFixture[str]
    ) -> None:
        code, out = run("redrive")
        err = capsys.readouterr().err
        assert code == cli.EXIT_USAGE
        assert out == ""
        assert err.strip().splitlines() == [
            "tickets-ingest: configuration: no dead-letter queue: pass --dlq URL or set DLQ_URL"
        ]
