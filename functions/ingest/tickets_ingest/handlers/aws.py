"""The Lambda side of the entry points: observability, per-invocation work, metrics and
continuation messages. ``functions/ingest/app.py`` is the handler; this is what it calls.

Every path ends in the same ``logic.sync.sync``; nothing here decides what a file means.
"""

from __future__ import annotations

import dataclasses
import logging
import os
from collections.abc import Callable
from datetime import UTC, datetime
from functools import cache
from typing import TYPE_CHECKING, Any

import boto3
from aws_lambda_powertools import Logger, Metrics
from aws_lambda_powertools.logging.utils import copy_config_to_registered_loggers
from aws_lambda_powertools.metrics import EphemeralMetrics, MetricUnit
from aws_lambda_powertools.utilities.batch import SqsFifoPartialProcessor, process_partial_response

from tickets_ingest.core.events import Ignored, interpret_message, queued_message
from tickets_ingest.core.keys import watermark_age
from tickets_ingest.dal.retry import counts_since, retry_counts
from tickets_ingest.errors import ConfigError, DatasetPaused, IngestError, SyncBusy
from tickets_ingest.handlers.render import blocked_line, report_json
from tickets_ingest.handlers.tracing import make_tracer
from tickets_ingest.logic import activity
from tickets_ingest.logic.runtime import Runtime
from tickets_ingest.logic.sync import SyncOptions
from tickets_ingest.models import StreamObject, SyncReport
from tickets_ingest.settings import load_settings

if TYPE_CHECKING:
    from aws_lambda_powertools.utilities.data_classes.sqs_event import SQSRecord
    from aws_lambda_powertools.utilities.idempotency import IdempotencyConfig
    from aws_lambda_powertools.utilities.typing import LambdaContext

NAMESPACE = os.environ.get("POWERTOOLS_METRICS_NAMESPACE", "TicketsIngest")
SERVICE = os.environ.get("POWERTOOLS_SERVICE_NAME", "tickets-ingest")

logger = Logger(service=SERVICE)
tracer = make_tracer(SERVICE)
metrics = Metrics(namespace=NAMESPACE, service=SERVICE)
# The engine logs through the standard library; give it the same JSON format and keys.
logging.getLogger("tickets_ingest")
copy_config_to_registered_loggers(source_logger=logger, include={"tickets_ingest"})

# skip_group_on_error: a failure in one dataset's group fails only that group's later
# records, so a poison file in inc never holds crq back, while order within a group holds.
processor = SqsFifoPartialProcessor(skip_group_on_error=True)


class DatasetBlocked(IngestError):
    """A file was rejected: the record fails, is retried, then dead-lettered."""


@cache
def runtime() -> Runtime:
    """One per warm container: settings parsed once, one database connection kept open."""
    return Runtime(load_settings(), application_name=f"tickets-ingest lambda {SERVICE}")


class Invocation:
    """The work of one invocation: each dataset is synced at most once, however many
    records name it, and no file is started without enough time left to finish it."""

    def __init__(self, context: LambdaContext | None) -> None:
        self.context = context
        self.done: dict[str, dict[str, Any]] = {}

    def time_left(self, _: StreamObject) -> bool:
        if self.context is None:
            return True
        margin = runtime().settings.lambda_.time_budget_margin_seconds
        return self.context.get_remaining_time_in_millis() > margin * 1000

    @tracer.capture_method
    def sync(self, dataset: str) -> dict[str, Any]:
        if dataset in self.done:
            return {**self.done[dataset], "already_synced_in_this_invocation": True}
        before = retry_counts()
        options = SyncOptions(may_start_file=self.time_left, hand_over=True)
        try:
            report = activity.noted_sync(runtime(), dataset, options)  # notes its error
        except SyncBusy as busy:
            if not busy.handed_over:
                raise  # the holder may not pick it up: the record fails and comes back
            # A live holder lists the dataset again before it lets go: this message's news
            # is in its hands, so the record is done (never toward the DLQ).
            publish_busy(dataset)
            logger.info("dataset busy; handed over to its holder", extra={"detail": str(busy)})
            self.done[dataset] = {"dataset": dataset, "busy": str(busy), "handed_over": True}
            return self.done[dataset]
        except DatasetPaused as paused:
            # Planned work: the files wait in changes/ and the resume catches up, so the
            # record is done (acknowledged, never toward the DLQ); the sweep skips it too.
            from tickets_ingest.logic import pause as pausing  # noqa: PLC0415 - only when paused

            publish_paused(dataset, pausing.watermark(runtime(), dataset))
            logger.info("dataset paused; nothing applied", extra={"detail": str(paused)})
            self.done[dataset] = {"dataset": dataset, "paused": str(paused)}
            return self.done[dataset]
        finally:
            publish_retries(dataset, counts_since(before))
        publish_metrics(report)
        if report.stopped_early:
            left = None if self.context is None else self.context.get_remaining_time_in_millis()
            logger.warning(
                "time budget: %d file(s) of %s not started with %s ms left "
                "(TIME_BUDGET_MARGIN_SECONDS=%g); continuing later",
                deferred_files(report),
                dataset,
                left,
                runtime().settings.lambda_.time_budget_margin_seconds,
            )
            continue_later(report)
        summary = report_json(report)
        if report.rejected is not None:
            raise DatasetBlocked(blocked_line(report.rejected))
        self.done[dataset] = summary
        return summary


_current: Invocation | None = None


def current() -> Invocation:
    if _current is None:
        raise RuntimeError("no invocation in progress")
    return _current


def check_time_budget(context: LambdaContext) -> None:
    """A margin at or above the function's run time would never start a file, yet report
    ok (and queue continuations for ever): refuse it at the start of an invocation, when
    the time left is the function's timeout."""
    margin = runtime().settings.lambda_.time_budget_margin_seconds
    run_time = context.get_remaining_time_in_millis() / 1000
    if margin >= run_time:
        message = (
            f"TIME_BUDGET_MARGIN_SECONDS={margin:g} is not below the function's run time "
            f"({run_time:.0f} s left at the start of an invocation): no file could ever "
            "start; set it well below the function's timeout"
        )
        logger.error(message)
        raise ConfigError(message)


def begin(context: LambdaContext | None) -> Invocation:
    global _current  # noqa: PLW0603 - one invocation at a time per container
    if context is not None:
        check_time_budget(context)
    _current = Invocation(context)
    return _current


def _sync_news(news: dict[str, Any]) -> dict[str, Any]:
    return current().sync(news["dataset"])


def _sync_news_once() -> Callable[..., dict[str, Any]]:
    """``_sync_news``, made idempotent on what the message means when a table is configured."""
    idempotent = _idempotent_sync_news()
    if idempotent is None:
        return _sync_news
    config, wrapped = idempotent
    context = current().context
    if context is not None:  # in-progress records expire with this invocation's time
        config.register_lambda_context(context)
    return wrapped


@cache
def _idempotent_sync_news() -> tuple[IdempotencyConfig, Callable[..., dict[str, Any]]] | None:
    """Built once per container, at the first message, and only with IDEMPOTENCY_TABLE:
    the idempotency utility and its DynamoDB client are not part of every cold start."""
    table = runtime().settings.lambda_.idempotency_table
    if not table:
        return None
    from aws_lambda_powertools.utilities.idempotency import (  # noqa: PLC0415 - see above
        DynamoDBPersistenceLayer,
        IdempotencyConfig,
        idempotent_function,
    )

    config = IdempotencyConfig(
        event_key_jmespath="idempotency_key", expires_after_seconds=24 * 3600
    )
    wrapped: Callable[..., dict[str, Any]] = idempotent_function(
        data_keyword_argument="news",
        config=config,
        persistence_store=DynamoDBPersistenceLayer(table_name=table),
    )(_sync_news)
    return config, wrapped


def record_handler(record: SQSRecord) -> dict[str, Any]:
    settings = runtime().settings
    news = interpret_message(record.body, bucket=settings.bucket, datasets=settings.datasets)
    if isinstance(news, Ignored):
        logger.info(
            "message ignored", extra={"reason": news.reason, "message_id": record.message_id}
        )
        return {"ignored": news.reason}
    logger.append_keys(dataset=news.dataset, s3_key=news.key, reason=news.reason)
    if news.correlation_id:
        logger.set_correlation_id(news.correlation_id)
    activity.note_news(runtime(), news)  # for status; never fails the record
    return _sync_news_once()(news=dataclasses.asdict(news))


def handle_batch(event: dict[str, Any], context: LambdaContext | None) -> dict[str, Any]:
    response = process_partial_response(
        event=event, record_handler=record_handler, processor=processor, context=context
    )
    return dict(response)


def handle_direct(dataset: str) -> dict[str, Any]:
    activity.note_message(runtime(), dataset, "direct")
    try:
        return {"ok": True, **current().sync(dataset)}
    except DatasetBlocked as exc:
        return {"ok": False, "dataset": dataset, "rejected": str(exc)}


def handle_sweep() -> dict[str, Any]:
    """Sync every enabled dataset, so the stream catches up even if every event were lost."""
    results: dict[str, Any] = {}
    failures: list[str] = []
    for dataset in runtime().settings.datasets:
        logger.append_keys(dataset=dataset)
        activity.note_message(runtime(), dataset, "sweep")
        try:
            results[dataset] = {"ok": True, **current().sync(dataset)}
        except DatasetBlocked as exc:
            results[dataset] = {"ok": False, "rejected": str(exc)}
        except SyncBusy as exc:
            results[dataset] = {"ok": True, "skipped": str(exc)}  # the holder is syncing it
        except Exception as exc:  # one dataset's outage must not hide the others'
            logger.exception("sweep of %s failed", dataset)
            failures.append(f"{dataset}: {type(exc).__name__}")
    if failures:
        raise RuntimeError("sweep failed for " + ", ".join(failures))
    return results


def _dataset_metrics(dataset: str) -> EphemeralMetrics:
    """One EMF document of this service, dimensioned by dataset."""
    emf = EphemeralMetrics(namespace=NAMESPACE, service=SERVICE)
    emf.add_dimension(name="dataset", value=dataset)
    return emf


def publish_metrics(report: SyncReport) -> None:
    """One EMF document per dataset, dimensioned by service and dataset."""
    emf = _dataset_metrics(report.dataset)
    applied = [r for r in report.applied if r.committed]
    count = MetricUnit.Count
    emf.add_metric(name="FilesApplied", unit=count, value=len(applied))
    emf.add_metric(name="RowsUpserted", unit=count, value=sum(r.counts.upserted for r in applied))
    emf.add_metric(
        name="RowsAlarmFiltered", unit=count, value=sum(r.counts.alarm_filtered for r in applied)
    )
    emf.add_metric(
        name="RowsSentinelFiltered",
        unit=count,
        value=sum(r.counts.sentinel_filtered for r in applied),
    )
    emf.add_metric(name="RowsRejected", unit=count, value=sum(r.counts.rejected for r in applied))
    emf.add_metric(
        name="LateFiles",
        unit=count,
        value=sum(1 for r in applied if r.export_type.value == "late"),
    )
    emf.add_metric(name="Conflicts", unit=count, value=len(report.plan.conflicts))
    emf.add_metric(name="FilesRejected", unit=count, value=0 if report.ok else 1)
    emf.add_metric(name="FilesHeld", unit=count, value=len(report.plan.held))
    # Applied under SCHEMA_DRIFT=rescue with a header that differs from the contract.
    emf.add_metric(
        name="FilesDrifted", unit=count, value=sum(1 for r in applied if r.drift is not None)
    )
    # The margin kept files from starting in this invocation (a continuation follows).
    emf.add_metric(name="TimeBudgetStops", unit=count, value=1 if report.stopped_early else 0)
    emf.add_metric(name="FilesDeferred", unit=count, value=deferred_files(report))
    for result in applied:
        emf.add_metric(name="ApplyDuration", unit=MetricUnit.Milliseconds, value=result.duration_ms)
    _add_lag(emf, report.dataset, report.watermark_after)
    emf.flush_metrics()


def _add_lag(emf: EphemeralMetrics, dataset: str, watermark: str | None) -> None:
    # Never negative: clock skew counts as no lag; a watermark beyond the future tolerance
    # has no meaningful lag, and the missing datapoint makes the lag alarm fire.
    age = watermark_age(watermark, datetime.now(UTC), runtime().settings.future_tolerance_seconds)
    if age.lag_seconds is not None:
        emf.add_metric(name="LagSeconds", unit=MetricUnit.Seconds, value=round(age.lag_seconds, 1))
    elif age.in_future:
        logger.warning(
            "the watermark %s of %s is in the future: lag unknown, newer files apply as late",
            watermark,
            dataset,
        )


def deferred_files(report: SyncReport) -> int:
    """Files the time budget kept from starting in this run."""
    if not report.stopped_early:
        return 0
    started = {r.key for r in report.applied}
    return sum(1 for p in report.plan.to_apply if p.obj.key not in started)


def publish_busy(dataset: str) -> None:
    """``DatasetBusy``: a message found its dataset synced by a live holder and handed its
    news over (acknowledged, not failed). Steady values mean overlapping invocations."""
    emf = _dataset_metrics(dataset)
    emf.add_metric(name="DatasetBusy", unit=MetricUnit.Count, value=1)
    emf.flush_metrics()


def publish_paused(dataset: str, watermark: str | None) -> None:
    """``DatasetPaused``: a message or the sweep found its dataset paused by an operator
    (acknowledged, nothing applied). The lag still counts while paused, so a pause that
    outlasts its planned work still alarms."""
    emf = _dataset_metrics(dataset)
    emf.add_metric(name="DatasetPaused", unit=MetricUnit.Count, value=1)
    _add_lag(emf, dataset, watermark)
    emf.flush_metrics()


def publish_retries(dataset: str, retries: dict[str, int]) -> None:
    """``Retries`` by operation (GET, COPY, DELETE, LIST, HEAD, apply): one small EMF
    document per operation that was retried, failed syncs included."""
    for operation, count in retries.items():
        emf = _dataset_metrics(dataset)
        emf.add_dimension(name="operation", value=operation)
        emf.add_metric(name="Retries", unit=MetricUnit.Count, value=count)
        emf.flush_metrics()


def continue_later(report: SyncReport) -> None:
    """The time budget ran out with files pending: queue a message so the backlog keeps
    draining without waiting for the next upload (same group: order holds)."""
    queue_url = runtime().settings.lambda_.queue_url
    if not queue_url:
        logger.warning(
            "files remain for %s and QUEUE_URL is unset; the next event or sweep continues",
            report.dataset,
        )
        return
    token = f"{report.watermark_after}|{datetime.now(UTC).isoformat()}"
    _sqs().send_message(
        QueueUrl=queue_url,
        MessageGroupId=report.dataset,
        MessageBody=queued_message("continuation", report.dataset, token),
    )
    logger.info("time budget reached; continuation queued", extra={"token": token})


@cache
def _sqs() -> Any:
    return boto3.client("sqs")
