"""What each dataset last heard and its last sync error (``tickets.dataset_activity``), and
the newest file applied to it with its schema drift (read from the ledger), for ``status``."""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime
from typing import Any

from tickets_ingest.dal import sql
from tickets_ingest.dal.db import Database


@dataclass(frozen=True)
class Activity:
    """One dataset's row: either half may be empty (never a message, never an error)."""

    last_message_at: datetime | None
    last_message_kind: str | None  # event | continuation | resume | sweep | direct
    last_message_key: str | None  # the S3 key an event named
    last_error_at: datetime | None
    last_error_kind: str | None  # rejected, or the error's type (FileFailed, TransientFault…)
    last_error_key: str | None  # the file it concerns, if any
    last_error: str | None  # the message, as the CLI would print it


@dataclass(frozen=True)
class Drift:
    """The newest applied file's header differs from the configured schema."""

    added: tuple[str, ...]  # columns in the file the schema does not know
    missing: tuple[str, ...]  # schema columns the file lacks
    since_key: str  # the first file of the unbroken run with this same drift


@dataclass(frozen=True)
class LastApplied:
    key: str
    applied_at: datetime  # the ledger row's finished_at (UTC)
    export_type: str
    drift: Drift | None


def note_message(db: Database, dataset: str, kind: str, key: str | None = None) -> None:
    db.run(sql.NOTE_MESSAGE, dataset=dataset, kind=kind, key=key)


def note_error(db: Database, dataset: str, kind: str, message: str, key: str | None) -> None:
    db.run(sql.NOTE_ERROR, dataset=dataset, kind=kind, key=key, message=message)


def activity_of(db: Database, dataset: str) -> Activity | None:
    rows = db.run(sql.DATASET_ACTIVITY, dataset=dataset)
    return Activity(*rows[0]) if rows else None


def last_applied(db: Database, dataset: str) -> LastApplied | None:
    rows = db.run(sql.LAST_APPLIED, dataset=dataset)
    if not rows:
        return None
    key, applied_at, export_type, drift, since_key = rows[0]
    return LastApplied(key, applied_at, export_type, _drift(drift, since_key or key))


def _drift(value: Any, since_key: str) -> Drift | None:
    """``metadata.schema_drift`` as recorded: {"added": [...], "missing": [...]}."""
    if not isinstance(value, dict):
        return None
    return Drift(
        added=tuple(str(c) for c in value.get("added") or ()),
        missing=tuple(str(c) for c in value.get("missing") or ()),
        since_key=since_key,
    )
