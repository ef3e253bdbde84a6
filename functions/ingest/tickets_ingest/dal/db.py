"""The PostgreSQL connection: open, transactions, COPY, advisory locks, errors.

One ``Database`` wraps one pg8000 native connection. pg8000 closes the connection on any
failure inside a protocol exchange (e.g. the COPY source raising), so callers check
``broken`` and reconnect rather than reuse it.
"""

from __future__ import annotations

import functools
import io
import socket
import ssl
import struct
from collections import OrderedDict
from collections.abc import Iterable, Iterator
from contextlib import contextmanager, suppress
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pg8000.core
import pg8000.native

from tickets_ingest.dal import sql
from tickets_ingest.settings import ConnectionParams, parse_database_url

__all__ = [
    "Behind",
    "ConnectionParams",
    "Database",
    "DatabaseError",
    "InterfaceError",
    "parse_database_url",
]

DatabaseError = pg8000.native.DatabaseError
InterfaceError = pg8000.native.InterfaceError

# sslmodes where a server without TLS is still spoken to.
_TLS_OPTIONAL = frozenset({"allow", "prefer"})


def keepalive_timing(dead_peer_seconds: int) -> tuple[int, int, int]:
    """(idle, interval, count) of TCP keepalives that give up on a silent peer after about
    ``dead_peer_seconds``: a third of it idle, then 4 unanswered probes."""
    idle = max(1, dead_peer_seconds // 3)
    count = 4
    interval = max(1, (dead_peer_seconds - idle) // count)
    return idle, interval, count


def _open_socket(host: str, port: int, dead_peer_seconds: int) -> socket.socket:
    """A TCP socket that notices a dead peer: keepalives while idle (a server that vanished
    between files) and TCP_USER_TIMEOUT while data waits unacknowledged (mid-COPY).

    pg8000's own ``tcp_keepalive`` only turns SO_KEEPALIVE on with the OS defaults (2 h 11
    min on Linux). The connect itself is bounded by ``dead_peer_seconds``; after that the
    socket blocks without a timeout: only a dead peer ends a wait, never a slow statement.
    """
    try:
        sock = socket.create_connection((host, port), timeout=dead_peer_seconds)
    except OSError as exc:
        raise InterfaceError(f"can't connect to {host}:{port} ({exc})") from exc
    sock.settimeout(None)
    idle, interval, count = keepalive_timing(dead_peer_seconds)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_KEEPALIVE, 1)
    for option, value in (
        ("TCP_KEEPIDLE", idle),
        ("TCP_KEEPINTVL", interval),
        ("TCP_KEEPCNT", count),
        ("TCP_USER_TIMEOUT", dead_peer_seconds * 1000),
    ):
        if hasattr(socket, option):  # Linux (Lambda); macOS lacks some of them
            sock.setsockopt(socket.IPPROTO_TCP, getattr(socket, option), value)
    # pg8000 leaves Nagle's algorithm on; with its many small writes per statement that
    # costs a delayed-ACK wait (~40 ms) per round trip on Linux.
    sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
    return sock


@functools.cache
def _tls_context(sslmode: str, ca_bundle: Path | None) -> ssl.SSLContext:
    """One context per mode and bundle for the process: loading CA certificates costs
    ~80 ms, which pg8000 would otherwise pay again on every connection."""
    if sslmode in {"allow", "prefer", "require"}:
        # Encrypted, not verified (libpq's meaning): no CA store to load at all.
        context = ssl.SSLContext(ssl.PROTOCOL_TLS_CLIENT)
        context.check_hostname = False
        context.verify_mode = ssl.CERT_NONE
        return context
    context = ssl.create_default_context(cafile=str(ca_bundle) if ca_bundle else None)
    if sslmode == "verify-ca":
        context.check_hostname = False
    return context


def _ssl_context(params: ConnectionParams, ca_bundle: Path | None) -> ssl.SSLContext | bool:
    """What pg8000 takes: False for no TLS at all, else the context to wrap the socket in
    (pg8000's own default, None, would mean "try TLS" even for sslmode=disable)."""
    if params.sslmode == "disable":
        return False
    return _tls_context(params.sslmode, ca_bundle)


def _data_sent_already(_data: bytes, _context: Any) -> None:
    """The server's go-ahead for a COPY whose data went with the statement."""


@dataclass
class Behind:
    """A statement with parameters sent behind a COPY's Query, in its round trip
    (``Database.copy_in_then``). It runs after the Query's statements, in their
    transaction; if one of them failed, it finds that transaction aborted and does nothing.
    Behind a Query that opens the transaction and was never run before, it waits for that
    Query instead (a round trip of its own): a Query that does not parse runs no BEGIN.
    ``rows`` or ``error`` say what it did (neither, if the Query failed first)."""

    sql: str
    params: dict[str, Any] = field(default_factory=dict)
    rows: list[list[Any]] | None = None
    error: Exception | None = None

    def one(self) -> list[Any]:
        """Its one row; raises the error it met instead."""
        if self.error is not None:
            raise self.error
        if self.rows is None or len(self.rows) != 1:
            raise RuntimeError(f"expected one row, got {self.rows!r}")
        return self.rows[0]


class _CopySource:
    """COPY data for pg8000, noting whether all of it was handed over (pg8000 then sends
    CopyDone and Sync)."""

    def __init__(self, stream: io.IOBase | Iterable[bytes]) -> None:
        self._stream = stream
        self.sent_all = False

    def __iter__(self) -> Iterator[bytes]:
        stream = self._stream
        if isinstance(stream, io.IOBase):
            yield from iter(lambda: stream.read(65536), b"")
        else:
            yield from stream
        self.sent_all = True


class Database:
    """One connection. Every statement costs one wait for the server (a round trip):

    - a statement with parameters is prepared once per connection and then only bound and
      executed (pg8000's unnamed path waits three times per statement: Parse, Describe and
      Bind, Execute; and re-parses the text, in Python and on the server, every time);
    - a statement without parameters goes as one simple Query, several in one if need be
      (``transaction(setup=...)``);
    - COPY goes as a simple Query too, a small body right behind it (one wait), a large
      one after the server's go-ahead (one wait for that, one for its end); statements
      without parameters can follow it in that Query, and a prepared statement can be
      pipelined behind it, in the same wait (``copy_in_then``);
    - a transaction's BEGIN can go with its first statement (``deferred``), its last
      statement with its COMMIT (``at_commit``).

    ``round_trips`` counts the waits (``tickets-devkit bench`` reports them per file).
    """

    # Prepared statements kept per connection: the fixed ones in dal/sql.py plus the
    # loader's per table and column set; the least recently used beyond this is closed.
    PREPARED_LIMIT = 128

    def __init__(self, connection: Any, params: ConnectionParams) -> None:
        self._con = connection
        self.params = params
        self._dead = False
        self._prepared: OrderedDict[str, Any] = OrderedDict()
        self._row_count = -1
        self._done_once: set[str] = set()
        self._parsed: set[str] = set()  # COPY Query texts the server ran (so they parse)
        self._opening = ""  # a deferred BEGIN, not sent yet (``transaction``)
        self._at_commit = ""
        self.answers = 0  # calls the server answered (with rows or an error)
        self.round_trips = 0

    @classmethod
    def connect(
        cls,
        target: str | ConnectionParams,
        *,
        ca_bundle: Path | None = None,
        application_name: str = "tickets-ingest",
        dead_peer_seconds: int = 30,
        server_keepalives: bool = True,
    ) -> Database:
        """Connect to a DATABASE_URL or resolved parameters (see ``dal.credentials``).

        No client-side statement timeout (pg8000's ``timeout`` would kill a legitimately
        long statement); instead a peer that vanished is noticed within about
        ``dead_peer_seconds`` by TCP itself, on both ends (``server_keepalives``).
        """
        params = parse_database_url(target) if isinstance(target, str) else target
        ssl_context = _ssl_context(params, ca_bundle)
        try:
            connection = cls._open(params, ssl_context, application_name, dead_peer_seconds)
        except InterfaceError as error:
            if params.sslmode not in _TLS_OPTIONAL or "refuses SSL" not in str(error):
                raise
            # allow/prefer: a server without TLS is spoken to in plain text, as libpq does.
            connection = cls._open(params, False, application_name, dead_peer_seconds)
        db = cls(connection, params)
        if server_keepalives:
            idle, interval, count = keepalive_timing(dead_peer_seconds)
            db.run(
                sql.SET_SERVER_KEEPALIVES,
                idle=str(idle),
                interval=str(interval),
                count=str(count),
                user_timeout=str(dead_peer_seconds * 1000),
            )
        return db

    @staticmethod
    def _open(
        params: ConnectionParams,
        ssl_context: ssl.SSLContext | bool,
        application_name: str,
        dead_peer_seconds: int,
    ) -> Any:
        # A socket of our own each time (pg8000 closes one whose server refused TLS).
        return pg8000.native.Connection(
            user=params.user,
            password=params.password,
            host=params.host,
            port=params.port,
            database=params.database,
            ssl_context=ssl_context,
            application_name=application_name,
            sock=_open_socket(params.host, params.port, dead_peer_seconds),
        )

    @property
    def broken(self) -> bool:
        """True once the connection can no longer be used; the caller opens a new one."""
        return self._dead or getattr(self._con, "_sock", None) is None

    def close(self) -> None:
        if not self.broken:
            with suppress(InterfaceError, OSError):
                self._con.close()
        self._dead = True

    def _call(
        self,
        sql: str,
        *,
        stream: Any = None,
        data: list[bytes] | None = None,
        behind: Behind | None = None,
        **params: Any,
    ) -> Any:
        """Every statement goes through here: a network failure marks the connection dead.

        pg8000 raises InterfaceError("network error") on a dead socket but keeps the socket
        object, so without this a warm process would reuse a dead connection forever.
        """
        try:
            result = self._send(sql, stream, data, behind, params)
        except DatabaseError:
            self.answers += 1  # the server answered, with an error
            raise
        except (InterfaceError, OSError, struct.error):
            self._dead = True
            with suppress(Exception):
                self._con.close()
            raise
        self.answers += 1
        return result

    def _send(
        self,
        sql: str,
        stream: Any,
        data: list[bytes] | None,
        behind: Behind | None,
        params: dict[str, Any],
    ) -> Any:
        pipelined = None
        if behind is not None:
            if self._opening and behind.sql not in self._prepared:
                # Prepared in the transaction, the first time only (a round trip of its
                # own, the BEGIN before it): preparing waits for the locks of the
                # tables it reads, which must be bounded by the transaction's
                # lock_timeout as any statement of it is.
                opening, self._opening = self._opening, ""
                self._simple(opening)
            pipelined = self._statement(behind.sql)
        opens = False  # this Query opens the transaction itself
        if self._opening:  # a deferred BEGIN goes in front of the first statement
            opening, self._opening = self._opening, ""
            if params:  # a prepared statement: a Query of its own, then
                self._simple(opening)
            else:
                sql, opens = f"{opening};\n{sql}", True
        if data is not None:
            return self._copy_sent_with(sql, data, behind, pipelined, opens=opens)
        if stream is not None:
            return self._simple(sql, stream=stream, waits=2)
        if not params:
            return self._simple(sql)
        return self._execute_prepared(sql, params)

    def _simple(self, sql: str, *, stream: Any = None, waits: int = 1) -> Any:
        """One simple Query (``sql`` may hold several statements; the rows are those of
        every statement that returns rows, one after the other: pg8000 appends them).
        pg8000's own ``run`` sends COPY through the extended protocol (three waits
        before the data); it has no parameters, so the simple Query does it in one."""
        con = self._con
        copy = None if stream is None else _CopySource(stream)
        context = pg8000.core.Context(sql, stream=copy)
        self.round_trips += waits
        con.send_QUERY(sql)
        try:
            con._sock.flush()  # as pg8000's own (private) _flush
        except AttributeError:  # pg8000 set _sock to None: the connection is closed
            raise InterfaceError("connection is closed") from None
        try:
            con.handle_messages(context)
        except DatabaseError:
            if copy is not None:
                self._after_copy(copy)
            raise
        except BaseException:
            if copy is not None and not copy.sent_all:
                # The source failed mid-COPY (a cut download, a bad header): the protocol
                # cannot be resumed on this connection.
                self.close()
            raise
        if copy is not None:
            self._after_copy(copy)
        self._row_count = context.row_count
        return context.rows

    def _copy_sent_with(
        self,
        sql: str,
        data: list[bytes],
        behind: Behind | None = None,
        pipelined: Any = None,
        *,
        opens: bool = False,
    ) -> Any:
        """The COPY statement, its data and CopyDone in one write, then one wait. No Sync
        (that is for the extended protocol): one ReadyForQuery ends it, after success or
        error alike. pg8000 would answer the server's CopyInResponse by sending data, so its
        handler is swapped for one that does nothing while this statement runs.

        ``behind`` (prepared as ``pipelined``): its Bind, Execute and Sync go in the same
        write, after the Query; the server runs it once the Query is done, and its answer
        follows the Query's, ending with its own ReadyForQuery. Both answers are read
        before either error is raised, so the connection stays in step. ``opens``: the
        Query begins the transaction (a deferred BEGIN in front of it)."""
        con = self._con
        open_already = self._in_transaction()
        if behind is not None and not (open_already or opens):
            # Outside a transaction it would run (and commit) even after the Query failed.
            raise RuntimeError("a statement behind a COPY needs the COPY's transaction")
        if behind is not None and not open_already and sql not in self._parsed:
            # The Query opens the transaction itself, and PostgreSQL parses a whole Query
            # before running any of it: a Query that does not parse runs no BEGIN, and a
            # statement behind it would run, and commit, on its own. So the first time a
            # Query text is sent, what goes behind it waits for it (a round trip of its
            # own); a text that parsed once parses again.
            rows = self._copy_sent_with(sql, data)
            copied = self._row_count
            try:
                behind.rows, behind.error = (
                    list(self._execute_prepared(behind.sql, behind.params) or []),
                    None,
                )
            except DatabaseError as error:
                behind.rows, behind.error = None, error
            self._row_count = copied  # the Query's, as when it goes behind
            return rows
        # Its parameters converted before anything is written: a bad one sends nothing.
        bound = (
            pg8000.core.make_params(con.py_types, pipelined.make_vals(behind.params))
            if behind is not None
            else None
        )
        context = pg8000.core.Context(sql)
        self.round_trips += 1
        con.send_QUERY(sql)
        for piece in data:
            con._send_message(pg8000.core.COPY_DATA, piece)
        con._send_message(pg8000.core.COPY_DONE, b"")
        if behind is not None:
            con.send_BIND(pipelined.name_bin, bound)
            con.send_EXECUTE()
            pg8000.core._write(con._sock, pg8000.core.SYNC_MSG)
        try:
            con._sock.flush()
        except AttributeError:  # pg8000 set _sock to None: the connection is closed
            raise InterfaceError("connection is closed") from None
        handlers = con.message_types
        handlers[pg8000.core.COPY_IN_RESPONSE] = _data_sent_already
        try:
            con.handle_messages(context)
        except DatabaseError as error:
            query_error: Exception | None = error
        else:
            query_error = None
        finally:
            handlers[pg8000.core.COPY_IN_RESPONSE] = con.handle_COPY_IN_RESPONSE
        if behind is not None:
            answer = pg8000.core.Context(
                pipelined.statement, columns=pipelined.cols, input_funcs=pipelined.input_funcs
            )
            try:
                con.handle_messages(answer)
            except DatabaseError as error:  # a lost connection is raised: _call sees it
                behind.rows, behind.error = None, error
            else:
                behind.rows, behind.error = list(answer.rows or []), None
        if query_error is not None:
            raise query_error
        if len(self._parsed) >= self.PREPARED_LIMIT:
            self._parsed.clear()
        self._parsed.add(sql)
        self._row_count = context.row_count
        return context.rows

    def _in_transaction(self) -> bool:
        return bool(self._con._transaction_status == pg8000.core.IN_TRANSACTION)

    def _after_copy(self, copy: _CopySource) -> None:
        """pg8000 ends the data with CopyDone and a Sync, made for the extended protocol;
        outside it the server answers that Sync with a second ReadyForQuery (after success
        or error alike), sent right behind the first: read it, or the next statement would."""
        if copy.sent_all:
            self._con.handle_messages(pg8000.core.Context(None))
        else:
            self.close()

    def _statement(self, sql: str) -> Any:
        """``sql`` prepared on this connection (once; the least recently used beyond
        ``PREPARED_LIMIT`` is closed)."""
        statement = self._prepared.get(sql)
        if statement is None:
            self.round_trips += 1
            # A statement that fails to prepare (bad SQL, a missing table) is not kept.
            statement = self._con.prepare(sql)
            self._prepared[sql] = statement
            if len(self._prepared) > self.PREPARED_LIMIT:
                _, oldest = self._prepared.popitem(last=False)
                self.round_trips += 1
                oldest.close()
        else:
            self._prepared.move_to_end(sql)
        return statement

    def _execute_prepared(self, sql: str, params: dict[str, Any]) -> Any:
        statement = self._statement(sql)
        self.round_trips += 1
        rows = statement.run(**params)
        self._row_count = statement._context.row_count  # pg8000 keeps it there
        return rows

    def run(self, sql: str, **params: Any) -> list[list[Any]]:
        rows = self._call(sql, **params)
        return list(rows) if rows is not None else []

    def one(self, sql: str, **params: Any) -> list[Any]:
        rows = self.run(sql, **params)
        if len(rows) != 1:
            raise RuntimeError(f"expected one row, got {len(rows)}")
        return rows[0]

    def scalar(self, sql: str, **params: Any) -> Any:
        return self.one(sql, **params)[0]

    @property
    def row_count(self) -> int:
        """Rows the last statement affected (-1: it does not say)."""
        return self._row_count

    def copy_in(self, sql: str, stream: io.IOBase | Iterable[bytes], *, eager: bool = False) -> int:
        """COPY ... FROM STDIN from ``stream``; the rows copied.

        ``eager`` (a small body): read all of it first, then send it right behind the
        statement, in one round trip. The server takes it once it enters COPY, or ignores
        it if the statement fails (the protocol's rule for copy messages outside COPY); a
        source that fails fails before anything was sent, and the connection stays usable.
        Otherwise the body streams after the server's go-ahead (two waits), in constant
        memory.
        """
        self._copy(sql, stream, eager=eager)
        return self._row_count

    def copy_in_then(
        self,
        sql: str,
        stream: io.IOBase | Iterable[bytes],
        then: str,
        *,
        eager: bool = False,
        behind: Behind | None = None,
    ) -> list[list[Any]]:
        """``copy_in``, then the statements ``then`` (no parameters) in the same Query: no
        round trip of their own. The rows they return; if the COPY fails they do not run
        (a failed statement ends its Query).

        ``behind`` (an ``eager`` COPY in a transaction only): a statement with parameters
        pipelined after the Query, in the same round trip; it finds the transaction
        aborted if the Query failed. What it did is left in it, whatever the Query did.
        """
        if behind is not None and not eager:
            raise ValueError("only a COPY sent with its data has a statement behind it")
        rows = self._copy(f"{sql};\n{then}", stream, eager=eager, behind=behind)
        return list(rows) if rows is not None else []

    def _copy(
        self,
        sql: str,
        stream: io.IOBase | Iterable[bytes],
        *,
        eager: bool,
        behind: Behind | None = None,
    ) -> Any:
        if eager:
            return self._call(sql, data=list(_CopySource(stream)), behind=behind)
        return self._call(sql, stream=stream)

    def once(self, sql: str) -> None:
        """Run ``sql`` (no parameters) once on this connection, in its own transaction (so a
        later rollback cannot undo it): per-connection set-up such as temp tables."""
        if sql not in self._done_once:
            if self._opening or self._in_transaction():
                # It would ride the transaction (a deferred BEGIN goes in front of it), and
                # its rollback would undo what is then remembered as done.
                raise RuntimeError("Database.once inside a transaction: call it before BEGIN")
            self._call(sql)
            self._done_once.add(sql)

    @contextmanager
    def transaction(
        self, *, commit: bool = True, setup: str = "", deferred: bool = False
    ) -> Iterator[list[list[Any]]]:
        """BEGIN ... COMMIT, or ROLLBACK when the block raises (if the connection lives).

        ``commit=False`` rolls back even on success: a dry run does all the work and keeps none.
        ``setup``: statements without parameters (``SET LOCAL ...``, a query) sent with the
        BEGIN, in the same round trip; the block gets the rows of the last of them.
        ``deferred``: BEGIN and ``setup`` go in front of the block's first statement
        without parameters, in its Query (``setup`` must then return no rows). A first
        statement that fails then leaves an aborted transaction: the rollback below ends it.
        ``at_commit`` in the block: a last statement that goes with the COMMIT.
        """
        opening = f"BEGIN;\n{setup}" if setup else "BEGIN"
        rows: Any = None
        if deferred:
            self._opening = opening
        else:
            rows = self._call(opening)
        self._at_commit = ""
        try:
            yield list(rows) if rows is not None else []
            last, self._at_commit = self._at_commit, ""
            end = "COMMIT" if commit else "ROLLBACK"
            # One Query: if ``last`` fails, the COMMIT in it does not run (the rest of a
            # Query is skipped after an error) and the rollback below ends the transaction.
            self._call(f"{last};\n{end}" if last else end)
        except BaseException:
            self._at_commit = ""
            never_opened, self._opening = bool(self._opening), ""
            if not self.broken and not never_opened:
                try:
                    # After a COMMIT that failed there is no transaction left: the server
                    # only warns.
                    self._call("ROLLBACK")
                except (InterfaceError, DatabaseError, OSError):
                    self.close()
            raise

    def at_commit(self, statement: str) -> None:
        """Send ``statement`` (no parameters) with this transaction's COMMIT, in its round
        trip: it runs last, and the transaction commits only if it succeeds."""
        if self._at_commit:
            raise RuntimeError("one statement goes with a COMMIT")
        self._at_commit = statement

    @contextmanager
    def savepoint(self, name: str, *, declared: bool = False) -> Iterator[None]:
        """A savepoint to roll back to if the block fails. Not released on success: the
        commit releases it, and a RELEASE would cost a round trip per file. ``declared``:
        the previous statement declared it already (sent with it, in its round trip)."""
        if not declared:
            self._call(f"SAVEPOINT {name}")
        try:
            yield
        except DatabaseError:
            self._call(f"ROLLBACK TO SAVEPOINT {name}")
            raise


def sqlstate(error: BaseException) -> str:
    """The SQLSTATE of a pg8000 DatabaseError ('' for anything else)."""
    if isinstance(error, DatabaseError) and error.args and isinstance(error.args[0], dict):
        return str(error.args[0].get("C", ""))
    return ""


def error_fields(error: BaseException) -> dict[str, str]:
    if isinstance(error, DatabaseError) and error.args and isinstance(error.args[0], dict):
        return {str(k): str(v) for k, v in error.args[0].items()}
    return {}
