"""Hand-made stream files for precise tests (the generator makes realistic volume)."""

from __future__ import annotations

import csv
import io
from collections.abc import Iterable, Sequence

from tickets_ingest.core.schema import CSV_COLUMNS

STREAM = "automations/inc/changes/"


def key(stamp: str, dataset: str = "inc") -> str:
    """``key("2026-06-22T15-50-39")`` -> the full changes/ key."""
    return f"automations/{dataset}/changes/{stamp}.csv"


def row(ticket_id: str, updated_at: str = "2026-06-22 15:00:00", **values: str) -> dict[str, str]:
    """A complete, valid record; override any column by name."""
    record = {
        "ticket_id": ticket_id,
        "source_type": "Remedy",
        "service_type": "FTTH",
        "bucket": "Faults",
        "raw_status": "Assigned",
        "normalized_status": "open",
        "created_at_service": "2026-06-20 08:00:00",
        "scheduled_at": "",
        "closed_at": "",
        "last_seen_at": updated_at,
        "first_seen_at": "2026-06-20 08:00:00",
        "week_start": "2026-06-15",
        "week_end": "2026-06-21",
        "cluster": "Westlands",
        "region": "Nairobi",
        "location_name": "Westlands, Sarit Centre",
        "latitude": "-1.264",
        "longitude": "36.803",
        "department": "NOC",
        "assigned_team": "Fibre West",
        "owner": "Wanjiku Kamau",
        "sla_status": "Within SLA",
        "mttr": "",
        "is_auto_created": "false",
        "is_auto_closed": "false",
        "is_alarm": "false",
        "is_actionable": "true",
        "source_s3_bucket": "tickets",
        "source_s3_key": "automations/inc/changes/x.csv",
        "source_snapshot_id": "snap-1",
        "created_at": "2026-06-20 08:00:00",
        "updated_at": updated_at,
    }
    unknown = set(values) - set(record)
    if unknown:
        raise KeyError(f"unknown columns {unknown}")
    record.update(values)
    return record


def csv_bytes(
    rows: Iterable[dict[str, str]],
    columns: Sequence[str] = CSV_COLUMNS,
    *,
    line_ending: str = "\r\n",
    bom: bool = False,
) -> bytes:
    out = io.StringIO()
    writer = csv.writer(out, lineterminator=line_ending)
    writer.writerow(columns)
    for record in rows:
        writer.writerow([record.get(c, "") for c in columns])
    data = out.getvalue().encode("utf-8")
    return (b"\xef\xbb\xbf" + data) if bom else data
