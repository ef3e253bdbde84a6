"""The demo's stream reads like a live export's (issue 15): its newest files are minutes
old when ``make run`` starts, so ``status`` shows a lag of minutes, not months."""

from __future__ import annotations

from datetime import datetime, timedelta

from tickets_devkit.demo import demo_streams
from tickets_devkit.generator import NAIROBI


def test_the_demo_stream_is_dated_minutes_before_now() -> None:
    now = datetime(2026, 12, 3, 14, 0, 0, tzinfo=NAIROBI)
    files = demo_streams(rows=50, seed=1, now=now)
    newest: dict[str, datetime] = {}
    for f in files:
        dataset = f.key.split("/")[1]
        newest[dataset] = max(newest.get(dataset, f.timestamp), f.timestamp)
    assert {d: now - t for d, t in newest.items()} == {
        "inc": timedelta(minutes=5),
        "crq": timedelta(minutes=10),
    }
    assert sorted(f.timestamp for f in files)[0] == now - timedelta(minutes=50)
