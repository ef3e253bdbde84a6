"""Where the database password comes from: DATABASE_URL locally; in AWS a Secrets Manager
secret (cached through Powertools Parameters) and optionally an RDS IAM auth token.

Nothing here logs or raises with a secret's content.
"""

from __future__ import annotations

import dataclasses
from typing import Any

from tickets_ingest.errors import ConfigError
from tickets_ingest.settings import ConnectionParams, Settings, parse_database_url

SECRET_CACHE_SECONDS = 300  # a rotated password is picked up within this time
_SECRET_FIELDS = ("host", "username")


def connection_params(settings: Settings) -> ConnectionParams:
    access = settings.database
    if access.secret_arn:
        params = _from_secret(access.secret_arn, access.sslmode or "verify-full")
    else:
        params = parse_database_url(settings.database_url)
        if access.sslmode:
            params = dataclasses.replace(params, sslmode=access.sslmode)
    if access.iam_auth:
        params = dataclasses.replace(params, password=_iam_token(params))
    return params


def _from_secret(arn: str, sslmode: str) -> ConnectionParams:
    from aws_lambda_powertools.utilities import parameters  # noqa: PLC0415 - AWS path only

    try:
        secret: Any = parameters.get_secret(arn, transform="json", max_age=SECRET_CACHE_SECONDS)
    except parameters.TransformParameterError:
        raise ConfigError(f"secret {arn} is not JSON") from None  # never its content
    except parameters.GetParameterError as exc:
        reason = str(exc).split(" - ", 1)[-1]  # AWS's error, e.g. ResourceNotFoundException
        raise ConfigError(f"secret {arn} cannot be read: {reason}") from None
    if not isinstance(secret, dict):
        raise ConfigError(f"secret {arn} is not a JSON object")
    missing = [name for name in _SECRET_FIELDS if not secret.get(name)]
    if missing:
        raise ConfigError(f"secret {arn} lacks {', '.join(missing)}")
    raw_port = secret.get("port")
    try:
        # Not `or 5432`: a port 0 must be refused, not silently become the default.
        port = 5432 if raw_port is None or raw_port == "" else int(raw_port)
    except (TypeError, ValueError):
        raise ConfigError(f"secret {arn} has a non-numeric port") from None
    if isinstance(raw_port, bool) or not 1 <= port <= 65535:
        raise ConfigError(f"secret {arn} has a port outside 1 to 65535")
    return ConnectionParams(
        host=str(secret["host"]),
        port=port,
        user=str(secret["username"]),
        password=str(secret["password"]) if secret.get("password") is not None else None,
        database=str(secret.get("dbname") or "postgres"),
        sslmode=sslmode,
    )


def _iam_token(params: ConnectionParams) -> str:
    import boto3  # noqa: PLC0415 - only with DB_IAM_AUTH

    client = boto3.client("rds")
    return str(
        client.generate_db_auth_token(
            DBHostname=params.host, Port=params.port, DBUsername=params.user
        )
    )


def forget_cached_secret() -> None:
    """Drop the cached secret so the next connect fetches it again (after a failed login)."""
    from aws_lambda_powertools.utilities import parameters  # noqa: PLC0415

    parameters.clear_caches()  # type: ignore[no-untyped-call]
