"""The local stack is template.yaml deployed (SAM's translator -> moto's CloudFormation), and
the env file for `sam local invoke -n` points at exactly that stack."""

from __future__ import annotations

import json
from pathlib import Path

import boto3

from tests.conftest import Env
from tests.e2e.conftest import LambdaWorld
from tickets_devkit.event_path import deploy_stack, local_parameters

LOCAL_ENV = Path(__file__).resolve().parents[2] / "devkit" / "local-env.json"


def test_env_file_names_the_resources_of_the_local_stack(world: LambdaWorld) -> None:
    """Everything but the emulator's port (fixed by `make run ARGS=--keep`) and the log
    level (INFO for a local invoke) is what the stack gave the function."""
    variables = json.loads(LOCAL_ENV.read_text())["IngestFunction"]
    deployed = world.path.function_env
    assert set(variables) == set(deployed)
    differing = {k for k in variables if variables[k] != deployed[k]}
    assert differing <= {"AWS_ENDPOINT_URL", "POWERTOOLS_LOG_LEVEL"}
    assert deployed["AWS_ENDPOINT_URL"] == ""  # as in AWS: boto3 treats it as unset
    assert variables["AWS_ENDPOINT_URL"] == "http://127.0.0.1:5000"
    assert deployed["TICKETS_BUCKET"] == world.path.bucket == "tickets"
    assert deployed["AUTO_MIGRATE"] == "false"


def test_the_stack_gives_the_template_s_queue_and_mapping(world: LambdaWorld) -> None:
    attributes = world.path.sqs.get_queue_attributes(
        QueueUrl=world.path.queue_url, AttributeNames=["All"]
    )["Attributes"]
    assert attributes["FifoQueue"] == "true"
    assert attributes["ContentBasedDeduplication"] == "true"
    assert attributes["VisibilityTimeout"] == "1800"  # 6 x the default 300 s timeout
    redrive = json.loads(attributes["RedrivePolicy"])
    assert redrive["deadLetterTargetArn"] == world.path.dlq_arn
    assert int(redrive["maxReceiveCount"]) == 5
    assert world.path.batch_size == 10 and world.path.partial_batch
    assert len(world.path.rules) == 2  # inc and crq (EnableCrq=true)


def test_each_dataset_s_upload_reaches_its_message_group(world: LambdaWorld) -> None:
    world.env.put("automations/inc/changes/2026-06-22T15-50-39.csv", b"x")
    world.env.put("automations/crq/changes/2026-06-22T15-50-39.csv", b"x")
    world.env.put("automations/inc/processed/2026-06-22T15-50-39.csv", b"x")  # no rule
    messages = world.path.sqs.receive_message(
        QueueUrl=world.path.queue_url, MaxNumberOfMessages=10, AttributeNames=["All"]
    )["Messages"]
    groups = sorted(m["Attributes"]["MessageGroupId"] for m in messages)
    assert groups == ["crq", "inc"]


def test_the_created_bucket_mode_deploys_too(env: Env) -> None:
    """ExistingBucketName empty: the stack creates the bucket, and its rules match it."""
    session = boto3.Session(region_name=env.aws.region)
    path = deploy_stack(
        session, local_parameters(env.aws.region, ExistingBucketName=""), stack_name="created"
    )
    assert path.bucket != "tickets" and path.function_env["TICKETS_BUCKET"] == path.bucket
    session.client("s3").put_object(
        Bucket=path.bucket, Key="automations/inc/changes/2026-06-22T15-50-39.csv", Body=b"x"
    )
    messages = path.sqs.receive_message(QueueUrl=path.queue_url, AttributeNames=["All"])
    assert [m["Attributes"]["MessageGroupId"] for m in messages["Messages"]] == ["inc"]
