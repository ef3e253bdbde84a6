"""The AWS side of load_settings: database access (TLS, secret, IAM) and the Lambda settings.

Plain dicts only; os.environ is never read or changed.
"""

from __future__ import annotations

from pathlib import Path

import pytest

from tickets_ingest.dal.credentials import connection_params
from tickets_ingest.errors import ConfigError
from tickets_ingest.settings import DatabaseAccess, LambdaSettings, load_settings

LAMBDA = {"AWS_LAMBDA_FUNCTION_NAME": "tickets-ingest"}
URL = "postgresql://ingest:pw-in-url@db.example.internal:5432/tickets"
SECRET_ARN = "arn:aws:secretsmanager:eu-west-1:123456789012:secret:tickets-db-AbCdEf"


# A self-signed CA (openssl req -x509, 100 years), so the bundle check has a real one.
TEST_CA = Path(__file__).resolve().parents[1] / "data" / "tls" / "test-ca.pem"


@pytest.fixture
def ca_bundle(tmp_path: Path) -> Path:
    path = tmp_path / "rds-global-bundle.pem"
    path.write_bytes(TEST_CA.read_bytes())
    return path


def config_error(env: dict[str, str], *needles: str) -> str:
    with pytest.raises(ConfigError) as info:
        load_settings(env)
    message = str(info.value)
    for needle in needles:
        assert needle in message, message
    return message


class TestTlsInLambda:
    @pytest.mark.parametrize(
        "url",
        [URL, f"{URL}?sslmode=require", f"{URL}?sslmode=prefer", f"{URL}?sslmode=disable"],
    )
    def test_unverified_url_is_refused(self, url: str) -> None:
        message = config_error({**LAMBDA, "DATABASE_URL": url}, "DB_REQUIRE_TLS", "verify-full")
        assert "pw-in-url" not in message

    def test_default_url_is_refused(self) -> None:
        config_error(dict(LAMBDA), "DB_REQUIRE_TLS", "verify-full")

    @pytest.mark.parametrize("mode", ["require", "prefer", "allow", "disable"])
    def test_unverified_db_sslmode_is_refused(self, mode: str, ca_bundle: Path) -> None:
        env = {**LAMBDA, "DATABASE_URL": URL, "DB_SSLMODE": mode, "DB_CA_BUNDLE": str(ca_bundle)}
        assert f"sslmode is {mode!r}" in config_error(env, "DB_REQUIRE_TLS")

    def test_db_sslmode_overrides_a_verifying_url(self, ca_bundle: Path) -> None:
        env = {
            **LAMBDA,
            "DATABASE_URL": f"{URL}?sslmode=verify-full",
            "DB_SSLMODE": "require",
            "DB_CA_BUNDLE": str(ca_bundle),
        }
        config_error(env, "DB_REQUIRE_TLS", "'require'")

    def test_verify_full_without_ca_bundle(self) -> None:
        env = {**LAMBDA, "DATABASE_URL": URL, "DB_SSLMODE": "verify-full"}
        config_error(env, "DB_CA_BUNDLE")

    def test_verify_full_in_the_url_without_ca_bundle(self) -> None:
        config_error({**LAMBDA, "DATABASE_URL": f"{URL}?sslmode=verify-full"}, "DB_CA_BUNDLE")

    def test_ca_bundle_that_does_not_exist(self, tmp_path: Path) -> None:
        missing = tmp_path / "nope.pem"
        env = {**LAMBDA, "DB_SSLMODE": "verify-full", "DB_CA_BUNDLE": str(missing)}
        config_error(env, "DB_CA_BUNDLE", str(missing), "does not exist")

    def test_ca_bundle_that_is_a_directory(self, tmp_path: Path) -> None:
        env = {**LAMBDA, "DB_SSLMODE": "verify-full", "DB_CA_BUNDLE": str(tmp_path)}
        config_error(env, "DB_CA_BUNDLE")

    @pytest.mark.parametrize("mode", ["verify-full", "verify-ca"])
    def test_verified_with_a_ca_bundle(self, mode: str, ca_bundle: Path) -> None:
        env = {**LAMBDA, "DATABASE_URL": URL, "DB_SSLMODE": mode, "DB_CA_BUNDLE": str(ca_bundle)}
        assert load_settings(env).database == DatabaseAccess(
            sslmode=mode, ca_bundle=ca_bundle, require_tls=True
        )

    def test_verify_full_in_the_url_with_a_ca_bundle(self, ca_bundle: Path) -> None:
        env = {
            **LAMBDA,
            "DATABASE_URL": f"{URL}?sslmode=verify-full",
            "DB_CA_BUNDLE": str(ca_bundle),
        }
        access = load_settings(env).database
        assert access.require_tls and access.sslmode is None and access.ca_bundle == ca_bundle

    @pytest.mark.parametrize("off", ["false", "0", "no", "off", "FALSE", " False "])
    def test_require_tls_can_be_turned_off(self, off: str) -> None:
        access = load_settings({**LAMBDA, "DATABASE_URL": URL, "DB_REQUIRE_TLS": off}).database
        assert access == DatabaseAccess(require_tls=False)

    def test_blank_require_tls_means_the_default(self) -> None:
        config_error({**LAMBDA, "DATABASE_URL": URL, "DB_REQUIRE_TLS": " "}, "DB_REQUIRE_TLS")

    def test_empty_function_name_is_not_lambda(self) -> None:
        env = {"AWS_LAMBDA_FUNCTION_NAME": "", "DATABASE_URL": URL}
        assert load_settings(env).database.require_tls is False


class TestTlsLocally:
    def test_defaults(self) -> None:
        assert load_settings({}).database == DatabaseAccess()
        assert load_settings({"DATABASE_URL": URL}).database == DatabaseAccess()

    def test_require_tls_false_is_allowed(self) -> None:
        env = {"DATABASE_URL": URL, "DB_REQUIRE_TLS": "false", "DB_SSLMODE": "disable"}
        assert load_settings(env).database == DatabaseAccess(sslmode="disable")

    def test_require_tls_on_locally_is_enforced(self, ca_bundle: Path) -> None:
        config_error({"DATABASE_URL": URL, "DB_REQUIRE_TLS": "true"}, "verify-full")
        env = {"DB_REQUIRE_TLS": "yes", "DB_SSLMODE": "verify-full", "DB_CA_BUNDLE": str(ca_bundle)}
        assert load_settings(env).database.require_tls is True

    def test_require_tls_not_a_boolean(self) -> None:
        config_error({"DB_REQUIRE_TLS": "maybe"}, "DB_REQUIRE_TLS='maybe'", "boolean")

    def test_verify_full_locally_needs_no_bundle(self) -> None:
        access = load_settings({"DB_SSLMODE": "verify-full"}).database
        assert access == DatabaseAccess(sslmode="verify-full")

    def test_missing_ca_bundle_is_refused_even_locally(self, tmp_path: Path) -> None:
        config_error({"DB_CA_BUNDLE": str(tmp_path / "x.pem")}, "DB_CA_BUNDLE")


class TestSslmodeValues:
    @pytest.mark.parametrize("mode", ["verify_full", "VERIFY-FULL", "on", "true", "ssl"])
    def test_invalid_db_sslmode(self, mode: str) -> None:
        config_error({"DB_SSLMODE": mode}, f"DB_SSLMODE={mode!r}", "verify-full")

    def test_invalid_db_sslmode_in_lambda_names_db_sslmode(self) -> None:
        config_error({**LAMBDA, "DB_SSLMODE": "strict"}, "DB_SSLMODE='strict'")

    def test_empty_db_sslmode_means_unset(self) -> None:
        assert load_settings({"DB_SSLMODE": ""}).database.sslmode is None

    @pytest.mark.parametrize(
        "mode", ["disable", "allow", "prefer", "require", "verify-ca", "verify-full"]
    )
    def test_db_sslmode_overrides_the_url(self, mode: str) -> None:
        settings = load_settings({"DATABASE_URL": f"{URL}?sslmode=disable", "DB_SSLMODE": mode})
        assert settings.database.sslmode == mode
        params = connection_params(settings)  # no secret, no IAM: pure
        assert (params.sslmode, params.host, params.password) == (
            mode,
            "db.example.internal",
            "pw-in-url",
        )

    def test_url_sslmode_kept_without_override(self) -> None:
        settings = load_settings({"DATABASE_URL": f"{URL}?sslmode=require"})
        assert connection_params(settings).sslmode == "require"


class TestSecret:
    def test_secret_implies_verify_full_in_lambda(self, ca_bundle: Path) -> None:
        env = {**LAMBDA, "DB_SECRET_ARN": SECRET_ARN, "DB_CA_BUNDLE": str(ca_bundle)}
        assert load_settings(env).database == DatabaseAccess(
            secret_arn=SECRET_ARN, ca_bundle=ca_bundle, require_tls=True
        )

    def test_secret_ignores_the_url_sslmode(self, ca_bundle: Path) -> None:
        env = {
            **LAMBDA,
            "DATABASE_URL": f"{URL}?sslmode=disable",
            "DB_SECRET_ARN": SECRET_ARN,
            "DB_CA_BUNDLE": str(ca_bundle),
        }
        assert load_settings(env).database.secret_arn == SECRET_ARN

    def test_secret_still_needs_the_ca_bundle_in_lambda(self) -> None:
        config_error({**LAMBDA, "DB_SECRET_ARN": SECRET_ARN}, "DB_CA_BUNDLE")

    def test_secret_with_a_weaker_db_sslmode_is_refused_in_lambda(self, ca_bundle: Path) -> None:
        env = {
            **LAMBDA,
            "DB_SECRET_ARN": SECRET_ARN,
            "DB_SSLMODE": "require",
            "DB_CA_BUNDLE": str(ca_bundle),
        }
        config_error(env, "DB_REQUIRE_TLS", "'require'")

    def test_secret_locally(self) -> None:
        access = load_settings({"DB_SECRET_ARN": SECRET_ARN}).database
        assert access == DatabaseAccess(secret_arn=SECRET_ARN)

    def test_empty_secret_arn_means_unset(self) -> None:
        assert load_settings({"DB_SECRET_ARN": ""}).database.secret_arn is None


class TestIamAuth:
    @pytest.mark.parametrize(
        ("raw", "expected"),
        [
            ("true", True),
            ("1", True),
            ("yes", True),
            ("ON", True),
            ("false", False),
            ("0", False),
            ("no", False),
            ("", False),
            ("  ", False),
        ],
    )
    def test_parsing(self, raw: str, expected: bool) -> None:
        assert load_settings({"DB_IAM_AUTH": raw}).database.iam_auth is expected

    def test_default_off(self) -> None:
        assert load_settings({}).database.iam_auth is False

    @pytest.mark.parametrize("raw", ["maybe", "2", "enabled"])
    def test_not_a_boolean(self, raw: str) -> None:
        config_error({"DB_IAM_AUTH": raw}, f"DB_IAM_AUTH={raw!r}")

    def test_with_secret_in_lambda(self, ca_bundle: Path) -> None:
        env = {
            **LAMBDA,
            "DB_SECRET_ARN": SECRET_ARN,
            "DB_IAM_AUTH": "true",
            "DB_CA_BUNDLE": str(ca_bundle),
        }
        access = load_settings(env).database
        assert access.iam_auth and access.require_tls and access.secret_arn == SECRET_ARN


class TestLambdaSettings:
    def test_defaults(self) -> None:
        assert load_settings({}).lambda_ == LambdaSettings()
        assert LambdaSettings() == LambdaSettings(None, None, None, 60.0)

    def test_values(self) -> None:
        queue = "https://sqs.eu-west-1.amazonaws.com/123456789012/tickets-ingest.fifo"
        dlq = "https://sqs.eu-west-1.amazonaws.com/123456789012/tickets-ingest-dlq.fifo"
        env = {
            "QUEUE_URL": queue,
            "DLQ_URL": dlq,
            "IDEMPOTENCY_TABLE": "tickets-ingest-idempotency",
            "TIME_BUDGET_MARGIN_SECONDS": "90.5",
        }
        assert load_settings(env).lambda_ == LambdaSettings(
            queue_url=queue,
            dlq_url=dlq,
            idempotency_table="tickets-ingest-idempotency",
            time_budget_margin_seconds=90.5,
        )

    @pytest.mark.parametrize("name", ["QUEUE_URL", "DLQ_URL", "IDEMPOTENCY_TABLE"])
    def test_empty_means_unset(self, name: str) -> None:
        assert load_settings({name: ""}).lambda_ == LambdaSettings()

    @pytest.mark.parametrize(("raw", "value"), [("0", 0.0), ("900", 900.0), (" 12 ", 12.0)])
    def test_margin_bounds_inclusive(self, raw: str, value: float) -> None:
        margin = load_settings({"TIME_BUDGET_MARGIN_SECONDS": raw}).lambda_
        assert margin.time_budget_margin_seconds == value

    @pytest.mark.parametrize("raw", ["", "   "])
    def test_blank_margin_means_default(self, raw: str) -> None:
        margin = load_settings({"TIME_BUDGET_MARGIN_SECONDS": raw}).lambda_
        assert margin.time_budget_margin_seconds == 60.0

    @pytest.mark.parametrize("raw", ["-1", "-0.001", "900.01", "1e6", "inf", "-inf", "nan"])
    def test_margin_out_of_bounds(self, raw: str) -> None:
        config_error({"TIME_BUDGET_MARGIN_SECONDS": raw}, "TIME_BUDGET_MARGIN_SECONDS", "between")

    @pytest.mark.parametrize("raw", ["a minute", "60s", "1,5"])
    def test_margin_not_a_number(self, raw: str) -> None:
        config_error({"TIME_BUDGET_MARGIN_SECONDS": raw}, "TIME_BUDGET_MARGIN_SECONDS", "number")


class TestCaBundleIsLoadable:
    """DB_CA_BUNDLE must be a PEM file holding a CA certificate, checked with ssl at start."""

    def test_a_real_bundle(self, ca_bundle: Path) -> None:
        assert load_settings({"DB_CA_BUNDLE": str(ca_bundle)}).database.ca_bundle == ca_bundle

    def test_not_pem(self, tmp_path: Path) -> None:
        hostname = tmp_path / "hostname"
        hostname.write_text("ip-10-0-0-1\n")  # what /etc/hostname holds
        message = config_error({"DB_CA_BUNDLE": str(hostname)}, "DB_CA_BUNDLE", "not a PEM")
        assert "\n" not in message

    def test_the_machines_hostname_file(self) -> None:
        hostname = Path("/etc/hostname")
        if not hostname.is_file():
            pytest.skip("this machine has no /etc/hostname")
        config_error({"DB_CA_BUNDLE": str(hostname)}, "DB_CA_BUNDLE", "not a PEM")

    @pytest.mark.parametrize(
        "text",
        [
            "",
            "-----BEGIN CERTIFICATE-----\n-----END CERTIFICATE-----\n",
            "-----BEGIN CERTIFICATE-----\nbm90IGEgY2VydA==\n-----END CERTIFICATE-----\n",
        ],
    )
    def test_empty_or_broken_pem(self, tmp_path: Path, text: str) -> None:
        path = tmp_path / "bundle.pem"
        path.write_text(text)
        config_error({"DB_CA_BUNDLE": str(path)}, "DB_CA_BUNDLE", str(path))


class TestMarginAgainstTheTimeout:
    def test_timeout_is_read(self) -> None:
        lambda_ = load_settings({"AWS_LAMBDA_FUNCTION_TIMEOUT": "300"}).lambda_
        assert lambda_.function_timeout_seconds == 300

    @pytest.mark.parametrize(("margin", "timeout"), [("60", "60"), ("90", "60"), ("900", "900")])
    def test_margin_at_or_above_the_timeout(self, margin: str, timeout: str) -> None:
        env = {"TIME_BUDGET_MARGIN_SECONDS": margin, "AWS_LAMBDA_FUNCTION_TIMEOUT": timeout}
        config_error(env, "TIME_BUDGET_MARGIN_SECONDS", "AWS_LAMBDA_FUNCTION_TIMEOUT")

    def test_margin_below_the_timeout(self) -> None:
        env = {"TIME_BUDGET_MARGIN_SECONDS": "59.5", "AWS_LAMBDA_FUNCTION_TIMEOUT": "60"}
        assert load_settings(env).lambda_.time_budget_margin_seconds == 59.5

    @pytest.mark.parametrize("raw", ["0", "901", "-5", "1.5", "five minutes", "nan"])
    def test_bad_timeout(self, raw: str) -> None:
        config_error({"AWS_LAMBDA_FUNCTION_TIMEOUT": raw}, "AWS_LAMBDA_FUNCTION_TIMEOUT")
