"""Stream keys: ``automations/<dataset>/changes/YYYY-MM-DDTHH-mm-ss.csv``.

The timestamp in the name is the exporter's execution time in Africa/Nairobi. Because the
format is fixed-width, the lexical order of names is their time order, which is what makes
a key usable as the watermark.
"""

from __future__ import annotations

import re
from datetime import UTC, datetime
from zoneinfo import ZoneInfo

from tickets_ingest.models import WatermarkAge

SOURCE_TZ = ZoneInfo("Africa/Nairobi")
_STAMP_FORMAT = "%Y-%m-%dT%H-%M-%S"
# [0-9], not \d: \d matches any Unicode digit, and strptime accepts those too.
_STREAM_NAME = re.compile(r"[0-9]{4}-[0-9]{2}-[0-9]{2}T[0-9]{2}-[0-9]{2}-[0-9]{2}\.csv")
DATASET_PATTERN = re.compile(r"[a-z][a-z0-9_]{0,30}")


def changes_prefix(dataset: str) -> str:
    return f"automations/{dataset}/changes/"


def processed_prefix(dataset: str) -> str:
    return f"automations/{dataset}/processed/"


def processed_key(dataset: str, name: str) -> str:
    return f"automations/{dataset}/processed/{name}"


def quarantine_key(dataset: str, name: str) -> str:
    return f"automations/{dataset}/quarantine/{name}"


def file_name(key: str) -> str:
    return key.rsplit("/", 1)[-1]


def parse_stream_key(dataset: str, key: str) -> datetime | None:
    """The file's timestamp (aware, Africa/Nairobi) if ``key`` is a stream file, else None.

    Only names directly under ``changes/`` count; a name that merely looks like a timestamp
    (``2026-02-30T10-00-00.csv``, ``2026-06-22T15-50-39.csv.tmp``) is not a stream file.
    """
    return _parse_under(changes_prefix(dataset), key)


def parse_archived_key(dataset: str, key: str) -> datetime | None:
    """Like ``parse_stream_key``, for a file archived under ``processed/``."""
    return _parse_under(processed_prefix(dataset), key)


def _parse_under(prefix: str, key: str) -> datetime | None:
    if not key.startswith(prefix):
        return None
    name = key[len(prefix) :]
    if not _STREAM_NAME.fullmatch(name):
        return None
    try:
        naive = datetime.strptime(name[:-4], _STAMP_FORMAT)
    except ValueError:
        return None
    return naive.replace(tzinfo=SOURCE_TZ)


def key_timestamp(key: str) -> datetime | None:
    """The Nairobi timestamp encoded in any stream-style key (used for the watermark's age)."""
    name = file_name(key)
    if not _STREAM_NAME.fullmatch(name):
        return None
    try:
        return datetime.strptime(name[:-4], _STAMP_FORMAT).replace(tzinfo=SOURCE_TZ)
    except ValueError:
        return None


def dataset_of_key(key: str) -> str | None:
    """``inc`` for ``automations/inc/changes/...``; None for anything outside a changes/ prefix."""
    parts = key.split("/")
    if len(parts) != 4 or parts[0] != "automations" or parts[2] != "changes":
        return None
    return parts[1] if DATASET_PATTERN.fullmatch(parts[1]) else None


def lag_seconds(watermark: str | None, now: datetime | None = None) -> float | None:
    """How far the table is behind: now minus the time in the watermark's name.

    Negative when the watermark is ahead of ``now``; ``watermark_age`` says what that means.
    """
    stamp = key_timestamp(watermark) if watermark else None
    if stamp is None:
        return None
    return ((now or datetime.now(UTC)) - stamp).total_seconds()


def watermark_age(watermark: str | None, now: datetime, tolerance_seconds: float) -> WatermarkAge:
    """The lag, never negative. A watermark ahead of ``now`` is clock skew (lag 0) while within
    ``tolerance_seconds``; beyond it, a future-dated file was applied and the lag is unknown
    (None: no LagSeconds datapoint, which the lag alarm treats as breaching)."""
    lag = lag_seconds(watermark, now)
    if lag is None:
        return WatermarkAge(lag_seconds=None, clock_skew_seconds=None)
    if lag >= 0:
        return WatermarkAge(lag_seconds=lag, clock_skew_seconds=None)
    ahead = -lag
    if ahead <= tolerance_seconds:
        return WatermarkAge(lag_seconds=0.0, clock_skew_seconds=ahead)
    return WatermarkAge(lag_seconds=None, clock_skew_seconds=ahead, in_future=True)
