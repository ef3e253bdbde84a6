"""history lists the ledger; replay brings a restored database forward from processed/."""

from __future__ import annotations

import io
import json
from urllib.parse import urlsplit

import pytest

from tests.conftest import Env, PostgresServer
from tests.support.oracle import fold, table_state
from tests.support.rows import csv_bytes, key, row
from tickets_devkit.generator import TicketStream
from tickets_ingest.core.schema import CSV_COLUMNS, DEFAULT_DROP_FIELDS
from tickets_ingest.dal.db import Database
from tickets_ingest.handlers.cli import EXIT_FAILED, EXIT_OK, main
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
    assert "recent         (newest first; when applied, UTC)" in out


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


def test_restore_then_replay_missing_loses_no_late_file(
    env: Env, pg_server: PostgresServer, capsys: pytest.CaptureFixture[str]
) -> None:
    """Issue 11.4: a late file applied after the backup is older than the restored
    watermark; replaying by name from the watermark on never brings it back."""
    files = {
        "10-00": csv_bytes(
            [row("INC1", "2026-06-22 09:50:00"), row("INC2", "2026-06-22 09:55:00")]
        ),
        "12-00": csv_bytes([row("INC3", "2026-06-22 11:50:00")]),
        "11-00": csv_bytes(
            [row("INC1", "2026-06-22 10:55:00"), row("INC4", "2026-06-22 10:58:00")]
        ),
        "13-00": csv_bytes(
            [row("INC5", "2026-06-22 12:50:00"), row("INC2", "2026-06-22 12:55:00")]
        ),
    }

    def put(stamp: str) -> None:
        env.put(key(f"2026-06-22T{stamp}-00"), files[stamp])

    put("10-00")
    put("12-00")
    assert cli("sync", "--dataset", "inc", "--apply")[0] == EXIT_OK
    # The backup: a copy of the whole database (no session may be connected to it).
    source = urlsplit(env.database_url).path.lstrip("/")
    backup = pg_server.create_database(template=source)
    try:
        put("11-00")  # late: older than the watermark 12-00
        assert cli("sync", "--dataset", "inc", "--apply")[0] == EXIT_OK
        put("13-00")
        assert cli("sync", "--dataset", "inc", "--apply")[0] == EXIT_OK
        truth = table_state(env.db(), "incidents", COLUMNS)
        assert set(truth) == {"INC1", "INC2", "INC3", "INC4", "INC5"}

        # Restore: from now on the database is the backup.
        env.set(DATABASE_URL=pg_server.url_for(backup))
        restored = Database.connect(pg_server.url_for(backup))
        env._closers.append(restored.close)
        capsys.readouterr()
        code, out = cli("status", "--dataset", "inc", "--json")
        status = json.loads(out)
        assert status["pending"] == []
        assert status["missing"] == [
            "automations/inc/processed/2026-06-22T11-00-00.csv",
            "automations/inc/processed/2026-06-22T13-00-00.csv",
        ]
        assert code == EXIT_FAILED
        assert "MISSING 2 archived file(s) of inc not in the ledger" in capsys.readouterr().err
        code, out = cli("status", "--dataset", "inc")
        assert "MISSING        2 archived in processed/ but not in the ledger" in out
        assert "2026-06-22T11-00-00.csv, 2026-06-22T13-00-00.csv" in out

        # The old procedure (replay from the file after the watermark) skips 11-00 ...
        assert (
            cli("replay", "--dataset", "inc", "--from", "2026-06-22T12-00-00.csv", "--apply")[0]
            == EXIT_OK
        )
        assert "INC4" not in table_state(restored, "incidents", COLUMNS)
        # ... and status says so.
        code, out = cli("status", "--dataset", "inc", "--json")
        assert json.loads(out)["missing"] == ["automations/inc/processed/2026-06-22T11-00-00.csv"]
        assert code == EXIT_FAILED

        # replay --missing: a dry run changes nothing, then exactly the missing file applies.
        code, out = cli("replay", "--dataset", "inc", "--missing")
        assert code == EXIT_OK and "dry run" in out and "2026-06-22T11-00-00.csv  replay" in out
        assert "INC4" not in table_state(restored, "incidents", COLUMNS)
        code, out = cli("replay", "--dataset", "inc", "--missing", "--apply")
        assert code == EXIT_OK and out.count("  replay ") == 1
        assert table_state(restored, "incidents", COLUMNS) == truth

        code, out = cli("status", "--dataset", "inc", "--json")
        after = json.loads(out)
        assert code == EXIT_OK
        assert after["missing"] == [] and after["watermark"] == key("2026-06-22T13-00-00")
        kinds = restored.run("SELECT source_key, export_type FROM tickets.import_meta ORDER BY id")
        assert [(k.rsplit("/", 1)[-1], t) for k, t in kinds] == [
            ("2026-06-22T10-00-00.csv", "baseline"),
            ("2026-06-22T12-00-00.csv", "delta"),
            ("2026-06-22T12-00-00.csv", "replay"),
            ("2026-06-22T13-00-00.csv", "replay"),
            ("2026-06-22T11-00-00.csv", "replay"),
        ]
        # Nothing is missing any more, so a second run does nothing.
        code, out = cli("replay", "--dataset", "inc", "--missing", "--apply")
        assert code == EXIT_OK and "nothing pending" in out
    finally:
        env.close()
        pg_server.drop_database(backup)


def test_replay_missing_is_a_no_op_on_a_healthy_dataset(env: Env) -> None:
    stream = TicketStream("inc", seed=3)
    for stream_file in [stream.baseline(20), stream.delta(5)]:
        env.put(stream_file.key, stream_file.body)
    sync(env.runtime(), "inc")
    code, out = cli("status", "--dataset", "inc", "--json")
    assert code == EXIT_OK and json.loads(out)["missing"] == []
    code, out = cli("replay", "--dataset", "inc", "--missing", "--apply")
    assert code == EXIT_OK and "nothing pending" in out
