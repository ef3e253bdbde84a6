"""What ``import app`` loads (the Lambda's INIT phase), checked in a fresh interpreter by
``sys.modules``: never by timing (the milliseconds are `make bench`'s cold-start row)."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

from tickets_ingest.handlers.tracing import NoTracing, make_tracer, tracing_enabled

APP_DIR = Path(__file__).resolve().parents[2] / "functions" / "ingest"

# Run in the child: import the handler, then report what it loaded and built.
_PROBE = """
import json, sys
sys.path.insert(0, sys.argv[1])
import app
from tickets_ingest.handlers import aws
report = {
    "xray_core": "aws_xray_sdk.core" in sys.modules,
    "idempotency": "aws_lambda_powertools.utilities.idempotency" in sys.modules,
    "status": "tickets_ingest.logic.status" in sys.modules,
    "provider": type(aws.tracer.provider).__name__,
    "disabled": bool(aws.tracer.disabled),
}
if sys.argv[2] == "first-message":
    aws.begin(None)
    once = aws._sync_news_once()
    report["wrapped"] = once is not aws._sync_news
    report["wraps_sync_news"] = getattr(once, "__wrapped__", None) is aws._sync_news
    report["idempotency"] = "aws_lambda_powertools.utilities.idempotency" in sys.modules
print(json.dumps(report))
"""


def probe(env: dict[str, str], step: str = "import") -> dict[str, object]:
    base = {
        key: value
        for key, value in os.environ.items()
        if not key.startswith(("POWERTOOLS_", "LAMBDA_", "AWS_", "IDEMPOTENCY_"))
    }
    done = subprocess.run(
        [sys.executable, "-c", _PROBE, str(APP_DIR), step],
        env={
            **base,
            "AWS_DEFAULT_REGION": "eu-west-1",
            "AWS_ACCESS_KEY_ID": "testing",
            "AWS_SECRET_ACCESS_KEY": "testing",
            "POWERTOOLS_METRICS_NAMESPACE": "TicketsIngest",
            **env,
        },
        capture_output=True,
        text=True,
        check=True,
    )
    result: dict[str, object] = json.loads(done.stdout.strip().splitlines()[-1])
    return result


def test_tracing_off_does_not_import_the_xray_sdk() -> None:
    loaded = probe({"LAMBDA_TASK_ROOT": str(APP_DIR), "POWERTOOLS_TRACE_DISABLED": "true"})
    assert loaded["xray_core"] is False
    assert loaded["provider"] == "NoTracing" and loaded["disabled"] is True


def test_tracing_on_in_lambda_uses_the_xray_recorder() -> None:
    loaded = probe({"LAMBDA_TASK_ROOT": str(APP_DIR), "POWERTOOLS_TRACE_DISABLED": "false"})
    assert loaded["xray_core"] is True
    assert loaded["provider"] == "AsyncAWSXRayRecorder" and loaded["disabled"] is False


def test_the_cold_start_leaves_out_idempotency_and_operator_status() -> None:
    loaded = probe({"IDEMPOTENCY_TABLE": "tickets-ingest-idempotency"})
    assert loaded["idempotency"] is False
    assert loaded["status"] is False


def test_the_first_message_is_idempotent_when_a_table_is_configured() -> None:
    built = probe({"IDEMPOTENCY_TABLE": "tickets-ingest-idempotency"}, step="first-message")
    assert built["wrapped"] is True and built["wraps_sync_news"] is True
    assert built["idempotency"] is True


def test_no_idempotency_table_no_wrapper() -> None:
    built = probe({}, step="first-message")
    assert built["wrapped"] is False
    assert built["idempotency"] is False


@pytest.mark.parametrize(
    ("env", "enabled"),
    [
        ({"LAMBDA_TASK_ROOT": "/var/task"}, True),
        ({"LAMBDA_TASK_ROOT": "/var/task", "POWERTOOLS_TRACE_DISABLED": "true"}, False),
        ({}, False),  # outside Lambda: no daemon to send to
        ({"LAMBDA_TASK_ROOT": "/var/task", "AWS_SAM_LOCAL": "true"}, False),
    ],
)
def test_powertools_decides_when_tracing_is_on(
    monkeypatch: pytest.MonkeyPatch, env: dict[str, str], enabled: bool
) -> None:
    """Pins the Powertools rule that ``tracing_enabled`` reuses (a private method)."""
    for name in ("LAMBDA_TASK_ROOT", "POWERTOOLS_TRACE_DISABLED", "AWS_SAM_LOCAL"):
        monkeypatch.delenv(name, raising=False)
    for name, value in env.items():
        monkeypatch.setenv(name, value)
    assert tracing_enabled() is enabled


def test_the_no_op_provider_runs_the_decorators() -> None:
    tracer = make_tracer("tickets-ingest")  # tracing is off outside Lambda
    assert isinstance(tracer.provider, NoTracing)

    @tracer.capture_method
    def work(value: int) -> int:
        return value * 2

    @tracer.capture_lambda_handler
    def handler(event: dict[str, int], context: object) -> int:
        return work(event["value"])

    assert handler({"value": 21}, None) == 42
    with pytest.raises(ZeroDivisionError):
        tracer.capture_method(lambda: 1 // 0)()
