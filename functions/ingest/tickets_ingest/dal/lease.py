"""The per-dataset sync lock: a session advisory lock plus a lease with a heartbeat.

One sync of a dataset at a time holds PostgreSQL's session advisory lock on its *apply
connection*. The lock alone dies with its backend, but a backend can outlive its client by
hours: a client that vanished without a FIN (network cut, sandbox lost) leaves its backend
waiting on a dead socket until the kernel's keepalive gives up, and behind a pooler (RDS
Proxy, PgBouncer in session mode) the server's peer is the pooler, which stays connected.

So the holder also keeps a lease row (``tickets.dataset_leases``) naming its apply backend
(pid AND backend_start: pids are reused), refreshed every ``LOCK_HEARTBEAT_SECONDS`` by a
thread on a *second* connection. A contender that finds the lock held and the lease silent
for longer than ``LOCK_STALE_SECONDS`` claims the lease (one conditional UPDATE, so only
one contender wins), ends the holder's backend with ``pg_terminate_backend`` and takes the
lock. That is safe: a file's rows and ledger row commit together, so the ended transaction
rolls back whole and can never commit later. The old holder, if it still runs, finds the
lease taken (heartbeat, or its reconnect) and stops with ``LockLost``.

A contender that finds the holder *alive*, and taking news (a sync that applies; not a dry
run, a replay or a quarantine), bumps the lease's news counter; the holder compares it
before letting go (``release_unless_news``) and lists the dataset again if it moved, so
whatever the contender came for is picked up and its message can be acknowledged
(``SyncBusy.handed_over``).

Ending another session needs the same database role, or ``pg_signal_backend`` (and
``pg_read_all_stats`` to see another role's backend_start): see ``tickets-ingest grants``.
"""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager, suppress
from dataclasses import dataclass
from datetime import datetime

from tickets_ingest.dal import sql
from tickets_ingest.dal.db import Database, DatabaseError, InterfaceError, sqlstate
from tickets_ingest.errors import LockLost, LockWaitTimeout, SyncBusy
from tickets_ingest.models import LockHolder
from tickets_ingest.settings import LockSettings

log = logging.getLogger(__name__)

# 55P03 lock_not_available (lock_timeout), 57014 query_canceled (statement_timeout).
LOCK_WAIT_TIMEOUT = "55P03"
STATEMENT_TIMEOUT = "57014"
INSUFFICIENT_PRIVILEGE = "42501"

POLL_SECONDS = 0.25  # between tries of a busy lock
LETTING_GO_SECONDS = 0.5  # a holder that cleared its lease unlocks within this (same statement)
TERMINATED_WITHIN_SECONDS = 10.0  # an ended backend lets go of its locks within this

Identity = tuple[int, datetime]  # pid, backend_start of the apply connection


@dataclass(frozen=True)
class _Lease:
    pid: int | None
    started: datetime | None
    name: str | None
    takes_news: bool
    stale_seconds: float
    silent_seconds: float
    news: int
    waiting_for: str | None

    def names(self, pid: int, started: datetime | None) -> bool:
        return started is not None and self.pid == pid and self.started == started


def _lease(db: Database, dataset: str) -> _Lease | None:
    rows = db.run(sql.LEASE, dataset=dataset)
    return _Lease(*rows[0]) if rows else None


def lock_holder(db: Database, dataset: str) -> LockHolder | None:
    """Who holds ``dataset``'s lock (another session than ``db``'s), None if nobody."""
    rows = db.run(sql.LOCK_HOLDER, dataset=dataset)
    if not rows:
        return None
    pid, application, address, started = rows[0]
    if started is None:  # hidden from this role: pg_stat_activity shows it NULL
        return LockHolder(pid, application, None, None, None, hidden=True)
    lease = _lease(db, dataset)
    if lease is None or not lease.names(pid, started):
        return LockHolder(pid, application, address, None, None)
    return LockHolder(pid, application, address, lease.silent_seconds, lease.stale_seconds)


class DatasetLock:
    """Hold one dataset's lock for a sync: ``with DatasetLock.held(...) as lock``."""

    def __init__(
        self,
        db: Database,
        dataset: str,
        *,
        connect: Callable[[], Database],
        settings: LockSettings,
        takes_news: bool,
    ) -> None:
        self.dataset = dataset
        self._db = db
        self._connect = connect
        self._settings = settings
        self._takes_news = takes_news
        self._identity: Identity | None = None
        self._seen_news = 0
        self._mutex = threading.Lock()  # the identity, against the heartbeat
        self._stop = threading.Event()
        self._heartbeat: threading.Thread | None = None
        self._lost: str | None = None
        self._released = False
        self._wait_sample: str | None = None

    @classmethod
    @contextmanager
    def held(
        cls,
        db: Database,
        dataset: str,
        *,
        connect: Callable[[], Database],
        settings: LockSettings,
        wait_seconds: float = 0.0,
        takes_news: bool = False,
        hand_over: bool = False,
    ) -> Iterator[DatasetLock]:
        """The lock for the block, or ``SyncBusy`` (``handed_over`` when the live holder
        was told to pick up this sync's news: only asked for with ``hand_over``)."""
        lock = cls(db, dataset, connect=connect, settings=settings, takes_news=takes_news)
        lock._acquire(wait_seconds, hand_over)
        try:
            yield lock
        finally:
            lock.release()

    # -- acquiring --------------------------------------------------------------------

    def _acquire(self, wait_seconds: float, hand_over: bool) -> None:
        db = self._db
        started = time.monotonic()
        while True:
            if self._try_take():
                return
            holder = db.run(sql.LOCK_HOLDER, dataset=self.dataset)
            lease = _lease(db, self.dataset)
            letting_go = not holder or (lease is not None and lease.pid is None)
            if holder and lease is not None:
                pid, _name, _address, backend_start = holder[0]
                if lease.names(pid, backend_start):
                    if lease.silent_seconds > lease.stale_seconds:
                        if self._take_over(lease):
                            return
                        continue
                    if hand_over and lease.takes_news and self._bump_news(lease):
                        raise SyncBusy(self.dataset, self._describe(), handed_over=True)
            limit = max(wait_seconds, LETTING_GO_SECONDS) if letting_go else wait_seconds
            left = limit - (time.monotonic() - started)
            if left <= 0:
                raise SyncBusy(self.dataset, self._describe())
            time.sleep(min(POLL_SECONDS, left))

    def _describe(self) -> str | None:
        holder = lock_holder(self._db, self.dataset)
        return holder.describe() if holder is not None else None

    def _bump_news(self, lease: _Lease) -> bool:
        rows = self._db.run(
            sql.LEASE_BUMP_NEWS, dataset=self.dataset, pid=lease.pid, started=lease.started
        )
        return bool(rows)

    def _try_take(self) -> bool:
        """Take the lock if it is free, naming this backend in the lease, and start the
        heartbeat; False if another session holds it."""
        try:
            rows = self._db.run(
                sql.TAKE_DATASET_LOCK,
                dataset=self.dataset,
                takes_news=self._takes_news,
                stale_seconds=self._settings.stale_seconds,
            )
        except BaseException:
            # The lock may be ours though the lease failed: a session lock outlives errors.
            with suppress(InterfaceError, DatabaseError, OSError):
                self._db.scalar(sql.UNLOCK_DATASET, dataset=self.dataset)
            raise
        if not rows:
            return False
        news, pid, started = rows[0]
        self._identity = (int(pid), started)
        self._seen_news = int(news)
        self._heartbeat = threading.Thread(
            target=self._beat, name=f"tickets-lease-{self.dataset}", daemon=True
        )
        self._heartbeat.start()
        return True

    def _take_over(self, lease: _Lease) -> bool:
        """End the silent holder's backend and take the lock; False if another contender
        (or the holder itself, alive after all) changed the lease first."""
        db = self._db
        claimed = db.run(
            sql.LEASE_CLAIM,
            dataset=self.dataset,
            pid=lease.pid,
            started=lease.started,
            takes_news=self._takes_news,
            stale_seconds=self._settings.stale_seconds,
        )
        if not claimed:
            return False
        log.warning(
            "taking over dataset %s from pid %s (%s): no heartbeat for %.1f s "
            "(stale after %g s); ending its session",
            self.dataset,
            lease.pid,
            lease.name or "unknown client",
            lease.silent_seconds,
            lease.stale_seconds,
        )
        try:
            db.run(sql.TERMINATE_HOLDER, pid=lease.pid, started=lease.started)
        except DatabaseError as exc:
            self._give_back_claim(lease)
            if sqlstate(exc) != INSUFFICIENT_PRIVILEGE:
                raise
            raise SyncBusy(
                self.dataset,
                message=f"dataset {self.dataset!r} is held by a silent sync (pid {lease.pid}, "
                f"no heartbeat for {lease.silent_seconds:.0f} s) whose session this role may "
                "not end: connect as the same role, or GRANT pg_signal_backend (see "
                "`tickets-ingest grants`); nothing done",
            ) from None
        deadline = time.monotonic() + TERMINATED_WITHIN_SECONDS
        while not self._try_take():
            if time.monotonic() > deadline:
                self._give_back_claim(lease)
                raise SyncBusy(
                    self.dataset,
                    message=f"pid {lease.pid} holds dataset {self.dataset!r} "
                    f"{TERMINATED_WITHIN_SECONDS:g} s after pg_terminate_backend; nothing done",
                )
            time.sleep(0.05)
        return True

    def _give_back_claim(self, lease: _Lease) -> None:
        """Undo a claim that did not lead to the lock: the lease names the silent holder
        again (still silent), so the next contender can try."""
        with suppress(InterfaceError, DatabaseError, OSError):
            self._db.run(
                sql.LEASE_UNCLAIM, dataset=self.dataset, pid=lease.pid, started=lease.started
            )

    # -- holding ------------------------------------------------------------------------

    def _beat(self) -> None:
        """The heartbeat thread: its own connection, so a long COPY or upsert on the apply
        connection never delays it."""
        db: Database | None = None
        try:
            while not self._stop.wait(self._settings.heartbeat_seconds):
                with self._mutex:
                    identity = self._identity
                if identity is None:
                    return
                try:
                    if db is None or db.broken:
                        db = self._connect()
                    rows = db.run(
                        sql.LEASE_HEARTBEAT,
                        dataset=self.dataset,
                        pid=identity[0],
                        started=identity[1],
                    )
                except (InterfaceError, DatabaseError, OSError) as exc:
                    log.warning("lease heartbeat of %s failed (%s); again", self.dataset, exc)
                    if db is not None:
                        db.close()
                    db = None
                    continue
                with self._mutex:
                    if rows and rows[0][1]:
                        self._wait_sample = str(rows[0][1])
                    if not rows and self._identity == identity and not self._stop.is_set():
                        self._lost = "its heartbeat found the lease taken"
                        log.error("the lock on dataset %s was taken over", self.dataset)
                        return
        finally:
            if db is not None:
                db.close()

    def raise_if_lost(self) -> None:
        """Between files: stop at once if another sync took the dataset over."""
        if self._lost is not None:
            raise LockLost(self.dataset, self._lost)

    def rebind(self, db: Database) -> None:
        """Hold the lock on a new apply connection after a reconnect, or raise ``LockLost``
        if a contender took the dataset meanwhile (never re-apply after a takeover)."""
        self.raise_if_lost()
        with self._mutex:
            previous = self._identity
        assert previous is not None, "rebind of a lock that was never taken"
        if not self._take_back(db, previous):
            holder = lock_holder(db, self.dataset)
            raise LockLost(
                self.dataset, holder.describe() if holder else "it held the lock meanwhile"
            )
        with self._mutex:
            old = self._identity
            assert old is not None, "rebind of a lock that was never taken"
            rows = db.run(sql.LEASE_REBIND, dataset=self.dataset, pid=old[0], started=old[1])
            if rows:
                self._identity = (int(rows[0][0]), rows[0][1])
                self._db = db
                return
        with suppress(InterfaceError, DatabaseError, OSError):
            db.scalar(sql.UNLOCK_DATASET, dataset=self.dataset)
        self._lost = "its lease was claimed while this sync reconnected"
        self.raise_if_lost()

    def _take_back(self, db: Database, previous: Identity) -> bool:
        """Take the lock on the new connection ``db``. This sync's previous apply backend
        may hold it still: a connection closed on the client's side (a download cut
        mid-COPY, a network error) ends its backend only once the server notices, at once
        when idle, after its statement when busy, after the keepalive when the network is
        gone. That backend is ours (the same pid and backend_start): end it and wait for
        it to go. Anyone else holding the lock: False (a takeover, never undone here)."""
        if db.scalar(sql.TRY_DATASET_LOCK, dataset=self.dataset):
            return True
        rows = db.run(sql.LOCK_HOLDER, dataset=self.dataset)
        if not rows or (rows[0][0], rows[0][3]) != previous:
            return False
        log.warning(
            "dataset %s: ending this sync's previous session (pid %s), which lost its "
            "connection but still holds the lock; its file in progress rolls back",
            self.dataset,
            previous[0],
        )
        with suppress(DatabaseError):  # no right to end it: it still goes, in time
            db.run(sql.TERMINATE_HOLDER, pid=previous[0], started=previous[1])
        deadline = time.monotonic() + TERMINATED_WITHIN_SECONDS
        while not db.scalar(sql.TRY_DATASET_LOCK, dataset=self.dataset):
            if time.monotonic() > deadline:
                return False
            time.sleep(0.05)
        return True

    # -- waits on other sessions' locks ---------------------------------------------------

    def start_file(self) -> None:
        """Forget the previous file's sample of what the apply waited for."""
        with self._mutex:
            self._wait_sample = None

    def wait_timeout(self, error: DatabaseError, key: str, table: str) -> LockWaitTimeout | None:
        """``LockWaitTimeout`` naming the file and what held the lock, for a lock_timeout or
        statement_timeout error of its apply; None for any other error."""
        state = sqlstate(error)
        if state not in (LOCK_WAIT_TIMEOUT, STATEMENT_TIMEOUT):
            return None
        if state == LOCK_WAIT_TIMEOUT:
            what = (
                "waited longer than APPLY_LOCK_TIMEOUT_SECONDS="
                f"{self._settings.apply_lock_timeout_seconds:g} for a row or table lock"
            )
        else:
            what = (
                "a statement ran longer than APPLY_STATEMENT_TIMEOUT_SECONDS="
                f"{self._settings.apply_statement_timeout_seconds:g}"
            )
        with self._mutex:
            sampled = self._wait_sample
        if sampled is None and state == STATEMENT_TIMEOUT:
            # The heartbeat saw no wait: whoever holds a lock on the table now is most
            # likely not the cause (a long lock wait meets lock_timeout first), so none is
            # named; the message says a short wait cannot be ruled out.
            return LockWaitTimeout(key, what, None)
        return LockWaitTimeout(key, what, sampled or self._table_lock_holders(table))

    def _table_lock_holders(self, table: str) -> str:
        """Sessions holding locks on the table (when the heartbeat took no sample)."""
        try:
            db = self._connect()
        except (InterfaceError, DatabaseError, OSError):
            return "a session this sync could not look up"
        try:
            rows = db.run(sql.TABLE_LOCK_HOLDERS, table=table)
        except (InterfaceError, DatabaseError, OSError):
            rows = []
        finally:
            db.close()
        if not rows:
            return "a session that let go before it could be looked up"
        return "; ".join(
            f"pid {pid} ({name}, {state}, {mode} on {table}: {query})"
            for pid, name, state, mode, query in rows
        )

    # -- letting go -----------------------------------------------------------------------

    def release_unless_news(self) -> bool:
        """Let go, unless a contender left news since this sync listed (then False: list
        again and apply what arrived, then ask again)."""
        self.raise_if_lost()
        identity = self._identity
        assert identity is not None
        released = self._db.run(
            sql.RELEASE_UNLESS_NEWS,
            dataset=self.dataset,
            pid=identity[0],
            started=identity[1],
            seen=self._seen_news,
        )
        if released:
            self._released = True
            self.release()
            return True
        lease = _lease(self._db, self.dataset)
        if lease is None or not lease.names(*identity):
            self._lost = "its lease was claimed"
            self.raise_if_lost()
        assert lease is not None
        log.info("news for %s arrived while it was synced; listing again", self.dataset)
        self._seen_news = lease.news
        return False

    def release(self) -> None:
        """Stop the heartbeat, clear the lease and unlock (idempotent; a dead connection has
        let go of the lock already)."""
        self._stop.set()
        if self._heartbeat is not None and self._heartbeat is not threading.current_thread():
            self._heartbeat.join(timeout=5)
        with self._mutex:
            identity, self._identity = self._identity, None
        if identity is None or self._released or self._lost is not None or self._db.broken:
            return
        with suppress(InterfaceError, DatabaseError, OSError):
            self._db.run(sql.RELEASE, dataset=self.dataset, pid=identity[0], started=identity[1])
