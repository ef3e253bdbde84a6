"""The local stack: a throwaway PostgreSQL, the AWS emulator and the environment that points
``tickets-ingest`` at them. Used by the demo, the measurements and the benchmark."""

from __future__ import annotations

import os
from collections.abc import Iterator
from contextlib import ExitStack, contextmanager, suppress
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
    postgres: LocalPostgres | None  # None: an existing server given by URL
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
def local_stack(
    *,
    fsync: bool = False,
    aws_own_process: bool = False,
    database_url: str | None = None,
    endpoint_url: str | None = None,
    aws_port: int = 0,
) -> Iterator[LocalStack]:
    """Start PostgreSQL and the emulator (or use the ones given), create the database and
    the bucket; stop what was started on exit."""
    with ExitStack() as started:
        postgres: LocalPostgres | None = None
        url = database_url
        if url is None:
            server = start_postgres(fsync=fsync)
            started.callback(server.stop)
            postgres, url = server, server.create_database(DATABASE)
        if endpoint_url is None:
            aws = start_aws(own_process=aws_own_process, port=aws_port)
            started.callback(aws.stop)
        else:
            aws = LocalAws(endpoint_url=endpoint_url)
        stack = LocalStack(postgres, aws, url)
        client = stack.s3()
        with suppress(client.exceptions.BucketAlreadyOwnedByYou):
            client.create_bucket(
                Bucket=BUCKET, CreateBucketConfiguration={"LocationConstraint": aws.region}
            )
        yield stack


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
