"""The Lambda side publishes each sync's retries as one ``Retries`` metric by operation."""

from __future__ import annotations

import json

import pytest

from tickets_ingest.handlers import aws


def test_retries_are_published_by_operation(capsys: pytest.CaptureFixture[str]) -> None:
    aws.publish_retries("inc", {"GET": 3, "apply": 1})
    documents = [json.loads(line) for line in capsys.readouterr().out.splitlines() if line]
    published = {
        (doc["dataset"], doc["operation"]): doc["Retries"] for doc in documents if "Retries" in doc
    }
    assert published == {("inc", "GET"): [3.0], ("inc", "apply"): [1.0]}
    for doc in documents:
        [directive] = doc["_aws"]["CloudWatchMetrics"]
        assert [m["Name"] for m in directive["Metrics"]] == ["Retries"]
        assert set(directive["Dimensions"][0]) == {"service", "dataset", "operation"}


def test_nothing_is_published_without_retries(capsys: pytest.CaptureFixture[str]) -> None:
    aws.publish_retries("inc", {})
    assert capsys.readouterr().out == ""
