"""Configuration: every environment variable is read and checked here, once.

Defaults work for a local run; a bad value fails fast with the variable's name.
"""

from __future__ import annotations

import os
import re
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from urllib.parse import parse_qs, unquote, urlsplit
from zoneinfo import ZoneInfo, ZoneInfoNotFoundError

from tickets_ingest.core.keys import DATASET_PATTERN
from tickets_ingest.core.schema import CSV_COLUMNS, DEFAULT_DROP_FIELDS, KEY_COLUMN, RECENCY_COLUMN
from tickets_ingest.errors import ConfigError

IDENTIFIER = re.compile(r"[a-z_][a-z0-9_]{0,62}")
DEFAULT_TABLES = {"inc": "incidents", "crq": "change_requests"}
DEFAULT_ALIASES = Path(__file__).parent / "data" / "aliases.csv"
DEFAULT_DATABASE_URL = "postgresql://postgres@127.0.0.1:5432/tickets"


_VERIFYING_SSLMODES = ("verify-ca", "verify-full")


@dataclass(frozen=True)
class DatabaseAccess:
    """How to reach PostgreSQL beyond DATABASE_URL (the AWS deployment's way)."""

    secret_arn: str | None = None  # Secrets Manager JSON: host, port, username, password, dbname
    sslmode: str | None = None  # overrides the URL's / the secret's sslmode
    ca_bundle: Path | None = None  # the RDS CA bundle for verify-ca / verify-full
    iam_auth: bool = False  # password = an RDS IAM auth token
    require_tls: bool = False  # refuse to start without a verified TLS connection


@dataclass(frozen=True)
class LambdaSettings:
    """Settings only the Lambda handler uses."""

    queue_url: str | None = None  # the FIFO queue, for continuation messages
    dlq_url: str | None = None  # its dead-letter queue, for `tickets-ingest redrive`
    idempotency_table: str | None = None
    time_budget_margin_seconds: float = 60.0


@dataclass(frozen=True)
class Settings:
    database_url: str
    bucket: str
    datasets: tuple[str, ...]
    tables: Mapping[str, str]  # dataset -> table in schema ``tickets``
    drop_fields: tuple[str, ...]
    source_timezone: str
    max_rejected_share: float
    aliases_file: Path
    lock_wait_seconds: float
    auto_migrate: bool
    database: DatabaseAccess = field(default_factory=DatabaseAccess)
    lambda_: LambdaSettings = field(default_factory=LambdaSettings)

    def table_for(self, dataset: str) -> str:
        if dataset not in self.datasets:
            enabled = ", ".join(self.datasets)
            raise ConfigError(f"dataset {dataset!r} is not enabled (DATASETS={enabled})")
        return self.tables[dataset]

    @property
    def stored_columns(self) -> tuple[str, ...]:
        """CSV columns kept in the tables, in the exporter's order."""
        return tuple(c for c in CSV_COLUMNS if c not in self.drop_fields)


@dataclass(frozen=True)
class ConnectionParams:
    host: str
    port: int
    user: str
    password: str | None
    database: str
    sslmode: str

    def describe(self) -> str:
        """Where we connect, for messages; never the password."""
        return f"{self.user}@{self.host}:{self.port}/{self.database} (sslmode={self.sslmode})"


_SSLMODES = {"disable", "allow", "prefer", "require", "verify-ca", "verify-full"}


def parse_database_url(url: str) -> ConnectionParams:
    parts = urlsplit(url)
    if not url.startswith(("postgresql://", "postgres://")):
        raise ConfigError("DATABASE_URL must start with postgresql://")
    query = parse_qs(parts.query)
    sslmode = query.get("sslmode", ["prefer"])[0]
    if sslmode not in _SSLMODES:
        raise ConfigError(f"DATABASE_URL sslmode={sslmode!r} is not one of {sorted(_SSLMODES)}")
    try:
        port = parts.port or 5432
    except ValueError:
        raise ConfigError("DATABASE_URL has an invalid port") from None
    return ConnectionParams(
        host=parts.hostname or "127.0.0.1",
        port=port,
        user=unquote(parts.username or "postgres"),
        password=unquote(parts.password) if parts.password is not None else None,
        database=unquote(parts.path.lstrip("/")) or "postgres",
        sslmode=sslmode,
    )


def _csv_list(raw: str) -> tuple[str, ...]:
    return tuple(part.strip() for part in raw.split(",") if part.strip())


def _float(env: Mapping[str, str], name: str, default: float, low: float, high: float) -> float:
    raw = env.get(name)
    if raw is None or raw.strip() == "":
        return default
    try:
        value = float(raw)
    except ValueError:
        raise ConfigError(f"{name}={raw!r} is not a number") from None
    if not low <= value <= high:
        raise ConfigError(f"{name}={raw!r} must be between {low} and {high}")
    return value


def _bool(env: Mapping[str, str], name: str, default: bool) -> bool:
    raw = env.get(name)
    if raw is None or raw.strip() == "":
        return default
    value = raw.strip().lower()
    if value in {"1", "true", "yes", "on"}:
        return True
    if value in {"0", "false", "no", "off"}:
        return False
    raise ConfigError(f"{name}={raw!r} is not a boolean (use true or false)")


def _tables(raw: str | None) -> dict[str, str]:
    tables = dict(DEFAULT_TABLES)
    for pair in _csv_list(raw or ""):
        dataset, sep, table = pair.partition("=")
        if not sep:
            raise ConfigError(f"DATASET_TABLES entry {pair!r} is not dataset=table")
        tables[dataset.strip()] = table.strip()
    for dataset, table in tables.items():
        if not DATASET_PATTERN.fullmatch(dataset):
            raise ConfigError(f"DATASET_TABLES: {dataset!r} is not a valid dataset name")
        if not IDENTIFIER.fullmatch(table):
            raise ConfigError(f"DATASET_TABLES: {table!r} is not a valid table name")
    return tables


def load_settings(env: Mapping[str, str] | None = None) -> Settings:
    """Read the configuration from ``env`` (default: the process environment)."""
    env = os.environ if env is None else env
    tables = _tables(env.get("DATASET_TABLES"))

    datasets = tuple(dict.fromkeys(_csv_list(env.get("DATASETS", "inc"))))  # de-duplicated
    if not datasets:
        raise ConfigError("DATASETS is empty: enable at least one dataset (e.g. DATASETS=inc)")
    for dataset in datasets:
        if not DATASET_PATTERN.fullmatch(dataset):
            raise ConfigError(f"DATASETS: {dataset!r} is not a valid dataset name")
        if dataset not in tables:
            raise ConfigError(
                f"DATASETS: {dataset!r} has no table; add it to DATASET_TABLES ({dataset}=table)"
            )

    targets = [tables[d] for d in datasets]
    if len(set(targets)) != len(targets):
        raise ConfigError("DATASET_TABLES maps two enabled datasets to the same table")

    drop_fields = _csv_list(env.get("DROP_FIELDS", ",".join(DEFAULT_DROP_FIELDS)))
    unknown = sorted(set(drop_fields) - set(CSV_COLUMNS))
    if unknown:
        raise ConfigError(f"DROP_FIELDS names unknown columns: {', '.join(unknown)}")
    if {KEY_COLUMN, RECENCY_COLUMN} & set(drop_fields):
        raise ConfigError(f"DROP_FIELDS cannot drop {KEY_COLUMN} or {RECENCY_COLUMN}")

    timezone = env.get("SOURCE_TIMEZONE", "Africa/Nairobi")
    try:
        ZoneInfo(timezone)
    except (ZoneInfoNotFoundError, ValueError):
        raise ConfigError(f"SOURCE_TIMEZONE={timezone!r} is not a known time zone") from None

    aliases = Path(env.get("ALIASES_FILE") or DEFAULT_ALIASES)
    if not aliases.is_file():
        raise ConfigError(f"ALIASES_FILE={str(aliases)!r} does not exist")

    bucket = env.get("TICKETS_BUCKET", "tickets")
    if (
        not re.fullmatch(r"[a-z0-9][a-z0-9.-]{1,61}[a-z0-9]", bucket)
        or ".." in bucket
        or re.fullmatch(r"[0-9.]+", bucket)
    ):
        raise ConfigError(f"TICKETS_BUCKET={bucket!r} is not a valid bucket name")

    database_url = env.get("DATABASE_URL") or DEFAULT_DATABASE_URL
    parse_database_url(database_url)  # ConfigError for a bad scheme, port or sslmode

    return Settings(
        database=_database_access(env, database_url),
        lambda_=LambdaSettings(
            queue_url=env.get("QUEUE_URL") or None,
            dlq_url=env.get("DLQ_URL") or None,
            idempotency_table=env.get("IDEMPOTENCY_TABLE") or None,
            time_budget_margin_seconds=_float(env, "TIME_BUDGET_MARGIN_SECONDS", 60.0, 0.0, 900.0),
        ),
        database_url=database_url,
        bucket=bucket,
        datasets=datasets,
        tables=tables,
        drop_fields=drop_fields,
        source_timezone=timezone,
        max_rejected_share=_float(env, "MAX_REJECTED_SHARE", 0.01, 0.0, 1.0),
        aliases_file=aliases,
        lock_wait_seconds=_float(env, "LOCK_WAIT_SECONDS", 0.0, 0.0, 3600.0),
        auto_migrate=_bool(env, "AUTO_MIGRATE", True),
    )


def _database_access(env: Mapping[str, str], database_url: str) -> DatabaseAccess:
    in_lambda = bool(env.get("AWS_LAMBDA_FUNCTION_NAME"))
    sslmode = env.get("DB_SSLMODE") or None
    if sslmode is not None and sslmode not in _SSLMODES:
        raise ConfigError(f"DB_SSLMODE={sslmode!r} is not one of {sorted(_SSLMODES)}")
    secret_arn = env.get("DB_SECRET_ARN") or None
    effective = sslmode or (
        "verify-full" if secret_arn else parse_database_url(database_url).sslmode
    )
    require_tls = _bool(env, "DB_REQUIRE_TLS", in_lambda)
    if require_tls and effective not in _VERIFYING_SSLMODES:
        raise ConfigError(
            f"DB_REQUIRE_TLS is on (the default in AWS) but sslmode is {effective!r}: set "
            "DB_SSLMODE=verify-full (and DB_CA_BUNDLE to the RDS CA bundle); the database "
            "connection is never made without a verified certificate in AWS"
        )
    ca_bundle = Path(env["DB_CA_BUNDLE"]) if env.get("DB_CA_BUNDLE") else None
    if ca_bundle is not None and not ca_bundle.is_file():
        raise ConfigError(
            f"DB_CA_BUNDLE={str(ca_bundle)!r} does not exist (in Lambda: the package was built "
            "with RDS_CA_BUNDLE=none; rebuild with the bundle, see docs/deploy.md#build)"
        )
    if require_tls and ca_bundle is None:
        raise ConfigError(
            "DB_REQUIRE_TLS is on but DB_CA_BUNDLE is not set: point it at the RDS CA bundle "
            "(`sam build` packages it as certs/rds-global-bundle.pem from RDS_CA_BUNDLE)"
        )
    return DatabaseAccess(
        secret_arn=secret_arn,
        sslmode=sslmode,
        ca_bundle=ca_bundle,
        iam_auth=_bool(env, "DB_IAM_AUTH", False),
        require_tls=require_tls,
    )
