"""load_settings (from plain dicts, never os.environ) and parse_database_url."""

from __future__ import annotations

from pathlib import Path

import pytest

from tickets_ingest.core.schema import CSV_COLUMNS, DEFAULT_DROP_FIELDS
from tickets_ingest.dal.db import ConnectionParams, parse_database_url
from tickets_ingest.errors import ConfigError
from tickets_ingest.models import DriftPolicy
from tickets_ingest.settings import (
    DEFAULT_ALIASES,
    DEFAULT_DATABASE_URL,
    DEFAULT_TABLES,
    Settings,
    load_settings,
)


def config_error(env: dict[str, str], variable: str) -> ConfigError:
    """load_settings(env) fails, and its message names ``variable``."""
    with pytest.raises(ConfigError) as info:
        load_settings(env)
    assert variable in str(info.value)
    return info.value


class TestDefaults:
    def test_empty_env(self) -> None:
        settings = load_settings({})
        assert settings == Settings(
            database_url=DEFAULT_DATABASE_URL,
            bucket="tickets",
            datasets=("inc",),
            tables={"inc": "incidents", "crq": "change_requests"},
            drop_fields=DEFAULT_DROP_FIELDS,
            source_timezone="Africa/Nairobi",
            max_rejected_share=0.01,
            aliases_file=DEFAULT_ALIASES,
            lock_wait_seconds=0.0,
            auto_migrate=True,
        )
        assert DEFAULT_DATABASE_URL == "postgresql://postgres@127.0.0.1:5432/tickets"
        assert settings.aliases_file.is_file()

    def test_defaults_are_not_shared(self) -> None:
        settings = load_settings({"DATASET_TABLES": "inc=other"})
        assert settings.tables["inc"] == "other"
        assert DEFAULT_TABLES == {"inc": "incidents", "crq": "change_requests"}

    @pytest.mark.parametrize("name", ["MAX_REJECTED_SHARE", "LOCK_WAIT_SECONDS", "AUTO_MIGRATE"])
    @pytest.mark.parametrize("blank", ["", "  "])
    def test_blank_number_or_boolean_means_default(self, name: str, blank: str) -> None:
        assert load_settings({name: blank}) == load_settings({})

    @pytest.mark.parametrize("name", ["ALIASES_FILE", "DATABASE_URL"])
    def test_empty_path_or_url_means_default(self, name: str) -> None:
        assert load_settings({name: ""}) == load_settings({})

    def test_stored_columns(self) -> None:
        settings = load_settings({"DROP_FIELDS": "owner,mttr"})
        assert settings.stored_columns == tuple(
            c for c in CSV_COLUMNS if c not in {"owner", "mttr"}
        )
        assert load_settings({"DROP_FIELDS": ""}).stored_columns == CSV_COLUMNS
        default = load_settings({}).stored_columns
        assert len(default) == 32 - len(DEFAULT_DROP_FIELDS)
        assert not set(default) & set(DEFAULT_DROP_FIELDS)

    def test_table_for(self) -> None:
        settings = load_settings({"DATASETS": "inc,crq"})
        assert settings.table_for("inc") == "incidents"
        assert settings.table_for("crq") == "change_requests"

    def test_table_for_a_disabled_dataset(self) -> None:
        settings = load_settings({})
        with pytest.raises(ConfigError, match=r"'crq' is not enabled \(DATASETS=inc\)"):
            settings.table_for("crq")


class TestDatasets:
    @pytest.mark.parametrize(
        ("raw", "datasets"),
        [
            ("inc", ("inc",)),
            ("inc,crq", ("inc", "crq")),
            (" crq , inc ,", ("crq", "inc")),
        ],
    )
    def test_valid(self, raw: str, datasets: tuple[str, ...]) -> None:
        assert load_settings({"DATASETS": raw}).datasets == datasets

    def test_custom_dataset_with_its_table(self) -> None:
        settings = load_settings({"DATASETS": "inc,fuel_2", "DATASET_TABLES": "fuel_2=fuel"})
        assert settings.datasets == ("inc", "fuel_2")
        assert settings.table_for("fuel_2") == "fuel"
        assert settings.tables["inc"] == "incidents"

    @pytest.mark.parametrize("raw", ["", " ", ",", " , ,"])
    def test_empty(self, raw: str) -> None:
        error = config_error({"DATASETS": raw}, "DATASETS")
        assert "empty" in str(error)

    @pytest.mark.parametrize(
        "raw", ["INC", "1inc", "in-c", "inc/x", "_inc", "a" * 32, "inc,Crq", "ïnc"]
    )
    def test_invalid_name(self, raw: str) -> None:
        error = config_error({"DATASETS": raw}, "DATASETS")
        assert "not a valid dataset name" in str(error)

    def test_dataset_without_table(self) -> None:
        error = config_error({"DATASETS": "inc,fuel"}, "DATASETS")
        assert "'fuel' has no table" in str(error)
        assert "DATASET_TABLES" in str(error)


class TestDropFields:
    def test_custom(self) -> None:
        settings = load_settings({"DROP_FIELDS": " owner , department "})
        assert settings.drop_fields == ("owner", "department")

    def test_empty_keeps_everything(self) -> None:
        assert load_settings({"DROP_FIELDS": ""}).drop_fields == ()

    def test_unknown(self) -> None:
        error = config_error({"DROP_FIELDS": "owner,zz_nope,aa_nope"}, "DROP_FIELDS")
        assert "aa_nope, zz_nope" in str(error)

    @pytest.mark.parametrize("raw", ["ticket_id", "updated_at", "owner,ticket_id", "updated_at,"])
    def test_key_and_recency_columns_are_kept(self, raw: str) -> None:
        error = config_error({"DROP_FIELDS": raw}, "DROP_FIELDS")
        assert "ticket_id" in str(error)
        assert "updated_at" in str(error)


class TestTimezone:
    @pytest.mark.parametrize("zone", ["UTC", "Africa/Nairobi", "Europe/Berlin"])
    def test_valid(self, zone: str) -> None:
        assert load_settings({"SOURCE_TIMEZONE": zone}).source_timezone == zone

    @pytest.mark.parametrize(
        "zone", ["Mars/Olympus", "", "../etc/passwd", "/etc/localtime", "Africa/Nairobi "]
    )
    def test_invalid(self, zone: str) -> None:
        error = config_error({"SOURCE_TIMEZONE": zone}, "SOURCE_TIMEZONE")
        assert "not a known time zone" in str(error)


class TestNumbers:
    @pytest.mark.parametrize(
        ("raw", "value"),
        [("0", 0.0), ("1", 1.0), ("0.05", 0.05), (" 0.25 ", 0.25), ("1e-3", 0.001)],
    )
    def test_max_rejected_share(self, raw: str, value: float) -> None:
        assert load_settings({"MAX_REJECTED_SHARE": raw}).max_rejected_share == value

    @pytest.mark.parametrize(("raw", "value"), [("0", 0.0), ("30", 30.0), ("3600", 3600.0)])
    def test_lock_wait_seconds(self, raw: str, value: float) -> None:
        assert load_settings({"LOCK_WAIT_SECONDS": raw}).lock_wait_seconds == value

    @pytest.mark.parametrize(
        ("name", "raw", "problem"),
        [
            ("MAX_REJECTED_SHARE", "abc", "is not a number"),
            ("MAX_REJECTED_SHARE", "1%", "is not a number"),
            ("MAX_REJECTED_SHARE", "0,5", "is not a number"),
            ("MAX_REJECTED_SHARE", "-0.1", "must be between 0.0 and 1.0"),
            ("MAX_REJECTED_SHARE", "1.5", "must be between 0.0 and 1.0"),
            ("MAX_REJECTED_SHARE", "nan", "must be between"),
            ("MAX_REJECTED_SHARE", "inf", "must be between"),
            ("LOCK_WAIT_SECONDS", "ten", "is not a number"),
            ("LOCK_WAIT_SECONDS", "-1", "must be between 0.0 and 3600.0"),
            ("LOCK_WAIT_SECONDS", "3600.5", "must be between 0.0 and 3600.0"),
        ],
    )
    def test_invalid(self, name: str, raw: str, problem: str) -> None:
        error = config_error({name: raw}, name)
        assert problem in str(error)
        assert repr(raw) in str(error)


class TestBooleans:
    @pytest.mark.parametrize("raw", ["1", "true", "TRUE", "Yes", " on "])
    def test_true(self, raw: str) -> None:
        assert load_settings({"AUTO_MIGRATE": raw}).auto_migrate is True

    @pytest.mark.parametrize("raw", ["0", "false", "False", "NO", "off "])
    def test_false(self, raw: str) -> None:
        assert load_settings({"AUTO_MIGRATE": raw}).auto_migrate is False

    @pytest.mark.parametrize("raw", ["maybe", "2", "y", "t", "enabled"])
    def test_invalid(self, raw: str) -> None:
        error = config_error({"AUTO_MIGRATE": raw}, "AUTO_MIGRATE")
        assert "not a boolean" in str(error)


class TestDatasetTables:
    def test_override_and_add(self) -> None:
        settings = load_settings({"DATASET_TABLES": " inc = tickets_inc , new_ds=new_table "})
        assert settings.tables == {
            "inc": "tickets_inc",
            "crq": "change_requests",
            "new_ds": "new_table",
        }

    def test_empty_entries_ignored(self) -> None:
        assert load_settings({"DATASET_TABLES": ",,"}).tables == DEFAULT_TABLES

    def test_longest_table_name(self) -> None:
        name = "t" * 63
        assert load_settings({"DATASET_TABLES": f"inc={name}"}).tables["inc"] == name

    @pytest.mark.parametrize(
        ("raw", "problem"),
        [
            ("inc", "'inc' is not dataset=table"),
            ("inc=a,crq", "'crq' is not dataset=table"),
            ("=incidents", "'' is not a valid dataset name"),
            ("INC=incidents", "'INC' is not a valid dataset name"),
            ("in-c=incidents", "'in-c' is not a valid dataset name"),
            ("inc=", "'' is not a valid table name"),
            ("inc=Incidents", "'Incidents' is not a valid table name"),
            ("inc=1incidents", "'1incidents' is not a valid table name"),
            ("inc=tickets.incidents", "'tickets.incidents' is not a valid table name"),
            ("inc=a-b", "'a-b' is not a valid table name"),
            ('inc=x";drop table y', "is not a valid table name"),
            ("inc=a b", "'a b' is not a valid table name"),
            ("inc=a=b", "'a=b' is not a valid table name"),
            (f"inc={'t' * 64}", "is not a valid table name"),
        ],
    )
    def test_invalid(self, raw: str, problem: str) -> None:
        error = config_error({"DATASET_TABLES": raw}, "DATASET_TABLES")
        assert problem in str(error)

    def test_checked_even_for_disabled_datasets(self) -> None:
        config_error({"DATASETS": "inc", "DATASET_TABLES": "crq=Bad"}, "DATASET_TABLES")


class TestAliasesFile:
    def test_custom(self, tmp_path: Path) -> None:
        path = tmp_path / "aliases.csv"
        path.write_text("field,alias,canonical\n", encoding="utf-8")
        assert load_settings({"ALIASES_FILE": str(path)}).aliases_file == path

    def test_missing(self, tmp_path: Path) -> None:
        error = config_error({"ALIASES_FILE": str(tmp_path / "nope.csv")}, "ALIASES_FILE")
        assert "does not exist" in str(error)

    def test_a_directory_is_not_a_file(self, tmp_path: Path) -> None:
        config_error({"ALIASES_FILE": str(tmp_path)}, "ALIASES_FILE")


class TestBucket:
    @pytest.mark.parametrize(
        "bucket", ["tickets", "abc", "my-bucket.2", "0tickets9", "a" * 63, "tickets-dev.eu"]
    )
    def test_valid(self, bucket: str) -> None:
        assert load_settings({"TICKETS_BUCKET": bucket}).bucket == bucket

    @pytest.mark.parametrize(
        "bucket",
        ["", "ab", "Tickets", "tick_ets", "-tickets", "tickets-", ".tickets", "tickets.", "a" * 64,
         "tick ets", "s3://tickets", "tickets/"],
    )  # fmt: skip
    def test_invalid(self, bucket: str) -> None:
        error = config_error({"TICKETS_BUCKET": bucket}, "TICKETS_BUCKET")
        assert "not a valid bucket name" in str(error)


class TestDatabaseUrl:
    @pytest.mark.parametrize(
        "url",
        [
            "postgresql://u:p@db.example:6543/tickets?sslmode=require",
            "postgres://localhost/tickets",
        ],
    )
    def test_valid(self, url: str) -> None:
        assert load_settings({"DATABASE_URL": url}).database_url == url

    @pytest.mark.parametrize(
        "url",
        ["mysql://localhost/tickets", "localhost:5432", "postgresql:/x", "POSTGRESQL://h/db", " "],
    )
    def test_invalid(self, url: str) -> None:
        error = config_error({"DATABASE_URL": url}, "DATABASE_URL")
        assert "postgresql://" in str(error)

    def test_error_does_not_echo_the_url(self) -> None:
        error = config_error({"DATABASE_URL": "mysql://u:s3cret@h/db"}, "DATABASE_URL")
        assert "s3cret" not in str(error)


class TestParseDatabaseUrl:
    def test_everything(self) -> None:
        params = parse_database_url(
            "postgresql://ingest:s3cret@db.example.com:6543/tickets?sslmode=verify-full"
        )
        assert params == ConnectionParams(
            host="db.example.com",
            port=6543,
            user="ingest",
            password="s3cret",
            database="tickets",
            sslmode="verify-full",
        )

    def test_defaults(self) -> None:
        assert parse_database_url("postgresql://") == ConnectionParams(
            host="127.0.0.1",
            port=5432,
            user="postgres",
            password=None,
            database="postgres",
            sslmode="prefer",
        )

    def test_default_settings_url(self) -> None:
        params = parse_database_url(DEFAULT_DATABASE_URL)
        assert (params.host, params.port, params.user, params.password, params.database) == (
            "127.0.0.1",
            5432,
            "postgres",
            None,
            "tickets",
        )

    def test_postgres_scheme(self) -> None:
        assert parse_database_url("postgres://h/db").database == "db"

    def test_password_percent_decoded(self) -> None:
        params = parse_database_url("postgresql://u:p%40ss%3Aw%2Fo%25rd%23+x@h/db")
        assert params.password == "p@ss:w/o%rd#+x"

    def test_user_and_database_percent_decoded(self) -> None:
        params = parse_database_url("postgresql://my%40user@h/my%20db")
        assert params.user == "my@user"
        assert params.database == "my db"

    def test_empty_password(self) -> None:
        assert parse_database_url("postgresql://u:@h/db").password == ""

    def test_no_password(self) -> None:
        assert parse_database_url("postgresql://u@h/db").password is None

    def test_ipv6_host(self) -> None:
        params = parse_database_url("postgresql://u@[::1]:5433/db")
        assert (params.host, params.port) == ("::1", 5433)

    @pytest.mark.parametrize(
        "mode", ["disable", "allow", "prefer", "require", "verify-ca", "verify-full"]
    )
    def test_sslmodes(self, mode: str) -> None:
        assert parse_database_url(f"postgresql://h/db?sslmode={mode}").sslmode == mode

    def test_other_query_parameters_ignored(self) -> None:
        params = parse_database_url("postgresql://h/db?application_name=x&sslmode=require")
        assert params.sslmode == "require"

    @pytest.mark.parametrize("mode", ["on", "REQUIRE", "verify_full", "true"])
    def test_bad_sslmode(self, mode: str) -> None:
        with pytest.raises(ConfigError, match=rf"DATABASE_URL sslmode='{mode}' is not one of"):
            parse_database_url(f"postgresql://h/db?sslmode={mode}")

    @pytest.mark.parametrize("port", ["abc", "70000", "-1"])
    def test_bad_port(self, port: str) -> None:
        with pytest.raises(ConfigError, match="DATABASE_URL has an invalid port"):
            parse_database_url(f"postgresql://u:pw@h:{port}/db")

    @pytest.mark.parametrize("url", ["mysql://h/db", "http://h/db", "h/db", ""])
    def test_bad_scheme(self, url: str) -> None:
        with pytest.raises(ConfigError, match="DATABASE_URL must start with postgresql://"):
            parse_database_url(url)

    def test_describe_never_shows_the_password(self) -> None:
        params = parse_database_url("postgresql://u:s3cret@h:5433/db?sslmode=require")
        assert params.describe() == "u@h:5433/db (sslmode=require)"
        assert "s3cret" not in params.describe()


# --- issue 11, point 9: every bad value is one ConfigError naming its variable -----------


class TestZoneNames:
    """Only IANA region zones: the aliases in a zoneinfo directory look valid but are not."""

    @pytest.mark.parametrize(
        "zone",
        ["Africa/Nairobi", "UTC", "Etc/UTC", "Etc/GMT-3", "America/Argentina/Buenos_Aires"],
    )
    def test_region_zones(self, zone: str) -> None:
        assert load_settings({"SOURCE_TIMEZONE": zone}).source_timezone == zone

    @pytest.mark.parametrize(
        "zone",
        [
            "posixrules",  # a copy of America/New_York
            "localtime",  # whatever this machine is set to
            "Factory",
            "posix/Africa/Nairobi",
            "right/UTC",
            "EST5EDT",
            "Africa/../Africa/Nairobi",
        ],
    )
    def test_aliases_and_artefacts_are_refused(self, zone: str) -> None:
        error = config_error({"SOURCE_TIMEZONE": zone}, "SOURCE_TIMEZONE")
        assert repr(zone) in str(error) and "Africa/Nairobi" in str(error)


class TestNonFiniteAndOutOfRange:
    @pytest.mark.parametrize(
        "name",
        [
            "MAX_REJECTED_SHARE",
            "LOCK_WAIT_SECONDS",
            "TIME_BUDGET_MARGIN_SECONDS",
            "FUTURE_TOLERANCE_SECONDS",
        ],
    )
    @pytest.mark.parametrize("raw", ["nan", "NaN", "inf", "-inf", "Infinity", "-1", "1e308"])
    def test_refused(self, name: str, raw: str) -> None:
        error = config_error({name: raw}, name)
        assert "must be between" in str(error)
        assert "\n" not in str(error)

    def test_future_tolerance(self) -> None:
        assert load_settings({}).future_tolerance_seconds == 3600.0
        assert load_settings({"FUTURE_TOLERANCE_SECONDS": "0"}).future_tolerance_seconds == 0.0
        week = load_settings({"FUTURE_TOLERANCE_SECONDS": "604800"})
        assert week.future_tolerance_seconds == 604800.0
        config_error({"FUTURE_TOLERANCE_SECONDS": "604801"}, "FUTURE_TOLERANCE_SECONDS")
        config_error({"FUTURE_TOLERANCE_SECONDS": "an hour"}, "FUTURE_TOLERANCE_SECONDS")


class TestDatabaseUrlShape:
    @pytest.mark.parametrize(
        "url",
        [
            "postgresql://u:s3cret@[::1/tickets",  # ValueError from urlsplit today
            "postgresql://u:s3cret@[db.example]/tickets",  # brackets around a name
        ],
    )
    def test_unparseable(self, url: str) -> None:
        error = config_error({"DATABASE_URL": url}, "DATABASE_URL")
        assert "not a valid URL" in str(error) and "s3cret" not in str(error)

    @pytest.mark.parametrize("port", ["0", "65536", "99999"])
    def test_port_out_of_range(self, port: str) -> None:
        url = f"postgresql://u:s3cret@db.example:{port}/tickets"
        error = config_error({"DATABASE_URL": url}, "DATABASE_URL")
        assert "invalid port" in str(error) and "1 to 65535" in str(error)
        assert "5432" not in str(error) and "s3cret" not in str(error)

    @pytest.mark.parametrize("port", ["1", "65535"])
    def test_port_bounds(self, port: str) -> None:
        url = f"postgresql://u@db.example:{port}/tickets"
        assert parse_database_url(url).port == int(port)


class TestSchemaDrift:
    def test_default_is_reject(self) -> None:
        settings = load_settings({})
        assert settings.schema_drift_for("inc") is DriftPolicy.REJECT
        assert settings.schema_drift_for("crq") is DriftPolicy.REJECT

    @pytest.mark.parametrize(
        ("raw", "inc", "crq"),
        [
            ("rescue", DriftPolicy.RESCUE, DriftPolicy.RESCUE),
            ("reject", DriftPolicy.REJECT, DriftPolicy.REJECT),
            ("inc:rescue", DriftPolicy.RESCUE, DriftPolicy.REJECT),
            ("inc:rescue,crq:reject", DriftPolicy.RESCUE, DriftPolicy.REJECT),
            ("rescue, crq : reject", DriftPolicy.RESCUE, DriftPolicy.REJECT),
            ("reject,inc:rescue", DriftPolicy.RESCUE, DriftPolicy.REJECT),
            ("", DriftPolicy.REJECT, DriftPolicy.REJECT),
        ],
    )
    def test_valid(self, raw: str, inc: DriftPolicy, crq: DriftPolicy) -> None:
        settings = load_settings({"SCHEMA_DRIFT": raw})
        assert (settings.schema_drift_for("inc"), settings.schema_drift_for("crq")) == (inc, crq)

    @pytest.mark.parametrize(
        ("raw", "says"),
        [
            ("evolve", "'evolve' is not a policy (use reject or rescue)"),
            ("inc:freeze", "'freeze' is not a policy"),
            ("Rescue", "'Rescue' is not a policy"),
            ("rescue,reject", "the policy of every dataset is given twice"),
            ("inc:rescue,inc:reject", "'inc' is given twice"),
            ("xyz:rescue", "'xyz' is not a dataset (known: crq, inc)"),
        ],
    )
    def test_invalid(self, raw: str, says: str) -> None:
        error = config_error({"SCHEMA_DRIFT": raw}, "SCHEMA_DRIFT")
        assert says in str(error)

    def test_a_custom_dataset_with_its_table(self) -> None:
        env = {
            "DATASETS": "inc,prb",
            "DATASET_TABLES": "prb=problems",
            "SCHEMA_DRIFT": "prb:rescue",
        }
        settings = load_settings(env)
        assert settings.schema_drift_for("prb") is DriftPolicy.RESCUE
        assert settings.schema_drift_for("inc") is DriftPolicy.REJECT
