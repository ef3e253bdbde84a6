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

from tickets_ingest.core.schema import COLUMN_KINDS, CSV_COLUMNS, DEFAULT_DROP_FIELDS, Kind

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


def fold(
    files: Iterable[bytes], drop_fields: tuple[str, ...] = DEFAULT_DROP_FIELDS
) -> dict[str, dict[str, Any]]:
    """ticket_id -> stored record after applying ``files`` in order (plain upserts)."""
    state: dict[str, dict[str, Any]] = {}
    kept = [c for c in CSV_COLUMNS if c not in drop_fields]
    for body in files:
        reader = csv.DictReader(io.StringIO(body.decode("utf-8-sig"), newline=""))
        latest: dict[str, dict[str, str]] = {}
        for record in reader:
            ticket_id = record["ticket_id"]
            if not ticket_id.strip() or ticket_id.startswith("EXPORT STOPPED"):
                continue
            if record["is_alarm"].strip().lower() in {"true", "t"}:
                continue
            latest.pop(ticket_id, None)
            latest[ticket_id] = record  # the last occurrence wins
        for ticket_id, record in latest.items():
            state[ticket_id] = {c: _typed(c, record[c]) for c in kept}
    return state


def table_state(db: Any, table: str, columns: Iterable[str]) -> dict[str, dict[str, Any]]:
    names = list(columns)
    select = ", ".join(names)
    rows = db.run(f"SELECT {select} FROM tickets.{table}")
    return {r[0]: dict(zip(names, r, strict=True)) for r in rows}
