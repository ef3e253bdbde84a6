"""Versioned, idempotent migrations: ``dal/migrations/NNNN_name.sql``, applied in order once.

Each migration runs in its own transaction under an advisory lock, so two processes
starting at once (a cold Lambda and an operator) do not race.
"""

from __future__ import annotations

import hashlib
from dataclasses import dataclass
from importlib import resources

from tickets_ingest.dal import sql
from tickets_ingest.dal.db import Database, DatabaseError, sqlstate
from tickets_ingest.errors import IngestError

INSUFFICIENT_PRIVILEGE = "42501"


@dataclass(frozen=True)
class Migration:
    version: int
    name: str
    sql: str

    @property
    def checksum(self) -> str:
        return hashlib.sha256(self.sql.encode()).hexdigest()


def available_migrations() -> list[Migration]:
    found = []
    for entry in resources.files("tickets_ingest.dal").joinpath("migrations").iterdir():
        if entry.name.endswith(".sql"):
            version, _, rest = entry.name.partition("_")
            found.append(Migration(int(version), rest[:-4], entry.read_text(encoding="utf-8")))
    return sorted(found, key=lambda m: m.version)


def pending_migrations(db: Database) -> list[Migration]:
    """The migrations this database lacks, read without any DDL right: a runtime role with
    DML grants only can ask (and, with nothing pending, needs nothing more)."""
    if db.scalar(sql.MIGRATIONS_TABLE_EXISTS) is None:
        return available_migrations()
    done = {row[0]: row[1] for row in db.run(sql.APPLIED_MIGRATIONS)}
    _check_unchanged(done)
    return [m for m in available_migrations() if m.version not in done]


def require_migrated(db: Database) -> None:
    """Raise SchemaBehind unless every migration is applied (AUTO_MIGRATE=false)."""
    pending = pending_migrations(db)
    if pending:
        raise SchemaBehind(pending)


class SchemaBehind(IngestError):
    """The schema lacks migrations this code needs, and this process does not apply them."""

    def __init__(self, pending: list[Migration]) -> None:
        names = ", ".join(f"{m.version:04d}_{m.name}" for m in pending)
        super().__init__(
            f"the database schema lacks migration(s) {names}: run `tickets-ingest migrate` "
            "as the schema owner (a deploy step; AUTO_MIGRATE is off for this process)"
        )
        self.pending = pending


def _check_unchanged(done: dict[int, str]) -> None:
    for migration in available_migrations():
        if migration.version in done and done[migration.version] != migration.checksum:
            raise IngestError(
                f"migration {migration.version:04d}_{migration.name} was changed after "
                "it was applied; add a new migration instead of editing an old one"
            )


def migrate(db: Database) -> list[str]:
    """Apply the migrations this database lacks; return their names.

    With nothing pending this only reads ``schema_migrations``: no DDL, no lock."""
    pending = pending_migrations(db)
    if not pending:
        return []
    try:
        db.run(sql.CREATE_MIGRATIONS_TABLE)
    except DatabaseError as exc:
        if sqlstate(exc) != INSUFFICIENT_PRIVILEGE:
            raise
        raise SchemaBehind(pending) from None  # a DML-only runtime role: the owner migrates
    applied_now: list[str] = []
    db.scalar(sql.LOCK_MIGRATIONS)
    try:
        done = {row[0]: row[1] for row in db.run(sql.APPLIED_MIGRATIONS)}
        _check_unchanged(done)
        for migration in available_migrations():
            if migration.version in done:
                continue
            with db.transaction():
                db.run(migration.sql)
                db.run(
                    sql.RECORD_MIGRATION,
                    version=migration.version,
                    name=migration.name,
                    checksum=migration.checksum,
                )
            applied_now.append(f"{migration.version:04d}_{migration.name}")
    finally:
        db.scalar(sql.UNLOCK_MIGRATIONS)
    return applied_now
