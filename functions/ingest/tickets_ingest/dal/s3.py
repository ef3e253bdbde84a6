"""The bucket: list a dataset's changes/, stream one object, archive or quarantine it.

An archive is a copy to ``processed/`` (one request per file) and a conditional delete from
``changes/`` that is batched: one DeleteObjects request for up to 1,000 copied files, each
key conditional on the ETag that was applied (``delete_applied``).

Every call is retried by botocore on SlowDown, 5xx, throttling and broken connections
(``client_config``: the budget of ``dal/retry.py``); each retry is logged and counted. What
outlasts those retries becomes ``TransientFault`` naming the key, the operation and the
cause. A download cut off after the headers is not botocore's to retry: it surfaces as
``DownloadCut`` while the body is read, and the caller tries the whole file again.

Because a retried request may follow one that did happen (only its reply was lost), the
archive move accepts the states such a retry finds: a delete that finds the key gone, a
copy whose source is gone while the target holds the same version.
"""

from __future__ import annotations

import functools
import http.client
import logging
import re
import threading
import time
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass, field
from datetime import datetime
from email.utils import parsedate_to_datetime
from typing import Any, TypeVar
from urllib.parse import unquote

import boto3
import botocore.session
import botocore.utils
import urllib3.exceptions
from botocore.config import Config
from botocore.exceptions import (
    BotoCoreError,
    ClientError,
    HTTPClientError,
    IncompleteReadError,
)
from botocore.exceptions import ConnectionError as BotoConnectionError

from tickets_ingest.core.keys import (
    changes_prefix,
    file_name,
    processed_key,
    processed_prefix,
)
from tickets_ingest.dal.retry import RetryPolicy, WrappedFault, describe, note_retry
from tickets_ingest.errors import ObjectChanged, TransientFault
from tickets_ingest.failpoints import Step, reached

log = logging.getLogger(__name__)
T = TypeVar("T")

# What the log, the metric and the error messages call each S3 operation.
OPERATIONS = {
    "GetObject": "GET",
    "CopyObject": "COPY",
    "DeleteObject": "DELETE",
    "DeleteObjects": "BATCH-DELETE",
    "ListObjectsV2": "LIST",
    "HeadObject": "HEAD",
    "PutObject": "PUT",
}
# Error codes S3 answers for a fault that passes (besides any 5xx status).
_TRANSIENT_CODES = {
    "SlowDown",
    "Throttling",
    "ThrottlingException",
    "RequestTimeout",
    "RequestLimitExceeded",
    "InternalError",
    "ServiceUnavailable",
}
# DeleteObjects takes up to this many keys a request.
DELETE_BATCH_MAX = 1000
_READ_ERRORS = (
    BotoCoreError,
    urllib3.exceptions.HTTPError,
    http.client.HTTPException,
    OSError,
)


class DownloadCut(WrappedFault):
    """An object's body broke off while it was read (``__cause__`` says how)."""


# Connections kept for the client's threads: the sync's GETs ahead, copies and batch delete
# (logic/sync.py::_Pipeline sizes its pools within this), and the thread that applies.
MAX_POOL_CONNECTIONS = 50


@dataclass
class Deleted:
    """What one ``delete_applied`` did: keys deleted (or found gone already), keys that a
    new version has replaced since they were applied (left in changes/, as a conflict for
    the next run), and keys S3 refused for another reason (code; the next run archives)."""

    deleted: list[str] = field(default_factory=list)
    changed: list[str] = field(default_factory=list)
    failed: dict[str, str] = field(default_factory=dict)


def client_config(policy: RetryPolicy) -> Config:
    """botocore's part of the retry policy: ``policy.attempts`` tries of each request in
    standard mode (full-jitter exponential backoff from 1 s after throttling, from 50 ms
    after a 5xx or a broken connection, capped at 20 s; a retry quota stops retry storms),
    bounded connect and read timeouts, TCP keepalive. Standard, not adaptive: adaptive's
    client-side rate limiter would slow every request of the run (the pipeline's threads
    share the client) after one SlowDown, and AWS recommends it for special cases only."""
    return Config(
        retries={"total_max_attempts": policy.attempts, "mode": "standard"},
        connect_timeout=5,
        read_timeout=30,
        tcp_keepalive=True,
        # The sync's pipeline keeps GETs, copies and a batch delete in flight at once
        # (logic/sync.py::_Pipeline); botocore's default of 10 would make the rest open a
        # new connection each (and discard it) instead of reusing one.
        max_pool_connections=MAX_POOL_CONNECTIONS,
    )


def make_client(policy: RetryPolicy | None = None) -> Any:
    """A boto3 S3 client; honours AWS_ENDPOINT_URL (local emulation) like every AWS SDK."""
    return _session().client("s3", config=client_config(policy or RetryPolicy()))


# The two forms S3 writes a timestamp in: ISO 8601 in UTC in XML bodies (CopyObject,
# ListObjectsV2), an HTTP date in headers (GetObject's Last-Modified).
_ISO_UTC = re.compile(r"\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d(?:\.\d{3}|\.\d{6})?Z")
_HTTP_DATE = re.compile(r"[A-Z][a-z]{2}, \d\d [A-Z][a-z]{2} \d{4} \d\d:\d\d:\d\d GMT")
_botocore_parse_timestamp = botocore.utils.parse_timestamp
# dateutil's UTC, as botocore's parser gives it (an explicit one: derived from a parse it
# would be tzlocal wherever the machine's zone is named UTC).
_UTC = botocore.utils.tzutc()


def parse_timestamp(value: Any) -> datetime:
    """botocore's timestamp parser, without dateutil for the two forms S3 sends.

    botocore parses every timestamp of every response with ``dateutil.parser.parse``:
    about a tenth of the client's CPU for a GET and a COPY. Anything else, or anything
    these reject, goes to botocore's parser as before."""
    if isinstance(value, str):
        try:
            if _ISO_UTC.fullmatch(value):
                return datetime.fromisoformat(value[:-1]).replace(tzinfo=_UTC)
            if _HTTP_DATE.fullmatch(value):
                return parsedate_to_datetime(value).replace(tzinfo=_UTC)
        except ValueError:
            pass  # e.g. a 31 February: botocore's parser says what is wrong with it
    parsed: datetime = _botocore_parse_timestamp(value)
    return parsed


@functools.cache
def _session() -> boto3.Session:
    """The S3 client's session: botocore's, with ``parse_timestamp`` for its responses
    (a parser default is per session; boto3's default one is left as it is)."""
    session = botocore.session.get_session()
    session.get_component("response_parser_factory").set_parser_defaults(
        timestamp_parser=parse_timestamp
    )
    return boto3.Session(botocore_session=session)


class Bucket:
    def __init__(
        self, name: str, client: Any | None = None, policy: RetryPolicy | None = None
    ) -> None:
        self.name = name
        self.policy = policy or RetryPolicy()
        self.client = client if client is not None else make_client(self.policy)
        _instrument(self.client)

    def list_changes(self, dataset: str) -> Iterator[tuple[str, str, int]]:
        """Every object under ``automations/<dataset>/changes/`` as (key, etag, size)."""
        return self._list(changes_prefix(dataset))

    def list_processed(self, dataset: str) -> Iterator[tuple[str, str, int]]:
        """Every object archived under ``automations/<dataset>/processed/``."""
        return self._list(processed_prefix(dataset))

    def _list(self, prefix: str) -> Iterator[tuple[str, str, int]]:
        paginator = self.client.get_paginator("list_objects_v2")
        pages = iter(paginator.paginate(Bucket=self.name, Prefix=prefix))
        while True:
            page = self._call("LIST", prefix, lambda: next(pages, None), "nothing was applied")
            if page is None:
                return
            for item in page.get("Contents", []):
                yield item["Key"], item["ETag"], int(item["Size"])

    def open(self, key: str, etag: str) -> Any:
        """The object's body as a stream, only if it is still the version we planned with.

        Reading it raises ``DownloadCut`` if the download breaks off."""
        try:
            response = self._call(
                "GET",
                key,
                lambda: self.client.get_object(Bucket=self.name, Key=key, IfMatch=f'"{etag}"'),
            )
        except ClientError as exc:
            if _code(exc) in {"PreconditionFailed", "412", "NoSuchKey"}:
                raise ObjectChanged(
                    f"{key} changed or vanished after it was listed; nothing of it was "
                    "applied and this run stops here; the next run re-plans"
                ) from None
            raise
        return _Body(key, response["Body"])

    def head_etag(self, key: str) -> str | None:
        try:
            response = self._call(
                "HEAD",
                key,
                lambda: self.client.head_object(Bucket=self.name, Key=key),
                "nothing was changed",
            )
        except ClientError as exc:
            if _code(exc) in {"404", "NoSuchKey", "NotFound"}:
                return None
            raise
        return str(response["ETag"]).strip('"')

    def copy_applied(self, dataset: str, key: str, etag: str) -> bool:
        """The archive's first step: copy the applied version to ``processed/``. True if
        the key is still to be deleted from changes/ (``delete_applied``), False if an
        earlier move did both steps already."""
        return self._copy(key, etag, processed_key(dataset, file_name(key)), _ARCHIVE_KEPT)

    def delete_applied(self, objects: Sequence[tuple[str, str]]) -> Deleted:
        """The archive's second step for copied objects: delete them from changes/, up to
        1,000 keys a request, each only if it still has the ETag that was applied (a version
        uploaded since was never applied: it stays, and the next run reports a conflict).

        A request that fails for good (past botocore's retries) raises ``TransientFault``;
        the keys of its batch stay committed-but-not-archived, and the next run archives
        them. Batches before it are done."""
        done = Deleted()
        for start in range(0, len(objects), DELETE_BATCH_MAX):
            batch = objects[start : start + DELETE_BATCH_MAX]
            for key, _ in batch:
                reached(Step.BATCHED, key)
            errors = self._delete_batch(batch)
            for key, etag in batch:
                outcome = self._deleted_or_why(key, etag, errors.get(key))
                if outcome == "deleted":
                    done.deleted.append(key)
                    reached(Step.DELETED, key)
                elif outcome == "changed":
                    log.warning("%s was re-uploaded while it was being archived", key)
                    done.changed.append(key)
                else:
                    log.warning("could not delete %s from changes/ yet (%s)", key, outcome)
                    done.failed[key] = outcome
        return done

    def _delete_batch(self, batch: Sequence[tuple[str, str]]) -> dict[str, str]:
        """One DeleteObjects request; the error code of each key that was not deleted."""
        objects = [{"Key": key, "ETag": f'"{etag}"'} for key, etag in batch]
        response = self._call(
            "BATCH-DELETE",
            _batch_target([key for key, _ in batch]),
            lambda: self.client.delete_objects(
                Bucket=self.name,
                # ETag: each key's delete is conditional, like DeleteObject's If-Match.
                Delete={"Objects": objects, "Quiet": True},  # Quiet: list only the errors
            ),
            _ARCHIVE_KEPT,
        )
        return {e["Key"]: str(e.get("Code", "")) for e in response.get("Errors", [])}

    def _deleted_or_why(self, key: str, etag: str, code: str | None) -> str:
        """One key of a DeleteObjects reply: "deleted", "changed" or the error code."""
        # Gone already is what we wanted (a retried request whose first reply was lost,
        # or another run): S3 answers NoSuchKey for a conditional delete of a missing key.
        if code is None or code in {"NoSuchKey", "404"}:
            return "deleted"
        if code in {"PreconditionFailed", "412"}:
            try:
                current = self.head_etag(key)
            except (ClientError, TransientFault) as exc:
                # The batch's other keys are deleted; this one the next run looks at again.
                return f"{code}, then HEAD failed: {exc}"
            if current is None:
                return "deleted"
            if current != etag:
                return "changed"
        return code  # refused for another reason: the next run archives it

    def quarantine(self, key: str, etag: str, target: str) -> str:
        kept = "the file stays in changes/ (maybe copied already); quarantine it again"
        if not self._copy(key, etag, target, kept):
            return target
        try:
            # IfMatch: a version uploaded between the copy and this delete was never
            # the one quarantined; it must stay in changes/.
            self._call(
                "DELETE",
                key,
                lambda: self.client.delete_object(Bucket=self.name, Key=key, IfMatch=f'"{etag}"'),
                kept,
            )
        except ClientError as exc:
            code = _code(exc)
            if code in {"PreconditionFailed", "412"} and self.head_etag(key) is not None:
                raise ObjectChanged(f"{key} was re-uploaded while it was being moved") from None
            # Gone already is what we wanted: S3 answers 404 for a conditional delete of a
            # missing key, as when a retried delete follows one whose reply was lost.
            if code not in {"NoSuchKey", "404", "PreconditionFailed", "412"}:
                raise
        reached(Step.DELETED, key)
        return target

    def _copy(self, key: str, etag: str, target: str, kept: str) -> bool:
        """Copy exactly version ``etag`` of ``key`` to ``target``; ``kept`` says where
        things stand if it fails for good. False: the source is gone and the target holds
        this version already (an earlier move did both steps): nothing left to delete."""
        try:
            # CopySourceIfMatch: archive exactly the version that was applied, never a
            # re-upload that landed since.
            self._call(
                "COPY",
                key,
                lambda: self.client.copy_object(
                    Bucket=self.name,
                    Key=target,
                    CopySource={"Bucket": self.name, "Key": key},
                    CopySourceIfMatch=f'"{etag}"',
                    MetadataDirective="COPY",
                    # Tags are not carried: copying them would need s3:GetObjectTagging and
                    # s3:PutObjectTagging, which the function does not have.
                    TaggingDirective="REPLACE",
                ),
                kept,
            )
        except ClientError as exc:
            if _code(exc) in {"PreconditionFailed", "412"}:
                raise ObjectChanged(f"{key} was re-uploaded after it was applied") from None
            if _code(exc) in {"NoSuchKey", "404"} and self.head_etag(target) == etag:
                # A retry whose first reply was lost, or another run, moved it already.
                log.info("%s is already in %s", key, target)
                return False
            raise
        reached(Step.COPIED, key)
        return True

    def _call(
        self,
        operation: str,
        target: str,
        call: Callable[[], T],
        outcome: str = "nothing of it was committed",
    ) -> T:
        """``call()``: botocore retries transient faults; one that outlasts its retries
        becomes ``TransientFault``. Other errors pass unchanged."""
        started = time.monotonic()
        _attempts.value = 1
        try:
            return call()
        except (ClientError, BotoCoreError) as exc:
            if not _transient(exc):
                raise
            raise TransientFault(
                target.removeprefix("automations/"),
                operation,
                attempts=getattr(_attempts, "value", 1),
                seconds=time.monotonic() - started,
                cause=describe(exc),
                outcome=outcome,
            ) from exc


_ARCHIVE_KEPT = "the file is committed and stays in changes/ until a run archives it"


class _Body:
    """An object's body; a read that breaks off raises ``DownloadCut``."""

    def __init__(self, key: str, stream: Any) -> None:
        self.key = key
        self._stream = stream
        self.bytes_read = 0

    def read(self, size: int = -1, /) -> bytes:
        try:
            data: bytes = self._stream.read(size if size >= 0 else None)
        except _READ_ERRORS as exc:
            raise DownloadCut(
                f"download of {self.key} broke off after {self.bytes_read} bytes"
            ) from exc
        self.bytes_read += len(data)
        return data

    def close(self) -> None:
        self._stream.close()


def _code(exc: ClientError) -> str:
    return str(exc.response.get("Error", {}).get("Code", ""))


def _transient(exc: ClientError | BotoCoreError) -> bool:
    """What botocore retries too: a fault that passes, as opposed to a refusal."""
    if isinstance(exc, ClientError):
        status = exc.response.get("ResponseMetadata", {}).get("HTTPStatusCode", 0)
        return _code(exc) in _TRANSIENT_CODES or status in {500, 502, 503, 504}
    return isinstance(exc, BotoConnectionError | HTTPClientError | IncompleteReadError)


# -- logging and counting botocore's retries ------------------------------------------------

_attempts = threading.local()  # the number of the latest try of this thread's S3 call


def _instrument(client: Any) -> None:
    """Log and count each retry botocore makes, with the key and the previous try's fault."""
    events = client.meta.events
    events.register("before-parameter-build.s3", _note_target, unique_id="tickets-target")
    events.register("needs-retry.s3", _note_fault, unique_id="tickets-fault")
    events.register("request-created.s3", _note_attempt, unique_id="tickets-attempt")


def _note_target(params: dict[str, Any], context: dict[str, Any], **_: Any) -> None:
    """The key a call is about (a copy's source), for the retry log."""
    source = params.get("CopySource")
    if isinstance(source, dict):
        key = source.get("Key")
    elif isinstance(source, str):  # "bucket/key[?versionId=...]", as botocore rewrote it
        key = unquote(source.split("?", 1)[0]).split("/", 1)[-1]
    else:
        key = None
    delete = params.get("Delete")
    if isinstance(delete, dict) and delete.get("Objects"):  # DeleteObjects
        key = _batch_target([str(o.get("Key", "")) for o in delete["Objects"]])
    context["tickets_target"] = key or params.get("Key") or params.get("Prefix") or ""


def _batch_target(keys: Sequence[str]) -> str:
    """What a DeleteObjects request is about: its first key, and how many more."""
    return f"{keys[0]} (and {len(keys) - 1} more)" if len(keys) > 1 else keys[0]


def _note_fault(
    response: Any, caught_exception: Exception | None, request_dict: dict[str, Any], **_: Any
) -> None:
    """Remember why a try failed (botocore's own handler decides whether to retry)."""
    if caught_exception is not None:
        cause = describe(caught_exception)
    elif response is not None and response[0].status_code >= 500:
        error = response[1].get("Error", {})
        cause = f"{error.get('Code', response[0].status_code)}: {error.get('Message', '')}"
    else:
        return
    request_dict["context"]["tickets_fault"] = cause


def _note_attempt(request: Any, operation_name: str, **_: Any) -> None:
    retries = request.context.get("retries", {})
    attempt = int(retries.get("attempt", 1))
    _attempts.value = attempt
    if attempt > 1:
        note_retry(
            OPERATIONS.get(operation_name, operation_name),
            str(request.context.get("tickets_target", "")),
            attempt=attempt,
            attempts=int(retries.get("max", attempt)),
            cause=str(request.context.get("tickets_fault", "unknown fault")),
            wait=None,
        )
