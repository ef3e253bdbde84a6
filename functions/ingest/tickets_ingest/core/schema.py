"""The CSV contract of the ticket export stream: columns, their types, and header checks.

Pure: no I/O. The PostgreSQL side derives its casts from ``COLUMN_KINDS``.
"""

from __future__ import annotations

import enum
import re
import unicodedata
from collections.abc import Iterable, Sequence
from dataclasses import dataclass

from tickets_ingest.errors import FileRejected
from tickets_ingest.models import DriftPolicy, HeaderDrift


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


@dataclass(frozen=True)
class Shape:
    """The literal form of a typed column's values, as the export writes them."""

    pattern: str  # the same text is a Python ``re`` and a PostgreSQL ARE pattern
    described: str  # for the error a rejected value gets (tickets.literal_problem's words)

    def matches(self, value: str) -> bool:
        """``value`` (surrounding spaces aside, as the cast trims them) has this shape, or
        is empty (NULL)."""
        trimmed = value.strip(" ")
        return not trimmed or re.fullmatch(self.pattern, trimmed) is not None


#: What a typed value may look like: PostgreSQL's input functions also read words the
#: export never writes (``now``, ``today``, ``epoch``, ``infinity``, ``NaN``, Julian days
#: ``J2461214``, ...), and those would be stored as data. Migration 0003's
#: ``tickets.value_shape`` holds these exact patterns (tests/integration/test_values.py
#: compares them). Booleans have no such words; their cast is their check.
_NUMBER = r"-?([0-9]+\.?[0-9]*|\.[0-9]+)([eE][+-]?[0-9]+)?"
VALUE_SHAPES: dict[Kind, Shape] = {
    Kind.TIMESTAMPTZ: Shape(
        r"[0-9]{4}-[0-9]{2}-[0-9]{2}[ T][0-9]{2}:[0-9]{2}:[0-9]{2}(\.[0-9]{1,6})?"
        r"(Z|[+-][0-9]{2}(:?[0-9]{2})?)?",
        "YYYY-MM-DD HH:MM:SS, optionally with a fraction and Z or an offset",
    ),
    Kind.DATE: Shape(r"[0-9]{4}-[0-9]{2}-[0-9]{2}", "YYYY-MM-DD"),
    Kind.DOUBLE: Shape(_NUMBER, "a decimal number"),
    Kind.NUMERIC: Shape(_NUMBER, "a decimal number"),
}

#: The key rule: a ticket_id is stored, compared and de-duplicated as its exact text, so
#: text that only looks like another key is refused instead of becoming a second ticket.
MAX_KEY_LENGTH = 256
#: Characters a key may not start or end with: Unicode's spaces, the zero-width space and
#: the BOM (control characters, tab and line breaks included, are refused anywhere).
_EDGE_SPACE = r"[ \u00a0\u1680\u2000-\u200b\u2028\u2029\u202f\u205f\u3000\ufeff]"
#: (problem, pattern searched for, again both Python ``re`` and PostgreSQL ARE), in order.
#: Controls first: with none left, ``$`` means the end of the text in both dialects.
KEY_PROBLEMS: tuple[tuple[str, str], ...] = (
    ("a control character", r"[\x01-\x1f\x7f-\x9f]"),
    ("leading or trailing whitespace", f"^{_EDGE_SPACE}|{_EDGE_SPACE}$"),
)


def key_problem(ticket_id: str) -> str | None:
    """Why ``ticket_id`` is not a usable key, or None. Blank is checked by the caller."""
    if len(ticket_id) > MAX_KEY_LENGTH:
        return f"longer than {MAX_KEY_LENGTH} characters"
    for problem, pattern in KEY_PROBLEMS:
        if re.search(pattern, ticket_id):
            return problem
    return None


@dataclass(frozen=True)
class HeaderPlan:
    """What a file's header means for loading it: its columns and how they drift."""

    columns: tuple[str, ...]  # the file's columns in its own order (names stripped)
    drift: HeaderDrift | None = None  # None: exactly the contract's columns

    @property
    def added(self) -> tuple[str, ...]:
        return self.drift.added if self.drift else ()

    @property
    def missing(self) -> tuple[str, ...]:
        return self.drift.missing if self.drift else ()


#: Columns a file must have whatever SCHEMA_DRIFT says: without them a row has no key
#: to upsert on, or nothing for the recency guard to compare.
REQUIRED_COLUMNS: tuple[str, ...] = (KEY_COLUMN, RECENCY_COLUMN)


def plan_header(
    key: str, header: Sequence[str], policy: DriftPolicy = DriftPolicy.REJECT
) -> HeaderPlan:
    """The file's columns in its own order, or ``FileRejected`` (line 1) naming what is wrong.

    Column order does not matter; names must match exactly (surrounding spaces aside),
    each exactly once. Under ``reject`` any unknown or missing column rejects the file
    (every one is named). Under ``rescue`` unknown columns are kept aside and missing ones
    left alone (``HeaderPlan.drift`` says which); a duplicated or empty name, or a missing
    ticket_id or updated_at, still rejects the file.
    """
    names = tuple(name.strip() for name in header)
    unknown = tuple(n for n in names if n not in COLUMN_KINDS)
    missing = tuple(c for c in CSV_COLUMNS if c not in names)
    problems: list[str] = []
    if policy is DriftPolicy.REJECT:
        duplicated = sorted({n for n in names if names.count(n) > 1})
        if duplicated:
            problems.append(f"duplicated column(s) {_names(duplicated)}")
        if unknown:
            problems.append(f"unknown column(s) {_names(unknown)}")
        if missing:
            problems.append(f"missing column(s) {_names(missing)}")
    else:
        # An empty name has no key to be rescued under; two empties are one problem.
        duplicated = sorted({n for n in names if n and names.count(n) > 1})
        if duplicated:
            problems.append(f"duplicated column(s) {_names(duplicated)}")
        empty = [str(i) for i, n in enumerate(names, 1) if not n]
        if empty:
            problems.append(f"empty column name(s) at position(s) {', '.join(empty)}")
        # A rescued name becomes a jsonb key and an SQL literal: no control characters.
        unprintable = [n for n in unknown if any(unicodedata.category(ch) == "Cc" for ch in n)]
        if unprintable:
            problems.append(f"control character(s) in column name(s) {_names(unprintable)}")
        required = [c for c in REQUIRED_COLUMNS if c in missing]
        if required:
            problems.append(
                f"missing column(s) {_names(required)} (required even with SCHEMA_DRIFT=rescue)"
            )
    if problems:
        raise FileRejected(key, "bad header: " + "; ".join(problems), line=1)
    if not unknown and not missing:
        return HeaderPlan(names)
    return HeaderPlan(names, HeaderDrift(added=unknown, missing=missing))


def _names(names: Iterable[str]) -> str:
    return ", ".join(repr(n) for n in names)
