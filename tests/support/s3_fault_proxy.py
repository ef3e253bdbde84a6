"""An HTTP proxy in front of the moto server that makes S3 misbehave, deterministically.

Point the code under test at ``proxy.url`` (``AWS_ENDPOINT_URL``) and it reaches moto
through here; each request may meet one fault:

- ``slowdown``: answered ``503 SlowDown`` with S3's XML error body, never forwarded;
- ``reset``: the connection is reset before the request is forwarded (nothing happened);
- ``drop``: the request is forwarded and done, then the connection is reset instead of
  the reply (the operation happened; the client cannot know);
- ``cut``: the reply's status and headers (with the full ``Content-Length``) and part of
  the body are sent, then the connection is closed (GETs of objects only).

Whether a request meets a fault is decided from the seed, the operation, the path and
how many times that same request was seen, never from arrival order, so a run with
background threads meets the same faults each time. Faults are chosen per operation
(GetObject, CopyObject, DeleteObject, DeleteObjects, ListObjectsV2, HeadObject, PutObject)
and optionally per key substring (a DeleteObjects request is about every key it lists).
The proxy listens on 127.0.0.1 only, forwards only to a loopback upstream, injects at most
``max_faults`` faults, and shuts itself down after ``lifetime`` seconds if the test never
stops it.
"""

from __future__ import annotations

import http.client
import random
import socket
import struct
import threading
import time
from collections import Counter
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from types import TracebackType
from urllib.parse import parse_qs, unquote, urlsplit
from xml.etree import ElementTree

KINDS = ("slowdown", "reset", "drop", "cut")
_LOOPBACK = {"127.0.0.1", "localhost", "::1"}
_HOP_BY_HOP = {"connection", "keep-alive", "transfer-encoding", "proxy-connection", "upgrade"}
_SLOWDOWN = (
    b'<?xml version="1.0" encoding="UTF-8"?>\n'
    b"<Error><Code>SlowDown</Code><Message>Please reduce your request rate.</Message>"
    b"<RequestId>FAULTPROXY</RequestId><HostId>fault-proxy</HostId></Error>"
)


@dataclass(frozen=True)
class Fault:
    """``kind`` for a share ``rate`` (0..1) of the requests of ``operation`` (``*``: any)
    whose key contains ``key_part``; with ``first``, only on the first ``first`` times the
    same request is seen (so its retries pass)."""

    kind: str
    rate: float
    operation: str = "*"
    key_part: str = ""
    first: int | None = None

    def __post_init__(self) -> None:
        if self.kind not in KINDS:
            raise ValueError(f"unknown fault kind {self.kind!r}; one of {KINDS}")
        if not 0 <= self.rate <= 1:
            raise ValueError(f"rate {self.rate} is not between 0 and 1")

    def matches(self, operation: str, key: str, seen: int) -> bool:
        if self.operation not in ("*", operation) or self.key_part not in key:
            return False
        if self.first is not None and seen > self.first:
            return False
        return self.kind != "cut" or operation == "GetObject"  # only a body can be cut


@dataclass
class Injected:
    """What the proxy did: requests seen, faults injected by kind and by (kind, operation)."""

    requests: Counter[str] = field(default_factory=Counter)
    faults: Counter[str] = field(default_factory=Counter)
    by_operation: Counter[tuple[str, str]] = field(default_factory=Counter)

    def total(self) -> int:
        return sum(self.faults.values())


def classify(
    method: str, path: str, query: str, headers: dict[str, str], body: bytes = b""
) -> tuple[str, str]:
    """(S3 operation, object key or prefix) of a path-style request; for a DeleteObjects
    (``POST /bucket?delete``), the keys its body lists, one a line."""
    parts = unquote(path).lstrip("/").split("/", 1)
    key = parts[1] if len(parts) > 1 else ""
    params = parse_qs(query, keep_blank_values=True)
    if method == "POST" and not key and "delete" in params:
        return "DeleteObjects", "\n".join(_listed_keys(body))
    if method == "GET" and not key:
        prefix = params.get("prefix", [""])[0]
        return ("ListObjectsV2" if "list-type" in params else "ListObjects"), prefix
    if method == "GET":
        return "GetObject", key
    if method == "HEAD":
        return ("HeadObject" if key else "HeadBucket"), key
    if method == "PUT" and "x-amz-copy-source" in headers:
        return "CopyObject", key
    if method == "PUT":
        return ("PutObject" if key else "CreateBucket"), key
    if method == "DELETE":
        return "DeleteObject", key
    return method, key


def _listed_keys(body: bytes) -> list[str]:
    """The keys of a DeleteObjects request body (``<Delete><Object><Key>...``)."""
    try:
        root = ElementTree.fromstring(body)
    except ElementTree.ParseError:
        return []
    return [e.text or "" for e in root.iter() if e.tag.rsplit("}", 1)[-1] == "Key"]


class S3FaultProxy:
    """``with S3FaultProxy(upstream, faults, seed=7) as proxy:`` ... ``proxy.injected``."""

    def __init__(
        self,
        upstream: str,
        faults: list[Fault],
        *,
        seed: int = 0,
        max_faults: int = 1000,
        lifetime: float = 300.0,
    ) -> None:
        target = urlsplit(upstream)
        if target.hostname not in _LOOPBACK or target.port is None:
            raise ValueError(f"the fault proxy forwards to loopback only, not {upstream}")
        self.upstream = (target.hostname, target.port)
        self.faults = list(faults)
        self.seed = seed
        self.max_faults = max_faults
        self.lifetime = lifetime
        self.injected = Injected()
        self.enabled = True  # False: forward everything untouched
        self._seen: Counter[tuple[str, str, str]] = Counter()
        self._lock = threading.Lock()
        self._server = _QuietServer(("127.0.0.1", 0), _handler_for(self))
        self._server.daemon_threads = True
        self._thread = threading.Thread(
            target=self._server.serve_forever, name="s3-fault-proxy", daemon=True
        )
        self._timer = threading.Timer(lifetime, self.stop)
        self._timer.daemon = True

    @property
    def url(self) -> str:
        host, port = self._server.server_address[:2]
        return f"http://{host}:{port}"

    def start(self) -> S3FaultProxy:
        self._thread.start()
        self._timer.start()
        return self

    def stop(self) -> None:
        self._timer.cancel()
        if self._thread.is_alive():
            self._server.shutdown()
        self._server.server_close()

    def __enter__(self) -> S3FaultProxy:
        return self.start()

    def __exit__(
        self,
        kind: type[BaseException] | None,
        error: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.stop()

    def decide(self, method: str, operation: str, key: str) -> str | None:
        """The fault for this request, if any (counted), from the seed and its identity."""
        with self._lock:
            self.injected.requests[operation] += 1
            identity = (method, operation, key)
            self._seen[identity] += 1
            if not self.enabled or self.injected.total() >= self.max_faults:
                return None
            draw = random.Random(f"{self.seed}|{method}|{key}|{self._seen[identity]}").random()
            floor = 0.0
            for fault in self.faults:
                if not fault.matches(operation, key, self._seen[identity]):
                    continue
                if floor <= draw < floor + fault.rate:
                    self.injected.faults[fault.kind] += 1
                    self.injected.by_operation[(fault.kind, operation)] += 1
                    return fault.kind
                floor += fault.rate
            return None


class _QuietServer(ThreadingHTTPServer):
    def handle_error(self, request: object, client_address: object) -> None:
        return  # a client that gave up on a reset or cut connection is the point, not news


def _handler_for(proxy: S3FaultProxy) -> type[BaseHTTPRequestHandler]:
    class Handler(BaseHTTPRequestHandler):
        protocol_version = "HTTP/1.1"  # keep-alive, as botocore expects
        upstream: http.client.HTTPConnection | None = None

        def log_message(self, format: str, *args: object) -> None:
            return  # quiet

        def do_GET(self) -> None:
            self._handle()

        def do_HEAD(self) -> None:
            self._handle()

        def do_PUT(self) -> None:
            self._handle()

        def do_DELETE(self) -> None:
            self._handle()

        def do_POST(self) -> None:
            self._handle()

        def _handle(self) -> None:
            length = int(self.headers.get("Content-Length") or 0)
            body = self.rfile.read(length) if length else b""
            url = urlsplit(self.path)
            headers = {k.lower(): v for k, v in self.headers.items()}
            operation, key = classify(self.command, url.path, url.query, headers, body)
            fault = proxy.decide(self.command, operation, key)
            if fault == "slowdown":
                self._reply(503, [("Content-Type", "application/xml")], _SLOWDOWN)
                return
            if fault == "reset":
                self._reset()
                return
            status, reply_headers, payload = self._forward(body)
            if fault == "drop":
                self._reset()
            elif fault == "cut" and len(payload) > 1:
                self._reply(status, reply_headers, payload, cut_at=len(payload) // 2)
            else:
                self._reply(status, reply_headers, payload)

        def _forward(self, body: bytes) -> tuple[int, list[tuple[str, str]], bytes]:
            if self.upstream is None:
                self.upstream = http.client.HTTPConnection(*proxy.upstream, timeout=30)
            headers = {k: v for k, v in self.headers.items() if k.lower() not in _HOP_BY_HOP}
            try:
                self.upstream.request(self.command, self.path, body=body or None, headers=headers)
                response = self.upstream.getresponse()
            except (http.client.HTTPException, OSError):
                self.upstream.close()  # a stale keep-alive connection: once more, fresh
                self.upstream.request(self.command, self.path, body=body or None, headers=headers)
                response = self.upstream.getresponse()
            payload = response.read()
            kept = [(k, v) for k, v in response.getheaders() if k.lower() not in _HOP_BY_HOP]
            return response.status, kept, payload

        def _reply(
            self,
            status: int,
            headers: list[tuple[str, str]],
            payload: bytes,
            cut_at: int | None = None,
        ) -> None:
            self.send_response_only(status)
            has_length = any(k.lower() == "content-length" for k, _ in headers)
            for name, value in headers:
                self.send_header(name, value)
            if not has_length and self.command != "HEAD":
                self.send_header("Content-Length", str(len(payload)))
            self.end_headers()
            if self.command == "HEAD":
                return
            if cut_at is None:
                self.wfile.write(payload)
                return
            self.wfile.write(payload[:cut_at])
            self.wfile.flush()
            time.sleep(0.01)  # let the part arrive before the end of the stream
            self.connection.shutdown(socket.SHUT_WR)
            self.close_connection = True

        def _reset(self) -> None:
            """Close with RST (SO_LINGER 0): the client sees 'connection reset', no reply."""
            self.connection.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
            self.connection.close()
            self.close_connection = True

        def finish(self) -> None:
            super().finish()
            if self.upstream is not None:
                self.upstream.close()

    return Handler
