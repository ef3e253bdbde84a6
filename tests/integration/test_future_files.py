"""Issue 11.7: a file dated in the future is held, not applied, so it can neither pin the
watermark (turning every real file after it into a late one) nor blind the lag alarm."""

from __future__ import annotations

import io
import json
from datetime import datetime, timedelta

import pytest

from tests.conftest import Env
from tests.support.rows import csv_bytes, key, row
from tickets_ingest.core.keys import SOURCE_TZ
from tickets_ingest.handlers.cli import EXIT_FAILED, EXIT_OK, main

FUTURE = key("2099-06-22T11-00-00")


def cli(*argv: str) -> tuple[int, str]:
    out = io.StringIO()
    return main(list(argv), out=out), out.getvalue()


def stamp_in(delta: timedelta) -> str:
    return (datetime.now(SOURCE_TZ) + delta).strftime("%Y-%m-%dT%H-%M-%S")


def kinds(env: Env) -> list[tuple[str, str]]:
    rows = env.db().run("SELECT source_key, export_type FROM tickets.import_meta ORDER BY id")
    return [(k, t) for k, t in rows]


def test_a_future_file_is_held_shown_and_can_be_quarantined(
    env: Env, capsys: pytest.CaptureFixture[str]
) -> None:
    env.put(key("2026-06-22T10-00-00"), csv_bytes([row("INC1", "2026-06-22 09:00:00")]))
    env.put(FUTURE, csv_bytes([row("INC2", "2099-06-22 10:00:00")]))
    env.put(key("2026-06-22T12-00-00"), csv_bytes([row("INC3", "2026-06-22 11:00:00")]))

    code, out = cli("sync", "--dataset", "inc", "--apply")
    err = capsys.readouterr().err
    # Everything else applies, in order, as baseline and delta (not late behind 2099).
    assert kinds(env) == [
        (key("2026-06-22T10-00-00"), "baseline"),
        (key("2026-06-22T12-00-00"), "delta"),
    ]
    assert "HELD: 2099-06-22T11-00-00.csv dated 2099-06-22 11:00:00 EAT" in out
    assert code == EXIT_FAILED  # held for an operator: the run says so
    assert f"tickets-ingest: HELD {FUTURE}: dated 2099-06-22 11:00:00 EAT" in err
    assert err.count("\n") == 1
    assert env.list_keys("automations/inc/changes/") == [FUTURE]

    code, out = cli("status", "--dataset", "inc", "--json")
    status = json.loads(out)
    assert code == EXIT_FAILED
    assert status["watermark"] == key("2026-06-22T12-00-00")
    assert status["lag_seconds"] > 0 and status["clock_skew_seconds"] is None
    assert status["watermark_in_future"] is False
    assert status["pending"] == []
    [held] = status["held"]
    assert held["key"] == FUTURE and held["due"] == "2099-06-22T11:00:00+03:00"
    assert "FUTURE_TOLERANCE_SECONDS" in held["reason"]
    code, out = cli("status", "--dataset", "inc")
    assert "HELD           2099-06-22T11-00-00.csv: dated 2099-06-22 11:00:00 EAT" in out
    assert "HELD automations/inc/changes/2099-06-22T11-00-00.csv" in capsys.readouterr().err

    # A held file is an ordinary stream file for quarantine.
    code, out = cli(
        "quarantine", "--dataset", "inc", "--key", "2099-06-22T11-00-00.csv", "--reason", "bad"
    )
    assert code == EXIT_OK
    assert env.list_keys("automations/inc/quarantine/") == [
        "automations/inc/quarantine/2099-06-22T11-00-00.csv"
    ]
    code, out = cli("status", "--dataset", "inc", "--json")
    assert code == EXIT_OK and json.loads(out)["held"] == []


def test_a_held_file_applies_once_its_time_comes(env: Env) -> None:
    env.put(key("2026-06-22T10-00-00"), csv_bytes([row("INC1")]))
    soon = key(stamp_in(timedelta(hours=2)))
    env.put(soon, csv_bytes([row("INC2")]))
    env.set(FUTURE_TOLERANCE_SECONDS="3600")
    assert cli("sync", "--dataset", "inc", "--apply")[0] == EXIT_FAILED
    assert [k for k, _ in kinds(env)] == [key("2026-06-22T10-00-00")]
    # The clock moves on (here: the tolerance grows past the file's date).
    env.set(FUTURE_TOLERANCE_SECONDS="10800")
    assert cli("sync", "--dataset", "inc", "--apply")[0] == EXIT_OK
    assert kinds(env)[-1] == (soon, "delta")


def test_lag_is_never_negative_skew_and_a_future_watermark_are_reported(
    env: Env, capsys: pytest.CaptureFixture[str]
) -> None:
    ahead = key(stamp_in(timedelta(minutes=30)))
    env.put(key("2026-06-22T10-00-00"), csv_bytes([row("INC1")]))
    env.put(ahead, csv_bytes([row("INC2")]))
    assert cli("sync", "--dataset", "inc", "--apply")[0] == EXIT_OK

    # Within the tolerance: the watermark is ahead of this clock. Skew, not negative lag.
    code, out = cli("status", "--dataset", "inc", "--json")
    status = json.loads(out)
    assert code == EXIT_OK
    assert status["watermark"] == ahead
    assert status["lag_seconds"] == 0
    assert 1700 < status["clock_skew_seconds"] <= 1800
    assert status["watermark_in_future"] is False
    code, out = cli("status", "--dataset", "inc")
    assert "lag            0m 0s" in out
    assert "clock skew     the watermark is 2" in out and "ahead of this clock" in out

    # Beyond the tolerance: as if a future-dated file had been applied before files were
    # held. Status says the watermark is in the future and exits 1; the lag is unknown.
    env.set(FUTURE_TOLERANCE_SECONDS="60")
    capsys.readouterr()
    code, out = cli("status", "--dataset", "inc", "--json")
    status = json.loads(out)
    assert code == EXIT_FAILED
    assert status["lag_seconds"] is None and status["watermark_in_future"] is True
    assert status["clock_skew_seconds"] > 1700
    assert f"WATERMARK IN THE FUTURE {ahead}" in capsys.readouterr().err
    code, out = cli("status", "--dataset", "inc")
    assert "lag            unknown: WATERMARK IN THE FUTURE" in out


def test_the_runbook_repair_of_a_future_watermark(env: Env) -> None:
    """docs/runbook.md, a future-dated file: take its ledger row out of the watermark."""
    env.put(key("2026-06-22T10-00-00"), csv_bytes([row("INC1")]))
    future = key(stamp_in(timedelta(minutes=30)))
    env.put(future, csv_bytes([row("INC2")]))
    assert cli("sync", "--dataset", "inc", "--apply")[0] == EXIT_OK  # within the tolerance
    real = key(stamp_in(timedelta(minutes=-1)))
    env.put(real, csv_bytes([row("INC3")]))
    assert cli("sync", "--dataset", "inc", "--apply")[0] == EXIT_OK
    assert kinds(env)[-1] == (real, "late")  # pinned behind the future watermark
    env.set(FUTURE_TOLERANCE_SECONDS="60")
    code, out = cli("status", "--dataset", "inc", "--json")
    assert code == EXIT_FAILED and json.loads(out)["watermark_in_future"] is True

    env.db().run(
        "UPDATE tickets.import_meta SET export_type = 'late' "
        "WHERE dataset = 'inc' AND source_key = :key",
        key=future,
    )
    code, out = cli("status", "--dataset", "inc", "--json")
    status = json.loads(out)
    assert code == EXIT_OK
    assert status["watermark"] == key("2026-06-22T10-00-00")
    assert status["watermark_in_future"] is False and status["lag_seconds"] > 0
    newer = key(stamp_in(timedelta(seconds=-5)))
    env.put(newer, csv_bytes([row("INC4")]))
    assert cli("sync", "--dataset", "inc", "--apply")[0] == EXIT_OK
    assert kinds(env)[-1] == (newer, "delta")
    assert json.loads(cli("status", "--dataset", "inc", "--json")[1])["watermark"] == newer
