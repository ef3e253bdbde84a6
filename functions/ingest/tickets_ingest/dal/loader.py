"""Set-based loading of one file inside the caller's transaction.

The steps, each one statement: COPY the raw CSV into a text staging table; reject rows whose
ticket_id breaks the key rule or whose updated_at is empty; upsert the typed rows in one
``INSERT ... ON CONFLICT``, under the recency guard. Typing is optimistic: each value goes
through ``tickets.literal`` (the export's literal shapes only) and its cast; if one fails,
the upsert fails as a whole, we roll back to a savepoint, find the bad rows with
``tickets.input_error`` (slow, only on such files), set them aside and upsert again. A clean
file therefore costs about what PostgreSQL's own COPY + upsert cost.

When a ticket's last occurrence in a file is set aside, so are its earlier ones: an older
version must not stand in for the newest one, which was refused.

Identifiers come from ``core.schema`` and validated settings and are always quoted here.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from functools import cached_property

from pg8000.native import identifier, literal

from tickets_ingest.core.aliases import Aliases
from tickets_ingest.core.schema import (
    ALARM_COLUMN,
    COLUMN_KINDS,
    CSV_COLUMNS,
    KEY_COLUMN,
    KEY_PROBLEMS,
    MAX_KEY_LENGTH,
    NORMALIZED_COLUMNS,
    RECENCY_COLUMN,
    SENTINEL_PREFIX,
    Kind,
)

SCHEMA = "tickets"
STAGING = "pg_temp.staged_rows"
DRIFT_STAGING = "pg_temp.staged_drift"
RESCUED = "rescued"
REJECTS = "pg_temp.rejected_records"
_SENTINEL_LIKE = SENTINEL_PREFIX.replace("%", r"\%").replace("_", r"\_") + "%"


def _q(name: str) -> str:
    return str(identifier(name))


# What PostgreSQL's boolean input reads as true (unique prefixes of true/yes, on, 1).
_TRUE_SPELLINGS = ("t", "tr", "tru", "true", "y", "ye", "yes", "on", "1")


def _is_alarm() -> str:
    """True for an alarm row, compared as text: a cast here would fail the whole statement
    on a row the validator is about to set aside (the scan filters before the anti-join)."""
    spellings = ", ".join(f"'{v}'" for v in _TRUE_SPELLINGS)
    column = f"s.{_q(ALARM_COLUMN)}"
    # The exporter writes true/false: decide those without lower()/btrim() per row.
    return (
        f"(CASE {column} WHEN 'false' THEN false WHEN 'true' THEN true\n"
        f"      ELSE lower(btrim(coalesce({column}, ''))) IN ({spellings}) END)"
    )


# The cast path's quick check (the exporter's own layout) is cheap per value, but its
# character class is a regex call: taken once per row over the row's values joined
# (``q.plain_*``, below), it costs nearly nothing. A value that passes its layout and whose
# row is plain is exactly of its shape; anything else goes through ``tickets.literal``.
_PLAIN_CHARS = {Kind.TIMESTAMPTZ: "0-9 :-", Kind.DATE: "0-9 :-", Kind.DOUBLE: "0-9.-"}
_PLAIN_CHARS[Kind.NUMERIC] = _PLAIN_CHARS[Kind.DOUBLE]
_LAYOUT = {
    # Fixed separators, and no other separator in a digit's place.
    Kind.TIMESTAMPTZ: (
        "LIKE '____-__-__ __:__:__'",
        "NOT LIKE '%-%-%-%'",
        "NOT LIKE '%:%:%:%'",
        "NOT LIKE '% % %'",
    ),
    Kind.DATE: ("LIKE '____-__-__'", "NOT LIKE '%-%-%-%'"),
    # Digits, '.' and '-' only: of the shape, or refused by the cast itself.
    Kind.DOUBLE: (),
    Kind.NUMERIC: (),
}


def _plain_flag(kind: Kind) -> str:
    return "q.plain_numbers" if _PLAIN_CHARS[kind] == _PLAIN_CHARS[Kind.DOUBLE] else "q.plain_times"


def _plain_row(columns: tuple[str, ...]) -> str:
    """The per-row flags of ``_cast``'s quick check, as a lateral subquery."""
    flags = []
    for flag in ("q.plain_times", "q.plain_numbers"):
        typed = [
            c
            for c in columns
            if COLUMN_KINDS[c] in _LAYOUT and _plain_flag(COLUMN_KINDS[c]) == flag
        ]
        chars = _PLAIN_CHARS[Kind.DATE if flag == "q.plain_times" else Kind.DOUBLE]
        joined = ", ".join(f"s.{_q(c)}" for c in typed) or "''"
        flags.append(f"concat({joined}) !~ '[^{chars}]' AS {flag[2:]}")
    # OFFSET 0: evaluated once per row, not once per reference.
    return f"CROSS JOIN LATERAL (SELECT {', '.join(flags)} OFFSET 0) AS q"


def _cast(column: str) -> str:
    """The typed value of a staged column: empty is NULL, text stays text, and a typed value
    must be a literal of its kind's shape (``core.schema.VALUE_SHAPES``)."""
    kind = COLUMN_KINDS[column]
    value = f"s.{_q(column)}"
    if kind is Kind.TEXT:
        return f"nullif({value}, '')"
    if kind is Kind.BOOLEAN:
        return f"CAST(nullif(btrim({value}), '') AS {kind.value})"
    quick = " AND ".join((_plain_flag(kind), *(f"{value} {test}" for test in _LAYOUT[kind])))
    return (
        f"CAST(CASE WHEN {value} = '' THEN NULL WHEN {quick} THEN {value}\n"
        f"                ELSE tickets.literal({value}, '{kind.value}') END AS {kind.value})"
    )


def _row_problem() -> str:
    """Why a staged row is set aside before any cast (NULL: it is not): the key rule of
    ``core.schema`` (the same rule everywhere a key is compared: storage, de-duplication
    and ON CONFLICT all see exactly this text), then an empty updated_at, which the recency
    guard cannot compare. Sentinel rows are never set aside."""
    key = f"s.{_q(KEY_COLUMN)}"
    recency = f"s.{_q(RECENCY_COLUMN)}"
    problems = "".join(
        f"\n         WHEN {key} ~ '{pattern}' THEN '{KEY_COLUMN}: {problem}'"
        for problem, pattern in KEY_PROBLEMS
    )
    return (
        f"CASE WHEN {key} IS NULL OR btrim({key}) = '' THEN '{KEY_COLUMN}: empty'\n"
        f"         WHEN {key} LIKE '{_SENTINEL_LIKE}' THEN NULL\n"
        f"         WHEN length({key}) > {MAX_KEY_LENGTH}\n"
        f"              THEN '{KEY_COLUMN}: longer than {MAX_KEY_LENGTH} characters ('"
        f" || length({key}) || ')'"
        f"{problems}\n"
        f"         WHEN {recency} IS NULL OR btrim({recency}) = ''\n"
        f"              THEN '{RECENCY_COLUMN}: empty (the recency guard cannot compare it)'\n"
        f"    END"
    )


@dataclass(frozen=True)
class StagedCounts:
    read: int
    sentinel: int


@dataclass(frozen=True)
class CandidateCounts:
    alarm: int
    candidates: int  # rows that would be upserted, before de-duplication
    distinct_ids: int


@dataclass(frozen=True)
class DriftStaging:
    """Staging for a file with columns the contract does not know (SCHEMA_DRIFT=rescue).

    COPY cannot build jsonb, so such a file is COPYed into a table of its own (dropped at
    commit: it has this file's shape only), known columns by name and unknown ones as
    ``rescue_<n>``, then moved into ``staged_rows`` in file order with the unknown values
    folded into ``rescued``. Every later step then reads ``staged_rows`` as for any file;
    a clean file never takes this path. An empty value is rescued as JSON null, as an
    empty known column is stored as NULL: the key stays visible.
    """

    create: str
    copy: str
    move: str
    column_names: dict[str, str]  # staging column -> the file's name for it (error messages)


class TableLoader:
    """The statements for one table and set of stored columns (built once, reused)."""

    def __init__(self, table: str, stored_columns: tuple[str, ...]) -> None:
        self.table = table
        self.stored_columns = stored_columns
        self._upserts: dict[tuple[bool, tuple[str, ...], bool], str] = {}

    @property
    def target(self) -> str:
        return f"{_q(SCHEMA)}.{_q(self.table)}"

    @cached_property
    def create_staging(self) -> str:
        columns = ",\n    ".join(f"{_q(c)} text" for c in CSV_COLUMNS)
        # Created once per connection and emptied by every commit (or rollback): creating
        # and dropping them per file cost more than a small delta's whole upsert.
        return (
            f"CREATE TEMP TABLE IF NOT EXISTS staged_rows (\n"
            f"    rec_no bigint GENERATED ALWAYS AS IDENTITY,\n    {columns},\n"
            # A drifting file's unknown columns, by name (SCHEMA_DRIFT=rescue only).
            f"    {RESCUED} jsonb\n"
            f") ON COMMIT DELETE ROWS;\n"
            f"CREATE TEMP TABLE IF NOT EXISTS rejected_records (\n"
            f"    rec_no bigint PRIMARY KEY,\n    error text NOT NULL,\n"
            # The rejected last occurrence an earlier occurrence was set aside with.
            f"    superseded_by bigint\n"
            f") ON COMMIT DELETE ROWS"
        )

    @staticmethod
    def copy_statement(file_columns: tuple[str, ...]) -> str:
        columns = ", ".join(_q(c) for c in file_columns)
        return (
            f"COPY {STAGING} ({columns}) FROM STDIN WITH (FORMAT csv, HEADER true, ENCODING 'UTF8')"
        )

    @staticmethod
    def drift_staging(file_columns: tuple[str, ...]) -> DriftStaging:
        """The staging statements of a file with unknown columns (see ``DriftStaging``)."""
        staged: list[str] = []
        unknown: list[tuple[str, str]] = []  # (staging column, the file's name)
        for name in file_columns:
            if name in COLUMN_KINDS:
                staged.append(name)
            else:
                unknown.append((f"rescue_{len(unknown) + 1}", name))
                staged.append(unknown[-1][0])
        known = [c for c in staged if c in COLUMN_KINDS]
        definitions = ",\n    ".join(f"{_q(c)} text" for c in staged)
        # jsonb_build_object takes at most 100 arguments: 50 pairs per call.
        pairs = [f"{literal(name)}, nullif({_q(column)}, '')" for column, name in unknown]
        rescued = " || ".join(
            f"jsonb_build_object({', '.join(pairs[i : i + 50])})" for i in range(0, len(pairs), 50)
        )
        targets = ", ".join((*(_q(c) for c in known), RESCUED))
        sources = ", ".join((*(_q(c) for c in known), rescued))
        return DriftStaging(
            create=(
                f"CREATE TEMP TABLE staged_drift (\n"
                f"    drift_no bigint GENERATED ALWAYS AS IDENTITY,\n    {definitions}\n"
                f") ON COMMIT DROP"
            ),
            copy=(
                f"COPY {DRIFT_STAGING} ({', '.join(_q(c) for c in staged)}) FROM STDIN"
                " WITH (FORMAT csv, HEADER true, ENCODING 'UTF8')"
            ),
            # In file order: rec_no (the line numbers of rejected rows) follows drift_no.
            move=(
                f"INSERT INTO {STAGING} ({targets})\n"
                f"SELECT {sources}\nFROM {DRIFT_STAGING} ORDER BY drift_no"
            ),
            column_names=dict(unknown),
        )

    @cached_property
    def reject_bad_rows(self) -> str:
        """Set aside rows without a usable ticket_id or updated_at, and count in the same
        scan: rows read, sentinels, rows set aside, alarm rows, and rows left to upsert."""
        key = _q(KEY_COLUMN)
        return (
            f"WITH checked AS MATERIALIZED (\n"
            f"    SELECT s.rec_no, s.{key} LIKE '{_SENTINEL_LIKE}' AS sentinel,\n"
            f"           {_row_problem()} AS problem,\n"
            f"           {_is_alarm()} AS alarm\n"
            f"    FROM {STAGING} AS s\n"
            f"), set_aside AS (\n"
            f"    INSERT INTO {REJECTS} (rec_no, error)\n"
            f"    SELECT rec_no, problem FROM checked WHERE problem IS NOT NULL\n"
            f"    RETURNING 1\n)\n"
            # A NULL ticket_id is neither a sentinel nor kept: coalesce the flag.
            f"SELECT count(*), count(*) FILTER (WHERE coalesce(sentinel, false)),\n"
            f"       (SELECT count(*) FROM set_aside),\n"
            f"       count(*) FILTER (WHERE problem IS NULL AND NOT sentinel AND alarm),\n"
            f"       count(*) FILTER (WHERE problem IS NULL AND NOT sentinel AND NOT alarm)\n"
            f"FROM checked"
        )

    @cached_property
    def reject_superseded(self) -> str:
        """Set aside every earlier occurrence of a ticket whose last occurrence in the file
        was set aside (naming that line). Runs only when something was set aside."""
        key = _q(KEY_COLUMN)
        return (
            f"WITH last_rejected AS (\n"
            f"    SELECT s.{key} AS ticket_id, max(s.rec_no) AS rec_no\n"
            f"    FROM {REJECTS} AS r JOIN {STAGING} AS s ON s.rec_no = r.rec_no\n"
            f"    WHERE r.superseded_by IS NULL AND btrim(s.{key}) <> ''\n"
            f"      AND s.{key} NOT LIKE '{_SENTINEL_LIKE}'\n"
            f"    GROUP BY s.{key}\n"
            f"), last_is_rejected AS (\n"
            f"    SELECT l.ticket_id, l.rec_no FROM last_rejected AS l\n"
            f"    WHERE NOT EXISTS (SELECT 1 FROM {STAGING} AS later\n"
            f"                      WHERE later.{key} = l.ticket_id AND later.rec_no > l.rec_no)\n"
            f")\n"
            f"INSERT INTO {REJECTS} (rec_no, error, superseded_by)\n"
            f"SELECT s.rec_no, '{KEY_COLUMN}: set aside with its last occurrence in the file',"
            f" l.rec_no\n"
            f"FROM last_is_rejected AS l JOIN {STAGING} AS s\n"
            f"  ON s.{key} = l.ticket_id AND s.rec_no < l.rec_no\n"
            f"WHERE NOT EXISTS (SELECT 1 FROM {REJECTS} AS r WHERE r.rec_no = s.rec_no)"
        )

    @staticmethod
    def _candidate_filter(*, exclude_rejected: bool) -> str:
        """Rows to upsert: not set aside, not a sentinel, not an alarm."""
        wanted = (
            f"CASE WHEN s.{_q(KEY_COLUMN)} LIKE '{_SENTINEL_LIKE}' THEN false\n"
            f"               ELSE NOT {_is_alarm()} END"
        )
        if not exclude_rejected:  # nothing set aside: skip the anti-join
            return wanted
        rejected = f"EXISTS (SELECT 1 FROM {REJECTS} AS r WHERE r.rec_no = s.rec_no)"
        return f"NOT {rejected}\n      AND {wanted}"

    @cached_property
    def candidate_counts(self) -> str:
        """Alarm rows dropped, and rows left to upsert (before de-duplication)."""
        alarm = _is_alarm()
        return (
            f"SELECT count(*) FILTER (WHERE {alarm}), count(*) FILTER (WHERE NOT {alarm})\n"
            f"FROM {STAGING} AS s\n"
            f"WHERE NOT EXISTS (SELECT 1 FROM {REJECTS} AS r WHERE r.rec_no = s.rec_no)\n"
            f"  AND s.{_q(KEY_COLUMN)} NOT LIKE '{_SENTINEL_LIKE}'"
        )

    def upsert(
        self,
        *,
        exclude_rejected: bool = True,
        file_columns: tuple[str, ...] | None = None,
        rescue: bool = False,
    ) -> str:
        """Upsert the last valid occurrence of each ticket_id; returns (distinct, written).

        Whatever the file's place in the stream (baseline, delta, late, replay), a row
        replaces a stored one only if its updated_at is not older (the recency guard):
        older data never overwrites newer.

        ``file_columns`` (a drifting file's header): only the stored columns the file has
        are inserted and set, so a column the exporter dropped keeps its stored values,
        never NULL. ``rescue``: the file's unknown columns are merged into ``rescued``,
        keeping what earlier files rescued. Built once per shape.
        """
        shape = (exclude_rejected, file_columns or (), rescue)
        if shape not in self._upserts:
            columns = self.stored_columns
            if file_columns is not None:
                columns = tuple(c for c in columns if c in file_columns)
            self._upserts[shape] = self._upsert(columns, exclude_rejected, rescue=rescue)
        return self._upserts[shape]

    def _upsert(self, columns: tuple[str, ...], exclude_rejected: bool, *, rescue: bool) -> str:
        """Labels are normalized once per distinct raw value (a file has a few dozen regions
        and statuses, not thousands), then joined: far cheaper than a regex per row."""
        labels = [c for c in NORMALIZED_COLUMNS if c in columns]
        # One scan collects the distinct label combinations; each label is then cleaned
        # once per distinct value from that small set.
        ctes = (
            [
                f"label_values AS MATERIALIZED (\n"
                f"    SELECT DISTINCT {', '.join(_q(c) for c in labels)} FROM {STAGING}\n)"
            ]
            if labels
            else []
        )
        ctes += [
            f"label_{c} AS MATERIALIZED (\n"
            f"    SELECT raw,\n"
            f"           tickets.normalize_label(raw, CAST(:aliases AS jsonb) -> '{c}') AS label\n"
            f"    FROM (SELECT DISTINCT {_q(c)} AS raw FROM label_values) AS d\n)"
            for c in labels
        ]
        joins = "".join(f"\n    LEFT JOIN label_{c} ON label_{c}.raw = s.{_q(c)}" for c in labels)
        select = [f"label_{c}.label" if c in labels else _cast(c) for c in columns]
        select += ["CAST(:source_key AS text)", "now()"]
        all_columns = [*columns, "source_key", "ingested_at"]
        updates = [f"{_q(c)} = excluded.{_q(c)}" for c in all_columns if c != KEY_COLUMN]
        if rescue:
            select.append(f"s.{RESCUED}")
            all_columns.append(RESCUED)
            # A later file without a rescued column clears nothing: merge, newest wins.
            updates.append(f"{RESCUED} = coalesce(stored.{RESCUED}, '{{}}') || excluded.{RESCUED}")
        select_list = ",\n           ".join(select)
        insert_columns = ", ".join(_q(c) for c in all_columns)
        update_list = ",\n        ".join(updates)
        recency = _q(RECENCY_COLUMN)
        # A stored NULL (rows from before updated_at was required) is replaced.
        guard = f"\n    WHERE stored.{recency} IS NULL OR excluded.{recency} >= stored.{recency}"
        ctes.append(
            # Counted apart from the rows written: the guard may keep some out.
            f"latest AS MATERIALIZED (\n"
            f"    SELECT DISTINCT ON (s.{_q(KEY_COLUMN)})\n           {select_list}\n"
            f"    FROM {STAGING} AS s {_plain_row(columns)}{joins}\n"
            f"    WHERE {self._candidate_filter(exclude_rejected=exclude_rejected)}\n"
            # The last occurrence of a ticket_id within the file wins.
            f"    ORDER BY s.{_q(KEY_COLUMN)}, s.rec_no DESC\n)"
        )
        ctes.append(
            f"written AS (\n"
            f"    INSERT INTO {self.target} AS stored ({insert_columns})\n"
            f"    SELECT * FROM latest\n"
            f"    ON CONFLICT ({_q(KEY_COLUMN)}) DO UPDATE SET\n        {update_list}{guard}\n"
            f"    RETURNING 1\n)"
        )
        return (
            "WITH "
            + ",\n".join(ctes)
            + "\nSELECT (SELECT count(*) FROM latest), (SELECT count(*) FROM written)"
        )

    @cached_property
    def find_bad_values(self) -> str:
        checks = ",\n    ".join(
            f"'{c}: ' || tickets.input_error(s.{_q(c)}, '{COLUMN_KINDS[c].value}')"
            for c in CSV_COLUMNS
            if COLUMN_KINDS[c] is not Kind.TEXT and (c in self.stored_columns or c == ALARM_COLUMN)
        )
        return (
            f"INSERT INTO {REJECTS} (rec_no, error)\n"
            f"SELECT rec_no, errors FROM (\n"
            f"  SELECT s.rec_no, concat_ws('; ',\n    {checks}) AS errors\n"
            f"  FROM {STAGING} AS s\n"
            f"  WHERE NOT EXISTS (SELECT 1 FROM {REJECTS} AS r WHERE r.rec_no = s.rec_no)\n"
            f"    AND s.{_q(KEY_COLUMN)} NOT LIKE '{_SENTINEL_LIKE}'\n"
            f") AS checked\nWHERE errors <> ''"
        )

    @staticmethod
    def rejected_details(file_columns: tuple[str, ...]) -> str:
        """Rejected records with their physical line (header is line 1) and raw CSV text;
        a record set aside with a later one names that one's line."""
        values = [
            f"s.{_q(c)}" if c in COLUMN_KINDS else f"(s.{RESCUED} ->> {literal(c)})"
            for c in file_columns
        ]
        fields = ", ".join(f"tickets.csv_field({v})" for v in values)
        newline_count = " + ".join(
            f"coalesce(length({v}) - length(replace({v}, E'\\n', '')), 0)" for v in values
        )
        return (
            # rec_no keeps counting across files on one connection: number rows afresh.
            f"WITH lines AS (\n"
            f"    SELECT rec_no, 1 + row_number() OVER (ORDER BY rec_no)\n"
            f"        + coalesce(sum({newline_count}) OVER (\n"
            f"        ORDER BY rec_no ROWS BETWEEN UNBOUNDED PRECEDING AND 1 PRECEDING), 0)\n"
            f"        AS line_number\n"
            f"    FROM {STAGING} AS s\n)\n"
            f"SELECT r.rec_no, l.line_number, array_to_string(ARRAY[{fields}], ','),\n"
            f"       r.error || coalesce(' (line ' || later.line_number || ', rejected)', '')\n"
            f"FROM {REJECTS} AS r\n"
            f"JOIN {STAGING} AS s ON s.rec_no = r.rec_no\n"
            f"JOIN lines AS l ON l.rec_no = r.rec_no\n"
            f"LEFT JOIN lines AS later ON later.rec_no = r.superseded_by\n"
            f"ORDER BY r.rec_no"
        )

    @classmethod
    def save_rejected(cls, file_columns: tuple[str, ...]) -> str:
        return (
            "INSERT INTO tickets.rejected_rows "
            "(dataset, source_key, etag, line_number, raw_line, error)\n"
            "SELECT :dataset, :source_key, :etag, line_number, raw_line, error\n"
            f"FROM (\n{cls.rejected_details(file_columns)}\n)"
            " AS d(rec_no, line_number, raw_line, error)"
        )


def aliases_json(aliases: Aliases) -> str:
    return json.dumps(aliases, sort_keys=True)
