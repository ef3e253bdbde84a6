"""An independent model of what the table must hold: the fold of every file, in order,
written from the contract (not from the engine's SQL), used to check the engine."""

from __future__ import annotations

import csv
import datetime as dt
import io
from collections.abc import Iterable
from decimal import Decimal
from pathlib import Path
from typing import Any
from zoneinfo import ZoneInfo

from tickets_ingest.core.schema import (
    COLUMN_KINDS,
    CSV_COLUMNS,
    DEFAULT_DROP_FIELDS,
    VALUE_SHAPES,
    Kind,
    key_problem,
)

NAIROBI = ZoneInfo("Africa/Nairobi")
ALIASES_CSV = (
    Path(__file__).resolve().parents[2] / "functions/ingest/tickets_ingest/data/aliases.csv"
)


def _aliases() -> dict[str, dict[str, str]]:
    table: dict[str, dict[str, str]] = {"region": {}, "raw_status": {}}
    with ALIASES_CSV.open(newline="") as handle:
        for record in csv.DictReader(handle):
            table[record["field"]][" ".join(record["alias"].split()).lower()] = record["canonical"]
    return table


ALIASES = _aliases()


def _typed(column: str, raw: str) -> Any:
    if column in ALIASES:
        cleaned = " ".join(raw.split())
        return ALIASES[column].get(cleaned.lower(), cleaned) or None
    if raw.strip() == "":
        return None
    kind = COLUMN_KINDS[column]
    value = raw.strip()
    if kind is Kind.TIMESTAMPTZ:
        parsed = dt.datetime.fromisoformat(value)
        return parsed if parsed.tzinfo else parsed.replace(tzinfo=NAIROBI)
    if kind is Kind.DATE:
        return dt.date.fromisoformat(value)
    if kind is Kind.DOUBLE:
        return float(value)
    if kind is Kind.NUMERIC:
        return Decimal(value)
    if kind is Kind.BOOLEAN:
        return {"true": True, "false": False, "t": True, "f": False}[value.lower()]
    return raw


def rejected(record: dict[str, str]) -> bool:
    """Whether the contract sets this (non-sentinel) record aside: a blank or unusable
    ticket_id, an empty updated_at, or a typed value that is not a literal of its shape."""
    ticket_id = record["ticket_id"]
    if not ticket_id.strip() or key_problem(ticket_id) is not None:
        return True
    if not record["updated_at"].strip():
        return True
    return any(
        not shape.matches(record[c])
        for c, kind in COLUMN_KINDS.items()
        if (shape := VALUE_SHAPES.get(kind)) is not None
    )


def fold(
    files: Iterable[bytes], drop_fields: tuple[str, ...] = DEFAULT_DROP_FIELDS
) -> dict[str, dict[str, Any]]:
    """ticket_id -> stored record after applying ``files`` in order.

    Within a file the last occurrence of a ticket wins; if it is set aside, so are the
    earlier ones. Every file upserts under the recency guard: a record replaces a stored
    one only if its updated_at is not older.
    """
    state: dict[str, dict[str, Any]] = {}
    kept = [c for c in CSV_COLUMNS if c not in drop_fields]
    for body in files:
        reader = csv.DictReader(io.StringIO(body.decode("utf-8-sig"), newline=""))
        records = [r for r in reader if not r["ticket_id"].startswith("EXPORT STOPPED")]
        last = {r["ticket_id"]: r for r in records}
        latest: dict[str, dict[str, str]] = {}
        for record in records:
            ticket_id = record["ticket_id"]
            if rejected(record) or rejected(last[ticket_id]):
                continue
            if record["is_alarm"].strip().lower() in {"true", "t"}:
                continue
            latest.pop(ticket_id, None)
            latest[ticket_id] = record  # the last occurrence wins
        for ticket_id, record in latest.items():
            typed = {c: _typed(c, record[c]) for c in kept}
            known = state.get(ticket_id, {}).get("updated_at")
            if known is not None and typed["updated_at"] < known:
                continue  # older never overwrites newer
            state[ticket_id] = typed
    return state


def table_state(db: Any, table: str, columns: Iterable[str]) -> dict[str, dict[str, Any]]:
    names = list(columns)
    select = ", ".join(names)
    rows = db.run(f"SELECT {select} FROM tickets.{table}")
    return {r[0]: dict(zip(names, r, strict=True)) for r in rows}
