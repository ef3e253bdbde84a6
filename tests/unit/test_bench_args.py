"""``tickets-devkit bench --only``: the step names, checked by the parser (nothing runs)."""

from __future__ import annotations

import pytest

from tickets_devkit import bench


def test_only_takes_a_comma_list_of_steps() -> None:
    args = bench.build_parser().parse_args(["--only", "cold,baseline"])
    assert args.only == ("cold", "baseline")
    assert bench.build_parser().parse_args([]).only == ()  # every step


@pytest.mark.parametrize("value", ["cold,warm", "", ","])
def test_only_refuses_unknown_steps(capsys: pytest.CaptureFixture[str], value: str) -> None:
    with pytest.raises(SystemExit) as info:
        bench.build_parser().parse_args(["--only", value])
    assert info.value.code == 2
    assert "choose from baseline, backlog, memory, cold, peer" in capsys.readouterr().err


def test_only_and_readme_do_not_mix(capsys: pytest.CaptureFixture[str]) -> None:
    with pytest.raises(SystemExit):
        bench.main(["--only", "cold", "--readme"])
    assert "--readme needs every step" in capsys.readouterr().err
