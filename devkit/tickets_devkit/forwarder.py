"""A plain TCP forwarder, standing in for a connection pooler (RDS Proxy, PgBouncer in
session mode) or for any hop between a network namespace and a service on the host.

What matters for the pooler: when its client vanishes without a FIN, the forwarder never
learns of it, so its own connection to the server stays open and answers the server's
keepalives. The server's TCP peer is the forwarder: server-side keepalives cannot see the
client die. ``stall_after`` stops forwarding replies after that many bytes on a connection
(a download that hangs mid-body), to catch a sync in the middle of a COPY. ``delay`` holds
every chunk that long in each direction: a network between the function and the database,
as in AWS, where the lab has loopback (``tickets-devkit bench``).
"""

from __future__ import annotations

import argparse
import socket
import subprocess
import sys
import threading
import time
from collections.abc import Iterator
from contextlib import contextmanager, suppress
from types import TracebackType


class Forwarder:
    def __init__(
        self,
        listen_host: str,
        target: tuple[str, int],
        *,
        stall_after: int | None = None,
        delay: float = 0.0,
    ) -> None:
        self._target = target
        self._stall_after = stall_after
        self._delay = delay
        self._listener = socket.create_server((listen_host, 0))
        self.host = listen_host
        self.port = int(self._listener.getsockname()[1])
        self._sockets: list[socket.socket] = []
        self._lock = threading.Lock()
        self._closed = threading.Event()
        self.connections = 0
        threading.Thread(target=self._accept, name="forwarder-accept", daemon=True).start()

    def _accept(self) -> None:
        while not self._closed.is_set():
            try:
                client, _ = self._listener.accept()
            except OSError:
                return
            try:
                server = socket.create_connection(self._target, timeout=5)
            except OSError:
                client.close()
                continue
            server.settimeout(None)
            for sock in (client, server):
                sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
            with self._lock:
                self._sockets += [client, server]
                self.connections += 1
            threading.Thread(target=self._pump, args=(client, server, None), daemon=True).start()
            threading.Thread(
                target=self._pump, args=(server, client, self._stall_after), daemon=True
            ).start()

    def _pump(self, source: socket.socket, sink: socket.socket, stall_after: int | None) -> None:
        sent = 0
        try:
            while True:
                data = source.recv(65536)
                if not data:
                    break
                if self._delay:
                    time.sleep(self._delay)
                if stall_after is not None and sent + len(data) > stall_after:
                    sink.sendall(data[: max(0, stall_after - sent)])
                    self._closed.wait()  # hold the rest back until the forwarder closes
                    return
                sink.sendall(data)
                sent += len(data)
        except OSError:
            pass
        # The source said goodbye (a FIN): pass it on. A vanished peer never gets here.
        with suppress(OSError):
            sink.shutdown(socket.SHUT_WR)

    def close(self) -> None:
        self._closed.set()
        with suppress(OSError):
            self._listener.close()
        with self._lock:
            sockets, self._sockets = self._sockets, []
        for sock in sockets:
            with suppress(OSError):
                sock.close()

    def __enter__(self) -> Forwarder:
        return self

    def __exit__(
        self,
        kind: type[BaseException] | None,
        error: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.close()


@contextmanager
def forwarder_process(target: tuple[str, int], *, delay: float = 0.0) -> Iterator[int]:
    """A ``Forwarder`` on 127.0.0.1 in a process of its own, as a network hop is: its
    threads take nothing from the process being measured. Yields the port it listens on."""
    command = [sys.executable, "-m", "tickets_devkit.forwarder", target[0], str(target[1])]
    proc = subprocess.Popen([*command, "--delay", str(delay)], stdout=subprocess.PIPE, text=True)
    try:
        assert proc.stdout is not None
        line = proc.stdout.readline()
        if not line:
            raise RuntimeError(f"the forwarder did not start (exit {proc.wait()})")
        yield int(line)
    finally:
        proc.terminate()
        proc.wait(timeout=10)


def _main(argv: list[str]) -> None:
    parser = argparse.ArgumentParser(prog="python -m tickets_devkit.forwarder")
    parser.add_argument("host")
    parser.add_argument("port", type=int)
    parser.add_argument("--delay", type=float, default=0.0, help="seconds, each direction")
    args = parser.parse_args(argv)
    forwarder = Forwarder("127.0.0.1", (args.host, args.port), delay=args.delay)
    print(forwarder.port, flush=True)
    threading.Event().wait()  # until terminated


if __name__ == "__main__":
    _main(sys.argv[1:])
