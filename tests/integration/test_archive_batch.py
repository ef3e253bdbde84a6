"""The archive's batch delete: a backlog costs a GET and a COPY per file, one LIST and one
DeleteObjects per 1,000 files; each key of a DeleteObjects is conditional on the ETag that
was applied; whatever the batch does not delete stays committed-but-not-archived, and the
next run archives it without applying it again (or reports it as a conflict).

The emulator (moto) ignores DeleteObjects' per-object ETag; ``tickets_devkit.emulator``
patches it to answer as S3 does, and the first tests check that patch itself.
"""

from __future__ import annotations

import json
import logging
from typing import Any
from xml.etree import ElementTree

import boto3
import pytest

from tests.conftest import BUCKET, Env
from tests.support import faults
from tests.support.faults import CHANGES, DATASET
from tests.support.s3_fault_proxy import Fault, S3FaultProxy
from tickets_devkit.bench import S3Requests
from tickets_devkit.emulator import start_aws
from tickets_devkit.generator import StreamFile, TicketStream
from tickets_ingest import failpoints
from tickets_ingest.core.keys import file_name, processed_key
from tickets_ingest.dal import s3 as s3_module
from tickets_ingest.failpoints import Step
from tickets_ingest.logic.sync import SyncOptions, _Pipeline, sync

PROCESSED = f"automations/{DATASET}/processed/"


def backlog(deltas: int, seed: int = 31) -> list[StreamFile]:
    stream = TicketStream(DATASET, seed=seed)
    return [stream.baseline(60)] + [stream.delta(3, repeat_ids=1) for _ in range(deltas)]


def delete_objects(s3: Any, objects: list[dict[str, str]]) -> tuple[list[str], dict[str, str]]:
    """(keys deleted, error code by key) of one DeleteObjects."""
    reply = s3.delete_objects(Bucket=BUCKET, Delete={"Objects": objects})
    deleted = sorted(d["Key"] for d in reply.get("Deleted", []))
    return deleted, {e["Key"]: e["Code"] for e in reply.get("Errors", [])}


# -- the emulator answers a conditional DeleteObjects as S3 does ----------------------------


def test_the_emulator_keeps_an_object_whose_etag_differs_and_says_so(env: Env) -> None:
    kept, gone = env.put("x/kept", b"1"), env.put("x/gone", b"2")
    deleted, errors = delete_objects(
        env.s3,
        [
            {"Key": "x/kept", "ETag": '"0123456789abcdef0123456789abcdef"'},  # not its ETag
            {"Key": "x/gone", "ETag": f'"{gone}"'},
            {"Key": "x/never-was", "ETag": f'"{kept}"'},  # S3: a missing key is "deleted"
        ],
    )
    assert errors == {"x/kept": "PreconditionFailed"}
    assert deleted == ["x/gone", "x/never-was"]
    assert env.list_keys("x/") == ["x/kept"]


def test_the_emulator_answers_a_batch_refused_whole_and_an_unconditional_one(env: Env) -> None:
    env.put("x/a", b"1")
    env.put("x/b", b"2")
    # Every key refused: no object left for moto, which would call the request malformed.
    assert delete_objects(env.s3, [{"Key": "x/a", "ETag": '"ffff"'}]) == (
        [],
        {"x/a": "PreconditionFailed"},
    )
    # No ETag: unconditional, as before.
    assert delete_objects(env.s3, [{"Key": "x/a"}, {"Key": "x/b"}]) == (["x/a", "x/b"], {})
    assert env.list_keys("x/") == []


def test_the_emulator_in_its_own_process_is_patched_too() -> None:
    """``start_aws(own_process=True)`` (the benchmark's) runs the same patches."""
    with start_aws(own_process=True) as aws:
        s3 = boto3.client("s3", **_client_args(aws.env()))
        s3.create_bucket(
            Bucket=BUCKET, CreateBucketConfiguration={"LocationConstraint": aws.region}
        )
        s3.put_object(Bucket=BUCKET, Key="x/a", Body=b"1")
        assert delete_objects(s3, [{"Key": "x/a", "ETag": '"ffff"'}])[1] == {
            "x/a": "PreconditionFailed"
        }
        copied = s3.copy_object(
            Bucket=BUCKET, Key="x/b", CopySource={"Bucket": BUCKET, "Key": "x/a"}
        )  # unconditional copies still work
        assert copied["CopyObjectResult"]["ETag"]


def _client_args(variables: dict[str, str]) -> dict[str, str]:
    return {
        "endpoint_url": variables["AWS_ENDPOINT_URL"],
        "region_name": variables["AWS_DEFAULT_REGION"],
        "aws_access_key_id": variables["AWS_ACCESS_KEY_ID"],
        "aws_secret_access_key": variables["AWS_SECRET_ACCESS_KEY"],
    }


# -- requests per file ----------------------------------------------------------------------


@pytest.mark.parametrize(("batch", "batches"), [(1000, 1), (10, 3)])
def test_a_backlog_costs_a_get_and_a_copy_per_file_and_a_delete_per_batch(
    env: Env, monkeypatch: pytest.MonkeyPatch, batch: int, batches: int
) -> None:
    """25 files: one LIST, 25 GETs, 25 COPYs, one DeleteObjects per ``batch`` copied files
    (1,000 in production; 10 here sends three, two of them while files still apply), no
    single DeleteObject, no HEAD. Each key of a DeleteObjects carries its applied ETag."""
    monkeypatch.setattr(_Pipeline, "DELETE_BATCH", batch)
    files = backlog(24)
    etags = faults.upload(env, files)
    runtime = env.runtime()
    bodies: list[bytes] = []
    runtime.bucket.client.meta.events.register(
        "before-send.s3.DeleteObjects", lambda request, **_: bodies.append(request.body)
    )
    with S3Requests(runtime.bucket.client) as sent:
        report = sync(runtime, DATASET)
    assert report.ok and report.archived == [f.key for f in files]
    assert sent.counts == {
        "ListObjectsV2": 1,
        "GetObject": len(files),
        "CopyObject": len(files),
        "DeleteObjects": batches,
    }
    # What goes over the wire to S3: every key once, conditional on its applied ETag.
    listed = [pair for body in bodies for pair in conditions(body)]
    assert sorted(listed) == sorted((f.key, f'"{etags[f.key]}"') for f in files)
    faults.assert_converged(env, files, etags)


def conditions(body: bytes) -> list[tuple[str, str]]:
    """(Key, ETag) of each object of a DeleteObjects request body."""
    ns = {"s3": "http://s3.amazonaws.com/doc/2006-03-01/"}
    root = ElementTree.fromstring(body)
    return [
        (o.findtext("s3:Key", "", ns), o.findtext("s3:ETag", "", ns))
        for o in root.findall("s3:Object", ns)
    ]


# -- a re-upload while the file is being archived -------------------------------------------


@pytest.mark.parametrize("step", [Step.COPIED, Step.BATCHED])
def test_a_reupload_before_the_batch_delete_stays_and_the_next_run_reports_it(
    env: Env, caplog: pytest.LogCaptureFixture, step: Step
) -> None:
    """A new version of an applied file lands after its copy to processed/ (COPIED) or
    just before its batch is sent (BATCHED): the batch deletes the others; this key's
    delete is refused (its ETag differs), the new version stays in changes/, never applied,
    and the next run reports it as a conflict. processed/ holds the applied version."""
    files = faults.small_stream()
    etags = faults.upload(env, files)
    middle = files[2]
    newer = files[3].body  # another body: another ETag
    landed: list[str] = []

    def reupload(at: Step, key: str) -> None:
        if at is step and key == middle.key and not landed:
            landed.append(env.put(key, newer))

    with failpoints.on(reupload), caplog.at_level(logging.WARNING):
        report = sync(env.runtime(), DATASET)
    assert landed and report.ok and len(report.applied) == len(files)
    assert report.archived == [f.key for f in files if f is not middle]
    assert f"{middle.key} was re-uploaded while it was being archived" in caplog.text
    assert faults.bucket_etags(env, CHANGES) == {middle.key: landed[0]}
    assert (
        faults.bucket_etags(env, PROCESSED)[processed_key(DATASET, file_name(middle.key))]
        == (etags[middle.key])
    )

    after = sync(env.runtime(), DATASET)
    assert after.applied == [] and after.archived == []
    assert [(c.obj.key, c.applied_etag) for c in after.plan.conflicts] == [
        (middle.key, etags[middle.key])
    ]
    assert [row[2] for row in faults.ledger_rows(env)] == [etags[f.key] for f in files]


# -- a DeleteObjects that fails ---------------------------------------------------------------


@pytest.mark.parametrize("kind", ["slowdown", "reset"])
def test_a_failed_batch_delete_leaves_files_committed_that_the_next_run_archives(
    env: Env, kind: str
) -> None:
    """Every try of the DeleteObjects fails (SlowDown, or the connection reset): the run
    still succeeds, each file committed and copied but still in changes/; the next run
    plans them as "to archive", applies nothing and archives them all."""
    files = faults.small_stream()
    etags = faults.upload(env, files)
    env.set(RETRY_ATTEMPTS="2")
    with S3FaultProxy(env.aws.endpoint_url, [Fault(kind, 1.0, "DeleteObjects")], seed=2) as proxy:
        env.set(AWS_ENDPOINT_URL=proxy.url)
        report = sync(env.runtime(), DATASET)
        assert proxy.injected.by_operation == {(kind, "DeleteObjects"): 2}
    assert report.ok and len(report.applied) == len(files) and report.archived == []
    assert sorted(env.list_keys(CHANGES)) == [f.key for f in files]
    assert len(env.list_keys(PROCESSED)) == len(files)
    faults.assert_applied_prefix(env, files, len(files))

    env.set(AWS_ENDPOINT_URL=env.aws.endpoint_url)  # S3 is well again
    after = sync(env.runtime(), DATASET)
    assert [o.key for o in after.plan.to_archive] == [f.key for f in files]
    assert after.applied == [] and after.archived == [f.key for f in files]
    faults.assert_converged(env, files, etags)


def test_a_key_the_batch_delete_refuses_stays_for_the_next_run(env: Env) -> None:
    """S3 answers one key of the DeleteObjects with an error (here AccessDenied, from a
    bucket policy): the others are archived; that one stays committed in changes/, and the
    next run (the policy lifted) archives it without applying it again."""
    files = faults.small_stream()
    etags = faults.upload(env, files)
    middle = files[2]
    deny = {
        "Version": "2012-10-17",
        "Statement": [
            {
                "Effect": "Deny",
                "Principal": "*",
                "Action": "s3:DeleteObject",
                "Resource": f"arn:aws:s3:::{BUCKET}/{middle.key}",
            }
        ],
    }
    env.s3.put_bucket_policy(Bucket=BUCKET, Policy=json.dumps(deny))
    report = sync(env.runtime(), DATASET)
    assert report.ok and len(report.applied) == len(files)
    assert report.archived == [f.key for f in files if f is not middle]
    assert env.list_keys(CHANGES) == [middle.key]

    env.s3.delete_bucket_policy(Bucket=BUCKET)
    after = sync(env.runtime(), DATASET)
    assert after.applied == [] and after.archived == [middle.key]
    faults.assert_converged(env, files, etags)


def test_a_batch_delete_takes_at_most_the_request_limit_of_keys(
    env: Env, monkeypatch: pytest.MonkeyPatch
) -> None:
    """``delete_applied`` splits what it is given into requests of DELETE_BATCH_MAX keys
    (1,000, DeleteObjects' limit; 2 here)."""
    monkeypatch.setattr(s3_module, "DELETE_BATCH_MAX", 2)
    objects = [(f"{CHANGES}{i}.csv", env.put(f"{CHANGES}{i}.csv", b"x")) for i in range(5)]
    bucket = env.runtime().bucket
    with S3Requests(bucket.client) as sent:
        done = bucket.delete_applied(objects)
    assert sent.counts == {"DeleteObjects": 3}
    assert done.deleted == [key for key, _ in objects] and not done.changed and not done.failed
    assert env.list_keys(CHANGES) == []


def test_a_run_stopped_by_its_time_budget_sends_its_batch_first(env: Env) -> None:
    """The time budget stops the run after two files: both are archived (copied and
    deleted) before the run returns, the rest wait in changes/ for the continuation."""
    files = faults.small_stream()
    faults.upload(env, files)
    started: list[str] = []

    def two_files(obj: Any) -> bool:
        started.append(obj.key)
        return len(started) <= 2

    report = sync(env.runtime(), DATASET, SyncOptions(may_start_file=two_files))
    assert report.stopped_early and report.archived == [f.key for f in files[:2]]
    assert env.list_keys(CHANGES) == [f.key for f in files[2:]]
