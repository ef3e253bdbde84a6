"""The whole path in the emulator: S3 -> EventBridge rule -> SQS FIFO -> handler -> PostgreSQL."""

from __future__ import annotations

import importlib
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from typing import Any

import boto3
import pytest

from tests.conftest import BUCKET, Env
from tickets_devkit.event_path import (
    EventPath,
    FakeLambdaContext,
    PollStats,
    build_event_path,
    poll,
)
from tickets_ingest import failpoints
from tickets_ingest.failpoints import Step


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
    session = boto3.Session(region_name=env.aws.region)
    path = build_event_path(session, BUCKET, ["inc", "crq"], region=env.aws.region)
    for name, value in path.env().items():
        monkeypatch.setenv(name, value)
    monkeypatch.setenv("POWERTOOLS_SERVICE_NAME", "tickets-ingest")
    monkeypatch.setenv("POWERTOOLS_METRICS_NAMESPACE", "TicketsIngest")
    monkeypatch.setenv("POWERTOOLS_TRACE_DISABLED", "true")
    monkeypatch.setenv("LOCK_WAIT_SECONDS", "10")
    aws = importlib.import_module("tickets_ingest.handlers.aws")
    app = importlib.import_module("app")
    # A new "container": settings, connection and clients are rebuilt from this test's env.
    for cached in (aws.runtime, aws._sync_news_once, aws._sqs):
        cached.cache_clear()
    yield LambdaWorld(env, path, app.lambda_handler)
    aws.runtime().close()
    for cached in (aws.runtime, aws._sync_news_once, aws._sqs):
        cached.cache_clear()
