"""The bucket: list a dataset's changes/, stream one object, archive or quarantine it."""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

import boto3
from botocore.config import Config
from botocore.exceptions import ClientError

from tickets_ingest.core.keys import (
    changes_prefix,
    file_name,
    processed_key,
    processed_prefix,
)
from tickets_ingest.errors import ObjectChanged
from tickets_ingest.failpoints import Step, reached

_CLIENT_CONFIG = Config(retries={"max_attempts": 8, "mode": "adaptive"}, connect_timeout=10)


def make_client() -> Any:
    """A boto3 S3 client; honours AWS_ENDPOINT_URL (local emulation) like every AWS SDK."""
    return boto3.client("s3", config=_CLIENT_CONFIG)


class Bucket:
    def __init__(self, name: str, client: Any | None = None) -> None:
        self.name = name
        self.client = client if client is not None else make_client()

    def list_changes(self, dataset: str) -> Iterator[tuple[str, str, int]]:
        """Every object under ``automations/<dataset>/changes/`` as (key, etag, size)."""
        return self._list(changes_prefix(dataset))

    def list_processed(self, dataset: str) -> Iterator[tuple[str, str, int]]:
        """Every object archived under ``automations/<dataset>/processed/``."""
        return self._list(processed_prefix(dataset))

    def _list(self, prefix: str) -> Iterator[tuple[str, str, int]]:
        paginator = self.client.get_paginator("list_objects_v2")
        for page in paginator.paginate(Bucket=self.name, Prefix=prefix):
            for item in page.get("Contents", []):
                yield item["Key"], item["ETag"], int(item["Size"])

    def open(self, key: str, etag: str) -> Any:
        """The object's body as a stream, only if it is still the version we planned with."""
        try:
            response = self.client.get_object(Bucket=self.name, Key=key, IfMatch=f'"{etag}"')
        except ClientError as exc:
            if _code(exc) in {"PreconditionFailed", "412", "NoSuchKey"}:
                raise ObjectChanged(
                    f"{key} changed or vanished after it was listed; nothing of it was "
                    "applied and this run stops here; the next run re-plans"
                ) from None
            raise
        return response["Body"]

    def head_etag(self, key: str) -> str | None:
        try:
            response = self.client.head_object(Bucket=self.name, Key=key)
        except ClientError as exc:
            if _code(exc) in {"404", "NoSuchKey", "NotFound"}:
                return None
            raise
        return str(response["ETag"]).strip('"')

    def archive(self, dataset: str, key: str, etag: str) -> str:
        """Move an applied object to ``processed/`` (copy, then delete). Returns the new key."""
        return self._move(key, etag, processed_key(dataset, file_name(key)))

    def quarantine(self, key: str, etag: str, target: str) -> str:
        return self._move(key, etag, target)

    def _move(self, key: str, etag: str, target: str) -> str:
        try:
            # CopySourceIfMatch: archive exactly the version that was applied, never a
            # re-upload that landed since.
            self.client.copy_object(
                Bucket=self.name,
                Key=target,
                CopySource={"Bucket": self.name, "Key": key},
                CopySourceIfMatch=f'"{etag}"',
                MetadataDirective="COPY",
                # Tags are not carried: copying them would need s3:GetObjectTagging and
                # s3:PutObjectTagging, which the function does not have.
                TaggingDirective="REPLACE",
            )
        except ClientError as exc:
            if _code(exc) in {"PreconditionFailed", "412"}:
                raise ObjectChanged(f"{key} was re-uploaded after it was applied") from None
            raise
        reached(Step.COPIED, key)
        try:
            # IfMatch: a version uploaded between the copy and this delete was never
            # applied; it must stay in changes/ (the next run reports it as a conflict).
            self.client.delete_object(Bucket=self.name, Key=key, IfMatch=f'"{etag}"')
        except ClientError as exc:
            if _code(exc) in {"PreconditionFailed", "412"}:
                raise ObjectChanged(f"{key} was re-uploaded while it was being archived") from None
            if _code(exc) not in {"NoSuchKey", "404"}:  # already gone: what we wanted
                raise
        reached(Step.DELETED, key)
        return target


def _code(exc: ClientError) -> str:
    return str(exc.response.get("Error", {}).get("Code", ""))
