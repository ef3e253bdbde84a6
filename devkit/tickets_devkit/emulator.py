"""The local AWS emulator: moto's server on a free 127.0.0.1 port, in a background thread.

moto is imported only inside ``start_aws`` because it is slow to import.
"""

from __future__ import annotations

import argparse
import contextlib
import http.client
import logging
import os
import socket
import subprocess
import sys
import threading
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
    server = _InProcessServer(*_make_server("127.0.0.1", port))
    host, port = server.address
    return LocalAws(endpoint_url=f"http://{host}:{port}", region=region, _server=server)


def _make_server(host: str, port: int) -> tuple[Any, set[socket.socket]]:
    """moto's WSGI app on werkzeug's threaded server, keeping connections alive as S3 does.

    werkzeug's development server answers every request with ``Connection: close``, so
    in the lab each S3 call paid a new TCP connection (and moto a new thread) where AWS
    reuses one; that made the emulator the machine's largest CPU user and the benchmark's
    per-file figures the lab's, not the deployed world's. Returns the server and its open
    connections, to close when it stops.
    """
    from moto import backends  # noqa: PLC0415 (slow import, see module doc)
    from moto.moto_server.werkzeug_app import (  # noqa: PLC0415
        DomainDispatcherApplication,
        MotoRequestHandler,
        create_backend_app,
    )
    from werkzeug.serving import make_server  # noqa: PLC0415
    from werkzeug.wsgi import LimitedStream  # noqa: PLC0415

    connections: set[socket.socket] = set()

    class KeepAliveHandler(MotoRequestHandler):
        timeout = 60  # an idle connection's thread ends; the client opens a new one
        disable_nagle_algorithm = True  # a reply's headers and body are two writes
        _keep_alive = False

        def run_wsgi(self) -> None:
            length = self.headers.get("Content-Length")
            chunked = "chunked" in self.headers.get("Transfer-Encoding", "").lower()
            if chunked or not (length or "0").isdigit():
                self._keep_alive = False  # where this body ends is not known: close after
                super().run_wsgi()
                return
            # The app reads at most this request's body; what it leaves is drained by
            # length, so the next request's first line is never read as this one's body
            # (werkzeug's own drain reads whatever arrives, hence its closing).
            self._keep_alive = True
            body = LimitedStream(self.rfile, int(length or 0))  # type: ignore[arg-type]
            self.rfile, socket_file = body, self.rfile  # type: ignore[assignment]
            try:
                super().run_wsgi()
            finally:
                self.rfile = socket_file
            try:
                body.exhaust()
            except Exception:  # the client left mid-body: nothing to keep
                self.close_connection = True

        def send_header(self, keyword: str, value: str) -> None:
            if keyword.lower() == "connection" and value.lower() == "close" and self._keep_alive:
                return  # werkzeug's: it closes every connection, S3 does not
            super().send_header(keyword, value)

        def setup(self) -> None:
            super().setup()
            connections.add(self.connection)

        def finish(self) -> None:
            connections.discard(self.connection)
            super().finish()

    # moto's dispatcher lists its package directory (one stat per service, ~180) twice
    # for every request to find the service, under a lock that serialises requests:
    # about 1 ms of CPU each, which S3 does not cost the caller. The list cannot change
    # while the server runs.
    modules = tuple(backends.list_of_moto_modules())
    backends.list_of_moto_modules = lambda: modules

    app = DomainDispatcherApplication(create_backend_app)
    server = make_server(host, port, app, threaded=True, request_handler=KeepAliveHandler)
    return server, connections


class _InProcessServer:
    def __init__(self, server: Any, connections: set[socket.socket]) -> None:
        self._server = server
        self._connections = connections
        self.address: tuple[str, int] = server.server_address[:2]
        self._thread = threading.Thread(
            target=server.serve_forever, name="moto-server", daemon=True
        )
        self._thread.start()

    def stop(self) -> None:
        self._server.shutdown()  # serve_forever closes the listening socket as it returns
        self._thread.join()
        # A kept-alive connection's thread would otherwise go on serving a stopped emulator.
        for connection in list(self._connections):
            with contextlib.suppress(OSError):
                connection.shutdown(socket.SHUT_RDWR)


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


def _serve(argv: list[str]) -> None:
    """``start_aws(own_process=True)``'s process: the same patched, keep-alive server."""
    parser = argparse.ArgumentParser(prog="python -m tickets_devkit.emulator")
    parser.add_argument("-H", "--host", default="127.0.0.1")
    parser.add_argument("-p", "--port", type=int, required=True)
    args = parser.parse_args(argv)
    os.environ.setdefault("MOTO_PORT", str(args.port))  # as moto's own server does
    honour_conditions()
    logging.getLogger("werkzeug").setLevel(logging.WARNING)
    server, _ = _make_server(args.host, args.port)
    server.serve_forever()


if __name__ == "__main__":
    _serve(sys.argv[1:])
