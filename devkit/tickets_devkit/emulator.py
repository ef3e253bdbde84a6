"""The local AWS emulator: moto's server on a free 127.0.0.1 port, in a background thread.

moto is imported only inside ``start_aws`` because it is slow to import.
"""

from __future__ import annotations

import http.client
import logging
import socket
import subprocess
import sys
import time
import urllib.parse
import warnings
from dataclasses import dataclass, field
from types import TracebackType
from typing import Any

__all__ = ["LocalAws", "start_aws"]


@dataclass
class LocalAws:
    """A running moto server; point boto3 at it with ``env()``."""

    endpoint_url: str
    region: str = "eu-west-1"
    _server: Any = field(default=None, repr=False)

    def reset(self) -> None:
        """Forget every resource (buckets, queues, tables, ...) in the emulator."""
        # http.client, not urllib: an HTTP(S)_PROXY in the environment must not see local calls.
        url = urllib.parse.urlsplit(self.endpoint_url)
        con = http.client.HTTPConnection(url.hostname or "127.0.0.1", url.port, timeout=30)
        try:
            con.request("POST", "/moto-api/reset")
            response = con.getresponse()
            response.read()
            if response.status != 200:
                raise RuntimeError(f"moto reset failed: HTTP {response.status}")
        finally:
            con.close()

    @property
    def pid(self) -> int | None:
        """The server's process when it runs in its own (``own_process``), else None."""
        return self._server.pid if isinstance(self._server, _ServerProcess) else None

    def stop(self) -> None:
        """Shut the server down. Idempotent."""
        server, self._server = self._server, None
        if server is not None:
            server.stop()

    def env(self) -> dict[str, str]:
        """Environment for boto3 (and the code under test) to use this emulator."""
        return {
            "AWS_ENDPOINT_URL": self.endpoint_url,
            "AWS_DEFAULT_REGION": self.region,
            "AWS_ACCESS_KEY_ID": "testing",
            "AWS_SECRET_ACCESS_KEY": "testing",
            "AWS_SESSION_TOKEN": "testing",
        }

    def __enter__(self) -> LocalAws:
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.stop()


def start_aws(region: str = "eu-west-1", *, own_process: bool = False, port: int = 0) -> LocalAws:
    """Start moto's server on 127.0.0.1 with an OS-chosen port (or ``port``).

    ``own_process``: run it as a separate process, so its CPU time does not compete with
    the code under measurement for this interpreter's GIL (the benchmark wants that).
    """
    if own_process:
        return _start_in_own_process(region)
    honour_conditions()
    from moto.server import ThreadedMotoServer  # noqa: PLC0415 (slow import, see module doc)

    # werkzeug logs every request at INFO to stderr unless its logger is configured.
    werkzeug_log = logging.getLogger("werkzeug")
    if werkzeug_log.level == logging.NOTSET:
        werkzeug_log.setLevel(logging.WARNING)
    # moto's CloudFormation warns for each resource type it does not emulate (alarms,
    # schedules, queue policies, ...); the stack deployer lists them once instead.
    logging.getLogger("moto").addFilter(_NotEmulated())
    warnings.filterwarnings("ignore", message="Tried to parse .* not supported by moto")

    if port:
        with socket.socket() as probe:
            try:
                probe.bind(("127.0.0.1", port))
            except OSError:
                raise RuntimeError(
                    f"port {port} is in use: the kept stack's emulator listens there "
                    "(devkit/local-env.json names it); stop whatever holds it"
                ) from None
    server = ThreadedMotoServer(ip_address="127.0.0.1", port=port, verbose=False)
    server.start()  # returns once the socket is bound
    host, port = server.get_host_and_port()
    return LocalAws(endpoint_url=f"http://{host}:{port}", region=region, _server=server)


class _NotEmulated(logging.Filter):
    def filter(self, record: logging.LogRecord) -> bool:
        return not record.getMessage().startswith("No Moto CloudFormation support for")


class _ServerProcess:
    def __init__(self, process: subprocess.Popen[bytes]) -> None:
        self._process = process
        self.pid = process.pid

    def stop(self) -> None:
        self._process.terminate()
        try:
            self._process.wait(timeout=10)
        except subprocess.TimeoutExpired:
            self._process.kill()
            self._process.wait()


def _start_in_own_process(region: str) -> LocalAws:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        port = probe.getsockname()[1]
    process = subprocess.Popen(
        # This module's __main__: moto's server with the same patches as in-process.
        [sys.executable, "-m", "tickets_devkit.emulator", "-H", "127.0.0.1", "-p", str(port)],
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    deadline = time.monotonic() + 30
    while time.monotonic() < deadline:
        if process.poll() is not None:
            raise RuntimeError(f"moto server exited with code {process.returncode}")
        try:
            with socket.create_connection(("127.0.0.1", port), timeout=0.2):
                break
        except OSError:
            time.sleep(0.05)
    else:
        process.kill()
        raise RuntimeError("moto server did not start within 30 s")
    return LocalAws(
        endpoint_url=f"http://127.0.0.1:{port}", region=region, _server=_ServerProcess(process)
    )


_PATCHED = False


def honour_conditions() -> None:
    """Make moto honour the conditions S3 honours and the engine relies on (once per
    process; every moto server and ``mock_aws`` of this process then does)."""
    global _PATCHED  # noqa: PLW0603 - patch once per process
    if _PATCHED:
        return
    _honour_copy_source_if_match()
    _honour_delete_objects_etag()
    _PATCHED = True


def _honour_copy_source_if_match() -> None:
    """Make moto refuse a conditional copy whose source changed, as S3 does.

    moto 5.2 ignores ``x-amz-copy-source-if-match``: an archive move would copy whatever is
    under the key now (a re-upload never applied) and report success, where S3 answers 412
    PreconditionFailed, which the engine relies on. GetObject's and DeleteObject's If-Match
    are honoured by moto already.
    """
    from urllib.parse import unquote, urlparse  # noqa: PLC0415

    from moto.s3.exceptions import PreconditionFailed  # noqa: PLC0415
    from moto.s3.responses import S3Response  # noqa: PLC0415

    original = S3Response.copy_object

    def copy_object(self: Any) -> Any:
        wanted = self.headers.get("x-amz-copy-source-if-match")
        if wanted:
            source = unquote(urlparse(self.headers["x-amz-copy-source"]).path).lstrip("/")
            bucket, key = source.split("/", 1)
            current = self.backend.get_object(bucket, key)
            if current is not None and current.etag.strip('"') != wanted.strip('"'):
                raise PreconditionFailed("x-amz-copy-source-If-Match")
        return original(self)

    S3Response.copy_object = copy_object  # type: ignore[method-assign]


_PRECONDITION_FAILED = "At least one of the pre-conditions you specified did not hold"


def _honour_delete_objects_etag() -> None:
    """Make moto's DeleteObjects honour each object's ``ETag`` condition, as S3 does.

    moto 5.2 ignores it and deletes whatever is under the key, where S3 (conditional
    deletes, 2024) keeps an object whose ETag differs and lists its key under ``Errors``
    with ``PreconditionFailed``; the archive's batch delete relies on that to leave a
    version uploaded since it was applied in changes/. A key that does not exist is
    reported as deleted, with or without a condition (S3's DeleteObjects reference), which
    moto does already. The refused keys are taken out of the request before moto sees it,
    and added to its reply's errors.
    """
    import xmltodict  # type: ignore[import-untyped]  # noqa: PLC0415 (moto's dependency)
    from moto.core.responses import ActionResult  # noqa: PLC0415
    from moto.s3.responses import S3Response  # noqa: PLC0415

    original = S3Response._bucket_response_delete_keys

    def delete_keys(self: Any, bucket_name: str, authenticated: bool = True) -> Any:
        request = xmltodict.parse(self.body, strip_whitespace=False)
        objects = request["Delete"].get("Object", [])
        objects = objects if isinstance(objects, list) else [objects]
        kept, refused = [], []
        for obj in objects:
            wanted = str(obj.get("ETag") or "").strip('"') if authenticated else ""
            current = self.backend.get_object(bucket_name, obj["Key"]) if wanted else None
            if current is not None and current.etag.strip('"') != wanted:
                refused.append(obj["Key"])
            else:
                kept.append(obj)
        if not refused:
            return original(self, bucket_name, authenticated)
        errors = [
            {"Key": k, "Code": "PreconditionFailed", "Message": _PRECONDITION_FAILED}
            for k in refused
        ]
        if not kept:  # moto refuses a request with no object as malformed
            self.data["Action"] = "DeleteObjects"
            return self.serialized(ActionResult({"Deleted": [], "Errors": errors}))
        request["Delete"]["Object"] = kept
        self.body = xmltodict.unparse(request)
        serialized = self.serialized

        def with_refused(result: Any) -> Any:
            reply = result.result
            reply["Errors"] = [*reply.get("Errors", []), *errors]
            return serialized(result)

        self.serialized = with_refused  # this request's response object only
        try:
            return original(self, bucket_name, authenticated)
        finally:
            del self.serialized

    S3Response._bucket_response_delete_keys = delete_keys  # type: ignore[method-assign]


if __name__ == "__main__":  # ``start_aws(own_process=True)``: moto's server, patched
    honour_conditions()
    from moto.server import main

    main(sys.argv[1:])
