"""Versioned, idempotent migrations: ``dal/migrations/NNNN_name.sql``, applied in order once.

Each migration runs in its own transaction under an advisory lock, so two processes
starting at once (a cold Lambda and an operator) do not race.
"""

from __future__ import annotations

import hashlib
from dataclasses import dataclass
from importlib import resources

from tickets_ingest.dal import sql
from tickets_ingest.dal.db import Database
from tickets_ingest.errors import IngestError


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


def migrate(db: Database) -> list[str]:
    """Apply the migrations this database lacks; return their names."""
    applied_now: list[str] = []
    db.run(sql.CREATE_MIGRATIONS_TABLE)
    db.scalar(sql.LOCK_MIGRATIONS)
    try:
        done = {row[0]: row[1] for row in db.run(sql.APPLIED_MIGRATIONS)}
        for migration in available_migrations():
            if migration.version in done:
                if done[migration.version] != migration.checksum:
                    raise IngestError(
                        f"migration {migration.version:04d}_{migration.name} was changed after "
                        "it was applied; add a new migration instead of editing an old one"
                    )
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
