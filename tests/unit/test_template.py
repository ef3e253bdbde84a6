"""The SAM template's safety properties, read statically from template.yaml.

No network, no SAM CLI: the template is parsed with a SafeLoader that understands
CloudFormation's short tags, and numbers are evaluated from parameter defaults and mappings.
The properties are the ones the engine relies on (FIFO order, visibility vs timeout, DLQ,
partial batch failures) and least privilege (every IAM statement, every S3 prefix).
"""

from __future__ import annotations

import json
import re
from collections.abc import Iterator
from functools import cache
from pathlib import Path
from typing import Any

import pytest
import yaml

TEMPLATE = Path(__file__).resolve().parents[2] / "template.yaml"
DATASETS = ("inc", "crq")
NO_VALUE = {"Ref": "AWS::NoValue"}

# Actions whose service offers no resource-level permission: the only Allow on Resource "*".
RESOURCE_STAR_ALLOWED = {
    "xray:PutTraceSegments": "X-Ray defines no resource types for trace submission",
    "xray:PutTelemetryRecords": "X-Ray defines no resource types for telemetry",
    # The documented exception: the ENI actions a VPC function needs (the ec2 part of
    # AWSLambdaVPCAccessExecutionRole, written inline).
    "ec2:CreateNetworkInterface": "Lambda creates the interface before its id exists",
    "ec2:DescribeNetworkInterfaces": "EC2 Describe actions have no resource types",
    "ec2:DescribeSubnets": "EC2 Describe actions have no resource types",
    "ec2:DeleteNetworkInterface": "the interfaces Lambda created, unnamed in advance",
    "ec2:AssignPrivateIpAddresses": "the interfaces Lambda created, unnamed in advance",
    "ec2:UnassignPrivateIpAddresses": "the interfaces Lambda created, unnamed in advance",
}


# ------------------------------------------------------------------ loading


class CfnLoader(yaml.SafeLoader):
    """SafeLoader plus CloudFormation's short-form intrinsic functions."""


def _construct(node: yaml.Node, loader: yaml.SafeLoader) -> Any:
    if isinstance(node, yaml.ScalarNode):
        return loader.construct_scalar(node)
    if isinstance(node, yaml.SequenceNode):
        return loader.construct_sequence(node, deep=True)
    assert isinstance(node, yaml.MappingNode)
    return loader.construct_mapping(node, deep=True)


def _add_tag(tag: str) -> None:
    def construct(loader: yaml.SafeLoader, node: yaml.Node) -> Any:
        value = _construct(node, loader)
        if tag == "Ref":
            return {"Ref": value}
        if tag == "Condition":
            return {"Condition": value}
        if tag == "GetAtt" and isinstance(value, str):
            return {"Fn::GetAtt": value.split(".", 1)}
        return {f"Fn::{tag}": value}

    CfnLoader.add_constructor(f"!{tag}", construct)


for _tag in (
    "Ref",
    "Sub",
    "GetAtt",
    "If",
    "Equals",
    "Not",
    "And",
    "Or",
    "Select",
    "Join",
    "Split",
    "Condition",
    "FindInMap",
    "ImportValue",
    "Base64",
    "Cidr",
    "GetAZs",
):
    _add_tag(_tag)


@cache
def template() -> dict[str, Any]:
    return yaml.load(TEMPLATE.read_text(encoding="utf-8"), Loader=CfnLoader)


def resources(kind: str | None = None) -> dict[str, dict[str, Any]]:
    return {
        name: res
        for name, res in template()["Resources"].items()
        if kind is None or res["Type"] == kind
    }


def resource(name: str) -> dict[str, Any]:
    return template()["Resources"][name]


def props(name: str) -> dict[str, Any]:
    return resource(name)["Properties"]


def function_name() -> str:
    (name,) = resources("AWS::Serverless::Function")
    return name


# ------------------------------------------------------------------ evaluation helpers


def number(value: Any) -> int:
    """An integer property, from a literal, a parameter's default or a mapping lookup."""
    if isinstance(value, int | str):
        return int(value)
    if "Ref" in value:
        return int(template()["Parameters"][value["Ref"]]["Default"])
    if "Fn::FindInMap" in value:
        mapping, first, second = value["Fn::FindInMap"]
        key = str(number(first))
        return int(template()["Mappings"][mapping][key][second])
    raise AssertionError(f"cannot evaluate {value!r}")


def branches(value: Any) -> list[Any]:
    """The values an element can take: both arms of a Fn::If, never AWS::NoValue."""
    if isinstance(value, dict) and "Fn::If" in value:
        _, yes, no = value["Fn::If"]
        return [v for arm in (yes, no) for v in branches(arm)]
    return [] if value == NO_VALUE else [value]


def as_list(value: Any) -> list[Any]:
    return value if isinstance(value, list) else [value]


def sub_text(value: Any) -> str:
    """The template string of a Fn::Sub (short or long form), or a plain string."""
    if isinstance(value, str):
        return value
    if "Fn::Sub" in value:
        body = value["Fn::Sub"]
        return body if isinstance(body, str) else body[0]
    raise AssertionError(f"not a string or Fn::Sub: {value!r}")


def statements_in(node: Any, where: str) -> Iterator[tuple[str, dict[str, Any]]]:
    """Every IAM statement anywhere below ``node`` (any "Statement" list), If arms expanded."""
    if isinstance(node, dict):
        for key, value in node.items():
            if key == "Statement":
                for item in as_list(value):
                    for statement in branches(item):
                        yield where, statement
            else:
                yield from statements_in(value, f"{where}.{key}")
    elif isinstance(node, list):
        for i, item in enumerate(node):
            yield from statements_in(item, f"{where}[{i}]")


def all_statements() -> list[tuple[str, dict[str, Any]]]:
    found = list(statements_in(template()["Resources"], "Resources"))
    assert len(found) >= 10, "the walk found too few IAM statements to be trusted"
    return found


def role_statements(role: str) -> list[dict[str, Any]]:
    return [s for _, s in statements_in(props(role).get("Policies", []), role)]


def function_statements() -> list[dict[str, Any]]:
    role = props(function_name())["Role"]
    assert role == {"Fn::GetAtt": ["IngestFunctionRole", "Arn"]}
    return role_statements("IngestFunctionRole")


def actions(statement: dict[str, Any]) -> list[str]:
    return as_list(statement["Action"])


# ------------------------------------------------------------------ IAM


def test_no_allow_statement_has_a_wildcard_action() -> None:
    for where, statement in all_statements():
        assert "NotAction" not in statement, where
        if statement["Effect"] == "Deny":
            continue
        for action in actions(statement):
            assert "*" not in action, f"{where}: wildcard action {action!r}"


def test_the_only_wildcard_deny_is_the_bucket_tls_guard() -> None:
    wild = [
        (where, s)
        for where, s in all_statements()
        if s["Effect"] == "Deny" and any("*" in a for a in actions(s))
    ]
    assert len(wild) == 1
    where, statement = wild[0]
    assert where.startswith("Resources.TicketsBucketPolicy.")
    assert statement["Condition"] == {"Bool": {"aws:SecureTransport": "false"}}


def test_resource_star_only_for_actions_without_resource_level_permissions() -> None:
    for where, statement in all_statements():
        if statement["Effect"] != "Allow" or "Principal" in statement:
            continue  # trust policies have no Resource; resource policies are checked below
        assert "NotResource" not in statement, where
        for res in as_list(statement["Resource"]):
            if res == "*":
                for action in actions(statement):
                    assert action in RESOURCE_STAR_ALLOWED, f"{where}: {action} on *"


def test_function_role_attaches_no_managed_policy() -> None:
    assert "ManagedPolicyArns" not in props("IngestFunctionRole")
    trust = props("IngestFunctionRole")["AssumeRolePolicyDocument"]["Statement"]
    assert trust == [
        {
            "Effect": "Allow",
            "Principal": {"Service": "lambda.amazonaws.com"},
            "Action": "sts:AssumeRole",
        }
    ]


def test_function_role_grants_exactly_the_expected_actions() -> None:
    granted = sorted(a for s in function_statements() for a in actions(s))
    assert granted == sorted(
        [
            "logs:CreateLogStream",
            "logs:PutLogEvents",
            "xray:PutTraceSegments",
            "xray:PutTelemetryRecords",
            "s3:ListBucket",
            "s3:GetObject",
            "s3:DeleteObject",
            "s3:PutObject",
            "sqs:ReceiveMessage",
            "sqs:DeleteMessage",
            "sqs:GetQueueAttributes",
            "sqs:ChangeMessageVisibility",
            "sqs:SendMessage",
            "dynamodb:GetItem",
            "dynamodb:PutItem",
            "dynamodb:UpdateItem",
            "dynamodb:DeleteItem",
            "secretsmanager:GetSecretValue",
            "rds-db:connect",
            *[a for a in RESOURCE_STAR_ALLOWED if a.startswith("ec2:")],
        ]
    )


def _s3_statements() -> list[dict[str, Any]]:
    return [s for s in function_statements() if any(a.startswith("s3:") for a in actions(s))]


def test_s3_list_only_under_automations() -> None:
    (listing,) = [s for s in _s3_statements() if "s3:ListBucket" in actions(s)]
    assert actions(listing) == ["s3:ListBucket"]
    (arn,) = as_list(listing["Resource"])
    assert sub_text(arn) == "arn:${AWS::Partition}:s3:::${Bucket}"
    assert listing["Condition"] == {"StringLike": {"s3:prefix": "automations/*"}}


@pytest.mark.parametrize(
    ("granted", "suffix"),
    [
        ({"s3:GetObject", "s3:DeleteObject"}, "/automations/*/changes/*"),
        ({"s3:PutObject"}, "/automations/*/processed/*"),
    ],
)
def test_s3_object_actions_only_on_their_prefix(granted: set[str], suffix: str) -> None:
    matching = [s for s in _s3_statements() if set(actions(s)) & granted]
    assert len(matching) == 1
    (statement,) = matching
    assert set(actions(statement)) == granted
    assert "Condition" not in statement
    for arn in as_list(statement["Resource"]):
        assert sub_text(arn) == "arn:${AWS::Partition}:s3:::${Bucket}" + suffix


def test_s3_bucket_variable_is_the_stack_bucket_or_the_existing_one() -> None:
    for statement in _s3_statements():
        (arn,) = as_list(statement["Resource"])
        _, variables = arn["Fn::Sub"]
        assert variables == {
            "Bucket": {
                "Fn::If": ["CreateBucket", {"Ref": "TicketsBucket"}, {"Ref": "ExistingBucketName"}]
            }
        }


def test_non_s3_grants_are_scoped_to_this_stack() -> None:
    by_action = {a: s for s in function_statements() for a in actions(s)}
    for action in ("sqs:ReceiveMessage", "sqs:DeleteMessage", "sqs:SendMessage"):
        assert by_action[action]["Resource"] == {"Fn::GetAtt": ["IngestQueue", "Arn"]}
    assert by_action["dynamodb:PutItem"]["Resource"] == {"Fn::GetAtt": ["IdempotencyTable", "Arn"]}
    assert by_action["secretsmanager:GetSecretValue"]["Resource"] == {"Ref": "DbSecretArn"}
    assert by_action["logs:PutLogEvents"]["Resource"] == {"Fn::GetAtt": ["IngestLogGroup", "Arn"]}
    connect = sub_text(by_action["rds-db:connect"]["Resource"])
    assert connect.endswith(":dbuser:${DbResourceId}/${DbIamUser}")


def test_rds_iam_auth_is_granted_only_under_its_condition() -> None:
    statements = props("IngestFunctionRole")["Policies"][0]["PolicyDocument"]["Statement"]
    conditional = [s for s in statements if "Fn::If" in s]
    assert len(conditional) == 1
    condition, granted, otherwise = conditional[0]["Fn::If"]
    assert condition == "UseDbIamAuth"
    assert granted["Action"] == "rds-db:connect"
    assert otherwise == NO_VALUE
    assert template()["Conditions"]["UseDbIamAuth"] == {
        "Fn::Equals": [{"Ref": "DbIamAuth"}, "true"]
    }
    assert template()["Parameters"]["DbIamAuth"]["Default"] == "false"


def test_scheduler_role_may_only_invoke_the_function() -> None:
    schedule = props("SweepSchedule")
    assert schedule["Target"]["RoleArn"] == {"Fn::GetAtt": ["SweepSchedulerRole", "Arn"]}
    assert schedule["Target"]["Arn"] == {"Fn::GetAtt": [function_name(), "Arn"]}
    assert json.loads(schedule["Target"]["Input"]) == {"sweep": True}
    assert schedule["ScheduleExpression"] == {"Ref": "SweepRate"}
    assert template()["Parameters"]["SweepRate"]["Default"] == "rate(15 minutes)"
    (statement,) = role_statements("SweepSchedulerRole")
    assert statement == {
        "Effect": "Allow",
        "Action": "lambda:InvokeFunction",
        "Resource": {"Fn::GetAtt": [function_name(), "Arn"]},
    }
    (trust,) = props("SweepSchedulerRole")["AssumeRolePolicyDocument"]["Statement"]
    assert trust["Principal"] == {"Service": "scheduler.amazonaws.com"}
    assert "aws:SourceAccount" in trust["Condition"]["StringEquals"]


# ------------------------------------------------------------------ events and queues


def _rule_for(dataset: str) -> tuple[str, dict[str, Any]]:
    rules = {
        name: res
        for name, res in resources("AWS::Events::Rule").items()
        if res["Properties"]["Targets"][0]["SqsParameters"]["MessageGroupId"] == dataset
    }
    assert len(rules) == 1, f"one rule per dataset, got {sorted(rules)} for {dataset}"
    return next(iter(rules.items()))


@pytest.mark.parametrize("dataset", DATASETS)
def test_event_rule_per_dataset_feeds_its_message_group(dataset: str) -> None:
    name, rule = _rule_for(dataset)
    pattern = rule["Properties"]["EventPattern"]
    assert pattern["source"] == ["aws.s3"]
    assert pattern["detail-type"] == ["Object Created"]
    assert pattern["detail"]["object"]["key"] == [{"prefix": f"automations/{dataset}/changes/"}]
    assert pattern["detail"]["bucket"]["name"] == [
        {"Fn::If": ["CreateBucket", {"Ref": "TicketsBucket"}, {"Ref": "ExistingBucketName"}]}
    ]
    (target,) = rule["Properties"]["Targets"]
    assert target["Arn"] == {"Fn::GetAtt": ["IngestQueue", "Arn"]}
    assert target["SqsParameters"] == {"MessageGroupId": dataset}
    assert rule["Properties"].get("EventBusName", "default") == "default"
    # inc always; crq only when enabled.
    assert rule.get("Condition") == (None if dataset == "inc" else "CrqEnabled")
    assert name in json.dumps(props("IngestQueuePolicy"))


def test_queue_policy_lets_only_the_rules_send() -> None:
    policy = props("IngestQueuePolicy")
    assert policy["Queues"] == [{"Ref": "IngestQueue"}]
    sources = set()
    for _, statement in statements_in(policy, "IngestQueuePolicy"):
        assert statement["Principal"] == {"Service": "events.amazonaws.com"}
        assert statement["Action"] == "sqs:SendMessage"
        assert statement["Resource"] == {"Fn::GetAtt": ["IngestQueue", "Arn"]}
        source = statement["Condition"]["ArnEquals"]["aws:SourceArn"]
        sources.add(source["Fn::GetAtt"][0])
    assert sources == {_rule_for(d)[0] for d in DATASETS}


def test_bucket_sends_events_to_eventbridge_and_is_private() -> None:
    bucket = resource("TicketsBucket")
    assert bucket["Condition"] == "CreateBucket"
    assert template()["Conditions"]["CreateBucket"] == {
        "Fn::Equals": [{"Ref": "ExistingBucketName"}, ""]
    }
    assert template()["Parameters"]["ExistingBucketName"]["Default"] == ""
    p = bucket["Properties"]
    assert p["NotificationConfiguration"]["EventBridgeConfiguration"] == {
        "EventBridgeEnabled": True
    }
    assert all(p["PublicAccessBlockConfiguration"].values())
    assert len(p["PublicAccessBlockConfiguration"]) == 4
    assert p["BucketEncryption"]["ServerSideEncryptionConfiguration"]
    assert bucket["DeletionPolicy"] == "Retain"


def test_queue_is_fifo_with_content_based_deduplication() -> None:
    queue = props("IngestQueue")
    assert queue["FifoQueue"] is True
    assert queue["ContentBasedDeduplication"] is True
    assert sub_text(queue["QueueName"]).endswith(".fifo")


def test_visibility_timeout_is_at_least_six_function_timeouts() -> None:
    fn = props(function_name())
    queue = props("IngestQueue")
    assert number(queue["VisibilityTimeout"]) >= 6 * number(fn["Timeout"])
    # Also for every timeout the parameter allows, not just the default.
    timeout_param = fn["Timeout"]["Ref"]
    allowed = template()["Parameters"][timeout_param]["AllowedValues"]
    assert max(int(v) for v in allowed) <= 900
    for value in allowed:
        lookup = dict(queue["VisibilityTimeout"])
        lookup["Fn::FindInMap"] = [lookup["Fn::FindInMap"][0], value, lookup["Fn::FindInMap"][2]]
        assert number(lookup) >= 6 * int(value), value


def test_max_receive_count_is_at_least_five() -> None:
    redrive = props("IngestQueue")["RedrivePolicy"]
    assert redrive["deadLetterTargetArn"] == {"Fn::GetAtt": ["IngestDeadLetterQueue", "Arn"]}
    assert number(redrive["maxReceiveCount"]) >= 5
    param = template()["Parameters"][redrive["maxReceiveCount"]["Ref"]]
    assert int(param["MinValue"]) >= 5


def test_dead_letter_queue_is_fifo_and_allows_redrive_from_the_queue_only() -> None:
    dlq = props("IngestDeadLetterQueue")
    assert dlq["FifoQueue"] is True
    assert dlq["MessageRetentionPeriod"] == 14 * 24 * 3600
    allow = dlq["RedriveAllowPolicy"]
    assert allow["redrivePermission"] == "byQueue"
    (source,) = allow["sourceQueueArns"]
    queue_name = sub_text(props("IngestQueue")["QueueName"])
    assert sub_text(source).endswith(f":{queue_name}")
    assert sub_text(source).startswith("arn:${AWS::Partition}:sqs:${AWS::Region}:")


def test_queues_are_encrypted() -> None:
    for name in ("IngestQueue", "IngestDeadLetterQueue"):
        assert props(name)["SqsManagedSseEnabled"] is True


# ------------------------------------------------------------------ function


def test_function_shape() -> None:
    fn = props(function_name())
    assert fn["CodeUri"] == "functions/ingest/"
    assert fn["Handler"] == "app.lambda_handler"
    assert fn["Runtime"] == "python3.13"
    assert fn["Architectures"] == ["arm64"]
    assert fn["Tracing"] == "Active"
    assert number(fn["Timeout"]) <= 900
    assert number(fn["MemorySize"]) == 1024
    assert number(fn["Timeout"]) == 300
    assert fn["VpcConfig"] == {
        "SubnetIds": {"Ref": "SubnetIds"},
        "SecurityGroupIds": {"Ref": "SecurityGroupIds"},
    }
    assert template()["Parameters"]["SubnetIds"]["Type"] == "List<AWS::EC2::Subnet::Id>"
    log_group = props("IngestLogGroup")
    assert sub_text(log_group["LogGroupName"]) == "/aws/lambda/" + sub_text(fn["FunctionName"])


def test_sqs_event_source_is_a_partial_batch_fifo_consumer() -> None:
    events = props(function_name())["Events"]
    (sqs,) = [e["Properties"] for e in events.values() if e["Type"] == "SQS"]
    assert sqs["Queue"] == {"Fn::GetAtt": ["IngestQueue", "Arn"]}
    assert number(sqs["BatchSize"]) <= 10
    assert int(template()["Parameters"][sqs["BatchSize"]["Ref"]]["MaxValue"]) <= 10
    assert sqs["FunctionResponseTypes"] == ["ReportBatchItemFailures"]
    assert "MaximumBatchingWindowInSeconds" not in sqs
    concurrency = sqs["ScalingConfig"]["MaximumConcurrency"]
    assert number(concurrency) >= 2
    assert int(template()["Parameters"][concurrency["Ref"]]["MinValue"]) >= 2


def test_function_environment() -> None:
    env = props(function_name())["Environment"]["Variables"]
    assert {
        "DATASETS",
        "TICKETS_BUCKET",
        "DB_SECRET_ARN",
        "DB_IAM_AUTH",
        "DB_SSLMODE",
        "IDEMPOTENCY_TABLE",
        "QUEUE_URL",
        "LOCK_WAIT_SECONDS",
        "TIME_BUDGET_MARGIN_SECONDS",
        "POWERTOOLS_SERVICE_NAME",
        "POWERTOOLS_METRICS_NAMESPACE",
        "POWERTOOLS_LOG_LEVEL",
    } <= set(env)
    assert env["DATASETS"] == {"Fn::If": ["CrqEnabled", "inc,crq", "inc"]}
    assert env["DB_SSLMODE"] == {"Ref": "DbSslMode"}
    assert template()["Parameters"]["DbSslMode"]["Default"] == "verify-full"
    assert env["DB_REQUIRE_TLS"] == {"Fn::If": ["VerifyDbCertificate", "true", "false"]}
    assert env["AUTO_MIGRATE"] == "false"  # migrations are the owner's deploy step
    # No statement outlives the function; a silent lock holder is taken over after 20 s.
    assert env["APPLY_STATEMENT_TIMEOUT_SECONDS"] == {"Fn::Sub": "${FunctionTimeout}"}
    assert env["LOCK_STALE_SECONDS"] == "20"
    assert env["AWS_ENDPOINT_URL"] == ""  # unset for boto3; only for sam local invoke -n
    assert env["QUEUE_URL"] == {"Ref": "IngestQueue"}
    assert env["IDEMPOTENCY_TABLE"] == {"Ref": "IdempotencyTable"}
    assert env["DB_SECRET_ARN"] == {"Ref": "DbSecretArn"}
    assert env["POWERTOOLS_SERVICE_NAME"] == "tickets-ingest"
    assert env["POWERTOOLS_METRICS_NAMESPACE"] == "TicketsIngest"
    assert env["POWERTOOLS_LOG_LEVEL"] == {"Ref": "LogLevel"}
    assert template()["Parameters"]["LogLevel"]["Default"] == "INFO"
    for name in ("LOCK_WAIT_SECONDS", "TIME_BUDGET_MARGIN_SECONDS"):
        assert isinstance(env[name], str) and float(env[name]) > 0
    margin = float(env["TIME_BUDGET_MARGIN_SECONDS"])
    timeouts = template()["Parameters"]["FunctionTimeout"]["AllowedValues"]
    assert all(int(t) > margin for t in timeouts), "every allowed timeout leaves a budget"


def test_idempotency_table() -> None:
    table = props("IdempotencyTable")
    assert table["KeySchema"] == [{"AttributeName": "id", "KeyType": "HASH"}]
    assert table["AttributeDefinitions"] == [{"AttributeName": "id", "AttributeType": "S"}]
    assert table["TimeToLiveSpecification"] == {"AttributeName": "expiration", "Enabled": True}
    assert table["BillingMode"] == "PAY_PER_REQUEST"


# ------------------------------------------------------------------ alarms and dashboard


def _alarms() -> dict[str, dict[str, Any]]:
    return resources("AWS::CloudWatch::Alarm")


def _dims(alarm: dict[str, Any]) -> dict[str, Any]:
    return {d["Name"]: d["Value"] for d in alarm["Properties"]["Dimensions"]}


def _find_alarm(metric: str, **dims: Any) -> dict[str, Any]:
    found = [
        a
        for a in _alarms().values()
        if a["Properties"]["MetricName"] == metric
        and all(_dims(a).get(k) == v for k, v in dims.items())
    ]
    assert len(found) == 1, f"expected one {metric} alarm for {dims}, got {len(found)}"
    return found[0]


def test_expected_alarms_exist() -> None:
    dlq = _find_alarm(
        "ApproximateNumberOfMessagesVisible",
        QueueName={"Fn::GetAtt": ["IngestDeadLetterQueue", "QueueName"]},
    )
    assert number(dlq["Properties"]["Threshold"]) == 0
    age = _find_alarm(
        "ApproximateAgeOfOldestMessage", QueueName={"Fn::GetAtt": ["IngestQueue", "QueueName"]}
    )
    assert number(age["Properties"]["Threshold"]) == 1800
    errors = _find_alarm("Errors", FunctionName={"Ref": function_name()})
    assert errors["Properties"]["Namespace"] == "AWS/Lambda"
    for dataset in DATASETS:
        lag = _find_alarm("LagSeconds", service="tickets-ingest", dataset=dataset)
        assert lag["Properties"]["Namespace"] == "TicketsIngest"
        assert lag["Properties"]["Statistic"] == "Maximum"
        assert number(lag["Properties"]["Threshold"]) == 7200
        # Missing LagSeconds means the sweep is not running: that must alarm.
        assert lag["Properties"]["TreatMissingData"] == "breaching"
        assert lag.get("Condition") == (None if dataset == "inc" else "CrqEnabled")
        rejected = _find_alarm("FilesRejected", service="tickets-ingest", dataset=dataset)
        assert rejected["Properties"]["Namespace"] == "TicketsIngest"
        assert rejected.get("Condition") == (None if dataset == "inc" else "CrqEnabled")


def test_lag_alarm_period_covers_at_least_two_sweeps() -> None:
    allowed = template()["Parameters"]["SweepRate"]["AllowedValues"]
    minutes = [re.fullmatch(r"rate\((\d+) minutes\)", rate) for rate in allowed]
    assert all(minutes), allowed
    longest = max(int(m[1]) for m in minutes if m)
    for dataset in DATASETS:
        lag = _find_alarm("LagSeconds", service="tickets-ingest", dataset=dataset)
        period = lag["Properties"]["Period"] * lag["Properties"]["EvaluationPeriods"]
        assert period >= 2 * longest * 60


def test_recurring_failures_hold_their_alarm_between_sweeps() -> None:
    """A blocked file or a failing sweep reports once per sweep (every <= 15 min): the
    alarm must look back over two sweeps, or it flaps OK/ALARM and spams the topic."""
    recurring = [_find_alarm("Errors", FunctionName={"Ref": function_name()})] + [
        _find_alarm("FilesRejected", service="tickets-ingest", dataset=d) for d in DATASETS
    ]
    for alarm in recurring:
        p = alarm["Properties"]
        assert p["Period"] * p["EvaluationPeriods"] >= 1800
        assert p.get("DatapointsToAlarm", p["EvaluationPeriods"]) == 1
        assert p["TreatMissingData"] == "notBreaching"


def test_every_alarm_explains_itself_and_notifies_the_optional_topic() -> None:
    expected_actions = {"Fn::If": ["HasAlarmTopic", [{"Ref": "AlarmTopicArn"}], NO_VALUE]}
    for name, alarm in _alarms().items():
        p = alarm["Properties"]
        description = sub_text(p["AlarmDescription"])
        assert len(description) > 80, name
        assert "First" in description, f"{name}: say what to do first"
        assert p["AlarmActions"] == expected_actions, name
        assert p["TreatMissingData"] in {"breaching", "notBreaching", "ignore"}, name
    assert template()["Parameters"]["AlarmTopicArn"]["Default"] == ""


def test_dashboard_is_valid_json_and_shows_every_metric() -> None:
    body = props("Dashboard")["DashboardBody"]["Fn::Sub"]
    assert isinstance(body, str)
    rendered = re.sub(r"\$\{[A-Za-z0-9:.]+\}", "1", body)
    dashboard = json.loads(rendered)
    assert len(dashboard["widgets"]) >= 6
    for metric in (
        "LagSeconds",
        "FilesApplied",
        "RowsUpserted",
        "RowsRejected",
        "FilesRejected",
        "ApplyDuration",
        "ApproximateNumberOfMessagesVisible",
        "ApproximateAgeOfOldestMessage",
        "Duration",
        "Errors",
    ):
        assert metric in body, metric
    for reference in ("${IngestDeadLetterQueue.QueueName}", "${IngestQueue.QueueName}"):
        assert reference in body


def test_outputs() -> None:
    assert {
        "QueueUrl",
        "QueueArn",
        "DeadLetterQueueUrl",
        "DeadLetterQueueArn",
        "FunctionName",
        "BucketName",
        "IdempotencyTableName",
        "DashboardUrl",
    } <= set(template()["Outputs"])


# ------------------------------------------------------------------ as deployed (rendered)


@cache
def rendered() -> dict[str, Any]:
    """The CloudFormation SAM's translator makes of template.yaml: what IAM really gets."""
    from tickets_devkit.event_path import load_template, translate  # noqa: PLC0415

    return translate(load_template(TEMPLATE), "eu-west-1")


def _rendered_roles() -> dict[str, dict[str, Any]]:
    return {
        name: r["Properties"]
        for name, r in rendered()["Resources"].items()
        if r["Type"] == "AWS::IAM::Role"
    }


def test_rendered_roles_attach_no_managed_policy_and_grant_star_only_where_documented() -> None:
    roles = _rendered_roles()
    assert set(roles) == {"IngestFunctionRole", "SweepSchedulerRole"}
    for name, role in roles.items():
        assert not role.get("ManagedPolicyArns"), f"{name} attaches {role.get('ManagedPolicyArns')}"
        for policy in role.get("Policies", []):
            for written in as_list(policy["PolicyDocument"]["Statement"]):
                # A conditional statement: check its true branch.
                statement = written["Fn::If"][1] if "Fn::If" in written else written
                if as_list(statement["Resource"]) == ["*"]:
                    assert set(actions(statement)) <= set(RESOURCE_STAR_ALLOWED), statement


def test_rendered_function_logs_only_to_its_own_log_group() -> None:
    role = _rendered_roles()["IngestFunctionRole"]
    logs = [
        s
        for p in role["Policies"]
        for s in as_list(p["PolicyDocument"]["Statement"])
        if "Action" in s and any(a.startswith("logs:") for a in actions(s))
    ]
    assert len(logs) == 1
    assert sorted(actions(logs[0])) == ["logs:CreateLogStream", "logs:PutLogEvents"]
    assert logs[0]["Resource"] == {"Fn::GetAtt": ["IngestLogGroup", "Arn"]}
    function = rendered()["Resources"]["IngestFunction"]["Properties"]
    assert function["LoggingConfig"] == {"LogGroup": {"Ref": "IngestLogGroup"}}
    assert function["Role"] == {"Fn::GetAtt": ["IngestFunctionRole", "Arn"]}


def test_reserved_concurrency_is_off_by_default() -> None:
    assert template()["Parameters"]["ReservedConcurrency"]["Default"] == -1
    assert props(function_name())["ReservedConcurrentExecutions"] == {
        "Fn::If": ["HasReservedConcurrency", {"Ref": "ReservedConcurrency"}, NO_VALUE]
    }


def test_archive_lifecycle_keeps_replay_possible_by_default() -> None:
    params = template()["Parameters"]
    assert params["ProcessedExpirationDays"]["Default"] == 0  # never expires unless asked
    assert params["QuarantineExpirationDays"]["Default"] == 0
    assert "GLACIER" not in params["ArchiveStorageClass"]["AllowedValues"]  # all read at once
    rules = props("TicketsBucket")["LifecycleConfiguration"]["Rules"]
    prefixes = {
        r["Fn::If"][1]["Prefix"] for r in rules if "Fn::If" in r and "Prefix" in r["Fn::If"][1]
    }
    assert prefixes == {
        f"automations/{d}/{k}/" for d in DATASETS for k in ("processed", "quarantine")
    }


def test_certificate_verification_is_opted_out_only_by_the_parameter() -> None:
    env = props(function_name())["Environment"]["Variables"]
    assert env["DB_CA_BUNDLE"] == {
        "Fn::If": ["VerifyDbCertificate", "/var/task/certs/rds-global-bundle.pem", ""]
    }
    metadata = template()["Resources"][function_name()]["Metadata"]
    assert metadata["BuildMethod"] == "makefile"  # functions/ingest/Makefile packages the CA


def test_cfn_lint_with_the_serverless_rules_is_clean() -> None:
    from cfnlint.api import ManualArgs, lint_file  # noqa: PLC0415

    matches = lint_file(
        TEMPLATE,
        config=ManualArgs(include_checks=["I"], append_rules=["cfn_lint_serverless.rules"]),
    )
    assert [str(m) for m in matches] == []


# ------------------------------------------------------------------ sam local invoke -n


LOCAL_ENV = TEMPLATE.parent / "devkit" / "local-env.json"


def test_local_env_file_sets_exactly_the_functions_variables_and_settings_accept_them() -> None:
    from tickets_ingest.settings import load_settings  # noqa: PLC0415

    variables = json.loads(LOCAL_ENV.read_text())["IngestFunction"]
    assert set(variables) == set(props(function_name())["Environment"]["Variables"])
    settings = load_settings({**variables, "AWS_LAMBDA_FUNCTION_NAME": "tickets-ingest-local"})
    assert settings.bucket == "tickets"  # the bucket the sample events name
    assert settings.auto_migrate is False
    assert settings.lambda_.queue_url == variables["QUEUE_URL"]


def test_an_empty_aws_endpoint_url_is_unset_for_boto3(monkeypatch: pytest.MonkeyPatch) -> None:
    """The template declares AWS_ENDPOINT_URL="" (for `sam local invoke -n`): in AWS the
    function's clients must still reach the real endpoints."""
    import boto3  # noqa: PLC0415

    monkeypatch.setenv("AWS_ENDPOINT_URL", "")
    for service in ("s3", "sqs", "secretsmanager", "dynamodb"):
        client = boto3.session.Session(region_name="eu-west-1").client(
            service, aws_access_key_id="x", aws_secret_access_key="x"
        )
        assert client.meta.endpoint_url.startswith("https://"), service
        assert "amazonaws.com" in client.meta.endpoint_url, service
