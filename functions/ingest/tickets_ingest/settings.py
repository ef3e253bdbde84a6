"""Configuration: every environment variable is read and checked here, once.

Defaults work for a local run; a bad value fails fast with the variable's name.
"""

from __future__ import annotations

import math
import os
import re
import ssl
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from urllib.parse import parse_qs, unquote, urlsplit
from zoneinfo import ZoneInfo, ZoneInfoNotFoundError

from tickets_ingest.core.keys import DATASET_PATTERN
from tickets_ingest.core.schema import CSV_COLUMNS, DEFAULT_DROP_FIELDS, KEY_COLUMN, RECENCY_COLUMN
from tickets_ingest.errors import ConfigError
from tickets_ingest.models import DriftPolicy

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
    # DB_DEAD_PEER_SECONDS: TCP gives up on a silent peer after about this long (keepalives
    # and TCP_USER_TIMEOUT), on our socket and, with DB_SERVER_KEEPALIVES, the server's.
    dead_peer_seconds: int = 30
    server_keepalives: bool = True


@dataclass(frozen=True)
class LambdaSettings:
    """Settings only the Lambda handler uses."""

    queue_url: str | None = None  # the FIFO queue, for continuation messages
    dlq_url: str | None = None  # its dead-letter queue, for `tickets-ingest redrive`
    idempotency_table: str | None = None
    time_budget_margin_seconds: float = 60.0
    # The function's timeout when the environment says it (AWS_LAMBDA_FUNCTION_TIMEOUT, as
    # SAM local sets it); otherwise the handler checks the margin on its first invocation.
    function_timeout_seconds: int | None = None


@dataclass(frozen=True)
class RetrySettings:
    """The budget for retrying a transient fault (dal/retry.py holds the policy itself)."""

    attempts: int = 5  # RETRY_ATTEMPTS: tries of one S3 request, and of one file
    max_seconds: float = 60.0  # RETRY_MAX_SECONDS: no new try of a file after this long


@dataclass(frozen=True)
class LockSettings:
    """The dataset lock's lease and the bounded waits of an apply (dal/lease.py)."""

    heartbeat_seconds: float = 2.0  # LOCK_HEARTBEAT_SECONDS: the holder proves it is alive
    stale_seconds: float = 20.0  # LOCK_STALE_SECONDS: silent this long, a holder is taken over
    apply_lock_timeout_seconds: float = 30.0  # APPLY_LOCK_TIMEOUT_SECONDS: a row/table lock wait
    apply_statement_timeout_seconds: float = 900.0  # APPLY_STATEMENT_TIMEOUT_SECONDS


@dataclass(frozen=True)
class SchemaDriftSettings:
    """SCHEMA_DRIFT: what a file whose header differs from the contract gets, per dataset."""

    default: DriftPolicy = DriftPolicy.REJECT
    per_dataset: Mapping[str, DriftPolicy] = field(default_factory=dict)

    def policy_for(self, dataset: str) -> DriftPolicy:
        return self.per_dataset.get(dataset, self.default)


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
    # A stream file dated further than this ahead of now is held, not applied.
    future_tolerance_seconds: float = 3600.0
    retry: RetrySettings = field(default_factory=RetrySettings)
    lock: LockSettings = field(default_factory=LockSettings)
    schema_drift: SchemaDriftSettings = field(default_factory=SchemaDriftSettings)

    def schema_drift_for(self, dataset: str) -> DriftPolicy:
        return self.schema_drift.policy_for(dataset)

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
    if not url.startswith(("postgresql://", "postgres://")):
        raise ConfigError("DATABASE_URL must start with postgresql://")
    try:
        parts = urlsplit(url)
        host = parts.hostname
    except ValueError as exc:  # e.g. an unclosed [ of an IPv6 address
        # Never the URL itself: it may hold the password.
        raise ConfigError(f"DATABASE_URL is not a valid URL ({exc})") from None
    try:
        port = parts.port
    except ValueError:
        raise ConfigError("DATABASE_URL has an invalid port (use 1 to 65535)") from None
    if port is None:
        port = 5432
    elif not 1 <= port <= 65535:
        raise ConfigError(f"DATABASE_URL has an invalid port {port} (use 1 to 65535)")
    query = parse_qs(parts.query)
    sslmode = query.get("sslmode", ["prefer"])[0]
    if sslmode not in _SSLMODES:
        raise ConfigError(f"DATABASE_URL sslmode={sslmode!r} is not one of {sorted(_SSLMODES)}")
    return ConnectionParams(
        host=host or "127.0.0.1",
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
    if not math.isfinite(value) or not low <= value <= high:  # nan compares false: say so
        raise ConfigError(f"{name}={raw!r} must be between {low} and {high}")
    return value


def _int(env: Mapping[str, str], name: str, default: int, low: int, high: int) -> int:
    value = _optional_int(env, name, low, high)
    return default if value is None else value


def _optional_int(env: Mapping[str, str], name: str, low: int, high: int) -> int | None:
    raw = env.get(name)
    if raw is None or raw.strip() == "":
        return None
    try:
        value = int(raw.strip())
    except ValueError:
        raise ConfigError(f"{name}={raw!r} is not a whole number") from None
    if not low <= value <= high:
        raise ConfigError(f"{name}={raw!r} must be between {low} and {high}")
    return value


# IANA's geographic areas, plus Etc (fixed offsets and UTC). Everything else in a zoneinfo
# directory is an alias or an artefact: posixrules (a copy of America/New_York),
# localtime (whatever the machine is set to), Factory, posix/ and right/ (leap seconds).
_ZONE_AREAS = (
    "Africa",
    "America",
    "Antarctica",
    "Arctic",
    "Asia",
    "Atlantic",
    "Australia",
    "Etc",
    "Europe",
    "Indian",
    "Pacific",
)
_ZONE_NAME = re.compile(rf"UTC|(?:{'|'.join(_ZONE_AREAS)})(?:/[A-Za-z0-9_+-]+){{1,2}}")


def _source_timezone(env: Mapping[str, str]) -> str:
    timezone = env.get("SOURCE_TIMEZONE", "Africa/Nairobi")
    known = bool(_ZONE_NAME.fullmatch(timezone))
    if known:
        try:
            ZoneInfo(timezone)
        except (ZoneInfoNotFoundError, ValueError):
            known = False
    if not known:
        raise ConfigError(
            f"SOURCE_TIMEZONE={timezone!r} is not a known time zone: use an IANA region "
            "zone such as Africa/Nairobi, Etc/UTC or UTC"
        )
    return timezone


def _lambda_settings(env: Mapping[str, str]) -> LambdaSettings:
    margin = _float(env, "TIME_BUDGET_MARGIN_SECONDS", 60.0, 0.0, 900.0)
    timeout = _optional_int(env, "AWS_LAMBDA_FUNCTION_TIMEOUT", 1, 900)
    if timeout is not None and margin >= timeout:
        raise ConfigError(
            f"TIME_BUDGET_MARGIN_SECONDS={margin:g} leaves no time to apply a file in a "
            f"function that runs {timeout} s (AWS_LAMBDA_FUNCTION_TIMEOUT): make it smaller"
        )
    return LambdaSettings(
        queue_url=env.get("QUEUE_URL") or None,
        dlq_url=env.get("DLQ_URL") or None,
        idempotency_table=env.get("IDEMPOTENCY_TABLE") or None,
        time_budget_margin_seconds=margin,
        function_timeout_seconds=timeout,
    )


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


_DRIFT_WORDS = " or ".join(p.value for p in DriftPolicy)


def _schema_drift(raw: str | None, tables: Mapping[str, str]) -> SchemaDriftSettings:
    """``reject`` or ``rescue`` for every dataset, ``dataset:policy`` for one, or both
    (``reject,inc:rescue``). A dataset must have a table (DATASET_TABLES or the defaults),
    not necessarily be enabled: one setting then serves a stack with or without crq."""
    default: DriftPolicy | None = None
    per_dataset: dict[str, DriftPolicy] = {}
    for entry in _csv_list(raw or ""):
        dataset, sep, word = (part.strip() for part in entry.partition(":"))
        if not sep:
            dataset, word = "", dataset
        try:
            policy = DriftPolicy(word)
        except ValueError:
            raise ConfigError(
                f"SCHEMA_DRIFT entry {entry!r}: {word!r} is not a policy (use {_DRIFT_WORDS})"
            ) from None
        if not sep:
            if default is not None:
                raise ConfigError(
                    f"SCHEMA_DRIFT entry {entry!r}: the policy of every dataset is given twice"
                )
            default = policy
        elif dataset not in tables:
            known = ", ".join(sorted(tables))
            raise ConfigError(
                f"SCHEMA_DRIFT entry {entry!r}: {dataset!r} is not a dataset (known: {known})"
            )
        elif dataset in per_dataset:
            raise ConfigError(f"SCHEMA_DRIFT entry {entry!r}: {dataset!r} is given twice")
        else:
            per_dataset[dataset] = policy
    return SchemaDriftSettings(default or DriftPolicy.REJECT, per_dataset)


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

    timezone = _source_timezone(env)

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
        lambda_=_lambda_settings(env),
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
        future_tolerance_seconds=_float(env, "FUTURE_TOLERANCE_SECONDS", 3600.0, 0.0, 604800.0),
        retry=RetrySettings(
            attempts=_int(env, "RETRY_ATTEMPTS", 5, 1, 20),
            max_seconds=_float(env, "RETRY_MAX_SECONDS", 60.0, 1.0, 900.0),
        ),
        lock=_lock_settings(env),
        schema_drift=_schema_drift(env.get("SCHEMA_DRIFT"), tables),
    )


def _lock_settings(env: Mapping[str, str]) -> LockSettings:
    heartbeat = _float(env, "LOCK_HEARTBEAT_SECONDS", 2.0, 0.1, 60.0)
    stale = _float(env, "LOCK_STALE_SECONDS", 20.0, 0.3, 3600.0)
    if stale < 3 * heartbeat:
        raise ConfigError(
            f"LOCK_STALE_SECONDS={stale:g} must be at least 3 x LOCK_HEARTBEAT_SECONDS "
            f"({3 * heartbeat:g}): one late heartbeat must not make a live holder look dead"
        )
    lock_timeout = _float(env, "APPLY_LOCK_TIMEOUT_SECONDS", 30.0, 0.1, 3600.0)
    statement_timeout = _float(env, "APPLY_STATEMENT_TIMEOUT_SECONDS", 900.0, 1.0, 86400.0)
    if statement_timeout < lock_timeout:
        raise ConfigError(
            f"APPLY_STATEMENT_TIMEOUT_SECONDS={statement_timeout:g} must not be below "
            f"APPLY_LOCK_TIMEOUT_SECONDS={lock_timeout:g}: a lock wait would be reported as "
            "a slow statement"
        )
    return LockSettings(
        heartbeat_seconds=heartbeat,
        stale_seconds=stale,
        apply_lock_timeout_seconds=lock_timeout,
        apply_statement_timeout_seconds=statement_timeout,
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
    if ca_bundle is not None:
        _check_ca_bundle(ca_bundle)
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
        dead_peer_seconds=_int(env, "DB_DEAD_PEER_SECONDS", 30, 2, 7200),
        server_keepalives=_bool(env, "DB_SERVER_KEEPALIVES", True),
    )


def _check_ca_bundle(path: Path) -> None:
    """The bundle must load as PEM and hold at least one CA certificate: found out here, in
    one line, rather than as an ssl.SSLError traceback at the first connection."""
    if not path.is_file():
        raise ConfigError(
            f"DB_CA_BUNDLE={str(path)!r} does not exist (in Lambda: the package was built "
            "with RDS_CA_BUNDLE=none; rebuild with the bundle, see docs/deploy.md#build)"
        )
    context = ssl.SSLContext(ssl.PROTOCOL_TLS_CLIENT)
    try:
        context.load_verify_locations(cafile=str(path))
    except (ssl.SSLError, OSError, ValueError) as exc:
        reason = getattr(exc, "reason", None) or exc.__class__.__name__
        raise ConfigError(f"DB_CA_BUNDLE={str(path)!r} is not a PEM CA bundle ({reason})") from None
    if not context.cert_store_stats().get("x509_ca"):
        raise ConfigError(f"DB_CA_BUNDLE={str(path)!r} holds no CA certificate")
