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
    _honour_copy_source_if_match()
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
        [sys.executable, "-m", "moto.server", "-H", "127.0.0.1", "-p", str(port)],
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


def _honour_copy_source_if_match() -> None:
    """Make moto refuse a conditional copy whose source changed, as S3 does.

    moto 5.2 ignores ``x-amz-copy-source-if-match``: an archive move would copy whatever is
    under the key now (a re-upload never applied) and report success, where S3 answers 412
    PreconditionFailed, which the engine relies on. GetObject's and DeleteObject's If-Match
    are honoured by moto already. Applies to servers in this process.
    """
    global _PATCHED  # noqa: PLW0603 - patch once per process
    if _PATCHED:
        return
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
    _PATCHED = True
