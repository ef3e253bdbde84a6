"""What each sslmode puts on the wire first, read by a listener that records the opening
bytes of a connection, and the plain-text fallback of allow/prefer against the test
PostgreSQL (which has no TLS). pg8000's own default would send an SSLRequest even for
sslmode=disable, and build a fresh CA store (~80 ms) for every connection."""

from __future__ import annotations

import socket
import struct
import threading
from collections.abc import Iterator

import pytest

from tickets_ingest.dal.db import Database, InterfaceError, _ssl_context
from tickets_ingest.settings import parse_database_url

SSL_REQUEST = struct.pack("!ii", 8, 80877103)
PROTOCOL_3 = 196608


@pytest.fixture
def listener() -> Iterator[tuple[int, list[bytes]]]:
    """A port that reads a connection's first 8 bytes and hangs up (or answers 'N' to an
    SSLRequest, as a server without TLS does, then reads the next 8)."""
    server = socket.create_server(("127.0.0.1", 0))
    seen: list[bytes] = []

    def serve() -> None:
        with server:
            try:
                client, _ = server.accept()
            except OSError:
                return
            with client:
                first = client.recv(8)
                seen.append(first)
                if first == SSL_REQUEST:
                    client.sendall(b"N")

    thread = threading.Thread(target=serve, daemon=True)
    thread.start()
    yield server.getsockname()[1], seen
    server.close()
    thread.join(timeout=5)


def test_disable_sends_the_startup_message_first(listener: tuple[int, list[bytes]]) -> None:
    port, seen = listener
    with pytest.raises(InterfaceError):
        Database.connect(f"postgresql://u@127.0.0.1:{port}/d?sslmode=disable")
    (first,) = seen
    assert first != SSL_REQUEST
    assert struct.unpack("!ii", first)[1] == PROTOCOL_3


def test_require_refuses_a_server_without_tls(listener: tuple[int, list[bytes]]) -> None:
    port, seen = listener
    with pytest.raises(InterfaceError, match="refuses SSL"):
        Database.connect(f"postgresql://u@127.0.0.1:{port}/d?sslmode=require")
    assert seen == [SSL_REQUEST]


@pytest.mark.parametrize("mode", ["allow", "prefer"])
def test_allow_and_prefer_fall_back_to_plain_text(database_url: str, mode: str) -> None:
    db = Database.connect(f"{database_url}?sslmode={mode}")
    try:
        assert db.scalar("SELECT ssl FROM pg_stat_ssl WHERE pid = pg_backend_pid()") is False
    finally:
        db.close()


def test_one_tls_context_serves_every_connection() -> None:
    params = parse_database_url("postgresql://u@db.example/d?sslmode=verify-full")
    assert _ssl_context(params, None) is _ssl_context(params, None)
    assert _ssl_context(parse_database_url("postgresql://u@h/d?sslmode=disable"), None) is False
