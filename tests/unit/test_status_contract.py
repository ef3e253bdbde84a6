"""The pipe-status view without I/O: the state word and its precedence, the ``--json`` shape
pinned against its contract in docs/status.md (every field documented, every documented
field present, every value of its documented type), and the at-a-glance text."""

from __future__ import annotations

import re
from dataclasses import replace
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import pytest

from tickets_ingest.core.keys import key_timestamp
from tickets_ingest.core.pipestate import PipeState, pipe_state
from tickets_ingest.dal.activity import Activity, Drift, LastApplied
from tickets_ingest.handlers import render
from tickets_ingest.logic.status import SCHEMA_VERSION, DatasetStatus, LedgerEntry
from tickets_ingest.models import (
    BlockedFile,
    Conflict,
    ExportType,
    HeldFile,
    LockHolder,
    Pause,
    Plan,
    PlannedFile,
    StreamObject,
)

DOC = Path(__file__).resolve().parents[2] / "docs" / "status.md"
NOW = datetime(2026, 6, 22, 15, 0, tzinfo=UTC)
LIVE = LockHolder(4242, "tickets-ingest", "10.0.1.7", 1.0, 30.0)
NO_LEASE = LockHolder(77, "psql", None, None, None)


def changes(stamp: str) -> str:
    return f"automations/inc/changes/{stamp}.csv"


def stream_object(stamp: str, etag: str = "e1") -> StreamObject:
    key = changes(stamp)
    timestamp = key_timestamp(key)
    assert timestamp is not None
    return StreamObject(key, etag, 100, timestamp)


def full_status() -> DatasetStatus:
    """A status with every optional part present: the widest JSON the contract allows."""
    late = PlannedFile(stream_object("2026-06-22T15-55-00"), ExportType.LATE)
    pending = PlannedFile(stream_object("2026-06-22T16-10-00"), ExportType.DELTA)
    plan = Plan(
        "inc",
        changes("2026-06-22T16-00-00"),
        (late, pending),
        (stream_object("2026-06-22T16-00-00"),),
        (Conflict(stream_object("2026-06-21T09-00-00", "new"), "old"),),
        ("automations/inc/changes/notes.txt",),
        (HeldFile(stream_object("2099-06-22T11-00-00"), "dated too far ahead"),),
    )
    moment = NOW - timedelta(minutes=5)
    entry = LedgerEntry(
        9, changes("2026-06-22T16-00-00"), "e1", "delta", 3, 2, 1, 0, 0, 0, 0, 900, moment, 12, {}
    )
    return DatasetStatus(
        dataset="inc",
        plan=plan,
        blocked=BlockedFile(pending.obj.key, "e1", "bad value", 3, "region", moment, 2),
        applied_files=4,
        late_files=1,
        rejected_rows=2,
        last_applied_at=moment,
        lag_seconds=3600.04,
        recent=(entry,),
        missing=(PlannedFile(stream_object("2026-06-20T10-00-00"), ExportType.REPLAY),),
        clock_skew_seconds=1.5,
        watermark_in_future=False,
        lock=LIVE,
        paused=Pause("inc", "ana", moment, "VACUUM FULL"),
        last_applied=LastApplied(
            entry.key,
            moment,
            "delta",
            Drift(("priority",), ("owner",), changes("2026-06-22T15-50-39")),
        ),
        activity=Activity(
            moment, "event", pending.obj.key, moment, "TransientFault", None, "LIST failed"
        ),
        as_of=NOW,
    )


def empty_status() -> DatasetStatus:
    """A fresh stream: nothing listed, nothing applied, nothing heard."""
    return DatasetStatus(
        dataset="crq",
        plan=Plan("crq", None, (), (), (), ()),
        blocked=None,
        applied_files=0,
        late_files=0,
        rejected_rows=0,
        last_applied_at=None,
        lag_seconds=None,
        as_of=NOW,
    )


# --- the contract, read from the page people read ------------------------------------------

ROW = re.compile(r"^\| `(?P<path>[a-z_\[\].]+)` \| (?P<type>[^|]+(?:\\\|[^|]+)*) \| .* \|$")


def documented_fields() -> dict[str, set[str]]:
    """``path -> allowed types`` from the Fields table of docs/status.md."""
    text = DOC.read_text(encoding="utf-8")
    table = text.split("### Fields", 1)[1].split("\n\n", 3)
    rows = [line for part in table for line in part.splitlines() if line.startswith("| `")]
    fields: dict[str, set[str]] = {}
    for line in rows:
        match = ROW.match(line)
        assert match, f"docs/status.md: cannot read the row {line!r}"
        path = match["path"]
        assert path not in fields, f"docs/status.md documents {path} twice"
        fields[path] = {t.strip() for t in match["type"].split("\\|")}
    return fields


def paths(value: dict[str, Any], prefix: str = "") -> dict[str, Any]:
    """Every field path of a status object and one value of it (arrays: their elements)."""
    found: dict[str, Any] = {}
    for name, item in value.items():
        path = f"{prefix}{name}"
        found[path] = item
        if isinstance(item, dict) and name != "metadata":  # metadata is free-form
            found.update(paths(item, f"{path}."))
        elif isinstance(item, list):
            for element in item:
                if isinstance(element, dict):
                    found.update(paths(element, f"{path}[]."))
    return found


def type_of(value: Any) -> str:
    if value is None:
        return "null"
    if isinstance(value, bool):
        return "boolean"
    if isinstance(value, int):
        return "integer"
    if isinstance(value, float):
        return "number"
    if isinstance(value, str):
        return "string"
    if isinstance(value, dict):
        return "object"
    assert isinstance(value, list)
    kinds = {type_of(v) for v in value}
    assert len(kinds) <= 1, f"a mixed array: {value!r}"
    return f"array of {kinds.pop()}" if kinds else "array"


def conforms(value: Any, allowed: set[str]) -> bool:
    kind = type_of(value)
    if kind == "array":  # empty: any array type
        return any(t.startswith("array of ") for t in allowed)
    # An integer is a number, as JSON has it (a lag of exactly 3600 s prints as 3600.0 anyway).
    return kind in allowed or (kind == "integer" and "number" in allowed)


def test_every_field_is_documented_and_every_documented_field_is_there() -> None:
    documented = documented_fields()
    produced = paths(full_status().to_json())
    assert sorted(set(produced) - set(documented)) == [], "fields missing from docs/status.md"
    assert sorted(set(documented) - set(produced)) == [], "documented fields never produced"


@pytest.mark.parametrize("status", [full_status(), empty_status()], ids=["full", "empty"])
def test_every_value_has_its_documented_type(status: DatasetStatus) -> None:
    documented = documented_fields()
    for path, value in paths(status.to_json()).items():
        assert conforms(value, documented[path]), f"{path}: {value!r} is not {documented[path]}"


def test_an_empty_status_still_has_every_top_level_field() -> None:
    top = {p for p in documented_fields() if "." not in p}
    assert set(empty_status().to_json()) == top


def test_the_schema_version_is_the_documented_one() -> None:
    assert full_status().to_json()["schema_version"] == SCHEMA_VERSION == 1
    assert "`schema_version` is `1`." in DOC.read_text(encoding="utf-8")


def test_the_documented_states_are_the_states() -> None:
    text = DOC.read_text(encoding="utf-8").split("## The state word", 1)[1].split("\n## ", 1)[0]
    documented = re.findall(r"^\| `([a-z]+)` \|", text, flags=re.MULTILINE)
    assert documented == [s.value for s in PipeState]  # in precedence order


def test_pipe_fields_of_the_full_status() -> None:
    body = full_status().to_json()
    assert body["state"] == "paused"
    assert body["pending_count"] == 2
    assert body["oldest_pending"] == {  # the late file: the oldest name, not the first
        "key": changes("2026-06-22T15-55-00"),
        "timestamp": "2026-06-22T15:55:00+03:00",
        "age_seconds": 7500.0,  # 12:55 UTC to 15:00 UTC
    }
    assert body["last_applied"] == {
        "key": changes("2026-06-22T16-00-00"),
        "applied_at": "2026-06-22T14:55:00+00:00",
        "export_type": "delta",
        "age_seconds": 300.0,
    }
    assert body["last_message"] == {
        "at": "2026-06-22T14:55:00+00:00",
        "kind": "event",
        "key": changes("2026-06-22T16-10-00"),
        "age_seconds": 300.0,
    }
    assert body["last_error"]["kind"] == "TransientFault"
    assert body["last_error"]["key"] is None
    assert body["drift"] == {
        "added": ["priority"],
        "missing": ["owner"],
        "since": changes("2026-06-22T15-50-39"),
    }
    assert body["lag_seconds"] == 3600.0


def test_ages_are_never_negative() -> None:
    ahead = replace(full_status(), as_of=NOW - timedelta(hours=1))
    assert ahead.to_json()["last_applied"]["age_seconds"] == 0.0


# --- the state word ------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("paused", "rejected", "holder", "pending", "state"),
    [
        (True, True, NO_LEASE, 3, PipeState.PAUSED),  # a pause wins over everything
        (True, False, None, 0, PipeState.PAUSED),
        (False, True, LIVE, 3, PipeState.BLOCKED),  # a rejection wins over a live sync
        (False, False, NO_LEASE, 0, PipeState.BLOCKED),  # never taken over automatically
        (False, False, LIVE, 3, PipeState.BUSY),
        (False, False, LockHolder(5, "x", None, 120.0, 30.0), 0, PipeState.BUSY),  # silent
        (False, False, None, 1, PipeState.RUNNING),
        (False, False, None, 0, PipeState.IDLE),
    ],
)
def test_state_precedence(
    paused: bool, rejected: bool, holder: LockHolder | None, pending: int, state: PipeState
) -> None:
    assert pipe_state(paused=paused, rejected=rejected, holder=holder, pending=pending) is state


def test_the_status_state_rests_on_its_own_facts() -> None:
    full = full_status()
    assert full.state is PipeState.PAUSED
    assert replace(full, paused=None).state is PipeState.BLOCKED
    assert replace(full, paused=None, blocked=None).state is PipeState.BUSY
    assert replace(full, paused=None, blocked=None, lock=None).state is PipeState.RUNNING
    assert empty_status().state is PipeState.IDLE


# --- the text ------------------------------------------------------------------------------


def test_summary_lines_of_a_full_status() -> None:
    lines = render.summary_lines(full_status())
    assert lines[0] == (
        "inc   PAUSED   2 pending (oldest 2026-06-22T15-55-00.csv, 2h 5m)  lag 1h 0m  "
        "drift: +priority -owner since 2026-06-22T15-50-39.csv"
    )
    assert lines[1] == "      paused by ana since 2026-06-22 14:55:00 UTC: VACUUM FULL"
    assert lines[2] == (
        "      last applied  2026-06-22T16-00-00.csv (delta) at 2026-06-22 14:55:00 UTC, 5m 0s ago"
    )
    assert lines[3] == "      last message  5m 0s ago (event 2026-06-22T16-10-00.csv)"
    assert lines[4] == "      last error    5m 0s ago (TransientFault): LIST failed"


def test_summary_names_why_it_is_blocked_or_busy() -> None:
    full = replace(full_status(), paused=None)
    assert render.summary_lines(full)[1].startswith(
        "      stopped at: rejected automations/inc/changes/2026-06-22T16-10-00.csv, line 3, "
        "column region: bad value"
    )
    no_lease = replace(full, blocked=None, lock=NO_LEASE)
    assert render.summary_lines(no_lease)[1] == (
        "      the sync lock is held without a lease: pid 77, psql from local socket, "
        "no lease: not taken over automatically"
    )
    busy = replace(full, blocked=None)
    assert render.summary_lines(busy)[1] == (
        "      syncing now: pid 4242, tickets-ingest from 10.0.1.7, heartbeat 1 s ago"
    )


def test_summary_of_a_fresh_stream() -> None:
    assert render.summary_lines(empty_status()) == [
        "crq   IDLE     0 pending  lag -  drift: none",
        "      last applied  none",
        "      last message  none recorded",
        "      last error    none recorded",
    ]
