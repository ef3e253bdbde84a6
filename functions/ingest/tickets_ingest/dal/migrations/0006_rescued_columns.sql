-- 0006: under SCHEMA_DRIFT=rescue, the values of columns the contract does not know (an
-- exporter that added a column) are kept per ticket in `rescued`, keyed by column name,
-- until a release promotes them to real columns (docs/runbook.md, "Schema drift").
-- Nullable without a default: adding it rewrites nothing, and rows never rescued stay NULL.
ALTER TABLE tickets.incidents ADD COLUMN IF NOT EXISTS rescued jsonb;
ALTER TABLE tickets.change_requests ADD COLUMN IF NOT EXISTS rescued jsonb;
