"""A dataset's sync lock as the tests hold it by hand (the statements of ``dal.lease``'s
holder, written out once for every test that needs a holder it controls)."""

# The session advisory lock a sync of dataset inc holds.
HOLD = "SELECT pg_advisory_lock(hashtextextended('tickets-ingest:inc', 0))"

# A lease for this session, as a holder writes it, whose last heartbeat is long ago.
# ``:shift`` moves its backend_start: a lease that names a reused pid.
SILENT_LEASE = """
INSERT INTO tickets.dataset_leases
    (dataset, holder_pid, holder_started, holder_name, takes_news, stale_seconds, heartbeat_at)
SELECT 'inc', pid, backend_start + CAST(:shift AS interval), application_name, true, 1,
       now() - interval '1 hour'
FROM pg_stat_activity WHERE pid = pg_backend_pid()
"""
