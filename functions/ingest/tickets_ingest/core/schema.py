"""The CSV contract of the ticket export stream: columns, their types, and header checks.

Pure: no I/O. The PostgreSQL side derives its casts from ``COLUMN_KINDS``.
"""

from __future__ import annotations

import enum
from collections.abc import Iterable, Sequence

from tickets_ingest.errors import FileRejected


class Kind(enum.Enum):
    """How a CSV column is typed when stored."""

    TEXT = "text"
    TIMESTAMPTZ = "timestamptz"
    DATE = "date"
    DOUBLE = "double precision"
    NUMERIC = "numeric"
    BOOLEAN = "boolean"


#: The 32 columns of every stream file, in the exporter's order.
CSV_COLUMNS: tuple[str, ...] = (
    "ticket_id",
    "source_type",
    "service_type",
    "bucket",
    "raw_status",
    "normalized_status",
    "created_at_service",
    "scheduled_at",
    "closed_at",
    "last_seen_at",
    "first_seen_at",
    "week_start",
    "week_end",
    "cluster",
    "region",
    "location_name",
    "latitude",
    "longitude",
    "department",
    "assigned_team",
    "owner",
    "sla_status",
    "mttr",
    "is_auto_created",
    "is_auto_closed",
    "is_alarm",
    "is_actionable",
    "source_s3_bucket",
    "source_s3_key",
    "source_snapshot_id",
    "created_at",
    "updated_at",
)

_TIMESTAMPS = {
    "created_at_service",
    "scheduled_at",
    "closed_at",
    "last_seen_at",
    "first_seen_at",
    "created_at",
    "updated_at",
}

#: Storage type of each CSV column (empty values become NULL).
COLUMN_KINDS: dict[str, Kind] = {
    name: (
        Kind.TIMESTAMPTZ
        if name in _TIMESTAMPS
        else Kind.DATE
        if name in {"week_start", "week_end"}
        else Kind.DOUBLE
        if name in {"latitude", "longitude"}
        else Kind.NUMERIC
        if name == "mttr"
        else Kind.BOOLEAN
        if name.startswith("is_")
        else Kind.TEXT
    )
    for name in CSV_COLUMNS
}

KEY_COLUMN = "ticket_id"
RECENCY_COLUMN = "updated_at"
ALARM_COLUMN = "is_alarm"
SENTINEL_PREFIX = "EXPORT STOPPED"
#: Columns normalized through the alias table (trim, collapse whitespace, map).
NORMALIZED_COLUMNS: tuple[str, ...] = ("region", "raw_status")
DEFAULT_DROP_FIELDS: tuple[str, ...] = ("source_s3_bucket", "source_s3_key", "source_snapshot_id")


def check_header(key: str, header: Sequence[str]) -> tuple[str, ...]:
    """The file's columns in its own order, or ``FileRejected`` naming what is wrong.

    Column order does not matter; names must match exactly (surrounding spaces aside),
    each exactly once.
    """
    names = tuple(name.strip() for name in header)
    problems: list[str] = []
    duplicated = sorted({n for n in names if names.count(n) > 1})
    if duplicated:
        problems.append(f"duplicated column(s) {_names(duplicated)}")
    unknown = [n for n in names if n not in COLUMN_KINDS]
    if unknown:
        problems.append(f"unknown column(s) {_names(unknown)}")
    missing = [c for c in CSV_COLUMNS if c not in names]
    if missing:
        problems.append(f"missing column(s) {_names(missing)}")
    if problems:
        raise FileRejected(key, "bad header: " + "; ".join(problems), line=1)
    return names


def _names(names: Iterable[str]) -> str:
    return ", ".join(repr(n) for n in names)
