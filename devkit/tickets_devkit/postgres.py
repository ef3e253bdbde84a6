"""A throwaway local PostgreSQL server for tests, the demo and the benchmark.

Only the PostgreSQL server binaries need to be installed. When running as root
(CI does), ``initdb`` and ``pg_ctl`` refuse to run, so just those two binaries
are run as an unprivileged system user through ``runuser``; Python itself never
drops privileges (its install lives in root's home, unreadable to others).
"""

from __future__ import annotations

import atexit
import contextlib
import grp
import os
import pwd
import re
import shlex
import shutil
import signal
import socket
import stat
import subprocess
import tempfile
import time
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from types import TracebackType
from typing import Any

import pg8000.native

__all__ = ["LocalPostgres", "PostgresUnavailable", "start_postgres"]

SUPERUSER = "postgres"
HOST = "127.0.0.1"
FALLBACK_OS_USER = "tickets-pg"

_DB_NAME = re.compile(r"^[a-z_][a-z0-9_]{0,62}$")
_SETTING_NAME = re.compile(r"^[A-Za-z_][A-Za-z0-9_.]*$")
_START_ATTEMPTS = 5
# C.UTF-8: byte-order collation (deterministic, fast) but Unicode-aware upper()/lower().
_INITDB_ARGS = ("-A", "trust", "-E", "UTF8", "--locale=C.UTF-8", "--no-sync", "--no-instructions")
_STOP_ARGS = ("-m", "fast", "-w", "-t", "30")
# Linux sun_path is 108 bytes including the NUL; PostgreSQL appends "/.s.PGSQL.NNNNN".
_MAX_SOCKET_DIR = 107 - len("/.s.PGSQL.65535")
_INSTALL_HINT = (
    "Install the PostgreSQL server binaries (Debian: `apt-get install postgresql`) "
    "or set PG_BINDIR to the directory that contains initdb and pg_ctl."
)


class PostgresUnavailable(RuntimeError):
    """A local PostgreSQL server cannot be found, initialised or started."""


@dataclass
class LocalPostgres:
    """A running throwaway server; ``stop()`` (or leaving the ``with`` block) removes it."""

    host: str
    port: int
    user: str  # database superuser (trust auth, no password)
    datadir: Path
    bindir: Path
    os_user: str = ""  # account the server runs as
    _root: Path | None = field(default=None, repr=False)  # temp dir we own and delete
    _run_as: str | None = field(default=None, repr=False)
    _stopped: bool = field(default=False, repr=False)

    @property
    def pid(self) -> int:
        """The postmaster's process (its backends are its children)."""
        return int((self.datadir / "postmaster.pid").read_text().split()[0])

    def url(self, dbname: str = "postgres") -> str:
        """Connection URL for ``dbname`` over TCP."""
        return f"postgresql://{self.user}@{self.host}:{self.port}/{dbname}"

    @property
    def logfile(self) -> Path:
        """The server log (removed by ``stop()``)."""
        return self.datadir.parent / "postgres.log"

    def create_database(self, name: str, template: str | None = None) -> str:
        """Create database ``name`` (optionally copied from ``template``); return its URL.

        A template must have no open connections while it is copied.
        """
        sql = f"CREATE DATABASE {_ident(name)}"
        if template is not None:
            sql += f" TEMPLATE {_ident(template)}"
        with self._admin() as con:
            con.run(sql)
        return self.url(name)

    def drop_database(self, name: str) -> None:
        """Drop ``name`` if it exists, terminating any sessions still connected to it."""
        with self._admin() as con:
            con.run(f"DROP DATABASE IF EXISTS {_ident(name)} WITH (FORCE)")

    def stop(self) -> None:
        """Stop the server and delete its directory. Idempotent; copes with a dead server."""
        if self._stopped:
            return
        self._stopped = True
        with contextlib.suppress(Exception):
            atexit.unregister(self.stop)
        try:
            if (self.datadir / "postmaster.pid").exists():
                result = _run(
                    [str(self.bindir / "pg_ctl"), "stop", "-D", str(self.datadir), *_STOP_ARGS],
                    run_as=self._run_as,
                    cwd=self.datadir.parent,
                    check=False,
                )
                if result.returncode != 0:
                    _kill_leftover_postmaster(self.datadir)
        finally:
            if self._root is not None:
                shutil.rmtree(self._root, ignore_errors=True)

    def __enter__(self) -> LocalPostgres:
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.stop()

    @contextlib.contextmanager
    def _admin(self) -> Iterator[Any]:
        con = pg8000.native.Connection(
            # Our own server has no TLS: don't let pg8000 try it (and load a CA store).
            user=self.user,
            host=self.host,
            port=self.port,
            database="postgres",
            ssl_context=False,
        )
        try:
            yield con
        finally:
            con.close()


def start_postgres(
    *,
    fsync: bool = False,
    settings: dict[str, str] | None = None,
    base_dir: Path | None = None,
) -> LocalPostgres:
    """Initialise and start a fresh server on a free 127.0.0.1 port.

    ``fsync=False`` (tests) also turns off synchronous_commit and full_page_writes;
    the benchmark passes ``fsync=True`` to keep server defaults. ``settings`` adds
    ``-c name=value`` options. The data and socket directories live in a new temp
    dir under ``base_dir`` (default ``/tmp``), which is deleted on ``stop()``.
    """
    bindir = find_bindir()
    run_as = _unprivileged_user() if os.geteuid() == 0 else None
    os_user = run_as or pwd.getpwuid(os.geteuid()).pw_name

    base = (base_dir or Path(tempfile.gettempdir())).resolve()
    base.mkdir(parents=True, exist_ok=True)
    if run_as is not None:
        _check_traversable(base, run_as)
    root = Path(tempfile.mkdtemp(prefix="tickets-pg-", dir=base))
    try:
        return _init_and_start(
            bindir=bindir,
            root=root,
            run_as=run_as,
            os_user=os_user,
            fsync=fsync,
            settings=settings or {},
        )
    except BaseException:
        shutil.rmtree(root, ignore_errors=True)
        raise


def find_bindir() -> Path:
    """Locate initdb/pg_ctl: $PG_BINDIR, ``pg_config --bindir``, newest Debian install, PATH."""
    env_dir = os.environ.get("PG_BINDIR")
    if env_dir:
        path = Path(env_dir)
        if _has_server_binaries(path):
            return path
        raise PostgresUnavailable(f"PG_BINDIR={env_dir} has no initdb/pg_ctl. {_INSTALL_HINT}")

    # pg_config may come from libpq-dev alone, pointing at a bindir without initdb.
    pg_config = shutil.which("pg_config")
    if pg_config:
        with contextlib.suppress(OSError, subprocess.SubprocessError):
            out = subprocess.run(
                [pg_config, "--bindir"], capture_output=True, text=True, check=True, timeout=10
            ).stdout.strip()
            if out and _has_server_binaries(Path(out)):
                return Path(out)

    def version(p: Path) -> tuple[int, ...]:
        return tuple(int(x) for x in re.findall(r"\d+", p.parent.name)) or (0,)

    debian = sorted(Path("/usr/lib/postgresql").glob("*/bin"), key=version, reverse=True)
    for candidate in debian:
        if _has_server_binaries(candidate):
            return candidate

    initdb = shutil.which("initdb")
    if initdb:
        path = Path(initdb).resolve().parent
        if _has_server_binaries(path):
            return path
    raise PostgresUnavailable(f"No PostgreSQL server binaries found. {_INSTALL_HINT}")


def _has_server_binaries(path: Path) -> bool:
    return all(os.access(path / name, os.X_OK) for name in ("initdb", "pg_ctl", "postgres"))


def _ident(name: str) -> str:
    if not _DB_NAME.fullmatch(name):
        raise ValueError(f"invalid database name {name!r} (expected {_DB_NAME.pattern})")
    return str(pg8000.native.identifier(name))


def _unprivileged_user() -> str:
    """The system user to run the server as when we are root (created if needed)."""
    for name in ("postgres", FALLBACK_OS_USER):
        with contextlib.suppress(KeyError):
            pwd.getpwnam(name)
            return name
    if shutil.which("runuser") is None or shutil.which("useradd") is None:
        raise PostgresUnavailable(
            "Running as root: PostgreSQL must run as an unprivileged user, which needs "
            "`runuser` and `useradd` (Debian: util-linux, passwd). Or run as a normal user."
        )
    result = subprocess.run(
        [
            "useradd",
            "--system",
            "--no-create-home",
            "--shell",
            "/usr/sbin/nologin",
            FALLBACK_OS_USER,
        ],
        capture_output=True,
        text=True,
        check=False,
    )
    try:  # a parallel session may have created it first (useradd exits 9)
        pwd.getpwnam(FALLBACK_OS_USER)
    except KeyError:
        raise PostgresUnavailable(
            f"Could not create system user {FALLBACK_OS_USER!r}: {result.stderr.strip()}"
        ) from None
    return FALLBACK_OS_USER


def _check_traversable(path: Path, user: str) -> None:
    """Fail early, with the fix, if ``user`` cannot reach ``path``.

    We do not chmod parents ourselves: opening up e.g. /root is not ours to decide.
    """
    entry = pwd.getpwnam(user)
    groups = {entry.pw_gid} | {g.gr_gid for g in grp.getgrall() if user in g.gr_mem}
    for p in [path, *path.parents]:
        st = p.stat()
        if st.st_uid == entry.pw_uid:
            ok = bool(st.st_mode & stat.S_IXUSR)
        elif st.st_gid in groups:
            ok = bool(st.st_mode & stat.S_IXGRP)
        else:
            ok = bool(st.st_mode & stat.S_IXOTH)
        if not ok:
            raise PostgresUnavailable(
                f"User {user!r} (which runs PostgreSQL because we are root) cannot traverse "
                f"{p}. Pass base_dir= a directory under /tmp, or run `chmod o+x {p}`."
            )


def _init_and_start(
    *,
    bindir: Path,
    root: Path,
    run_as: str | None,
    os_user: str,
    fsync: bool,
    settings: dict[str, str],
) -> LocalPostgres:
    datadir = root / "data"
    sockdir = root / "sock"
    logfile = root / "postgres.log"
    if len(str(sockdir)) > _MAX_SOCKET_DIR:
        raise PostgresUnavailable(
            f"Socket path under {root} is too long for a unix socket; use a shorter base_dir."
        )
    sockdir.mkdir()
    root.chmod(0o700)
    if run_as is not None:
        entry = pwd.getpwnam(run_as)
        for p in (root, sockdir):
            os.chown(p, entry.pw_uid, entry.pw_gid)

    initdb = _run(
        [str(bindir / "initdb"), "-D", str(datadir), "-U", SUPERUSER, *_INITDB_ARGS],
        run_as=run_as,
        cwd=root,
        check=False,
    )
    if initdb.returncode != 0:
        raise PostgresUnavailable(
            f"initdb failed (exit {initdb.returncode}, as {os_user}):\n"
            f"{(initdb.stdout + initdb.stderr).strip()[-3000:]}"
        )

    options = {"listen_addresses": HOST}
    if not fsync:
        # Throwaway data: durability only costs time here.
        options |= {"fsync": "off", "synchronous_commit": "off", "full_page_writes": "off"}
    for name, value in settings.items():
        if not _SETTING_NAME.fullmatch(name):
            raise ValueError(f"invalid PostgreSQL setting name {name!r}")
        options[name] = value

    last_error = ""
    for _ in range(_START_ATTEMPTS):
        port = _free_port()
        # pg_ctl hands -o to /bin/sh, hence the quoting.
        opts = ["-p", str(port), "-k", str(sockdir)]
        for name, value in options.items():
            opts += ["-c", f"{name}={value}"]
        result = _run(
            [
                str(bindir / "pg_ctl"),
                "start",
                "-w",
                "-t",
                "60",
                "-D",
                str(datadir),
                "-l",
                str(logfile),
                "-o",
                shlex.join(opts),
            ],
            run_as=run_as,
            cwd=root,
            check=False,
        )
        pg = LocalPostgres(
            host=HOST,
            port=port,
            user=SUPERUSER,
            datadir=datadir,
            bindir=bindir,
            os_user=os_user,
            _root=root,
            _run_as=run_as,
        )
        if result.returncode == 0:
            atexit.register(pg.stop)
            return pg
        # A timed-out start can leave a postmaster behind; never leak one.
        _kill_leftover_postmaster(datadir)
        log = _tail(logfile)
        last_error = f"{(result.stdout + result.stderr).strip()}\n--- server log ---\n{log}"
        # Another process may have grabbed the port between our probe and the bind.
        if "could not bind" not in log and "already in use" not in log:
            break
    raise PostgresUnavailable(f"PostgreSQL failed to start (as {os_user}):\n{last_error}")


def _run(
    argv: list[str], *, run_as: str | None, cwd: Path, check: bool
) -> subprocess.CompletedProcess[str]:
    if run_as is not None:
        argv = ["runuser", "-u", run_as, "--", *argv]
    # PG* variables (PGDATA, PGPORT, ...) from the caller must not redirect the tools.
    env = {k: v for k, v in os.environ.items() if not k.startswith("PG")}
    return subprocess.run(
        argv,
        cwd=cwd,  # the caller's cwd may be unreadable to the unprivileged user
        env=env,
        stdin=subprocess.DEVNULL,
        capture_output=True,
        text=True,
        check=check,
        timeout=120,
    )


def _free_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.bind((HOST, 0))
        return int(s.getsockname()[1])


def _tail(path: Path, lines: int = 40) -> str:
    try:
        return "\n".join(path.read_text(errors="replace").splitlines()[-lines:])
    except OSError:
        return "(no server log)"


def _kill_leftover_postmaster(datadir: Path) -> None:
    """Last resort when ``pg_ctl stop`` fails: signal the postmaster in the pid file.

    The pid is only trusted if that process was started on this data dir, so a
    recycled pid of some unrelated process is never signalled.
    """
    try:
        pid = int((datadir / "postmaster.pid").read_text().splitlines()[0])
        cmdline = Path(f"/proc/{pid}/cmdline").read_bytes()
    except (OSError, ValueError, IndexError):
        return
    if str(datadir).encode() not in cmdline:
        return
    for sig, wait in ((signal.SIGQUIT, 5.0), (signal.SIGKILL, 5.0)):
        try:
            os.kill(pid, sig)
        except ProcessLookupError:
            return
        deadline = time.monotonic() + wait
        while time.monotonic() < deadline:
            if not Path(f"/proc/{pid}").exists():
                return
            time.sleep(0.05)
