"""A network namespace joined to the host by a veth pair: a process inside reaches the
host's services over the pair, and ``cut()`` takes the link down inside the namespace, so
whatever the process sends afterwards (a FIN when it is killed) never arrives.

Needs root and iproute2 (``ip``); ``unavailable()`` says why not, for a skip.
"""

from __future__ import annotations

import os
import shutil
import subprocess
from dataclasses import dataclass


def unavailable() -> str | None:
    """Why a namespace cannot be made here (None: it can)."""
    if os.geteuid() != 0:
        return "network namespaces need root"
    if shutil.which("ip") is None:
        return "iproute2's `ip` is not installed"
    probe = f"tkprobe{os.getpid() % 100000}"
    made = subprocess.run(["ip", "netns", "add", probe], capture_output=True, check=False)
    if made.returncode != 0:
        return f"`ip netns add` fails here: {made.stderr.decode().strip()}"
    subprocess.run(["ip", "netns", "delete", probe], capture_output=True, check=False)
    return None


def _ip(*args: str) -> None:
    subprocess.run(["ip", *args], check=True, capture_output=True)


@dataclass
class Namespace:
    name: str
    host_if: str
    ns_if: str
    host_ip: str  # the host's end: services bound here are reachable from inside
    ns_ip: str

    @classmethod
    def create(cls, tag: int) -> Namespace:
        suffix = f"{os.getpid() % 10000}{tag}"
        octet = (os.getpid() + tag) % 250 + 1
        ns = cls(
            name=f"tkns{suffix}",
            host_if=f"tkh{suffix}",
            ns_if=f"tkn{suffix}",
            host_ip=f"10.231.{octet}.1",
            ns_ip=f"10.231.{octet}.2",
        )
        _ip("netns", "add", ns.name)
        try:
            _ip("link", "add", ns.host_if, "type", "veth", "peer", "name", ns.ns_if)
            _ip("link", "set", ns.ns_if, "netns", ns.name)
            _ip("addr", "add", f"{ns.host_ip}/30", "dev", ns.host_if)
            _ip("link", "set", ns.host_if, "up")
            ns.run("ip", "addr", "add", f"{ns.ns_ip}/30", "dev", ns.ns_if)
            ns.run("ip", "link", "set", ns.ns_if, "up")
            ns.run("ip", "link", "set", "lo", "up")
        except BaseException:
            ns.delete()
            raise
        return ns

    def command(self, *argv: str) -> list[str]:
        """``argv`` run inside the namespace (``ip netns exec`` execs it: same pid)."""
        return ["ip", "netns", "exec", self.name, *argv]

    def run(self, *argv: str) -> None:
        subprocess.run(self.command(*argv), check=True, capture_output=True)

    def cut(self) -> None:
        """The link goes down inside the namespace: nothing more leaves it, not even a FIN."""
        self.run("ip", "link", "set", self.ns_if, "down")

    def heal(self) -> None:
        self.run("ip", "link", "set", self.ns_if, "up")

    def delete(self) -> None:
        subprocess.run(["ip", "netns", "delete", self.name], capture_output=True, check=False)
        subprocess.run(["ip", "link", "delete", self.host_if], capture_output=True, check=False)
