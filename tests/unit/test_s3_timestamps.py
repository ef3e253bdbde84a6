"""The S3 client's timestamp parser gives what botocore's own gives, for every input."""

from __future__ import annotations

from datetime import UTC, datetime

import botocore.utils
import pytest
from hypothesis import given
from hypothesis import strategies as st

from tickets_ingest.dal.s3 import make_client, parse_timestamp

_instants = st.datetimes(
    min_value=datetime(1970, 1, 2), max_value=datetime(2999, 12, 31), timezones=st.just(UTC)
)


def _same_as_botocore(value: object) -> None:
    try:
        expected = botocore.utils.parse_timestamp(value)
    except (ValueError, RuntimeError) as error:
        with pytest.raises(type(error)):
            parse_timestamp(value)
        return
    parsed = parse_timestamp(value)
    assert parsed == expected
    assert (parsed.tzinfo, parsed.utcoffset()) == (expected.tzinfo, expected.utcoffset())


@given(_instants)
def test_iso_8601_as_in_xml_bodies(instant: datetime) -> None:
    for text in (
        instant.strftime("%Y-%m-%dT%H:%M:%SZ"),
        instant.strftime("%Y-%m-%dT%H:%M:%S.") + f"{instant.microsecond // 1000:03d}Z",
        instant.strftime("%Y-%m-%dT%H:%M:%S.%fZ"),
    ):
        _same_as_botocore(text)


@given(_instants)
def test_http_dates_as_in_headers(instant: datetime) -> None:
    _same_as_botocore(instant.strftime("%a, %d %b %Y %H:%M:%S GMT"))


@pytest.mark.parametrize(
    "value",
    [
        "Wed, 31 Feb 2026 10:00:00 GMT",  # matches the form, is no date
        "2026-02-30T10:00:00Z",
        "2026-12-04T18:01:32.1234Z",  # other forms: botocore's parser, as before
        "2026-12-04T18:01:32+03:00",
        "Fri, 04 Dec 2026 18:01:32 +0300",
        "1764871292",
        1764871292,
        1764871292.5,
        "not a time",
    ],
)
def test_anything_else_is_botocores_to_parse(value: object) -> None:
    _same_as_botocore(value)


def test_the_s3_client_parses_with_it() -> None:
    client = make_client()
    # botocore parses each response with a parser its endpoint makes from the session's
    # factory (private attributes: this checks the wiring, the tests above the parsing).
    factory = client._endpoint._response_parser_factory
    parser = factory.create_parser(client.meta.service_model.protocol)
    assert parser._timestamp_parser is parse_timestamp
