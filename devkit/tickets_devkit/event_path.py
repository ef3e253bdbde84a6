"""The event path of template.yaml, deployed into the AWS emulator from template.yaml itself.

SAM's translator turns the template into CloudFormation and moto's CloudFormation creates
the stack: the rules (patterns, message groups), the FIFO queue and its dead-letter queue
(attributes, redrive policy), the idempotency table, the function and its environment are
the template's, never a copy. The harness only fills moto's gaps, each named where it is
done. A poller feeds the queue to the handler exactly as Lambda's event source mapping does
(batches of up to 10, partial batch failures, retries).
"""

from __future__ import annotations

import contextlib
import copy
import io
import json
import uuid
import zipfile
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from functools import cache
from pathlib import Path
from typing import Any

import yaml

TEMPLATE = Path(__file__).resolve().parents[2] / "template.yaml"
FUNCTION = "IngestFunction"
STACK_NAME = "tickets-ingest-local"
LOCAL_BUCKET = "tickets"
# The local database secret, named by a partial ARN (no random suffix), which Secrets
# Manager and the emulator both resolve: the env file can then name it.
SECRET_NAME = "tickets-ingest/database"  # noqa: S105 - a name, not a secret
ACCOUNT = "123456789012"


def secret_arn(region: str) -> str:
    return f"arn:aws:secretsmanager:{region}:{ACCOUNT}:secret:{SECRET_NAME}"


def local_parameters(region: str, **overrides: str) -> dict[str, str]:
    """The template parameters of the local stack: the existing-bucket mode on bucket
    ``tickets`` (the one the sample events name), both datasets, and no TLS to the local
    PostgreSQL (DbSslMode=disable: the template's explicit opt-out)."""
    return {
        "ExistingBucketName": LOCAL_BUCKET,
        "EnableCrq": "true",
        "DbSecretArn": secret_arn(region),
        "DbSslMode": "disable",
        "SubnetIds": "subnet-0local0000000001",
        "SecurityGroupIds": "sg-0local0000000001",
        **overrides,
    }


class _CfnLoader(yaml.SafeLoader):  # type: ignore[misc]  # pyyaml has no stubs here
    """SafeLoader plus CloudFormation's short-form intrinsic functions (!Ref, !Sub, ...)."""


def _intrinsic(loader: yaml.SafeLoader, suffix: str, node: yaml.Node) -> Any:
    value: Any
    if isinstance(node, yaml.ScalarNode):
        value = loader.construct_scalar(node)
    elif isinstance(node, yaml.SequenceNode):
        value = loader.construct_sequence(node, deep=True)
    else:
        assert isinstance(node, yaml.MappingNode)
        value = loader.construct_mapping(node, deep=True)
    if suffix in ("Ref", "Condition"):
        return {suffix: value}
    if suffix == "GetAtt" and isinstance(value, str):
        return {"Fn::GetAtt": value.split(".", 1)}
    return {f"Fn::{suffix}": value}


_CfnLoader.add_multi_constructor("!", _intrinsic)


@cache
def _template_text(path: Path) -> str:
    return path.read_text(encoding="utf-8")


def load_template(path: Path = TEMPLATE) -> dict[str, Any]:
    loaded: dict[str, Any] = yaml.load(_template_text(path), Loader=_CfnLoader)  # noqa: S506
    return loaded


def translate(
    template: Mapping[str, Any], region: str, code_uri: str = "s3://local-artifacts/ingest.zip"
) -> dict[str, Any]:
    """SAM -> CloudFormation with SAM's own translator, as `sam deploy` does after
    `sam package` has replaced the function's CodeUri with an S3 location."""
    import boto3  # noqa: PLC0415
    from samtranslator.parser.parser import Parser  # noqa: PLC0415
    from samtranslator.translator.translator import Translator  # noqa: PLC0415

    sam = copy.deepcopy(dict(template))
    sam["Resources"][FUNCTION]["Properties"]["CodeUri"] = code_uri
    translator = Translator(None, Parser(), boto_session=boto3.Session(region_name=region))
    # No managed policy is attached by the template; an empty map makes any attempt fail.
    translated: dict[str, Any] = translator.translate(sam, {}, get_managed_policy_map=dict)
    return translated


def _translated(path: Path, region: str, code_uri: str) -> dict[str, Any]:
    """``translate`` of the template file, computed once per process (a fresh copy each call)."""
    translated: dict[str, Any] = json.loads(
        _translated_json(path, _template_text(path), region, code_uri)
    )
    return translated


@cache
def _translated_json(path: Path, text: str, region: str, code_uri: str) -> str:
    return json.dumps(translate(load_template(path), region, code_uri))


def _resolve_find_in_map(node: Any, mappings: Mapping[str, Any], values: Mapping[str, str]) -> Any:
    """moto's gap: it passes Number parameters as integers, so ``!FindInMap`` keyed by one
    (TimeoutSettings by FunctionTimeout) misses its string key. Resolve those lookups here,
    from the same parameter values CloudFormation would use."""
    if isinstance(node, list):
        return [_resolve_find_in_map(item, mappings, values) for item in node]
    if not isinstance(node, dict):
        return node
    lookup = node.get("Fn::FindInMap")
    if isinstance(lookup, list) and len(node) == 1:
        keys = [values[k["Ref"]] if isinstance(k, dict) and "Ref" in k else k for k in lookup[1:]]
        if all(isinstance(k, str) for k in keys):
            return mappings[lookup[0]][keys[0]][keys[1]]
    return {k: _resolve_find_in_map(v, mappings, values) for k, v in node.items()}


@dataclass
class EventPath:
    """The deployed stack, as the harness and the operator see it."""

    sqs: Any
    queue_url: str
    queue_arn: str
    dlq_url: str
    dlq_arn: str
    table: str
    region: str
    bucket: str
    function_env: dict[str, str]  # the function's environment, as the stack set it
    rules: list[str]  # the EventBridge rules' physical names
    batch_size: int  # the event source mapping's
    partial_batch: bool  # ReportBatchItemFailures
    not_emulated: list[str]  # resource types moto's CloudFormation skips (alarms, ...)

    def handler_env(self, endpoint_url: str) -> dict[str, str]:
        """What the function sees in the emulator: the stack's variables, with
        AWS_ENDPOINT_URL (empty in AWS) pointing at the emulator, as the env file does for
        `sam local invoke`."""
        return {**self.function_env, "AWS_ENDPOINT_URL": endpoint_url}

    def env(self) -> dict[str, str]:
        """For the operator's CLI beside the function."""
        return {
            "QUEUE_URL": self.queue_url,
            "IDEMPOTENCY_TABLE": self.table,
            "DLQ_URL": self.dlq_url,
        }


def deploy_stack(
    session: Any,
    parameters: Mapping[str, str],
    *,
    stack_name: str = STACK_NAME,
    template_path: Path = TEMPLATE,
) -> EventPath:
    """Create the stack of template.yaml in the emulator behind ``session`` (idempotent: an
    existing stack of that name is deleted first)."""
    region = session.region_name
    s3 = session.client("s3")
    cloudformation = session.client("cloudformation")
    artifacts = f"{stack_name}-artifacts"
    _ensure_bucket(s3, artifacts, region)
    # moto never runs the function (no Docker): the handler runs in-process. The package
    # only has to exist, as `sam package` would have uploaded it.
    package = io.BytesIO()
    with zipfile.ZipFile(package, "w") as archive:
        archive.writestr("app.py", "# the handler runs in-process in the local stack\n")
    s3.put_object(Bucket=artifacts, Key="ingest.zip", Body=package.getvalue())

    template = _translated(template_path, region, f"s3://{artifacts}/ingest.zip")
    defaults = {
        name: str(spec["Default"])
        for name, spec in template.get("Parameters", {}).items()
        if "Default" in spec
    }
    values = {**defaults, **parameters}
    template["Resources"] = _resolve_find_in_map(
        template["Resources"], template.get("Mappings", {}), values
    )
    existing = {s["StackName"] for s in cloudformation.list_stacks()["StackSummaries"]}
    if stack_name in existing:
        cloudformation.delete_stack(StackName=stack_name)
    cloudformation.create_stack(
        StackName=stack_name,
        TemplateBody=json.dumps(template),
        Parameters=[{"ParameterKey": k, "ParameterValue": v} for k, v in parameters.items()],
        Capabilities=["CAPABILITY_IAM"],
    )
    stack = cloudformation.describe_stacks(StackName=stack_name)["Stacks"][0]
    if stack["StackStatus"] != "CREATE_COMPLETE":
        raise RuntimeError(
            f"stack {stack_name}: {stack['StackStatus']} {stack.get('StackStatusReason')}"
        )
    outputs = {o["OutputKey"]: o["OutputValue"] for o in stack.get("Outputs", [])}
    bucket = outputs["BucketName"]
    # moto's gaps: it ignores the bucket's EventBridge setting (and the existing-bucket mode
    # needs it enabled by hand, as docs/deploy.md says), queue policies and schedules.
    _ensure_bucket(s3, bucket, region)
    s3.put_bucket_notification_configuration(
        Bucket=bucket, NotificationConfiguration={"EventBridgeConfiguration": {}}
    )
    lambda_ = session.client("lambda")
    config = lambda_.get_function_configuration(FunctionName=outputs["FunctionName"])
    # moto's event source mapping would run the function in Docker: ``poll`` is the event
    # source mapping here, with the stack's batch size and response types.
    (mapping,) = lambda_.list_event_source_mappings(FunctionName=outputs["FunctionName"])[
        "EventSourceMappings"
    ]
    lambda_.update_event_source_mapping(UUID=mapping["UUID"], Enabled=False)
    resources = cloudformation.list_stack_resources(StackName=stack_name)["StackResourceSummaries"]
    return EventPath(
        sqs=session.client("sqs"),
        queue_url=outputs["QueueUrl"],
        queue_arn=outputs["QueueArn"],
        dlq_url=outputs["DeadLetterQueueUrl"],
        dlq_arn=outputs["DeadLetterQueueArn"],
        table=outputs["IdempotencyTableName"],
        region=region,
        bucket=bucket,
        function_env=dict(config["Environment"]["Variables"]),
        batch_size=int(mapping["BatchSize"]),
        partial_batch=mapping.get("FunctionResponseTypes") == ["ReportBatchItemFailures"],
        rules=sorted(
            r["PhysicalResourceId"] for r in resources if r["ResourceType"] == "AWS::Events::Rule"
        ),
        not_emulated=sorted(
            {
                spec["Type"]
                for name, spec in template["Resources"].items()
                if "Condition" not in spec
                and name not in {r["LogicalResourceId"] for r in resources}
            }
        ),
    )


def _ensure_bucket(s3: Any, name: str, region: str) -> None:
    with contextlib.suppress(s3.exceptions.BucketAlreadyOwnedByYou):
        s3.create_bucket(Bucket=name, CreateBucketConfiguration={"LocationConstraint": region})


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
) -> PollStats:
    """Drain the queue like the event source mapping: receive a batch, invoke, delete what
    succeeded, make failed records visible again at once (instead of waiting out the
    visibility timeout), until the queue is empty or ``max_batches`` ran."""
    stats = PollStats()
    for _ in range(max_batches):
        received = path.sqs.receive_message(
            QueueUrl=path.queue_url,
            MaxNumberOfMessages=path.batch_size,
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
        if not path.partial_batch and failed:  # without it, one failure retries the batch
            failed = {m["MessageId"] for m in received}
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
