"""Named SQL statements with bind parameters (``:name``). One statement each.

Statements that depend on a dataset's table or a file's column order are built in
``dal.loader`` from validated, quoted identifiers; everything else is here, verbatim.
"""

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

# --- the per-dataset sync lock ---------------------------------------------------------

TRY_DATASET_LOCK = "SELECT pg_try_advisory_lock(hashtextextended('tickets-ingest:' || :dataset, 0))"
# Waits at most lock_timeout (set by the caller for this session).
WAIT_DATASET_LOCK = "SELECT pg_advisory_lock(hashtextextended('tickets-ingest:' || :dataset, 0))"
UNLOCK_DATASET = "SELECT pg_advisory_unlock(hashtextextended('tickets-ingest:' || :dataset, 0))"
SET_LOCK_TIMEOUT = "SELECT set_config('lock_timeout', :timeout, false)"

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

# Naive timestamps in the CSV are source-time-zone wall time; ISO dates; and enough
# work_mem for a baseline's de-duplicating sort to stay in memory instead of spilling.
SET_FILE_SESSION = """
SELECT set_config('TimeZone', :timezone, true),
       set_config('DateStyle', 'ISO, YMD', true),
       set_config('work_mem', '64MB', true)
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
