"""history lists the ledger; replay brings a restored database forward from processed/."""

from __future__ import annotations

import io
import json

from tests.conftest import Env
from tests.support.oracle import fold, table_state
from tickets_devkit.generator import TicketStream
from tickets_ingest.core.schema import CSV_COLUMNS, DEFAULT_DROP_FIELDS
from tickets_ingest.handlers.cli import EXIT_OK, main
from tickets_ingest.logic.sync import sync

COLUMNS = [c for c in CSV_COLUMNS if c not in DEFAULT_DROP_FIELDS]


def cli(*argv: str) -> tuple[int, str]:
    out = io.StringIO()
    return main(list(argv), out=out), out.getvalue()


def test_history_newest_first_with_filters(env: Env) -> None:
    stream = TicketStream("inc", seed=1)
    files = [stream.baseline(50), stream.delta(5), stream.delta(7)]
    for stream_file in files:
        env.put(stream_file.key, stream_file.body)
    sync(env.runtime(), "inc")

    code, out = cli("history", "--dataset", "inc")
    assert code == EXIT_OK
    lines = out.splitlines()
    assert lines[0] == "dataset inc: 3 decision(s), newest first"
    assert files[2].key.rsplit("/", 1)[-1] in lines[1] and "delta" in lines[1]
    assert files[0].key.rsplit("/", 1)[-1] in lines[3] and "baseline" in lines[3]

    code, out = cli("history", "--dataset", "inc", "--type", "baseline", "--json")
    [entry] = json.loads(out)
    assert entry["key"] == files[0].key and entry["rows_read"] == 50
    code, out = cli("history", "--dataset", "inc", "--limit", "1", "--json")
    assert [e["key"] for e in json.loads(out)] == [files[2].key]
    code, out = cli("history", "--dataset", "inc", "--since", "2999-01-01", "--json")
    assert json.loads(out) == []

    code, out = cli("status", "--dataset", "inc")
    assert "recent         (newest first)" in out


def test_replay_after_a_database_restore(env: Env) -> None:
    stream = TicketStream("inc", seed=2)
    files = [stream.baseline(300)] + [stream.delta(40, repeat_ids=4) for _ in range(3)]
    runtime = env.runtime()
    for stream_file in files[:2]:
        env.put(stream_file.key, stream_file.body)
    sync(runtime, "inc")
    db = env.db()
    db.run("CREATE TABLE public.incidents_backup AS TABLE tickets.incidents")
    db.run("CREATE TABLE public.import_meta_backup AS TABLE tickets.import_meta")
    for stream_file in files[2:]:
        env.put(stream_file.key, stream_file.body)
    sync(runtime, "inc")
    assert table_state(db, "incidents", COLUMNS) == fold(f.body for f in files)

    # The database is restored from the backup taken after the second file.
    db.run("TRUNCATE tickets.incidents, tickets.import_meta")
    db.run("INSERT INTO tickets.incidents SELECT * FROM public.incidents_backup")
    db.run(
        "INSERT INTO tickets.import_meta OVERRIDING SYSTEM VALUE "
        "SELECT * FROM public.import_meta_backup"
    )
    code, out = cli("status", "--dataset", "inc", "--json")
    assert json.loads(out)["watermark"] == files[1].key  # the ledger says where it stopped

    code, out = cli("replay", "--dataset", "inc", "--from", files[2].key.rsplit("/", 1)[-1])
    assert code == EXIT_OK and "dry run" in out and out.count("replay") >= 2
    assert table_state(db, "incidents", COLUMNS) == fold(f.body for f in files[:2])

    code, out = cli("replay", "--dataset", "inc", "--from", files[2].key, "--apply")
    assert code == EXIT_OK
    assert table_state(db, "incidents", COLUMNS) == fold(f.body for f in files)
    code, out = cli("status", "--dataset", "inc", "--json")
    assert json.loads(out)["watermark"] == files[3].key
    kinds = [r[0] for r in db.run("SELECT export_type FROM tickets.import_meta ORDER BY id")]
    assert kinds == ["baseline", "delta", "replay", "replay"]

    # Replaying everything again never lets an older row overwrite a newer one.
    code, out = cli("replay", "--dataset", "inc", "--from", files[0].key, "--apply")
    assert code == EXIT_OK
    assert table_state(db, "incidents", COLUMNS) == fold(f.body for f in files)

    # The stream goes on from the replayed watermark.
    newer = stream.delta(10)
    env.put(newer.key, newer.body)
    report = sync(env.runtime(), "inc")
    assert [r.export_type.value for r in report.applied] == ["delta"]
    assert table_state(db, "incidents", COLUMNS) == fold(f.body for f in [*files, newer])
