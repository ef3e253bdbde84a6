"""The lock's settings (lease, bounded waits, dead-peer detection), the keepalive timing
derived from DB_DEAD_PEER_SECONDS, and how a lock holder is described."""

from __future__ import annotations

import pytest

from tickets_ingest.dal.db import keepalive_timing
from tickets_ingest.errors import ConfigError, LockLost, LockWaitTimeout, SyncBusy
from tickets_ingest.models import LockHolder
from tickets_ingest.settings import DatabaseAccess, LockSettings, load_settings


def test_defaults() -> None:
    settings = load_settings({})
    assert settings.lock == LockSettings(
        heartbeat_seconds=2.0,
        stale_seconds=20.0,
        apply_lock_timeout_seconds=30.0,
        apply_statement_timeout_seconds=900.0,
    )
    assert settings.database.dead_peer_seconds == 30
    assert settings.database.server_keepalives is True
    assert DatabaseAccess().dead_peer_seconds == 30


def test_values() -> None:
    settings = load_settings(
        {
            "LOCK_HEARTBEAT_SECONDS": "0.5",
            "LOCK_STALE_SECONDS": "1.5",
            "APPLY_LOCK_TIMEOUT_SECONDS": "5",
            "APPLY_STATEMENT_TIMEOUT_SECONDS": "60",
            "DB_DEAD_PEER_SECONDS": "12",
            "DB_SERVER_KEEPALIVES": "false",
        }
    )
    assert settings.lock == LockSettings(0.5, 1.5, 5.0, 60.0)
    assert settings.database.dead_peer_seconds == 12
    assert settings.database.server_keepalives is False


@pytest.mark.parametrize(
    "name",
    [
        "LOCK_HEARTBEAT_SECONDS",
        "LOCK_STALE_SECONDS",
        "APPLY_LOCK_TIMEOUT_SECONDS",
        "APPLY_STATEMENT_TIMEOUT_SECONDS",
        "DB_DEAD_PEER_SECONDS",
        "DB_SERVER_KEEPALIVES",
    ],
)
def test_blank_means_default(name: str) -> None:
    assert load_settings({name: " "}) == load_settings({})


@pytest.mark.parametrize(
    ("env", "message"),
    [
        ({"LOCK_HEARTBEAT_SECONDS": "0"}, "LOCK_HEARTBEAT_SECONDS='0' must be between 0.1 and 60"),
        ({"LOCK_HEARTBEAT_SECONDS": "nan"}, "LOCK_HEARTBEAT_SECONDS='nan' must be between"),
        ({"LOCK_STALE_SECONDS": "two"}, "LOCK_STALE_SECONDS='two' is not a number"),
        ({"LOCK_STALE_SECONDS": "5"}, "LOCK_STALE_SECONDS=5 must be at least 3 x LOCK_HEARTBEAT"),
        (
            {"LOCK_HEARTBEAT_SECONDS": "10", "LOCK_STALE_SECONDS": "29"},
            "LOCK_STALE_SECONDS=29 must be at least 3 x LOCK_HEARTBEAT_SECONDS (30)",
        ),
        ({"APPLY_LOCK_TIMEOUT_SECONDS": "0"}, "APPLY_LOCK_TIMEOUT_SECONDS='0' must be between"),
        ({"APPLY_LOCK_TIMEOUT_SECONDS": "inf"}, "APPLY_LOCK_TIMEOUT_SECONDS='inf' must be between"),
        (
            {"APPLY_STATEMENT_TIMEOUT_SECONDS": "10"},
            "APPLY_STATEMENT_TIMEOUT_SECONDS=10 must not be below APPLY_LOCK_TIMEOUT_SECONDS=30",
        ),
        ({"DB_DEAD_PEER_SECONDS": "1"}, "DB_DEAD_PEER_SECONDS='1' must be between 2 and 7200"),
        ({"DB_DEAD_PEER_SECONDS": "2.5"}, "DB_DEAD_PEER_SECONDS='2.5' is not a whole number"),
        (
            {"DB_SERVER_KEEPALIVES": "sometimes"},
            "DB_SERVER_KEEPALIVES='sometimes' is not a boolean",
        ),
    ],
)
def test_invalid(env: dict[str, str], message: str) -> None:
    with pytest.raises(ConfigError) as info:
        load_settings(env)
    assert message in str(info.value)
    assert "\n" not in str(info.value)


@pytest.mark.parametrize(
    ("dead_peer", "timing"),
    [(30, (10, 5, 4)), (2, (1, 1, 4)), (3, (1, 1, 4)), (60, (20, 10, 4)), (7200, (2400, 1200, 4))],
)
def test_keepalives_give_up_after_about_the_dead_peer_time(
    dead_peer: int, timing: tuple[int, int, int]
) -> None:
    idle, interval, count = keepalive_timing(dead_peer)
    assert (idle, interval, count) == timing
    assert idle + interval * count <= max(dead_peer, 5)


def test_a_holder_is_described_by_what_its_lease_says() -> None:
    live = LockHolder(41, "tickets-ingest lambda", "10.0.0.7", 1.4, 20.0)
    assert not live.silent and live.has_lease
    assert live.describe() == "pid 41, tickets-ingest lambda from 10.0.0.7, heartbeat 1 s ago"
    silent = LockHolder(41, None, None, 45.0, 20.0)
    assert silent.silent
    assert silent.describe() == (
        "pid 41, unknown client from local socket, SILENT: no heartbeat for 45 s "
        "(stale after 20 s); the next sync takes it over"
    )
    foreign = LockHolder(41, "psql", None, None, None)
    assert not foreign.silent and not foreign.has_lease
    assert foreign.describe().endswith("no lease: not taken over automatically")
    hidden = LockHolder(41, "tickets-ingest lambda", None, None, None, hidden=True)
    assert not hidden.silent and not hidden.has_lease
    assert hidden.describe().startswith(
        "pid 41, tickets-ingest lambda, a session of another role that this role may not "
        "look into, so its lease cannot be checked: not taken over automatically"
    )
    assert "local socket" not in hidden.describe()  # its address is hidden, not local


def test_lock_errors_say_what_happened() -> None:
    handed = SyncBusy("inc", "pid 7, x from y, heartbeat 1 s ago", handed_over=True)
    assert str(handed) == (
        "another sync of dataset 'inc' is running (held by pid 7, x from y, heartbeat 1 s "
        "ago); it lists the dataset again before it lets go; nothing done"
    )
    lost = LockLost("inc", "its heartbeat found the lease taken")
    assert isinstance(lost, SyncBusy) and not lost.handed_over
    assert "taken over by another sync (its heartbeat found the lease taken)" in str(lost)
    waited = LockWaitTimeout("automations/inc/changes/a.csv", "waited", "pid 9 (psql)")
    assert str(waited).startswith("automations/inc/changes/a.csv: waited; held by pid 9 (psql)")
    slow = LockWaitTimeout("automations/inc/changes/a.csv", "ran long", None)
    assert str(slow).startswith(
        "automations/inc/changes/a.csv: ran long; the heartbeat sampled no wait on another"
    )
