-- 0002: replays (operator re-applies from processed/, e.g. after a database restore) advance
-- the watermark like in-order files do, so the index behind the watermark includes them.

DROP INDEX IF EXISTS tickets.import_meta_watermark;

CREATE INDEX IF NOT EXISTS import_meta_watermark_v2
    ON tickets.import_meta (dataset, (metadata ->> 'source_max_key'))
    WHERE export_type IN ('baseline', 'delta', 'replay');
