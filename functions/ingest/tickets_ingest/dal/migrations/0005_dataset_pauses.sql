-- 0005: an operator can pause a dataset for planned work on the target (a migration, a
-- restore, a vacuum) and resume it. While a row is here, nothing applies to the dataset;
-- its messages are acknowledged, and the resume catches up by re-listing (nothing is lost:
-- the files wait in changes/).

CREATE TABLE IF NOT EXISTS tickets.dataset_pauses (
    dataset   text        PRIMARY KEY,
    paused_by text        NOT NULL,
    paused_at timestamptz NOT NULL DEFAULT clock_timestamp(),
    reason    text        NOT NULL CHECK (btrim(reason) <> '')
);

-- Each pause and resume is also a decision in the ledger, beside quarantines, so `history`
-- shows who held the stream and when. Their rows name the dataset's changes/ prefix (no
-- file), and no watermark, applied-ETag or totals query counts them (they all filter on
-- the file kinds), nor does the applied-once index.
ALTER TABLE tickets.import_meta DROP CONSTRAINT IF EXISTS import_meta_export_type_check;
ALTER TABLE tickets.import_meta ADD CONSTRAINT import_meta_export_type_check
    CHECK (export_type IN ('baseline', 'delta', 'late', 'replay', 'quarantine', 'pause', 'resume'));
