"""The CLI's argument checks: a bad value is exit 2 and one line naming the argument.

Only the parser runs here (no configuration, database or AWS is touched).
"""

from __future__ import annotations

import pytest

from tickets_ingest.handlers.cli import (
    EXIT_BUSY,
    EXIT_FAILED,
    EXIT_OK,
    EXIT_PAUSED,
    EXIT_USAGE,
    MAX_HISTORY,
    build_parser,
)


def usage_error(capsys: pytest.CaptureFixture[str], *argv: str) -> str:
    with pytest.raises(SystemExit) as info:
        build_parser().parse_args(list(argv))
    assert info.value.code == EXIT_USAGE
    err = capsys.readouterr().err
    assert err.count("\n") == 1, err  # one line
    return err


@pytest.mark.parametrize(
    "value", ["inf", "-inf", "nan", "NaN", "-1", "3000000", "3600.5", "1e400", "soon", ""]
)
def test_sync_wait_out_of_range(capsys: pytest.CaptureFixture[str], value: str) -> None:
    err = usage_error(capsys, "sync", "--dataset", "inc", f"--wait={value}")
    assert err.startswith("tickets-ingest sync: argument --wait: ")
    assert "0 to 3600" in err


@pytest.mark.parametrize(("value", "seconds"), [("0", 0.0), ("2.5", 2.5), ("3600", 3600.0)])
def test_sync_wait_in_range(value: str, seconds: float) -> None:
    assert build_parser().parse_args(["sync", "--wait", value]).wait == seconds


@pytest.mark.parametrize("value", ["-1", "0", str(MAX_HISTORY + 1), "10" * 20, "1.5", "x"])
def test_history_limit_out_of_range(capsys: pytest.CaptureFixture[str], value: str) -> None:
    err = usage_error(capsys, "history", "--dataset", "inc", f"--limit={value}")
    assert "argument --limit: " in err and f"1 to {MAX_HISTORY}" in err


@pytest.mark.parametrize("value", ["1", "20", str(MAX_HISTORY)])
def test_history_limit_in_range(value: str) -> None:
    args = build_parser().parse_args(["history", "--dataset", "inc", "--limit", value])
    assert args.limit == int(value)


def test_replay_from_and_missing_are_exclusive(capsys: pytest.CaptureFixture[str]) -> None:
    err = usage_error(
        capsys, "replay", "--dataset", "inc", "--from", "2026-06-22T15-50-39.csv", "--missing"
    )
    assert "--missing" in err and "not allowed with" in err


def test_replay_needs_from_or_missing(capsys: pytest.CaptureFixture[str]) -> None:
    err = usage_error(capsys, "replay", "--dataset", "inc")
    assert "--from" in err and "--missing" in err


def test_replay_missing_parses() -> None:
    args = build_parser().parse_args(["replay", "--dataset", "inc", "--missing", "--apply"])
    assert args.missing and args.apply and args.from_key is None


def test_every_usage_error_is_one_line(capsys: pytest.CaptureFixture[str]) -> None:
    usage_error(capsys, "sync", "--no-such-flag")
    usage_error(capsys, "no-such-command")
    usage_error(capsys, "quarantine", "--dataset", "inc")


def test_pause_needs_a_dataset_and_a_reason(capsys: pytest.CaptureFixture[str]) -> None:
    assert "--reason" in usage_error(capsys, "pause", "--dataset", "inc")
    assert "--dataset" in usage_error(capsys, "pause", "--reason", "why")


def test_pause_and_resume_parse() -> None:
    args = build_parser().parse_args(["pause", "--dataset", "inc", "--reason", "x", "--by", "ana"])
    assert (args.dataset, args.reason, args.by) == ("inc", "x", "ana")
    args = build_parser().parse_args(["resume", "--dataset", "inc"])
    assert (args.dataset, args.by) == ("inc", None)


def test_exit_paused_is_its_own_code() -> None:
    assert EXIT_PAUSED not in {EXIT_OK, EXIT_FAILED, EXIT_USAGE, EXIT_BUSY}
