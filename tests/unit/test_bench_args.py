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


def test_the_cost_row_bills_what_the_template_deploys() -> None:
    memory, architecture = bench.function_size()
    assert (memory, architecture) == (1024, "arm64")
    # 10 ms a file at 1 GB: 10 GB-s for 1,000 files, at the arm64 list price.
    assert bench.cost_per_thousand(0.010, 1024, "arm64") == pytest.approx(10 * 0.0000133334)
    assert bench.cost_per_thousand(0.010, 512, "x86_64") == pytest.approx(5 * 0.0000166667)
