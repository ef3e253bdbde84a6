-- 0001: the ticket tables, the file ledger, rejected rows and the blocked-file register.

CREATE SCHEMA IF NOT EXISTS tickets;

-- One row per file decision. The watermark is the newest in-order key applied:
-- max(metadata->>'source_max_key') over baseline/delta rows, as the previous consumer kept it.
CREATE TABLE IF NOT EXISTS tickets.import_meta (
    id                     bigint GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
    dataset                text        NOT NULL,
    source_key             text        NOT NULL,
    etag                   text        NOT NULL,
    export_type            text        NOT NULL
        CHECK (export_type IN ('baseline', 'delta', 'late', 'replay', 'quarantine')),
    rows_read              integer     NOT NULL DEFAULT 0,
    rows_upserted          integer     NOT NULL DEFAULT 0,
    rows_skipped_older     integer     NOT NULL DEFAULT 0,
    rows_alarm_filtered    integer     NOT NULL DEFAULT 0,
    rows_sentinel_filtered integer     NOT NULL DEFAULT 0,
    rows_rejected          integer     NOT NULL DEFAULT 0,
    rows_duplicate         integer     NOT NULL DEFAULT 0,
    bytes_read             bigint      NOT NULL DEFAULT 0,
    started_at             timestamptz NOT NULL,
    finished_at            timestamptz NOT NULL DEFAULT clock_timestamp(),
    duration_ms            integer     NOT NULL DEFAULT 0,
    metadata               jsonb       NOT NULL DEFAULT '{}'::jsonb
);

-- The exactly-once guarantee, enforced by the database itself: a key is applied at most
-- once automatically (replays are deliberate operator actions and are not counted).
CREATE UNIQUE INDEX IF NOT EXISTS import_meta_applied_once
    ON tickets.import_meta (dataset, source_key)
    WHERE export_type IN ('baseline', 'delta', 'late');

CREATE INDEX IF NOT EXISTS import_meta_watermark
    ON tickets.import_meta (dataset, (metadata ->> 'source_max_key'))
    WHERE export_type IN ('baseline', 'delta');

CREATE INDEX IF NOT EXISTS import_meta_recent ON tickets.import_meta (dataset, id DESC);

CREATE TABLE IF NOT EXISTS tickets.rejected_rows (
    id          bigint GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
    dataset     text        NOT NULL,
    source_key  text        NOT NULL,
    etag        text        NOT NULL,
    line_number integer     NOT NULL,
    raw_line    text        NOT NULL,
    error       text        NOT NULL,
    rejected_at timestamptz NOT NULL DEFAULT now()
);

CREATE INDEX IF NOT EXISTS rejected_rows_by_file ON tickets.rejected_rows (dataset, source_key);

-- The file a dataset is stopped at, if any; cleared when the stream moves past it.
CREATE TABLE IF NOT EXISTS tickets.blocked_files (
    dataset         text        PRIMARY KEY,
    source_key      text        NOT NULL,
    etag            text        NOT NULL,
    reason          text        NOT NULL,
    line_number     integer,
    column_name     text,
    first_failed_at timestamptz NOT NULL DEFAULT now(),
    last_failed_at  timestamptz NOT NULL DEFAULT now(),
    attempts        integer     NOT NULL DEFAULT 1
);

CREATE TABLE IF NOT EXISTS tickets.incidents (
    ticket_id          text PRIMARY KEY,
    source_type        text,
    service_type       text,
    bucket             text,
    raw_status         text,
    normalized_status  text,
    created_at_service timestamptz,
    scheduled_at       timestamptz,
    closed_at          timestamptz,
    last_seen_at       timestamptz,
    first_seen_at      timestamptz,
    week_start         date,
    week_end           date,
    cluster            text,
    region             text,
    location_name      text,
    latitude           double precision,
    longitude          double precision,
    department         text,
    assigned_team      text,
    owner              text,
    sla_status         text,
    mttr               numeric,
    is_auto_created    boolean,
    is_auto_closed     boolean,
    is_alarm           boolean,
    is_actionable      boolean,
    created_at         timestamptz,
    updated_at         timestamptz,
    source_key         text        NOT NULL,
    ingested_at        timestamptz NOT NULL DEFAULT now()
);

CREATE TABLE IF NOT EXISTS tickets.change_requests (LIKE tickets.incidents INCLUDING ALL);

-- Slow path only (a file whose typed insert failed): the exact PostgreSQL error a value
-- would raise when cast to its column's type, or NULL when it casts.
CREATE OR REPLACE FUNCTION tickets.input_error(value text, kind text) RETURNS text
LANGUAGE plpgsql STABLE AS $$
BEGIN
    IF value IS NULL OR btrim(value) = '' THEN
        RETURN NULL;
    END IF;
    CASE kind
        WHEN 'timestamptz' THEN PERFORM btrim(value)::timestamptz;
        WHEN 'date' THEN PERFORM btrim(value)::date;
        WHEN 'double precision' THEN PERFORM btrim(value)::double precision;
        WHEN 'numeric' THEN PERFORM btrim(value)::numeric;
        WHEN 'boolean' THEN PERFORM btrim(value)::boolean;
        ELSE NULL;
    END CASE;
    RETURN NULL;
EXCEPTION WHEN data_exception THEN
    RETURN SQLERRM;
END;
$$;

-- Trim, collapse inner whitespace, then map case-insensitively through the alias table.
CREATE OR REPLACE FUNCTION tickets.normalize_label(value text, aliases jsonb) RETURNS text
LANGUAGE sql IMMUTABLE PARALLEL SAFE AS $$
    SELECT nullif(coalesce(aliases ->> lower(cleaned), cleaned), '')
    FROM (SELECT btrim(regexp_replace(value, '\s+', ' ', 'g')) AS cleaned) AS c
$$;

-- One CSV field as the exporter would have written it (for rejected_rows.raw_line).
CREATE OR REPLACE FUNCTION tickets.csv_field(value text) RETURNS text
LANGUAGE sql IMMUTABLE PARALLEL SAFE AS $$
    SELECT CASE
        WHEN value IS NULL THEN ''
        WHEN value = '' OR value ~ '[",\r\n]' THEN '"' || replace(value, '"', '""') || '"'
        ELSE value
    END
$$;
