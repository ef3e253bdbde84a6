"""The alias table for region and raw_status."""

from __future__ import annotations

import csv
from pathlib import Path

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from tickets_ingest.core.aliases import alias_key, load_aliases, parse_aliases
from tickets_ingest.core.schema import NORMALIZED_COLUMNS
from tickets_ingest.errors import ConfigError
from tickets_ingest.settings import DEFAULT_ALIASES

SHIPPED = Path(__file__).resolve().parents[2] / "functions/ingest/tickets_ingest/data/aliases.csv"
HEAD = ["field", "alias", "canonical"]


class TestAliasKey:
    @pytest.mark.parametrize(
        ("value", "key"),
        [
            ("Nairobi", "nairobi"),
            ("  rift   VALLEY ", "rift valley"),
            ("In\tProgress", "in progress"),
            ("in\n progress\r\n", "in progress"),
            ("north\u00a0eastern", "north eastern"),
            ("", ""),
            ("   ", ""),
        ],
    )
    def test_normalizes(self, value: str, key: str) -> None:
        assert alias_key(value) == key

    @settings(max_examples=30, deadline=None, database=None)
    @given(st.text(max_size=30))
    def test_idempotent(self, value: str) -> None:
        assert alias_key(alias_key(value)) == alias_key(value)

    @settings(max_examples=30, deadline=None, database=None)
    @given(st.text(alphabet="abcXYZ \t", max_size=20))
    def test_spacing_and_case_do_not_matter(self, value: str) -> None:
        assert alias_key(value) == alias_key(f"  {value.upper()}\t ")
        assert "  " not in alias_key(value)


class TestParseAliases:
    def test_valid(self) -> None:
        aliases = parse_aliases(
            [
                HEAD,
                ["region", "  Rift  Valley ", " Rift Valley "],
                ["region", "nbi", "Nairobi"],
                ["raw_status", "WIP", "In Progress"],
            ]
        )
        assert aliases == {
            "region": {"rift valley": "Rift Valley", "nbi": "Nairobi"},
            "raw_status": {"wip": "In Progress"},
        }

    def test_header_only_gives_every_column_empty(self) -> None:
        assert parse_aliases([HEAD]) == {column: {} for column in NORMALIZED_COLUMNS}

    def test_blank_rows_skipped(self) -> None:
        aliases = parse_aliases([HEAD, [], ["", "", ""], ["  "], ["region", "x", "X"]])
        assert aliases["region"] == {"x": "X"}

    def test_same_alias_same_canonical_is_fine(self) -> None:
        aliases = parse_aliases([HEAD, ["region", "nbi", "Nairobi"], ["region", "NBI ", "Nairobi"]])
        assert aliases["region"] == {"nbi": "Nairobi"}

    def test_same_alias_in_two_columns_is_fine(self) -> None:
        aliases = parse_aliases([HEAD, ["region", "x", "A"], ["raw_status", "x", "B"]])
        assert aliases["region"]["x"] == "A"
        assert aliases["raw_status"]["x"] == "B"

    @pytest.mark.parametrize(
        ("rows", "message"),
        [
            ([], r"my\.csv: header must be field,alias,canonical \(got None\)"),
            ([["alias", "field", "canonical"]], "header must be field,alias,canonical"),
            ([["field", "alias"]], "header must be field,alias,canonical"),
            ([["Field", "Alias", "Canonical"]], "header must be field,alias,canonical"),
            ([HEAD, ["region", "x"]], r"my\.csv, line 2: expected 3 fields, got 2"),
            (
                [HEAD, ["region", "x", "X"], ["region", "y", "Y", "extra"]],
                r"my\.csv, line 3: expected 3 fields, got 4",
            ),
            (
                [HEAD, ["status", "x", "X"]],
                r"line 2: field 'status' is not one of region, raw_status",
            ),
            ([HEAD, ["region", " ", "X"]], "line 2: alias and canonical must not be empty"),
            ([HEAD, ["region", "x", ""]], "line 2: alias and canonical must not be empty"),
            (
                [HEAD, ["region", "nbi", "Nairobi"], ["region", " NBI", "Mombasa"]],
                r"line 3: region alias 'NBI' maps to both 'Nairobi' and 'Mombasa'",
            ),
        ],
    )
    def test_errors(self, rows: list[list[str]], message: str) -> None:
        with pytest.raises(ConfigError, match=message):
            parse_aliases(rows, source="my.csv")

    def test_default_source_name(self) -> None:
        with pytest.raises(ConfigError, match=r"^aliases: header"):
            parse_aliases([])

    def test_accepts_a_csv_reader(self) -> None:
        text = "field,alias,canonical\nregion,msa,Mombasa\n"
        assert parse_aliases(csv.reader(text.splitlines()))["region"] == {"msa": "Mombasa"}


class TestLoadAliases:
    def test_from_a_file(self, tmp_path: Path) -> None:
        path = tmp_path / "aliases.csv"
        path.write_text(
            'field,alias,canonical\r\nregion,"rift,valley",Rift Valley\r\n\r\n'
            "raw_status,wip,In Progress\r\n",
            encoding="utf-8",
        )
        assert load_aliases(path) == {
            "region": {"rift,valley": "Rift Valley"},
            "raw_status": {"wip": "In Progress"},
        }

    def test_utf8(self, tmp_path: Path) -> None:
        path = tmp_path / "aliases.csv"
        path.write_text("field,alias,canonical\nregion,Mûrang'a,Murang'a\n", encoding="utf-8")
        assert load_aliases(path)["region"] == {"mûrang'a": "Murang'a"}

    def test_errors_name_the_file(self, tmp_path: Path) -> None:
        path = tmp_path / "bad.csv"
        path.write_text("field,alias,canonical\nregion,x\n", encoding="utf-8")
        with pytest.raises(ConfigError, match=r"bad\.csv, line 2"):
            load_aliases(path)

    def test_missing_file(self, tmp_path: Path) -> None:
        with pytest.raises(FileNotFoundError):
            load_aliases(tmp_path / "nope.csv")


class TestShippedTable:
    def test_is_the_settings_default(self) -> None:
        assert DEFAULT_ALIASES.resolve() == SHIPPED

    def test_loads(self) -> None:
        aliases = load_aliases(SHIPPED)
        assert set(aliases) == set(NORMALIZED_COLUMNS)
        assert aliases["region"]
        assert aliases["raw_status"]

    @pytest.mark.parametrize(
        ("column", "value", "canonical"),
        [
            ("region", "  rift   VALLEY ", "Rift Valley"),
            ("region", "Rift-Valley", "Rift Valley"),
            ("region", "NBI", "Nairobi"),
            ("region", "north  eastern", "North Eastern"),
            ("raw_status", " In-Progress", "In Progress"),
            ("raw_status", "WIP", "In Progress"),
            ("raw_status", "canceled", "Cancelled"),
        ],
    )
    def test_maps(self, column: str, value: str, canonical: str) -> None:
        assert load_aliases(SHIPPED)[column][alias_key(value)] == canonical

    def test_canonical_values_are_fixed_points(self) -> None:
        # Normalizing an already-canonical value never turns it into something else.
        for mapping in load_aliases(SHIPPED).values():
            for canonical in set(mapping.values()):
                assert mapping.get(alias_key(canonical), canonical) == canonical

    def test_keys_are_normalized(self) -> None:
        for mapping in load_aliases(SHIPPED).values():
            for alias in mapping:
                assert alias == alias_key(alias)
