"""The editable alias table for ``region`` and ``raw_status`` (shipped as data/aliases.csv).

Lookup keys are normalized the same way values are (trimmed, inner whitespace collapsed,
lower-cased), so an alias row matches every spelling that differs only in case or spacing.
"""

from __future__ import annotations

import csv
import re
from collections.abc import Iterable
from pathlib import Path

from tickets_ingest.core.schema import NORMALIZED_COLUMNS
from tickets_ingest.errors import ConfigError

_SPACES = re.compile(r"\s+")

Aliases = dict[str, dict[str, str]]  # column -> normalized alias -> canonical value


def alias_key(value: str) -> str:
    return _SPACES.sub(" ", value).strip().lower()


def parse_aliases(rows: Iterable[list[str]], source: str = "aliases") -> Aliases:
    aliases: Aliases = {column: {} for column in NORMALIZED_COLUMNS}
    reader = iter(rows)
    header = next(reader, None)
    if header != ["field", "alias", "canonical"]:
        raise ConfigError(f"{source}: header must be field,alias,canonical (got {header})")
    for number, row in enumerate(reader, start=2):
        if not row or not "".join(row).strip():
            continue
        if len(row) != 3:
            raise ConfigError(f"{source}, line {number}: expected 3 fields, got {len(row)}")
        column, alias, canonical = (part.strip() for part in row)
        if column not in aliases:
            known = ", ".join(NORMALIZED_COLUMNS)
            raise ConfigError(f"{source}, line {number}: field {column!r} is not one of {known}")
        if not alias or not canonical:
            raise ConfigError(f"{source}, line {number}: alias and canonical must not be empty")
        key = alias_key(alias)
        previous = aliases[column].get(key)
        if previous is not None and previous != canonical:
            raise ConfigError(
                f"{source}, line {number}: {column} alias {alias!r} maps to both "
                f"{previous!r} and {canonical!r}"
            )
        aliases[column][key] = canonical
    return aliases


def load_aliases(path: Path) -> Aliases:
    with path.open(newline="", encoding="utf-8-sig") as handle:
        return parse_aliases(csv.reader(handle), source=str(path))
