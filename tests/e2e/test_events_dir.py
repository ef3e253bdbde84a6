"""Every hand-written event in events/ goes through the real handler, so none can rot."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest

from tests.e2e.conftest import LambdaWorld
from tests.support.rows import csv_bytes, key, row

EVENTS = Path(__file__).resolve().parents[2] / "events"
PENDING = key("2026-06-22T15-53-04")


def _ledger(world: LambdaWorld) -> list[str]:
    rows = world.env.db().run("SELECT source_key FROM tickets.import_meta ORDER BY id")
    return [r[0] for r in rows]


def _syncs_inc(world: LambdaWorld, response: dict[str, Any]) -> None:
    assert response == {"batchItemFailures": []}
    assert PENDING in _ledger(world)


def _syncs_both(world: LambdaWorld, response: dict[str, Any]) -> None:
    assert response == {"batchItemFailures": []}
    assert PENDING in _ledger(world) and key("2026-06-22T15-50-39", "crq") in _ledger(world)


def _ignores_all(world: LambdaWorld, response: dict[str, Any]) -> None:
    assert response == {"batchItemFailures": []}
    assert _ledger(world) == []  # nothing was synced: every record was outside the contract


def _sweeps(world: LambdaWorld, response: dict[str, Any]) -> None:
    assert response["inc"]["ok"] and response["crq"]["ok"]
    assert PENDING in _ledger(world)


def _direct(world: LambdaWorld, response: dict[str, Any]) -> None:
    assert response["ok"] and response["dataset"] == "inc"
    assert [a["key"] for a in response["applied"]] == [key("2026-06-22T15-50-39"), PENDING]


EXPECTED = {
    "sqs-fifo-object-created.json": _syncs_inc,
    "sqs-fifo-redriven.json": _syncs_inc,
    "sqs-fifo-two-datasets.json": _syncs_both,
    "sqs-fifo-ignored-keys.json": _ignores_all,
    "scheduled-sweep.json": _sweeps,
    "direct-inc.json": _direct,
}


def test_every_event_file_has_an_expectation() -> None:
    assert sorted(p.name for p in EVENTS.glob("*.json")) == sorted(EXPECTED)


@pytest.mark.parametrize("name", sorted(EXPECTED))
def test_event(world: LambdaWorld, name: str) -> None:
    world.env.put(key("2026-06-22T15-50-39"), csv_bytes([row("INC1")]))
    world.env.put(PENDING, csv_bytes([row("INC2")]))
    world.env.put(key("2026-06-22T15-50-39", "crq"), csv_bytes([row("CRQ1")]))
    world.path.sqs.purge_queue(QueueUrl=world.path.queue_url)  # only the file's event counts

    response = world.invoke(json.loads((EVENTS / name).read_text()))

    EXPECTED[name](world, response)
