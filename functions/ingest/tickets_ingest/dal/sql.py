"""Named SQL statements with bind parameters (``:name``). One statement each.

Statements that depend on a dataset's table or a file's column order are built in
``dal.loader`` from validated, quoted identifiers; everything else is here, verbatim.
"""

import re
from typing import Any

from pg8000.native import literal

# A bind parameter: ``:name``, not the second colon of a ``::`` cast.
_PARAMETER = re.compile(r"(?<![:\w]):(\w+)")


def with_literals(statement: str, **values: Any) -> str:
    """``statement`` with each ``:name`` replaced by its value as a literal, to be sent in a
    simple Query with others (which takes no parameters). Quotes are doubled, as the SQL
    standard says; only for a transaction with ``standard_conforming_strings`` on, as
    ``FILE_SESSION`` sets it (a backslash is then an ordinary character). A ``:name``
    without a value raises ``KeyError``, also one inside a string of the statement: ours
    have none, and a wrong value must never be sent."""
    return _PARAMETER.sub(lambda m: str(literal(values[m.group(1)])), statement)


# --- migrations ------------------------------------------------------------------------

CREATE_MIGRATIONS_TABLE = """
CREATE SCHEMA IF NOT EXISTS tickets;
CREATE TABLE IF NOT EXISTS tickets.schema_migrations (
    version    integer PRIMARY KEY,
    name       text        NOT NULL,
    checksum   text        NOT NULL,
    applied_at timestamptz NOT NULL DEFAULT now()
)
"""

LOCK_MIGRATIONS = "SELECT pg_advisory_lock(hashtextextended('tickets-ingest:migrations', 0))"
UNLOCK_MIGRATIONS = "SELECT pg_advisory_unlock(hashtextextended('tickets-ingest:migrations', 0))"

APPLIED_MIGRATIONS = "SELECT version, checksum FROM tickets.schema_migrations ORDER BY version"

# NULL until the first migration ran; reading it needs no privilege on the schema.
MIGRATIONS_TABLE_EXISTS = "SELECT to_regclass('tickets.schema_migrations')::text"

RECORD_MIGRATION = """
INSERT INTO tickets.schema_migrations (version, name, checksum)
VALUES (:version, :name, :checksum)
"""

# --- the per-dataset sync lock and its lease (dal/lease.py) ---------------------------

TRY_DATASET_LOCK = "SELECT pg_try_advisory_lock(hashtextextended('tickets-ingest:' || :dataset, 0))"
UNLOCK_DATASET = "SELECT pg_advisory_unlock(hashtextextended('tickets-ingest:' || :dataset, 0))"

# The backend holding the dataset's advisory lock, with its backend_start: a pid alone may
# already belong to another session (pids are reused). backend_start is NULL for another
# role's session unless this role has pg_read_all_stats.
LOCK_HOLDER = """
SELECT a.pid, a.application_name, a.client_addr::text, a.backend_start
FROM pg_locks AS l
JOIN pg_stat_activity AS a ON a.pid = l.pid
WHERE l.locktype = 'advisory' AND l.granted
  AND (l.classid::bigint << 32) | l.objid::bigint
      = hashtextextended('tickets-ingest:' || :dataset, 0)
  AND a.pid <> pg_backend_pid()
LIMIT 1
"""

# Try the lock and, if it is ours, name this backend in the lease: one round trip (the
# advisory lock is a session lock, it outlives this statement). No row: the lock is held.
# The news counter is kept (a holder only compares it with what it read here).
TAKE_DATASET_LOCK = """
WITH locked AS MATERIALIZED (
    SELECT pg_try_advisory_lock(hashtextextended('tickets-ingest:' || :dataset, 0)) AS ok
)
INSERT INTO tickets.dataset_leases AS l (
    dataset, holder_pid, holder_started, holder_name, takes_news, stale_seconds,
    acquired_at, heartbeat_at, waiting_for
)
SELECT :dataset, a.pid, a.backend_start, a.application_name, :takes_news, :stale_seconds,
       clock_timestamp(), clock_timestamp(), NULL
FROM pg_stat_activity AS a, locked
WHERE a.pid = pg_backend_pid() AND locked.ok
ON CONFLICT (dataset) DO UPDATE SET
    holder_pid = excluded.holder_pid,
    holder_started = excluded.holder_started,
    holder_name = excluded.holder_name,
    takes_news = excluded.takes_news,
    stale_seconds = excluded.stale_seconds,
    acquired_at = excluded.acquired_at,
    heartbeat_at = excluded.heartbeat_at,
    waiting_for = NULL
RETURNING l.news, l.holder_pid, l.holder_started
"""

# After a reconnect: move the lease to the new backend, only if it still names the old
# one. No row: a contender claimed it meanwhile (the lock was taken over).
LEASE_REBIND = """
UPDATE tickets.dataset_leases AS l
SET holder_pid = a.pid, holder_started = a.backend_start, heartbeat_at = clock_timestamp()
FROM pg_stat_activity AS a
WHERE a.pid = pg_backend_pid()
  AND l.dataset = :dataset AND l.holder_pid = :pid AND l.holder_started = :started
RETURNING l.holder_pid, l.holder_started
"""

# The heartbeat (on its own connection): proves the holder alive, and samples what its
# apply backend waits for, so a lock wait that times out can name who held the lock.
# No row: the lease was claimed by a contender.
LEASE_HEARTBEAT = """
UPDATE tickets.dataset_leases
SET heartbeat_at = clock_timestamp(),
    waiting_for = (
        SELECT string_agg(
            format('pid %s (%s, %s since %s: %s)', a.pid,
                   coalesce(nullif(a.application_name, ''), 'no application_name'),
                   coalesce(a.state, 'state unknown'),
                   to_char(a.xact_start AT TIME ZONE 'UTC', 'HH24:MI:SS "UTC"'),
                   coalesce(left(regexp_replace(a.query, '[[:space:]]+', ' ', 'g'), 120),
                            'query unknown')),
            '; ' ORDER BY a.pid)
        FROM pg_stat_activity AS a
        WHERE a.pid = ANY (pg_blocking_pids(:pid))
    )
WHERE dataset = :dataset AND holder_pid = :pid AND holder_started = :started
RETURNING news, waiting_for
"""

LEASE = """
SELECT holder_pid, holder_started, holder_name, takes_news, stale_seconds,
       extract(epoch FROM clock_timestamp() - heartbeat_at)::float8, news, waiting_for
FROM tickets.dataset_leases
WHERE dataset = :dataset
"""

# A contender found the holder alive: the holder lists again before it lets go, so this
# sync's news is picked up. Only a holder heard from very recently (a third of its stale
# time: about one heartbeat) is trusted with it; one quiet for longer may be dead, and the
# contender waits to take it over instead. No row: not handed over (not taking news, or
# letting go, or quiet).
LEASE_BUMP_NEWS = """
UPDATE tickets.dataset_leases
SET news = news + 1
WHERE dataset = :dataset AND holder_pid = :pid AND holder_started = :started AND takes_news
  AND heartbeat_at >= clock_timestamp() - make_interval(secs => stale_seconds / 3)
RETURNING news
"""

# A contender claims a stale lease before ending its holder's backend: one statement, so
# two contenders (or a contender and the holder's own reconnect) cannot both win.
LEASE_CLAIM = """
UPDATE tickets.dataset_leases AS l
SET holder_pid = a.pid, holder_started = a.backend_start, holder_name = a.application_name,
    takes_news = :takes_news, stale_seconds = :stale_seconds, heartbeat_at = clock_timestamp(),
    acquired_at = clock_timestamp(), waiting_for = NULL
FROM pg_stat_activity AS a
WHERE a.pid = pg_backend_pid()
  AND l.dataset = :dataset AND l.holder_pid = :pid AND l.holder_started = :started
  AND l.heartbeat_at < clock_timestamp() - make_interval(secs => l.stale_seconds)
RETURNING l.news
"""

# Ends the claimed holder's backend, only if that pid is still the same session. Its open
# transaction rolls back: a file's rows and ledger row commit together, so nothing is
# half-applied. Needs the same role, or pg_signal_backend.
TERMINATE_HOLDER = """
SELECT pg_terminate_backend(a.pid)
FROM pg_stat_activity AS a
WHERE a.pid = :pid AND a.backend_start = :started
"""

# Let go unless news arrived since ``seen`` (then no row: the holder lists again first):
# the lease and the advisory lock in one round trip.
RELEASE_UNLESS_NEWS = """
WITH released AS (
    UPDATE tickets.dataset_leases
    SET holder_pid = NULL, holder_started = NULL, takes_news = false, waiting_for = NULL
    WHERE dataset = :dataset AND holder_pid = :pid AND holder_started = :started
      AND news = :seen
    RETURNING news
)
SELECT pg_advisory_unlock(hashtextextended('tickets-ingest:' || :dataset, 0)) FROM released
"""

# A claim that did not lead to the lock is undone: the lease names the silent holder again,
# as silent as it was, so the next contender can try.
LEASE_UNCLAIM = """
UPDATE tickets.dataset_leases
SET holder_pid = :pid, holder_started = :started, heartbeat_at = to_timestamp(0),
    takes_news = false
WHERE dataset = :dataset AND holder_pid = pg_backend_pid()
"""

# Let go whatever the news (a dry run, a failed or stopped sync, a replay).
RELEASE = """
WITH released AS (
    UPDATE tickets.dataset_leases
    SET holder_pid = NULL, holder_started = NULL, takes_news = false, waiting_for = NULL
    WHERE dataset = :dataset AND holder_pid = :pid AND holder_started = :started
)
SELECT pg_advisory_unlock(hashtextextended('tickets-ingest:' || :dataset, 0))
"""

# Who holds a lock on the table the apply needs (a fallback when the heartbeat had no
# sample of the wait): anything beyond a plain reader's AccessShareLock.
TABLE_LOCK_HOLDERS = """
SELECT DISTINCT a.pid, coalesce(nullif(a.application_name, ''), 'no application_name'),
       coalesce(a.state, 'state unknown'), l.mode,
       coalesce(left(regexp_replace(a.query, '[[:space:]]+', ' ', 'g'), 120), 'query unknown')
FROM pg_locks AS l
JOIN pg_stat_activity AS a ON a.pid = l.pid
WHERE l.locktype = 'relation' AND l.granted AND l.mode <> 'AccessShareLock'
  AND l.relation = to_regclass(:table) AND a.pid <> pg_backend_pid()
ORDER BY a.pid
"""

# --- ledger and watermark --------------------------------------------------------------

WATERMARK = """
SELECT max(metadata ->> 'source_max_key')
FROM tickets.import_meta
WHERE dataset = :dataset AND export_type IN ('baseline', 'delta', 'replay')
"""

APPLIED_ETAGS = """
SELECT source_key, etag
FROM tickets.import_meta
WHERE dataset = :dataset
  AND export_type IN ('baseline', 'delta', 'late', 'replay')
  AND source_key = ANY(CAST(:keys AS text[]))
"""

RECORD_FILE = """
INSERT INTO tickets.import_meta (
    dataset, source_key, etag, export_type,
    rows_read, rows_upserted, rows_skipped_older, rows_alarm_filtered,
    rows_sentinel_filtered, rows_rejected, rows_duplicate, bytes_read,
    started_at, finished_at, duration_ms, metadata
) VALUES (
    :dataset, :source_key, :etag, :export_type,
    :rows_read, :rows_upserted, :rows_skipped_older, :rows_alarm_filtered,
    :rows_sentinel_filtered, :rows_rejected, :rows_duplicate, :bytes_read,
    :started_at, clock_timestamp(), :duration_ms, CAST(:metadata AS jsonb)
)
"""

# An applied file unblocks its dataset: the register is cleared with the ledger row, in the
# same statement (one round trip less per file).
RECORD_FILE_AND_UNBLOCK = (
    "WITH unblocked AS (DELETE FROM tickets.blocked_files WHERE dataset = :dataset)" + RECORD_FILE
)

# --- the blocked-file register ---------------------------------------------------------

MARK_BLOCKED = """
INSERT INTO tickets.blocked_files AS b
    (dataset, source_key, etag, reason, line_number, column_name)
VALUES (:dataset, :source_key, :etag, :reason, :line_number, :column_name)
ON CONFLICT (dataset) DO UPDATE SET
    source_key = excluded.source_key,
    etag = excluded.etag,
    reason = excluded.reason,
    line_number = excluded.line_number,
    column_name = excluded.column_name,
    first_failed_at = CASE
        WHEN b.source_key = excluded.source_key AND b.etag = excluded.etag THEN b.first_failed_at
        ELSE now() END,
    attempts = CASE
        WHEN b.source_key = excluded.source_key AND b.etag = excluded.etag THEN b.attempts + 1
        ELSE 1 END,
    last_failed_at = now()
"""

CLEAR_BLOCKED = "DELETE FROM tickets.blocked_files WHERE dataset = :dataset"

BLOCKED_FILE = """
SELECT source_key, etag, reason, line_number, column_name, first_failed_at, attempts
FROM tickets.blocked_files
WHERE dataset = :dataset
"""

# --- the pause register (logic/pause.py) ---------------------------------------------

DATASET_PAUSE = """
SELECT paused_by, paused_at, reason FROM tickets.dataset_pauses WHERE dataset = :dataset
"""


def pause_check(dataset: str) -> str:
    """``DATASET_PAUSE`` with the dataset as a literal, sent last with a file's BEGIN (the
    simple Query takes no parameters): a sync learns of a pause in the round trip that
    opens the file's transaction, not in one of its own."""
    return DATASET_PAUSE.replace(":dataset", literal(dataset))


# No row: the dataset was paused already (the first pause, its who and why, stays).
PAUSE_DATASET = """
INSERT INTO tickets.dataset_pauses (dataset, paused_by, reason)
VALUES (:dataset, :paused_by, :reason)
ON CONFLICT (dataset) DO NOTHING
RETURNING paused_by, paused_at, reason
"""

# No row: the dataset was not paused.
RESUME_DATASET = """
DELETE FROM tickets.dataset_pauses WHERE dataset = :dataset
RETURNING paused_by, paused_at, reason
"""

# --- status ----------------------------------------------------------------------------

LEDGER_TOTALS = """
SELECT count(*) FILTER (WHERE export_type IN ('baseline', 'delta', 'late')),
       count(*) FILTER (WHERE export_type = 'late'),
       max(finished_at) FILTER (WHERE export_type IN ('baseline', 'delta', 'late'))
FROM tickets.import_meta
WHERE dataset = :dataset
"""

REJECTED_ROW_COUNT = "SELECT count(*) FROM tickets.rejected_rows WHERE dataset = :dataset"

# --- applying one file (session settings for this transaction only) -------------------

# Naive timestamps in the CSV are source-time-zone wall time; ISO dates; enough work_mem
# for a baseline's de-duplicating sort to stay in memory instead of spilling; and bounded
# waits: a row or table lock held by another session ends this file's transaction after
# lock_timeout (55P03), a statement stuck for any other reason after statement_timeout
# (57014), instead of wedging the dataset. Strings quoted as the standard says, whatever
# the server's or the role's default (``with_literals``). All for this transaction only.
FILE_SESSION = """
SET LOCAL standard_conforming_strings = on;
SET LOCAL TimeZone = {timezone};
SET LOCAL DateStyle = 'ISO, YMD';
SET LOCAL work_mem = '64MB';
SET LOCAL lock_timeout = {lock_timeout};
SET LOCAL statement_timeout = {statement_timeout}
"""


def file_session(timezone: str, lock_timeout_ms: int, statement_timeout_ms: int) -> str:
    """``FILE_SESSION`` with its values as literals: it is sent with the BEGIN in one
    simple Query (one round trip), which takes no parameters. The values are settings
    (a validated time zone name, integers), quoted all the same."""
    return FILE_SESSION.format(
        timezone=literal(timezone),
        lock_timeout=literal(f"{int(lock_timeout_ms)}ms"),
        statement_timeout=literal(f"{int(statement_timeout_ms)}ms"),
    )


# Per session (never startup options: RDS Proxy refuses them), so the server notices a
# client that vanished without a FIN. A SET pins an RDS Proxy session, as the session
# advisory lock already does. tcp_user_timeout is in milliseconds.
SET_SERVER_KEEPALIVES = """
SELECT set_config('tcp_keepalives_idle', :idle, false),
       set_config('tcp_keepalives_interval', :interval, false),
       set_config('tcp_keepalives_count', :count, false),
       set_config('tcp_user_timeout', :user_timeout, false)
"""

TABLE_COLUMNS = """
SELECT a.attname
FROM pg_attribute AS a
JOIN pg_class AS c ON c.oid = a.attrelid
JOIN pg_namespace AS n ON n.oid = c.relnamespace
WHERE n.nspname = 'tickets' AND c.relname = :table AND a.attnum > 0 AND NOT a.attisdropped
"""

# Newest first; optional filters are NULL when not given.
HISTORY = """
SELECT id, source_key, etag, export_type, rows_read, rows_upserted, rows_skipped_older,
       rows_alarm_filtered, rows_sentinel_filtered, rows_rejected, rows_duplicate,
       bytes_read, finished_at, duration_ms, metadata
FROM tickets.import_meta
WHERE dataset = :dataset
  AND (CAST(:export_type AS text) IS NULL OR export_type = :export_type)
  AND (CAST(:since AS timestamptz) IS NULL OR finished_at >= :since)
ORDER BY id DESC
LIMIT :limit
"""

# --- dataset activity: last message, last error (dal/activity.py) ----------------------

# One upsert a message: the function calls it for every message it acts on, so it must
# stay one round trip. The error columns are left as they are.
NOTE_MESSAGE = """
INSERT INTO tickets.dataset_activity AS a
    (dataset, last_message_at, last_message_kind, last_message_key)
VALUES (:dataset, clock_timestamp(), :kind, :key)
ON CONFLICT (dataset) DO UPDATE SET
    last_message_at = excluded.last_message_at,
    last_message_kind = excluded.last_message_kind,
    last_message_key = excluded.last_message_key
"""

# The last error replaces the one before; a success clears nothing (status shows its age).
NOTE_ERROR = """
INSERT INTO tickets.dataset_activity AS a
    (dataset, last_error_at, last_error_kind, last_error_key, last_error)
VALUES (:dataset, clock_timestamp(), :kind, :key, :message)
ON CONFLICT (dataset) DO UPDATE SET
    last_error_at = excluded.last_error_at,
    last_error_kind = excluded.last_error_kind,
    last_error_key = excluded.last_error_key,
    last_error = excluded.last_error
"""

DATASET_ACTIVITY = """
SELECT last_message_at, last_message_kind, last_message_key,
       last_error_at, last_error_kind, last_error_key, last_error
FROM tickets.dataset_activity
WHERE dataset = :dataset
"""

# The newest file applied (any kind that applies rows), and, if its ledger row carries
# metadata.schema_drift, the first file of the unbroken run of files with that same drift
# before it ("drifting since"). No row: nothing applied yet. Uses import_meta_recent.
LAST_APPLIED = """
WITH applied AS (
    SELECT id, source_key, finished_at, export_type, metadata -> 'schema_drift' AS drift
    FROM tickets.import_meta
    WHERE dataset = :dataset AND export_type IN ('baseline', 'delta', 'late', 'replay')
),
newest AS (SELECT * FROM applied ORDER BY id DESC LIMIT 1)
SELECT n.source_key, n.finished_at, n.export_type, n.drift,
       (SELECT a.source_key FROM applied AS a
        WHERE n.drift IS NOT NULL AND a.drift = n.drift
          AND a.id > coalesce((SELECT max(b.id) FROM applied AS b
                               WHERE b.drift IS DISTINCT FROM n.drift), 0)
        ORDER BY a.id LIMIT 1)
FROM newest AS n
"""
