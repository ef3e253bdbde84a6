"""What a process keeps between syncs: settings, the bucket, one database connection.

A Lambda container keeps one ``Runtime`` while warm; the CLI builds one per command.
The connection is opened lazily, migrated once, and re-opened when it breaks.
"""

from __future__ import annotations

import logging
from contextlib import AbstractContextManager
from dataclasses import dataclass, field
from functools import cached_property

from tickets_ingest.core.aliases import load_aliases
from tickets_ingest.dal import sql
from tickets_ingest.dal.credentials import connection_params, forget_cached_secret
from tickets_ingest.dal.db import Database, DatabaseError, InterfaceError, sqlstate
from tickets_ingest.dal.lease import DatasetLock
from tickets_ingest.dal.loader import RESCUED, TableLoader, aliases_json
from tickets_ingest.dal.migrate import migrate, require_migrated
from tickets_ingest.dal.retry import RetryPolicy
from tickets_ingest.dal.s3 import Bucket
from tickets_ingest.errors import SchemaMismatch
from tickets_ingest.logic.apply import ApplyContext
from tickets_ingest.models import DriftPolicy
from tickets_ingest.settings import Settings

log = logging.getLogger(__name__)


@dataclass
class Runtime:
    settings: Settings
    application_name: str = "tickets-ingest"
    _db: Database | None = field(default=None, repr=False)
    _checked_tables: set[tuple[str, DriftPolicy]] = field(default_factory=set, repr=False)
    _migrated: bool = False
    _vouched: tuple[Database, int] | None = field(default=None, repr=False)

    @cached_property
    def retry_policy(self) -> RetryPolicy:
        return RetryPolicy.from_settings(self.settings.retry)

    @cached_property
    def bucket(self) -> Bucket:
        return Bucket(self.settings.bucket, policy=self.retry_policy)

    @cached_property
    def _aliases_json(self) -> str:
        return aliases_json(load_aliases(self.settings.aliases_file))

    def db(self, *, verify: bool = False) -> Database:
        """The open connection, (re)connecting (and migrating once, if enabled) as needed.

        ``verify``: before new work, make sure a kept connection still answers (a warm
        container's connection may have died while idle: failover, idle timeout, proxy).
        One vouched for just before (``vouch``), with nothing run since, is not asked again.
        """
        vouched, self._vouched = self._vouched, None
        db = self._db
        # Vouched for, and nothing answered on it since: the same moment, as it were.
        fresh = vouched is not None and vouched[0] is db and vouched[1] == vouched[0].answers
        if verify and db is not None and not db.broken and not fresh:
            try:
                db.run("SELECT 1")
            except (InterfaceError, OSError, DatabaseError):
                log.warning("the kept database connection no longer answers; reconnecting")
        if not self._migrated:
            if self.settings.auto_migrate:
                self.migrate()
            else:  # the deployed function: migrations are the owner's deploy step
                require_migrated(self._connection())
                self._migrated = True
        return self._connection()

    def vouch(self) -> None:
        """The kept connection has just answered (an invocation's first statement, which
        reconnects if it must): the next ``db(verify=True)``, if nothing runs in between,
        skips its SELECT 1, which would tell no more. Worth a round trip per invocation."""
        db = self._db
        self._vouched = (db, db.answers) if db is not None and not db.broken else None

    def forget_vouch(self) -> None:
        """Whatever was vouched for is no longer known: the next check asks again."""
        self._vouched = None

    def migrate(self) -> list[str]:
        """Bring the schema up to date; the names of the migrations applied now."""
        applied = migrate(self._connection())
        if applied:
            log.info("applied migrations %s", ", ".join(applied))
        self._migrated = True
        return applied

    def _connection(self) -> Database:
        if self._db is None or self._db.broken:
            if self._db is not None:
                log.warning("database connection was lost; reconnecting")
            try:
                self._db = self._connect()
            except DatabaseError as exc:
                if sqlstate(exc) != "28P01" or not self.settings.database.secret_arn:
                    raise
                # Wrong password with a cached secret: it was probably rotated; fetch again.
                log.warning("database login failed; fetching the secret again")
                forget_cached_secret()
                self._db = self._connect()
        return self._db

    def _connect(self, purpose: str = "") -> Database:
        access = self.settings.database
        return Database.connect(
            connection_params(self.settings),
            ca_bundle=access.ca_bundle,
            application_name=f"{self.application_name} {purpose}".strip(),
            dead_peer_seconds=access.dead_peer_seconds,
            server_keepalives=access.server_keepalives,
        )

    def dataset_lock(
        self,
        dataset: str,
        wait_seconds: float | None = None,
        *,
        takes_news: bool = False,
        hand_over: bool = False,
    ) -> AbstractContextManager[DatasetLock]:
        """The dataset's sync lock on this runtime's connection, its lease kept alive by a
        heartbeat on a second connection (see ``dal.lease``)."""
        wait = self.settings.lock_wait_seconds if wait_seconds is None else wait_seconds
        return DatasetLock.held(
            self.db(),
            dataset,
            connect=lambda: self._connect("lease"),
            settings=self.settings.lock,
            wait_seconds=wait,
            takes_news=takes_news,
            hand_over=hand_over,
        )

    def apply_context(self, dataset: str) -> ApplyContext:
        table = self.settings.table_for(dataset)
        loader = TableLoader(table, self.settings.stored_columns)
        policy = self.settings.schema_drift_for(dataset)
        if (table, policy) not in self._checked_tables:
            self._check_table(table, policy)
            self._checked_tables.add((table, policy))
        return ApplyContext(
            dataset=dataset,
            loader=loader,
            source_timezone=self.settings.source_timezone,
            aliases_json=self._aliases_json,
            max_rejected_share=self.settings.max_rejected_share,
            lock_timeout_ms=int(self.settings.lock.apply_lock_timeout_seconds * 1000),
            statement_timeout_ms=int(self.settings.lock.apply_statement_timeout_seconds * 1000),
            drift_policy=policy,
        )

    def _check_table(self, table: str, policy: DriftPolicy) -> None:
        present = {row[0] for row in self.db().run(sql.TABLE_COLUMNS, table=table)}
        if not present:
            raise SchemaMismatch(
                f"table tickets.{table} does not exist; run `tickets-ingest migrate`"
            )
        missing = [c for c in self.settings.stored_columns if c not in present]
        if missing:
            raise SchemaMismatch(
                f"table tickets.{table} lacks column(s) {', '.join(missing)} that DROP_FIELDS "
                "keeps; add them with a migration or drop them in DROP_FIELDS"
            )
        if policy is DriftPolicy.RESCUE and RESCUED not in present:
            raise SchemaMismatch(
                f"table tickets.{table} lacks column {RESCUED} (jsonb) that SCHEMA_DRIFT=rescue "
                "writes unknown columns to; run `tickets-ingest migrate` (0006 adds it to the "
                "default tables) or add it to this one"
            )

    def close(self) -> None:
        if self._db is not None:
            self._db.close()
            self._db = None
