"""The local stack: a throwaway PostgreSQL, the AWS emulator and the environment that points
``tickets-ingest`` at them. Used by the demo, the measurements and the benchmark."""

from __future__ import annotations

import os
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from typing import Any

import boto3

from tickets_devkit.emulator import LocalAws, start_aws
from tickets_devkit.generator import StreamFile
from tickets_devkit.postgres import LocalPostgres, start_postgres

BUCKET = "tickets"
DATABASE = "tickets"


@dataclass
class LocalStack:
    postgres: LocalPostgres
    aws: LocalAws
    database_url: str

    def env(self, datasets: str = "inc,crq") -> dict[str, str]:
        return {
            **self.aws.env(),
            "DATABASE_URL": self.database_url,
            "TICKETS_BUCKET": BUCKET,
            "DATASETS": datasets,
        }

    def s3(self) -> Any:
        env = self.aws.env()
        return boto3.client(
            "s3",
            endpoint_url=self.aws.endpoint_url,
            region_name=self.aws.region,
            aws_access_key_id=env["AWS_ACCESS_KEY_ID"],
            aws_secret_access_key=env["AWS_SECRET_ACCESS_KEY"],
        )

    def upload(self, files: list[StreamFile]) -> None:
        client = self.s3()
        for stream_file in files:
            client.put_object(Bucket=BUCKET, Key=stream_file.key, Body=stream_file.body)


@contextmanager
def local_stack(*, fsync: bool = False, aws_own_process: bool = False) -> Iterator[LocalStack]:
    """Start PostgreSQL and the emulator, create the database and the bucket; stop on exit."""
    postgres = start_postgres(fsync=fsync)
    try:
        aws = start_aws(own_process=aws_own_process)
        try:
            url = postgres.create_database(DATABASE)
            stack = LocalStack(postgres, aws, url)
            stack.s3().create_bucket(
                Bucket=BUCKET, CreateBucketConfiguration={"LocationConstraint": aws.region}
            )
            yield stack
        finally:
            aws.stop()
    finally:
        postgres.stop()


@contextmanager
def environment(variables: dict[str, str]) -> Iterator[None]:
    """Set environment variables for the block, restoring the previous values after."""
    saved = {name: os.environ.get(name) for name in variables}
    os.environ.update(variables)
    try:
        yield
    finally:
        for name, value in saved.items():
            if value is None:
                os.environ.pop(name, None)
            else:
                os.environ[name] = value
