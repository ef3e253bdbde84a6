"""The whole path in the emulator: S3 -> EventBridge rule -> SQS FIFO -> handler -> PostgreSQL."""

from __future__ import annotations

import importlib
import json
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from typing import Any

import boto3
import pytest

from tests.conftest import Env
from tickets_devkit.event_path import (
    SECRET_NAME,
    EventPath,
    FakeLambdaContext,
    PollStats,
    deploy_stack,
    local_parameters,
    poll,
)
from tickets_ingest import failpoints
from tickets_ingest.dal.credentials import forget_cached_secret
from tickets_ingest.failpoints import Step
from tickets_ingest.settings import parse_database_url


@dataclass
class LambdaWorld:
    env: Env
    path: EventPath
    handler: Callable[[dict[str, Any], Any], dict[str, Any]]
    remaining_ms: int = 300_000

    def context(self) -> FakeLambdaContext:
        remaining = self.remaining_ms
        return FakeLambdaContext(remaining_ms=lambda: remaining)

    def poll(self, max_batches: int = 50) -> PollStats:
        return poll(self.path, self.handler, self.context, max_batches=max_batches)

    def invoke(self, event: dict[str, Any]) -> dict[str, Any]:
        return self.handler(event, self.context())

    def invoke_with_time_spent(self, event: dict[str, Any], left_ms: int) -> dict[str, Any]:
        """Start with the full budget (a margin above it is refused at the start); once the
        dataset is listed only ``left_ms`` remain, as if that time went before any file."""
        left = {"ms": self.remaining_ms}

        def spend(step: Step, _key: str) -> None:
            if step is Step.LISTED:
                left["ms"] = left_ms

        with failpoints.on(spend):
            return self.handler(event, FakeLambdaContext(remaining_ms=lambda: left["ms"]))

    def queue_depth(self, url: str | None = None) -> int:
        attributes = self.path.sqs.get_queue_attributes(
            QueueUrl=url or self.path.queue_url,
            AttributeNames=["ApproximateNumberOfMessages", "ApproximateNumberOfMessagesNotVisible"],
        )["Attributes"]
        return int(attributes["ApproximateNumberOfMessages"]) + int(
            attributes["ApproximateNumberOfMessagesNotVisible"]
        )


@pytest.fixture
def world(env: Env, monkeypatch: pytest.MonkeyPatch) -> Iterator[LambdaWorld]:
    """template.yaml deployed into the emulator; the handler runs with the function's
    environment as the stack set it (AWS_ENDPOINT_URL pointing at the emulator)."""
    session = boto3.Session(region_name=env.aws.region)
    store_database_secret(session, env.database_url)
    path = deploy_stack(session, local_parameters(env.aws.region))
    for name, value in {**path.handler_env(env.aws.endpoint_url), **path.env()}.items():
        monkeypatch.setenv(name, value)
    monkeypatch.setenv("POWERTOOLS_TRACE_DISABLED", "true")  # no X-Ray daemon here
    aws = importlib.import_module("tickets_ingest.handlers.aws")
    app = importlib.import_module("app")
    # A new "container": settings, connection, clients and the cached secret are rebuilt
    # from this test's env.
    for cached in (aws.runtime, aws._idempotent_sync_news, aws._sqs):
        cached.cache_clear()
    forget_cached_secret()
    yield LambdaWorld(env, path, app.lambda_handler)
    aws.runtime().close()
    for cached in (aws.runtime, aws._idempotent_sync_news, aws._sqs):
        cached.cache_clear()


def store_database_secret(session: Any, database_url: str) -> None:
    """The test database's credentials where the function's DB_SECRET_ARN points."""
    params = parse_database_url(database_url)
    secret = {
        "host": params.host,
        "port": params.port,
        "username": params.user,
        "password": "local",  # the test server trusts every login
        "dbname": params.database,
    }
    session.client("secretsmanager").create_secret(
        Name=SECRET_NAME, SecretString=json.dumps(secret)
    )


def pytest_configure(config: pytest.Config) -> None:
    # moto's CloudFormation warns for each resource type it does not emulate (alarms,
    # schedules, queue and bucket policies); EventPath.not_emulated lists them instead.
    config.addinivalue_line(
        "filterwarnings", "ignore:Tried to parse .* not supported by moto:UserWarning"
    )
