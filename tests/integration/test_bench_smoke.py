"""The benchmark command runs end to end at a tiny size, so it cannot rot. No timing is
asserted here: figures live in `make bench`'s table, never in a test."""

from __future__ import annotations

from pathlib import Path

from tickets_devkit import bench


def test_bench_runs_at_a_tiny_size(tmp_path: Path) -> None:
    rows = bench.run(
        bench.Options(
            rows=300,
            runs=1,
            backlog_files=4,
            latency_ms=1,
            memory_rows=500,
            results=tmp_path,
            readme=False,
        )
    )
    measures = [r.measure.split(",")[0] for r in rows]
    assert measures[:8] == [
        "baseline",
        "full update",
        "small delta",
        "backlog",
        "S3 requests per applied file",
        "that backlog with S3 taken out: the database path alone",
        "that backlog",  # with a network between ours (and psql) and the database
        "memory",
    ]
    assert any(m.startswith("cold start") for m in measures)
    assert any(m.startswith("peer") for m in measures)
    # Billed from this run's durations at the template's memory size and architecture.
    assert rows[-1].measure == "Lambda cost per 1,000 files (1024 MB, arm64)"
    assert rows[-1].ours.startswith("$") and "; one event per file: $" in rows[-1].ours
    assert "AWS list prices taken 2026-12-03" in rows[-1].note
    compared = [r for r in rows if r.ratio != "-"]
    assert len(compared) == 6 and all(float(r.ratio) > 0 for r in compared)
    table = (tmp_path / "latest.md").read_text()
    assert "| baseline, 300 rows into an empty table |" in table
    assert (tmp_path / "latest.png").stat().st_size > 1000
