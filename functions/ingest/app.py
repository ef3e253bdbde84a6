"""AWS Lambda entry point: ``app.lambda_handler``. Wiring only; see tickets_ingest.handlers.aws.

Invocations: an SQS FIFO batch from the event source mapping, the scheduled sweep
(``{"sweep": true}`` or a Scheduled Event), or a direct ``{"dataset": "inc"}``.
"""

from __future__ import annotations

from typing import Any

from aws_lambda_powertools.metrics import MetricUnit
from aws_lambda_powertools.utilities.typing import LambdaContext

from tickets_ingest.core.events import Invocation, invocation_kind
from tickets_ingest.handlers.aws import (
    begin,
    handle_batch,
    handle_direct,
    handle_sweep,
    logger,
    metrics,
    tracer,
)


@logger.inject_lambda_context(clear_state=True)
@tracer.capture_lambda_handler
@metrics.log_metrics(capture_cold_start_metric=True)
def lambda_handler(event: dict[str, Any], context: LambdaContext) -> dict[str, Any]:
    begin(context)
    kind = invocation_kind(event)
    logger.append_keys(invocation=kind.value)
    metrics.add_dimension(name="invocation", value=kind.value)
    metrics.add_metric(name="Invocations", unit=MetricUnit.Count, value=1)
    if kind is Invocation.BATCH:
        return handle_batch(event, context)
    if kind is Invocation.SWEEP:
        return handle_sweep()
    if kind is Invocation.DIRECT:
        return handle_direct(event["dataset"])
    logger.warning("unrecognised invocation; nothing done", extra={"keys": sorted(event)})
    return {"ok": False, "error": "unrecognised invocation"}
