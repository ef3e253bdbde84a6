"""A paused dataset in the one status shape: shown as paused, not as needing attention."""

from __future__ import annotations

import io
from dataclasses import replace
from datetime import UTC, datetime

from tickets_ingest.handlers import render
from tickets_ingest.logic.status import DatasetStatus, LedgerEntry
from tickets_ingest.models import BlockedFile, Pause, Plan

SINCE = datetime(2026, 6, 22, 14, 0, tzinfo=UTC)
PAUSE = Pause("inc", "ana", SINCE, "VACUUM FULL")


def status(**changes: object) -> DatasetStatus:
    plan = Plan("inc", "automations/inc/changes/2026-06-22T15-50-39.csv", (), (), (), ())
    base = DatasetStatus(
        dataset="inc",
        plan=plan,
        blocked=None,
        applied_files=1,
        late_files=0,
        rejected_rows=0,
        last_applied_at=None,
        lag_seconds=7300.0,
        paused=PAUSE,
    )
    return replace(base, **changes)  # type: ignore[arg-type]


def test_paused_alone_needs_no_attention_but_a_block_still_does() -> None:
    assert not status().needs_attention
    assert render.attention_lines(status()) == []
    blocked = BlockedFile("k", "e", "bad header", 1, None, SINCE, 1)
    assert status(blocked=blocked).needs_attention


def test_paused_in_json_and_text() -> None:
    assert status().to_json()["paused"] == {
        "by": "ana",
        "since": "2026-06-22T14:00:00+00:00",
        "reason": "VACUUM FULL",
    }
    assert status(paused=None).to_json()["paused"] is None
    out = io.StringIO()
    render.print_status(status(), out)
    text = out.getvalue()
    assert "  PAUSED         paused by ana since 2026-06-22 14:00:00 UTC: VACUUM FULL" in text
    assert "  lag            2h 1m (paused: not applying)" in text


def test_history_lines_of_pause_and_resume() -> None:
    def entry(kind: str, metadata: dict[str, object]) -> LedgerEntry:
        return LedgerEntry(
            1, "automations/inc/changes/", "", kind, 0, 0, 0, 0, 0, 0, 0, 0, SINCE, 0, metadata
        )

    out = io.StringIO()
    render.print_history(
        "inc",
        [
            entry(
                "resume",
                {"who": "bo", "paused_by": "ana", "paused_seconds": 600.0, "why": "VACUUM FULL"},
            ),
            entry("pause", {"who": "ana", "why": "VACUUM FULL"}),
        ],
        out,
    )
    lines = out.getvalue().splitlines()
    assert lines[1].endswith("(the stream)  resume  by bo, paused by ana for 10m 0s: VACUUM FULL")
    assert lines[2].endswith("(the stream)  pause  by ana: VACUUM FULL")
