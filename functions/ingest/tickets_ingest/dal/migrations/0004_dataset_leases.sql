-- 0004: a lease beside each dataset's advisory lock, so a holder that vanished (its
-- network gone, its sandbox lost, behind a pooler that keeps the server session open) can
-- be recognised by a stale heartbeat and ended by the next sync, instead of holding the
-- dataset until the kernel's keepalive gives up (hours).

CREATE TABLE IF NOT EXISTS tickets.dataset_leases (
    dataset        text        PRIMARY KEY,
    -- The backend holding the advisory lock (the apply connection): pid AND backend_start,
    -- because a pid is reused once its backend is gone. NULL: released.
    holder_pid     integer,
    holder_started timestamptz,
    holder_name    text,                       -- application_name, for messages
    -- The holder lists again before it lets go when news arrives (a sync that applies;
    -- not a dry run, a replay or a quarantine).
    takes_news     boolean     NOT NULL DEFAULT false,
    stale_seconds  double precision NOT NULL DEFAULT 20, -- the holder's LOCK_STALE_SECONDS
    acquired_at    timestamptz NOT NULL DEFAULT clock_timestamp(),
    heartbeat_at   timestamptz NOT NULL DEFAULT clock_timestamp(),
    -- Bumped by a sync that found the holder alive: the holder re-lists before it lets go.
    news           bigint      NOT NULL DEFAULT 0,
    -- What the holder's apply backend last waited for (sampled by the heartbeat).
    waiting_for    text
);
