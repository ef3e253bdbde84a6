"""A realistic generated stream, applied by sync, equals the independent fold of its files."""

from __future__ import annotations

from tests.conftest import Env
from tests.support.oracle import fold, table_state
from tickets_devkit.generator import TicketStream
from tickets_ingest.core.schema import CSV_COLUMNS, DEFAULT_DROP_FIELDS
from tickets_ingest.logic.sync import sync


def test_generated_baseline_and_deltas_equal_the_fold(env: Env) -> None:
    stream = TicketStream("inc", seed=11)
    files = [stream.baseline(3000, sentinel=True)]
    files += [stream.delta(n, repeat_ids=n // 5) for n in (1, 22, 131, 400, 7)]
    # Uploaded out of order: the engine orders by the timestamp in the name.
    for stream_file in reversed(files):
        env.put(stream_file.key, stream_file.body)

    report = sync(env.runtime(), "inc")

    assert report.ok
    assert [r.key for r in report.applied] == [f.key for f in files]
    expected = fold(f.body for f in files)
    columns = [c for c in CSV_COLUMNS if c not in DEFAULT_DROP_FIELDS]
    actual = table_state(env.db(), "incidents", columns)
    assert actual.keys() == expected.keys()
    mismatches = [t for t in expected if actual[t] != expected[t]]
    assert mismatches == [], f"{len(mismatches)} rows differ, e.g. {mismatches[:3]}"


def test_applying_in_several_runs_equals_one_run(env: Env) -> None:
    stream = TicketStream("inc", seed=5)
    files = [stream.baseline(500)] + [stream.delta(40, repeat_ids=5) for _ in range(6)]
    runtime = env.runtime()
    for stream_file in files:
        env.put(stream_file.key, stream_file.body)
        sync(runtime, "inc")
    columns = [c for c in CSV_COLUMNS if c not in DEFAULT_DROP_FIELDS]
    assert table_state(env.db(), "incidents", columns) == fold(f.body for f in files)
