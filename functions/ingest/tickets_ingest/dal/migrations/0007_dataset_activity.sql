-- 0007: what each dataset last heard and the last error of its syncs, for `status` (the
-- pipe-status view). Nothing else records these: the ledger holds only decisions, and the
-- blocked-file register only the one file a dataset is stopped at. One row per dataset,
-- upserted in one round trip; an error is kept (with its time) until the next one replaces
-- it, so status can show how long ago the last trouble was.

CREATE TABLE IF NOT EXISTS tickets.dataset_activity (
    dataset           text        PRIMARY KEY,
    -- The last message or invocation the function acted on for this dataset: event,
    -- continuation, resume, sweep or direct, and the S3 key an event named.
    last_message_at   timestamptz,
    last_message_kind text,
    last_message_key  text,
    -- The last error of a sync that applies (the function's or the CLI's): its kind
    -- (rejected, or the error's type), the file it concerns if any, and its message.
    last_error_at     timestamptz,
    last_error_kind   text,
    last_error_key    text,
    last_error        text
);
