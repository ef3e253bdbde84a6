"""The pause register (``tickets.dataset_pauses``): which datasets an operator holds."""

from __future__ import annotations

from tickets_ingest.dal import sql
from tickets_ingest.dal.db import Database
from tickets_ingest.models import Pause


def _pause(dataset: str, rows: list[list[object]]) -> Pause | None:
    if not rows:
        return None
    paused_by, paused_at, reason = rows[0]
    return Pause(dataset, str(paused_by), paused_at, str(reason))  # type: ignore[arg-type]


def pause_in(dataset: str, rows: list[list[object]]) -> Pause | None:
    """The pause in the rows of ``sql.pause_check`` (sent in the Query that opens a file)."""
    return _pause(dataset, rows)


def pause_of(db: Database, dataset: str) -> Pause | None:
    return _pause(dataset, db.run(sql.DATASET_PAUSE, dataset=dataset))


def add_pause(db: Database, dataset: str, paused_by: str, reason: str) -> Pause | None:
    """The new pause; None if the dataset was paused already (that pause is kept)."""
    return _pause(
        dataset, db.run(sql.PAUSE_DATASET, dataset=dataset, paused_by=paused_by, reason=reason)
    )


def remove_pause(db: Database, dataset: str) -> Pause | None:
    """The pause that was lifted; None if the dataset was not paused."""
    return _pause(dataset, db.run(sql.RESUME_DATASET, dataset=dataset))
