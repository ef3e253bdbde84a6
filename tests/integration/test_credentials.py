"""Database credentials from a Secrets Manager secret (moto), against the real test PostgreSQL.

The test server uses trust auth, so any password logs in; what matters here is where the
connection parameters come from, that the secret is cached, and that its content never
reaches an error message or a log line.
"""

from __future__ import annotations

import io
import json
import logging
from collections.abc import Iterator
from typing import Any
from urllib.parse import urlsplit

import boto3
import pytest
from aws_lambda_powertools.utilities import parameters

from tests.conftest import Env
from tickets_ingest.dal.credentials import connection_params, forget_cached_secret
from tickets_ingest.dal.db import DatabaseError, sqlstate
from tickets_ingest.errors import ConfigError
from tickets_ingest.handlers.cli import EXIT_FAILED, EXIT_USAGE, main

PASSWORD = "pw-Zq9!vX7#secret"
SECRET_NAME = "tickets-ingest/database"
# DATABASE_URL points nowhere while a secret is configured: only the secret can connect.
UNUSED_URL = "postgresql://nobody:url-password@127.0.0.1:1/not_this_one"


@pytest.fixture(autouse=True)
def _fresh_secret_cache() -> Iterator[None]:
    parameters.clear_caches()  # type: ignore[no-untyped-call]
    yield
    parameters.clear_caches()  # type: ignore[no-untyped-call]


def secret_value(env: Env, **overrides: Any) -> dict[str, Any]:
    """The test database's coordinates as an RDS-style secret (plus a password)."""
    url = urlsplit(env.database_url)
    value: dict[str, Any] = {
        "engine": "postgres",
        "host": url.hostname or "127.0.0.1",
        "port": url.port or 5432,
        "username": url.username or "postgres",
        "password": PASSWORD,
        "dbname": url.path.lstrip("/"),
    }
    value.update(overrides)
    return {k: v for k, v in value.items() if v is not None}


def use_secret(env: Env, value: Any) -> str:
    """Store ``value`` in Secrets Manager and point the configuration at it; its ARN."""
    client = boto3.client("secretsmanager")
    body = value if isinstance(value, str) else json.dumps(value)
    arn = str(client.create_secret(Name=SECRET_NAME, SecretString=body)["ARN"])
    env.set(DB_SECRET_ARN=arn, DB_SSLMODE="disable", DATABASE_URL=UNUSED_URL)
    return arn


def rotate(arn: str, value: dict[str, Any]) -> None:
    boto3.client("secretsmanager").put_secret_value(SecretId=arn, SecretString=json.dumps(value))


def db_name(env: Env) -> str:
    return urlsplit(env.database_url).path.lstrip("/")


def run_cli(*argv: str) -> tuple[int, str]:
    out = io.StringIO()
    return main(list(argv), out=out), out.getvalue()


def test_connects_with_the_secret(env: Env) -> None:
    value = secret_value(env)
    use_secret(env, value)
    db = env.runtime().db()
    assert db.scalar("SELECT current_database()") == db_name(env)
    assert db.scalar("SELECT current_user") == value["username"]
    assert db.params.sslmode == "disable"  # DB_SSLMODE overrides the secret's verify-full
    assert db.params.password == PASSWORD
    assert PASSWORD not in db.params.describe()


def test_port_as_a_string_and_default_dbname(env: Env) -> None:
    value = secret_value(env, port=str(urlsplit(env.database_url).port or 5432), dbname=None)
    use_secret(env, value)
    params = connection_params(env.settings())
    assert params.database == "postgres"
    assert params.port == (urlsplit(env.database_url).port or 5432)


def test_without_db_sslmode_the_secret_means_verify_full(env: Env) -> None:
    use_secret(env, secret_value(env))
    env.monkeypatch.delenv("DB_SSLMODE")
    assert connection_params(env.settings()).sslmode == "verify-full"


def test_cli_status_through_the_secret(env: Env) -> None:
    use_secret(env, secret_value(env))
    code, out = run_cli("status", "--dataset", "inc", "--json")
    assert code == 0
    assert json.loads(out)["dataset"] == "inc"


@pytest.mark.parametrize(
    ("drop", "named"),
    [(("host",), "host"), (("username",), "username"), (("host", "username"), "host, username")],
)
def test_secret_missing_a_field_names_it_and_nothing_else(
    env: Env, drop: tuple[str, ...], named: str
) -> None:
    distinctive = {"username": "secret-user-4711", "dbname": "secret-db-4712", "port": 54329}
    value = secret_value(env, **{**distinctive, **dict.fromkeys(drop)})
    arn = use_secret(env, value)
    with pytest.raises(ConfigError) as info:
        env.runtime().db()
    message = str(info.value)
    assert f"lacks {named}" in message
    assert arn in message
    for leaked in (PASSWORD, "secret-user-4711", "secret-db-4712", "54329", "127.0.0.1"):
        assert leaked not in message


def test_empty_host_counts_as_missing(env: Env) -> None:
    use_secret(env, secret_value(env, host=""))
    with pytest.raises(ConfigError, match="lacks host"):
        connection_params(env.settings())


def test_secret_that_is_not_an_object(env: Env) -> None:
    use_secret(env, json.dumps(["host", PASSWORD]))
    with pytest.raises(ConfigError) as info:
        connection_params(env.settings())
    assert "not a JSON object" in str(info.value)
    assert PASSWORD not in str(info.value)


def test_secret_with_a_non_numeric_port(env: Env) -> None:
    use_secret(env, secret_value(env, port="fifty-four-thirty-two"))
    with pytest.raises(ConfigError) as info:
        connection_params(env.settings())
    assert "non-numeric port" in str(info.value)
    assert "fifty-four-thirty-two" not in str(info.value)
    assert PASSWORD not in str(info.value)


def test_secret_that_is_not_json_does_not_show_its_content(env: Env) -> None:
    use_secret(env, f"host=127.0.0.1 password={PASSWORD}")
    with pytest.raises(Exception) as info:
        connection_params(env.settings())
    assert PASSWORD not in str(info.value) and PASSWORD not in repr(info.value)


def test_secret_that_is_not_json_is_a_config_error(env: Env) -> None:
    """Like a secret that is JSON but not an object: the operator fixes the secret."""
    arn = use_secret(env, "host=127.0.0.1 port=5432")
    with pytest.raises(ConfigError) as info:
        connection_params(env.settings())
    assert arn in str(info.value)


def test_unknown_secret_via_cli_exits_with_one_line(
    env: Env, capsys: pytest.CaptureFixture[str]
) -> None:
    """A wrong DB_SECRET_ARN is a configuration error, not a crash with a traceback."""
    arn = use_secret(env, secret_value(env))
    env.set(DB_SECRET_ARN=arn.replace(SECRET_NAME, "tickets-ingest/no-such-secret"))
    code, _ = run_cli("status")
    err = capsys.readouterr().err
    assert code in (EXIT_USAGE, EXIT_FAILED)
    assert err.strip().splitlines()[-1].startswith("tickets-ingest: ")
    assert "Traceback" not in err


def test_missing_field_via_cli_exits_2_quietly(
    env: Env, capsys: pytest.CaptureFixture[str], caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.DEBUG, logger="tickets_ingest")
    use_secret(env, secret_value(env, host=None))
    code, out = run_cli("status")
    err = capsys.readouterr().err
    assert code == EXIT_USAGE
    assert "lacks host" in err
    assert "Traceback" not in err
    assert PASSWORD not in err + out + caplog.text


def test_failed_connection_never_shows_the_password(
    env: Env, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.INFO)
    caplog.set_level(logging.DEBUG, logger="tickets_ingest")
    use_secret(env, secret_value(env, host="127.0.0.1", port=1))
    with pytest.raises(Exception) as info:
        env.runtime().db()
    assert "port 1" in str(info.value) or "refused" in str(info.value).lower()
    assert PASSWORD not in str(info.value)
    assert PASSWORD not in repr(info.value.args)
    assert PASSWORD not in caplog.text


def test_failed_connection_via_cli_never_shows_the_password(
    env: Env, capsys: pytest.CaptureFixture[str], caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.INFO)
    caplog.set_level(logging.DEBUG, logger="tickets_ingest")
    use_secret(env, secret_value(env, host="127.0.0.1", port=1))
    code, out = run_cli("-v", "status")
    err = capsys.readouterr().err
    assert code == EXIT_FAILED
    assert err.strip().splitlines()[-1].startswith("tickets-ingest: database: ")
    assert "Traceback" not in err
    assert PASSWORD not in err + out + caplog.text


def test_rotated_secret_is_used_only_after_the_cache_is_dropped(env: Env) -> None:
    value = secret_value(env)
    arn = use_secret(env, value)
    first = env.runtime()
    assert first.db().scalar("SELECT current_database()") == db_name(env)

    rotate(arn, {**value, "dbname": "no_such_database_after_rotation"})

    # Within the cache's lifetime, the old value keeps working: new runtimes, new connects.
    assert connection_params(env.settings()).database == db_name(env)
    second = env.runtime()
    assert second.db().scalar("SELECT current_database()") == db_name(env)
    assert first.db().scalar("SELECT 1") == 1  # the open connection is untouched

    forget_cached_secret()
    assert connection_params(env.settings()).database == "no_such_database_after_rotation"
    with pytest.raises(DatabaseError) as info:
        env.runtime().db()
    assert sqlstate(info.value) == "3D000"  # invalid_catalog_name: the rotated value is used
    assert PASSWORD not in str(info.value)

    # Rotating back and dropping the cache again restores access.
    rotate(arn, value)
    forget_cached_secret()
    assert env.runtime().db().scalar("SELECT current_database()") == db_name(env)


def test_cache_is_per_secret_value_not_per_runtime(env: Env) -> None:
    """Closing a runtime does not drop the cache; only forget_cached_secret does."""
    value = secret_value(env)
    arn = use_secret(env, value)
    runtime = env.runtime()
    runtime.db()
    runtime.close()
    rotate(arn, {**value, "username": "rotated-user"})
    assert connection_params(env.settings()).user == value["username"]
    forget_cached_secret()
    assert connection_params(env.settings()).user == "rotated-user"


def test_iam_auth_token_replaces_the_password(env: Env) -> None:
    use_secret(env, secret_value(env))
    env.set(DB_IAM_AUTH="true")
    db = env.runtime().db()  # trust auth: the token is accepted like any password
    assert db.scalar("SELECT current_database()") == db_name(env)
    token = db.params.password
    assert token is not None and token != PASSWORD
    assert "Action=connect" in token and f"DBUser={db.params.user}" in token


@pytest.mark.parametrize("port", [0, "0", -1, 65536, True, 1.5e9])
def test_secret_port_out_of_range_is_a_config_error(env: Env, port: Any) -> None:
    """Issue 11.9's class: a port 0 became 5432, others reached the socket layer."""
    use_secret(env, secret_value(env, port=port))
    with pytest.raises(ConfigError, match="has a port outside 1 to 65535"):
        connection_params(env.settings())
