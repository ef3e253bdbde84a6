"""``with_literals``: a statement with parameters as one that a simple Query can carry."""

from __future__ import annotations

from datetime import UTC, datetime

import pytest

from tickets_ingest.dal.sql import RECORD_FILE_AND_UNBLOCK, with_literals


def test_each_parameter_becomes_a_literal_and_casts_stay() -> None:
    statement = "SELECT :a::text, CAST(:b AS jsonb), :n, :none, :a"
    assert with_literals(statement, a="it's", b='{"k": "\\\\"}', n=7, none=None) == (
        "SELECT 'it''s'::text, CAST('{\"k\": \"\\\\\"}' AS jsonb), 7, NULL, 'it''s'"
    )


def test_timestamps_keep_their_offset() -> None:
    at = datetime(2026, 6, 22, 12, 0, 0, 5, tzinfo=UTC)
    assert with_literals(":t", t=at) == "'2026-06-22T12:00:00.000005+00:00'"


def test_a_value_missing_for_a_parameter_is_an_error_not_a_null() -> None:
    with pytest.raises(KeyError, match="etag"):
        with_literals(RECORD_FILE_AND_UNBLOCK, dataset="inc", source_key="k")
    # So is ':name' in a string in the statement (ours have none): loud, never a wrong value.
    with pytest.raises(KeyError, match="not_a_parameter"):
        with_literals("SELECT ':not_a_parameter', :a", a=1)
