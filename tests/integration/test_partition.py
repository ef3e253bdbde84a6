"""A sync whose network vanishes mid-COPY frees its dataset within 60 s, with no operator,
connected directly and behind a pooler.

The sync runs in its own network namespace (a veth pair to the host). Its S3 download
stalls halfway through the baseline (a forwarder holds the rest back), so its backend
waits for COPY data; then the namespace's link goes down and the process is SIGKILLed:
no FIN ever reaches the server (direct) or the pooler (a TCP forwarder that keeps its
server-side connection open, as RDS Proxy or PgBouncer in session mode do). The backend
would hold the dataset lock until the kernel gives up on the socket (2 h 11 min with
Linux defaults). A second sync, waiting for the lock, takes the dataset over once the
dead holder's lease heartbeat is stale, and finishes the stream: the final state is the
in-order fold, every file applied once.

Short lease settings keep each test to seconds. With the defaults
(``TICKETS_PARTITION_DEFAULTS=1``: heartbeat 2 s, stale after 20 s, dead peer 30 s) the
same tests measure the production takeover time; it is printed (``-s``) for the record.
"""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from collections.abc import Iterator
from dataclasses import dataclass

import pytest

from tests.conftest import Env
from tests.support import faults, netns
from tests.support.faults import DATASET, REPO
from tickets_devkit.forwarder import Forwarder
from tickets_devkit.generator import StreamFile, TicketStream
from tickets_devkit.postgres import LocalPostgres, start_postgres
from tickets_ingest import failpoints
from tickets_ingest.dal.db import Database
from tickets_ingest.dal.migrate import migrate
from tickets_ingest.failpoints import Step
from tickets_ingest.logic.sync import SyncOptions, sync

WHY_NOT = netns.unavailable()
pytestmark = pytest.mark.skipif(WHY_NOT is not None, reason=f"no network namespace: {WHY_NOT}")

DEFAULTS = os.environ.get("TICKETS_PARTITION_DEFAULTS") == "1"
# Seconds, for speed; the defaults are 2, 20 and 30.
SHORT = {"LOCK_HEARTBEAT_SECONDS": "0.2", "LOCK_STALE_SECONDS": "1", "DB_DEAD_PEER_SECONDS": "3"}
FREED_WITHIN = 60.0  # the bound
SYNC_APP = "tickets-ingest cli sync"


@dataclass
class Lab:
    ns: netns.Namespace
    postgres: LocalPostgres


@pytest.fixture(scope="module")
def lab() -> Iterator[Lab]:
    """A namespace, and a PostgreSQL server that also listens on the host's end of the veth
    (the session's server listens on 127.0.0.1 only, which the namespace cannot reach)."""
    ns = netns.Namespace.create(tag=1)
    try:
        server = start_postgres(settings={"listen_addresses": f"127.0.0.1,{ns.host_ip}"})
        try:
            hba = server.datadir / "pg_hba.conf"
            with hba.open("a") as conf:
                conf.write(f"host all all {ns.ns_ip}/32 trust\n")
            admin = Database.connect(server.url())
            try:
                admin.run("SELECT pg_reload_conf()")
            finally:
                admin.close()
            yield Lab(ns, server)
        finally:
            server.stop()
    finally:
        ns.delete()


@pytest.fixture
def world(env: Env, lab: Lab) -> Iterator[Env]:
    """``env`` with its database on the lab's server."""
    name = f"partition_{os.getpid()}_{time.monotonic_ns()}"
    url = lab.postgres.create_database(name)
    db = Database.connect(url)
    try:
        migrate(db)
    finally:
        db.close()
    env.database_url = url
    env.set(DATABASE_URL=url, **({} if DEFAULTS else SHORT))
    yield env
    env.close()
    env._closers.clear()
    lab.postgres.drop_database(name)


def stream() -> list[StreamFile]:
    tickets = TicketStream(DATASET, seed=31)
    return [tickets.baseline(3000)] + [tickets.delta(30, repeat_ids=3) for _ in range(3)]


def start_sync_in_namespace(
    env: Env, lab: Lab, database_url: str, s3_url: str
) -> subprocess.Popen[str]:
    variables = {k: v for k, v in os.environ.items() if not k.startswith("TICKETS_FAILPOINT")}
    variables.update(
        DATABASE_URL=database_url,
        AWS_ENDPOINT_URL=s3_url,
        PYTHONPATH=os.pathsep.join([str(REPO / "functions/ingest"), str(REPO)]),
    )
    command = [sys.executable, "-m", "tickets_ingest.handlers.cli", "sync", "--apply"]
    return subprocess.Popen(
        lab.ns.command(*command, "--dataset", DATASET),
        env=variables,
        cwd=REPO,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )


def wait_until_mid_copy(env: Env, proc: subprocess.Popen[str]) -> int:
    """The pid of the namespace sync's backend once it waits for COPY data."""
    db = faults.checker(env)
    deadline = time.monotonic() + 30
    while time.monotonic() < deadline:
        rows = db.run(
            "SELECT pid FROM pg_stat_activity WHERE application_name = :app"
            # The file's Query opens with its BEGIN; the COPY in it waits for the data.
            " AND query LIKE '%COPY % FROM STDIN%' AND wait_event = 'ClientRead'",
            app=SYNC_APP,
        )
        if rows:
            return int(rows[0][0])
        assert proc.poll() is None, f"the sync ended early: {proc.communicate()}"
        time.sleep(0.05)
    raise AssertionError("the namespace sync never reached its COPY")


def vanish(lab: Lab, proc: subprocess.Popen[str]) -> float:
    """Link down, then SIGKILL: the process is gone and no FIN left the namespace."""
    lab.ns.cut()
    proc.send_signal(signal.SIGKILL)
    proc.wait(timeout=10)
    return time.monotonic()


def take_over(env: Env, vanished_at: float) -> float:
    """A second sync (on the host) waits for the lock, then applies the whole stream;
    seconds from the vanishing to its holding the dataset."""
    got_lock: list[float] = []

    def note(step: Step, _key: str) -> None:
        if step is Step.LISTED and not got_lock:
            got_lock.append(time.monotonic())

    with failpoints.on(note):
        report = sync(env.runtime(), DATASET, SyncOptions(lock_wait_seconds=FREED_WITHIN))
    assert report.ok and len(report.applied) == 4
    return got_lock[0] - vanished_at


def backend_gone(env: Env, pid: int) -> bool:
    count = faults.checker(env).scalar(
        "SELECT count(*) FROM pg_stat_activity WHERE pid = :pid", pid=pid
    )
    return bool(count == 0)


def run_partition(env: Env, lab: Lab, *, via_pooler: bool) -> None:
    files = stream()
    etags = faults.upload(env, files)
    host = lab.ns.host_ip
    port = lab.postgres.port
    # S3 (moto on 127.0.0.1) through a forwarder on the veth: replies stop 200 KB into a
    # connection, so the baseline's body hangs halfway through its COPY.
    moto_port = int(env.aws.endpoint_url.rsplit(":", 1)[1])
    with (
        Forwarder(host, ("127.0.0.1", moto_port), stall_after=200_000) as s3,
        Forwarder(host, ("127.0.0.1", port)) as pooler,
    ):
        db_port = pooler.port if via_pooler else port
        url = f"postgresql://postgres@{host}:{db_port}/{env.database_url.rsplit('/', 1)[1]}"
        proc = start_sync_in_namespace(env, lab, url, f"http://{host}:{s3.port}")
        try:
            backend = wait_until_mid_copy(env, proc)
            vanished_at = vanish(lab, proc)
            freed_after = take_over(env, vanished_at)
        finally:
            if proc.poll() is None:
                proc.kill()
            lab.ns.heal()
    topology = "behind a pooler" if via_pooler else "direct"
    settings = "defaults" if DEFAULTS else "short test settings"
    print(f"\n[partition {topology}, {settings}] dataset freed {freed_after:.1f} s after")
    assert freed_after < FREED_WITHIN
    assert backend_gone(env, backend)
    faults.assert_converged(env, files, etags)


@pytest.mark.parametrize("via_pooler", [False, True], ids=["direct", "behind-a-pooler"])
def test_a_vanished_holder_frees_its_dataset_within_60_s(
    world: Env, lab: Lab, via_pooler: bool, caplog: pytest.LogCaptureFixture
) -> None:
    with caplog.at_level("WARNING", logger="tickets_ingest.dal.lease"):
        run_partition(world, lab, via_pooler=via_pooler)
    if not DEFAULTS:
        # Short settings: the lease's takeover freed it (the kernel would take 3 s or more).
        assert any("taking over dataset inc" in r.getMessage() for r in caplog.records)
