"""A realistic, deterministic generator of the FTTH ticket export stream.

It writes what the upstream exporter writes to ``automations/<dataset>/changes/``:
a full current-state baseline first, then delta files that carry the full current
record of every new or changed ticket. Everything comes from one seeded
``random.Random`` per stream, so the same seed always yields the same bytes.

Times are handled internally as whole seconds of Africa/Nairobi wall time since
``_EPOCH`` (Nairobi has no DST, so plain integer arithmetic is exact) and written
naive, as ``YYYY-MM-DD HH:MM:SS``.
"""

from __future__ import annotations

import itertools
import math
import random
import uuid
import zoneinfo
from collections.abc import Callable, Iterable, Iterator, Sequence
from dataclasses import dataclass
from datetime import datetime, timedelta
from functools import lru_cache
from typing import BinaryIO, TypeVar

from tickets_ingest.core.schema import CSV_COLUMNS, SENTINEL_PREFIX

__all__ = [
    "BASELINE_ROWS",
    "NAIROBI",
    "StreamFile",
    "TicketStream",
    "csv_lines",
    "encode_rows",
    "file_key",
    "write_baseline_to",
]

BASELINE_ROWS = 34_849
NAIROBI = zoneinfo.ZoneInfo("Africa/Nairobi")

#: Execution time of the 2026-06-22 re-seed baseline.
DEFAULT_START = datetime(2026, 6, 22, 15, 50, 39, tzinfo=NAIROBI)
KEY_TIME_FORMAT = "%Y-%m-%dT%H-%M-%S"
S3_BUCKET = "tickets"

# ---------------------------------------------------------------------------
# Data tables
# ---------------------------------------------------------------------------

#: Per dataset: ticket-id prefix and buckets with weights (the first bucket takes alarms).
DATASETS: dict[str, tuple[str, tuple[tuple[str, int], ...]]] = {
    "inc": (
        "INC",
        (("Faults", 55), ("Installations", 20), ("Service Requests", 15), ("Complaints", 10)),
    ),
    "crq": (
        "CRQ",
        (("Maintenance", 40), ("Planned Works", 30), ("Network Changes", 20), ("Upgrades", 10)),
    ),
}
SCHEDULED_BUCKETS = frozenset({"Installations", "Maintenance", "Planned Works", "Upgrades"})

SOURCE_TYPES: tuple[tuple[str, int], ...] = (
    ("Remedy", 55),
    ("ServiceNow", 25),
    ("NOC Portal", 14),
    ("Customer Portal", 6),
)
#: service type, weight, SLA target in hours.
SERVICE_TYPES: tuple[tuple[str, int, float], ...] = (
    ("FTTH", 62, 24.0),
    ("FTTB", 15, 12.0),
    ("Enterprise Fibre", 13, 4.0),
    ("Wireless", 10, 24.0),
)

#: raw status as the source writes it, and its clean normalized value.
STATUSES: tuple[tuple[str, str], ...] = (
    ("Assigned", "open"),
    ("In Progress", "in_progress"),
    ("Pending", "pending"),
    ("Resolved", "resolved"),
    ("Closed", "closed"),
    ("Cancelled", "cancelled"),
)
ASSIGNED, IN_PROGRESS, PENDING, RESOLVED, CLOSED, CANCELLED = range(len(STATUSES))
FINAL_STATUSES = frozenset({CLOSED, CANCELLED})
#: Baseline status mix by ticket age: (maximum age in hours, weights per STATUSES index).
STATUS_BY_AGE: tuple[tuple[float, tuple[int, ...]], ...] = (
    (24.0, (30, 30, 15, 20, 0, 5)),
    (24.0 * 7, (8, 10, 12, 30, 35, 5)),
    (math.inf, (1, 1, 3, 10, 78, 7)),
)
#: Where a changed ticket's status moves to in a delta (final statuses stay put).
TRANSITIONS: dict[int, tuple[tuple[int, ...], tuple[int, ...]]] = {
    ASSIGNED: ((IN_PROGRESS, PENDING, RESOLVED, CANCELLED), (6, 1, 2, 1)),
    IN_PROGRESS: ((PENDING, RESOLVED, CANCELLED), (2, 7, 1)),
    PENDING: ((IN_PROGRESS, RESOLVED, CANCELLED), (5, 4, 1)),
    RESOLVED: ((CLOSED, IN_PROGRESS), (9, 1)),
}
STATUS_PROGRESS_SHARE = 0.7

#: region, weight, clusters as (name, latitude, longitude, landmarks).
REGIONS: tuple[tuple[str, int, tuple[tuple[str, float, float, tuple[str, ...]], ...]], ...] = (
    (
        "Nairobi",
        30,
        (
            ("Westlands", -1.2676, 36.8108, ("Sarit Centre", "The Mall", "Mpaka Road")),
            ("Kilimani", -1.2893, 36.7830, ("Yaya Centre", "Argwings Kodhek Road")),
            ("Karen", -1.3197, 36.7073, ("Karen Crossroads", "Hardy", "Bogani Road")),
            ("Embakasi", -1.3167, 36.8940, ("Pipeline", "Fedha Estate", "Nyayo Estate")),
            ("Kasarani", -1.2219, 36.8996, ("Mirema Drive", "Roysambu", "Thika Road Mall")),
            ("Parklands", -1.2630, 36.8170, ("Limuru Road", "Aga Khan Hospital")),
        ),
    ),
    (
        "Mombasa",
        10,
        (
            ("Nyali", -4.0220, 39.7100, ("City Mall", "Links Road", "Nyali Bridge")),
            ("Bamburi", -3.9980, 39.7200, ("Bamburi Cement", "Mtambo")),
            ("Likoni", -4.0890, 39.6560, ("Ferry Terminal", "Shelly Beach")),
            ("Tudor", -4.0400, 39.6800, ("Tudor Estate", "Moi Avenue")),
        ),
    ),
    (
        "Kisumu",
        7,
        (
            ("Milimani", -0.1000, 34.7600, ("Aga Khan Road", "Milimani Estate")),
            ("Kondele", -0.0850, 34.7700, ("Kondele Roundabout", "Kibuye Market")),
            ("Nyalenda", -0.1100, 34.7650, ("Nyalenda A", "Dunga Beach")),
            ("Mamboleo", -0.0700, 34.7900, ("Mamboleo Junction", "Kisian")),
        ),
    ),
    (
        "Nakuru",
        6,
        (
            ("Section 58", -0.2800, 36.0900, ("Nakuru Showground", "Flamingo Estate")),
            ("Lanet", -0.3000, 36.1500, ("Lanet Barracks", "Whitehouse")),
            ("Kiamunyi", -0.2600, 36.0300, ("Kiamunyi Estate", "Kabarak Road")),
        ),
    ),
    (
        "Eldoret",
        5,
        (
            ("Elgon View", 0.5120, 35.2800, ("Elgon View Estate", "Rupa Mall")),
            ("Kapsoya", 0.5200, 35.2900, ("Kapsoya Estate", "Moi University Annex")),
            ("Langas", 0.4900, 35.2600, ("Langas Market", "Kipchoge Stadium")),
        ),
    ),
    (
        "Central",
        8,
        (
            ("Nyeri", -0.4201, 36.9476, ("Kimathi Way", "Ruringu")),
            ("Thika", -1.0333, 37.0693, ("Section 9", "Makongeni")),
            ("Kiambu", -1.1714, 36.8356, ("Kiambu Town", "Ndumberi")),
            ("Murang'a", -0.7210, 37.1526, ("Mukuyu", "Kenol")),
        ),
    ),
    (
        "Coast",
        5,
        (
            ("Malindi", -3.2192, 40.1169, ("Casuarina", "Malindi Old Town")),
            ("Kilifi", -3.6305, 39.8499, ("Mnarani", "Kilifi Bofa")),
            ("Diani", -4.2833, 39.5833, ("Ukunda", "Diani Beach Road")),
        ),
    ),
    (
        "Western",
        6,
        (
            ("Kakamega", 0.2827, 34.7519, ("Milimani Kakamega", "Lurambi")),
            ("Bungoma", 0.5635, 34.5606, ("Kanduyi", "Bungoma Town")),
            ("Busia", 0.4608, 34.1115, ("Busia Border Post", "Marachi")),
        ),
    ),
    (
        "Nyanza",
        6,
        (
            ("Kisii", -0.6817, 34.7660, ("Daraja Mbili", "Jogoo")),
            ("Homa Bay", -0.5273, 34.4571, ("Homa Bay Pier", "Shauri Yako")),
            ("Migori", -1.0634, 34.4731, ("Migori Town", "Oruba")),
        ),
    ),
    (
        "Rift Valley",
        7,
        (
            ("Naivasha", -0.7167, 36.4333, ("Moi South Lake Road", "Karagita")),
            ("Kericho", -0.3677, 35.2831, ("Kericho Town", "Brooke")),
            ("Narok", -1.0783, 35.8601, ("Narok Town", "Olerai")),
            ("Kitale", 1.0157, 35.0062, ("Kitale Town", "Milimani Kitale")),
        ),
    ),
    (
        "Eastern",
        7,
        (
            ("Machakos", -1.5177, 37.2634, ("Machakos Town", "Katoloni")),
            ("Embu", -0.5310, 37.4500, ("Embu Town", "Majengo")),
            ("Meru", 0.0470, 37.6498, ("Makutano", "Gakoromone")),
            ("Kitui", -1.3667, 38.0106, ("Kalundu", "Kitui Town")),
        ),
    ),
    (
        "North Eastern",
        3,
        (
            ("Garissa", -0.4532, 39.6461, ("Garissa Town", "Bulla Iftin")),
            ("Wajir", 1.7471, 40.0573, ("Wajir Town", "Jogbaru")),
            ("Mandera", 3.9366, 41.8670, ("Mandera Town", "Bulla Mpya")),
        ),
    ),
)
KENYA_LAT = (-4.7, 4.6)
KENYA_LON = (33.9, 41.9)
COORD_JITTER = 0.015
#: Generic site suffixes combined with a cluster name.
SITES: tuple[str, ...] = (
    "Estate",
    "Shopping Centre",
    "Business Park",
    "Stage",
    "Junction",
    "Market",
    "Apartments",
    "Court",
)
BLOCK_LETTERS = "ABCDEFGH"

#: department per bucket (weighted); Enterprise Fibre routes half to Enterprise Services.
DEPARTMENTS: dict[str, tuple[tuple[str, int], ...]] = {
    "Faults": (("Field Operations", 3), ("Network Operations Centre", 2)),
    "Installations": (("Installations & Provisioning", 1),),
    "Service Requests": (("Customer Experience", 2), ("Installations & Provisioning", 1)),
    "Complaints": (("Customer Experience", 1),),
    "Maintenance": (("Field Operations", 2), ("Network Operations Centre", 1)),
    "Planned Works": (("Network Engineering", 1),),
    "Network Changes": (("Network Engineering", 2), ("Network Operations Centre", 1)),
    "Upgrades": (("Network Engineering", 1), ("Field Operations", 1)),
}
TEAMS: dict[str, tuple[str, ...]] = {
    "Field Operations": (
        "{region} Fibre Field Team",
        "{region} Splicing Crew",
        "{region} Last Mile Team",
    ),
    "Network Operations Centre": ("NOC Tier 1", "NOC Tier 2", "Transmission Desk"),
    "Installations & Provisioning": ("{region} Installations Team", "Provisioning Desk"),
    "Customer Experience": ("Customer Care Escalations", "{region} Retention Desk"),
    "Enterprise Services": ("Enterprise Support", "Key Accounts Desk"),
    "Network Engineering": ("Core Network Engineering", "{region} Access Engineering"),
}
FIRST_NAMES: tuple[str, ...] = (
    "Wanjiku", "Otieno", "Achieng", "Kiprop", "Chebet", "Mwangi", "Njeri", "Wafula",
    "Nafula", "Mutua", "Mwende", "Akinyi", "Jepkosgei", "Omondi", "Wairimu", "Barasa",
    "Halima", "Abdi", "Fatuma", "Juma", "Zawadi", "Baraka", "Brian", "Faith",
    "Grace", "Kevin", "Mercy", "Dennis", "Nyokabi", "Kipchumba",
)  # fmt: skip
SURNAMES: tuple[str, ...] = (
    "Kamau", "Odhiambo", "Otieno", "Mwangi", "Kiprotich", "Chebet", "Wanjala", "Mutua",
    "Njoroge", "Ochieng", "Kariuki", "Wekesa", "Kilonzo", "Hassan", "Mohamed", "Ruto",
    "Korir", "Omondi", "Nyambura", "Muriuki", "Owino", "Onyango", "Kibet", "Maina",
    "Gitau", "Wambui", "Cheruiyot", "Adan",
)  # fmt: skip

MIDDLE_NAME_SHARE = 0.3

SLA_WITHIN, SLA_AT_RISK, SLA_BREACHED = "Within SLA", "At Risk", "Breached"
AT_RISK_FRACTION = 0.75

ALARM_SHARE = 0.04
MESSY_SHARE = 0.03
#: The ways a source value gets mangled (case and whitespace only).
MESSY_VARIANTS: tuple[Callable[[str], str], ...] = (
    str.lower,
    str.upper,
    lambda v: f" {v}  ",
    lambda v: v.replace(" ", "  ") if " " in v else f"{v} ",
    lambda v: f"  {v.upper()} ",
)

#: How far back the baseline's tickets were created.
BASELINE_WINDOW_DAYS = 120
#: Median hours to resolve, and the log-normal spread.
MTTR_MEDIAN_HOURS = 6.0
MTTR_SIGMA = 1.0

# ---------------------------------------------------------------------------
# Time helpers (whole seconds of Nairobi wall time since _EPOCH, a Saturday midnight)
# ---------------------------------------------------------------------------

_EPOCH = datetime(2000, 1, 1)
_EPOCH_WEEKDAY = _EPOCH.weekday()
DAY = 86_400
HOUR = 3_600


def _to_seconds(moment: datetime) -> int:
    """Nairobi wall-clock seconds of ``moment`` (naive values are taken as Nairobi time)."""
    if moment.tzinfo is not None:
        moment = moment.astimezone(NAIROBI).replace(tzinfo=None)
    return int((moment - _EPOCH).total_seconds())


def _to_datetime(seconds: int) -> datetime:
    """The aware Africa/Nairobi datetime of wall-clock ``seconds``."""
    return (_EPOCH + timedelta(seconds=seconds)).replace(tzinfo=NAIROBI)


@lru_cache(maxsize=4096)
def _fmt_day(day: int) -> str:
    return (_EPOCH + timedelta(days=day)).strftime("%Y-%m-%d")


_CLOCK_MINUTES = tuple(f" {h:02d}:{m:02d}:" for h in range(24) for m in range(60))
_CLOCK_SECONDS = tuple(f"{s:02d}" for s in range(60))


def _fmt_ts(seconds: int | None) -> str:
    """``YYYY-MM-DD HH:MM:SS``, or empty for None."""
    if seconds is None:
        return ""
    day, rest = divmod(seconds, DAY)
    minute, second = divmod(rest, 60)
    return _fmt_day(day) + _CLOCK_MINUTES[minute] + _CLOCK_SECONDS[second]


@lru_cache(maxsize=4096)
def _week_bounds(day: int) -> tuple[str, str]:
    """Monday and Sunday of the week holding ``day`` (days since ``_EPOCH``)."""
    monday = day - (day + _EPOCH_WEEKDAY) % 7
    return _fmt_day(monday), _fmt_day(monday + 6)


def file_key(dataset: str, timestamp: datetime) -> str:
    """The S3 key the exporter writes a file executed at ``timestamp`` to."""
    stamp = timestamp.astimezone(NAIROBI).strftime(KEY_TIME_FORMAT)
    return f"automations/{dataset}/changes/{stamp}.csv"


# ---------------------------------------------------------------------------
# Tickets
# ---------------------------------------------------------------------------


@dataclass(slots=True)
class _Ticket:
    """The generator's view of one ticket (typed; rendered to strings per file)."""

    ticket_id: str
    source_type: str
    service_type: str
    sla_hours: float
    bucket: str
    region: str
    cluster: str
    location_name: str
    latitude: str
    longitude: str
    department: str
    assigned_team: str
    owner: str
    is_auto_created: bool
    is_auto_closed: bool
    is_alarm: bool
    is_actionable: bool
    status: int
    created_service: int
    created: int
    scheduled: int | None
    closed: int | None
    mttr: float | None
    updated: int
    last_seen: int


@dataclass
class StreamFile:
    """One file of the stream, as the exporter would upload it."""

    key: str
    timestamp: datetime
    body: bytes
    rows: int


T = TypeVar("T")


class _Rng(random.Random):
    """``random.Random`` plus cheap draws (the generator's hot path makes ~30 per row)."""

    def pick(self, items: Sequence[T]) -> T:
        """A uniform element of ``items`` (weighted tables repeat items by weight)."""
        return items[int(self.random() * len(items))]

    def between(self, lo: int, hi: int) -> int:
        """A uniform integer in ``[lo, hi]`` (``lo`` when ``hi < lo``)."""
        span = hi - lo
        return lo if span <= 0 else lo + int(self.random() * (span + 1))


def _table(pairs: Iterable[tuple[T, int]]) -> tuple[T, ...]:
    """A weighted table: each item repeated by its integer weight, for ``_Rng.pick``."""
    return tuple(item for item, weight in pairs for _ in range(weight))


def _check_coordinates() -> None:
    for _, _, clusters in REGIONS:
        for cluster, lat, lon, _ in clusters:
            inside_lat = KENYA_LAT[0] <= lat - COORD_JITTER <= lat + COORD_JITTER <= KENYA_LAT[1]
            inside_lon = KENYA_LON[0] <= lon - COORD_JITTER <= lon + COORD_JITTER <= KENYA_LON[1]
            if not (inside_lat and inside_lon):
                raise ValueError(f"cluster {cluster!r} can fall outside Kenya")


_check_coordinates()
_OWNERS = tuple(f"{first} {last}" for first in FIRST_NAMES for last in SURNAMES)
_SOURCE_TABLE = _table(SOURCE_TYPES)
_SERVICE_TABLE = _table(((name, sla), weight) for name, weight, sla in SERVICE_TYPES)
_REGION_TABLE = _table(((name, clusters), weight) for name, weight, clusters in REGIONS)
_DEPARTMENT_TABLES = {bucket: _table(options) for bucket, options in DEPARTMENTS.items()}
_STATUS_TABLES = tuple(
    (limit, _table(zip(range(len(STATUSES)), weights, strict=True)))
    for limit, weights in STATUS_BY_AGE
)


def _status_table(age_hours: float) -> tuple[int, ...]:
    for limit, table in _STATUS_TABLES:
        if age_hours <= limit:
            return table
    raise AssertionError("STATUS_BY_AGE must end with an infinite limit")


_TRANSITION_TABLES = {
    status: _table(zip(targets, weights, strict=True))
    for status, (targets, weights) in TRANSITIONS.items()
}
_BOOL = ("false", "true")


class _Factory:
    """Draws tickets and renders rows for one dataset from one ``random.Random``."""

    def __init__(self, rng: _Rng, dataset: str) -> None:
        if dataset not in DATASETS:
            raise ValueError(f"unknown dataset {dataset!r}; expected one of {sorted(DATASETS)}")
        self.rng = rng
        self.dataset = dataset
        prefix, buckets = DATASETS[dataset]
        self.prefix = prefix
        self.alarm_bucket = buckets[0][0]
        self.bucket_table = _table(buckets)
        self.next_number = 12_000_000 + rng.between(0, 500_000)

    # -- identity and static attributes ------------------------------------

    def new_id(self) -> str:
        self.next_number += self.rng.between(1, 3)
        return f"{self.prefix}{self.next_number:012d}"

    def assignment(self, bucket: str, service_type: str, region: str) -> tuple[str, str, str]:
        rng = self.rng
        if service_type == "Enterprise Fibre" and rng.random() < 0.5:
            department = "Enterprise Services"
        else:
            department = rng.pick(_DEPARTMENT_TABLES[bucket])
        team = rng.pick(TEAMS[department]).format(region=region)
        owner = rng.pick(_OWNERS)
        if rng.random() < MIDDLE_NAME_SHARE:  # "Wanjiku Achieng Kamau"
            first, last = owner.split(" ", 1)
            owner = f"{first} {rng.pick(FIRST_NAMES)} {last}"
        return department, team, owner

    def _location(self) -> tuple[str, str, str, str, str]:
        """region, cluster, location_name, latitude, longitude."""
        rng = self.rng
        region, clusters = rng.pick(_REGION_TABLE)
        cluster, lat, lon, landmarks = rng.pick(clusters)
        roll = rng.random()
        if roll < 0.015:
            name = f'{cluster} "{rng.pick(BLOCK_LETTERS)}" Block'
        elif roll < 0.4:
            name = f"{cluster}, {rng.pick(landmarks)}"
        elif roll < 0.65:
            name = f"{cluster} {rng.pick(SITES)}"
        elif roll < 0.9:
            name = f"{rng.pick(landmarks)}, Plot {rng.between(1, 480)}"
        else:
            name = rng.pick(landmarks)
        # Every cluster centre +- COORD_JITTER lies inside Kenya (checked at import).
        lat += COORD_JITTER * (2.0 * rng.random() - 1.0)
        lon += COORD_JITTER * (2.0 * rng.random() - 1.0)
        return region, cluster, name, f"{lat:.6f}", f"{lon:.6f}"

    # -- lifecycle ---------------------------------------------------------

    def new_ticket(self, created: int, now: int) -> _Ticket:
        """A ticket first seen by the exporter at ``created``, in its state as of ``now``."""
        rng = self.rng
        created = min(created, now)
        is_alarm = rng.random() < ALARM_SHARE
        if is_alarm:
            source_type, bucket = "NOC Portal", self.alarm_bucket
        else:
            source_type = rng.pick(_SOURCE_TABLE)
            bucket = rng.pick(self.bucket_table)
        service_type, sla_hours = rng.pick(_SERVICE_TABLE)
        region, cluster, location_name, latitude, longitude = self._location()
        department, team, owner = self.assignment(bucket, service_type, region)
        created_service = created - rng.between(20, 900)
        scheduled = None
        if bucket in SCHEDULED_BUCKETS and rng.random() < 0.8:
            day = created_service // DAY + rng.between(1, 10)
            scheduled = day * DAY + rng.between(16, 33) * 1800  # 08:00 .. 16:30
        age_hours = (now - created_service) / HOUR
        status = rng.pick(_status_table(age_hours))
        ticket = _Ticket(
            ticket_id=self.new_id(),
            source_type=source_type,
            service_type=service_type,
            sla_hours=sla_hours,
            bucket=bucket,
            region=region,
            cluster=cluster,
            location_name=location_name,
            latitude=latitude,
            longitude=longitude,
            department=department,
            assigned_team=team,
            owner=owner,
            is_auto_created=is_alarm or rng.random() < 0.12,
            is_auto_closed=False,
            is_alarm=is_alarm,
            is_actionable=not is_alarm and rng.random() < 0.92,
            status=ASSIGNED,
            created_service=created_service,
            created=created,
            scheduled=scheduled,
            closed=None,
            mttr=None,
            updated=created,
            last_seen=created,
        )
        self.set_status(ticket, status, lo=created, hi=now)
        return ticket

    def set_status(self, ticket: _Ticket, status: int, *, lo: int, hi: int) -> None:
        """Move ``ticket`` to ``status`` with an update time in ``[lo, hi]``."""
        rng = self.rng
        hi = max(lo, hi)
        ticket.status = status
        if status in (RESOLVED, CLOSED):
            if ticket.closed is None or ticket.mttr is None:
                hours = rng.lognormvariate(math.log(MTTR_MEDIAN_HOURS), MTTR_SIGMA)
                if ticket.is_alarm:
                    hours /= 4
                resolved = ticket.created_service + int(hours * HOUR)
                if not lo <= resolved <= hi:
                    resolved = rng.between(lo, hi)
                ticket.closed = resolved
                ticket.mttr = max(resolved - ticket.created_service, 60) / HOUR
            lag = rng.between(0, 2 * DAY if status == CLOSED else 600)
            ticket.updated = min(hi, max(lo, ticket.closed + lag))
            ticket.is_auto_closed = status == CLOSED and (ticket.is_alarm or rng.random() < 0.06)
        elif status == CANCELLED:
            ticket.closed = ticket.updated = rng.between(lo, hi)
            ticket.mttr = None
            ticket.is_actionable = False
        else:  # open again (or still): reopened tickets lose their resolution
            ticket.closed = ticket.mttr = None
            ticket.updated = rng.between(lo, hi)
        ticket.last_seen = ticket.updated

    def sla_status(self, ticket: _Ticket, now: int) -> str:
        if ticket.mttr is not None:
            return SLA_WITHIN if ticket.mttr <= ticket.sla_hours else SLA_BREACHED
        if ticket.status == CANCELLED:
            return SLA_WITHIN
        elapsed = (now - ticket.created_service) / HOUR
        if elapsed > ticket.sla_hours:
            return SLA_BREACHED
        return SLA_AT_RISK if elapsed > AT_RISK_FRACTION * ticket.sla_hours else SLA_WITHIN

    # -- rendering ---------------------------------------------------------

    def _messy(self, value: str) -> str:
        if self.rng.random() < MESSY_SHARE:
            return self.rng.pick(MESSY_VARIANTS)(value)
        return value

    def render(self, ticket: _Ticket, now: int, key: str, snapshot_id: str) -> list[str]:
        """The ticket's full current record, in ``CSV_COLUMNS`` order."""
        raw_status, normalized = STATUSES[ticket.status]
        week_start, week_end = _week_bounds(ticket.created // DAY)
        created = _fmt_ts(ticket.created)
        return [
            ticket.ticket_id,
            ticket.source_type,
            ticket.service_type,
            ticket.bucket,
            self._messy(raw_status),
            normalized,
            _fmt_ts(ticket.created_service),
            _fmt_ts(ticket.scheduled),
            _fmt_ts(ticket.closed),
            _fmt_ts(ticket.last_seen),
            created,
            week_start,
            week_end,
            ticket.cluster,
            self._messy(ticket.region),
            ticket.location_name,
            ticket.latitude,
            ticket.longitude,
            ticket.department,
            ticket.assigned_team,
            ticket.owner,
            self.sla_status(ticket, now),
            "" if ticket.mttr is None else f"{ticket.mttr:.2f}",
            _BOOL[ticket.is_auto_created],
            _BOOL[ticket.is_auto_closed],
            _BOOL[ticket.is_alarm],
            _BOOL[ticket.is_actionable],
            S3_BUCKET,
            key,
            snapshot_id,
            created,
            _fmt_ts(ticket.updated),
        ]

    def snapshot_id(self) -> str:
        return str(uuid.UUID(int=self.rng.getrandbits(128), version=4))

    def baseline_tickets(self, count: int, now: int) -> Iterator[_Ticket]:
        """``count`` tickets created over the window before ``now``, oldest first."""
        window = BASELINE_WINDOW_DAYS * DAY
        start = now - window
        slot = window / max(count, 1)
        rng = self.rng
        for index in range(count):
            created = start + int((index + rng.random()) * slot)
            ticket = self.new_ticket(created, now)
            # The exporter saw every ticket during this run.
            ticket.last_seen = max(ticket.updated, now - rng.between(0, 600))
            yield ticket


def _sentinel_row(rows: int) -> list[str]:
    return [f"{SENTINEL_PREFIX}: export truncated at {rows} rows"] + [""] * (len(CSV_COLUMNS) - 1)


def _as_dict(values: Sequence[str]) -> dict[str, str]:
    return dict(zip(CSV_COLUMNS, values, strict=True))


def csv_lines(rows: Iterable[Sequence[str]]) -> Iterator[str]:
    """Each row as the line ``csv.writer`` (excel dialect) writes, ``"\r\n"`` included.

    Same bytes as ``csv.writer`` (the tests compare them), about twice as fast: a row is
    joined directly, and only when a delimiter, quote or line break shows up somewhere in
    it are its fields checked one by one and quoted as needed.
    """
    for row in rows:
        line = ",".join(row)
        special = line.count(",") != len(row) - 1 or '"' in line or "\n" in line or "\r" in line
        if special:
            line = ",".join(
                [
                    '"' + v.replace('"', '""') + '"'
                    if "," in v or '"' in v or "\n" in v or "\r" in v
                    else v
                    for v in row
                ]
            )
        elif len(row) == 1 and not line:
            line = '""'  # a lone empty field must not read as a blank line
        yield line + "\r\n"


def encode_rows(rows: Iterable[Sequence[str]]) -> bytes:
    """CSV-encode positional rows (in ``CSV_COLUMNS`` order) after the header."""
    return "".join(csv_lines(itertools.chain([CSV_COLUMNS], rows))).encode("utf-8")


def _start_seconds(start: datetime | None) -> int:
    return _to_seconds((start or DEFAULT_START).replace(microsecond=0))


# ---------------------------------------------------------------------------
# Public API
# ---------------------------------------------------------------------------


class TicketStream:
    """The state of one dataset's tickets, and the files the exporter would write."""

    def __init__(self, dataset: str = "inc", seed: int = 0, start: datetime | None = None) -> None:
        self.dataset = dataset
        self._rng = _Rng(f"tickets-devkit:{dataset}:{seed}")
        self._factory = _Factory(self._rng, dataset)
        self._now = _start_seconds(start)
        self._state: dict[str, _Ticket] = {}
        self._rows: dict[str, list[str]] = {}
        self._tickets: dict[str, dict[str, str]] | None = None
        self.files: list[StreamFile] = []

    @property
    def tickets(self) -> dict[str, dict[str, str]]:
        """Current state by ticket_id: the last row written for each id, raw strings.

        Alarm rows and the sentinel row are included exactly as written.
        """
        if self._tickets is None:  # built lazily: most callers never look
            self._tickets = {tid: _as_dict(row) for tid, row in self._rows.items()}
        return dict(self._tickets)

    @property
    def last_timestamp(self) -> datetime:
        """Execution time of the newest file (the start time before any file)."""
        return _to_datetime(self._now)

    def write_rows(self, rows: Iterable[dict[str, str]]) -> bytes:
        """CSV-encode ``rows`` (dicts keyed by column; missing columns are empty)."""
        columns = set(CSV_COLUMNS)

        def ordered(row: dict[str, str]) -> list[str]:
            unknown = row.keys() - columns
            if unknown:
                raise ValueError(f"unknown columns: {sorted(unknown)}")
            return [row.get(name, "") for name in CSV_COLUMNS]

        return encode_rows(ordered(row) for row in rows)

    def _emit(self, now: int, rendered: list[list[str]]) -> StreamFile:
        for values in rendered:
            self._rows[values[0]] = values
            if self._tickets is not None:
                self._tickets[values[0]] = _as_dict(values)
        timestamp = _to_datetime(now)
        stream_file = StreamFile(
            key=file_key(self.dataset, timestamp),
            timestamp=timestamp,
            body=encode_rows(rendered),
            rows=len(rendered),
        )
        self.files.append(stream_file)
        return stream_file

    def baseline(self, rows: int = BASELINE_ROWS, *, sentinel: bool = False) -> StreamFile:
        """The first file: ``rows`` data rows of full current state.

        With ``sentinel`` the first data row is the exporter's truncation sentinel
        (counted in ``rows``).
        """
        if self.files:
            raise RuntimeError("baseline() must be the first file of a stream")
        if rows < 0 or (sentinel and rows < 1):
            raise ValueError(f"invalid row count {rows} (sentinel={sentinel})")
        now = self._now
        key = file_key(self.dataset, _to_datetime(now))
        snapshot = self._factory.snapshot_id()
        rendered = [_sentinel_row(rows)] if sentinel else []
        for ticket in self._factory.baseline_tickets(rows - len(rendered), now):
            self._state[ticket.ticket_id] = ticket
            rendered.append(self._factory.render(ticket, now, key, snapshot))
        return self._emit(now, rendered)

    def delta(
        self,
        rows: int,
        *,
        new_share: float = 0.2,
        repeat_ids: int = 0,
        minutes_later: float | None = None,
    ) -> StreamFile:
        """A later file of ``rows`` changed or new tickets, plus ``repeat_ids`` repeats.

        Each row is the ticket's full current record with ``updated_at`` after its
        previous value. Repeats re-emit ids already in this file with a newer
        ``updated_at``, placed after that id's earlier rows, so the last occurrence
        of an id is its newest.
        """
        if not self.files:
            raise RuntimeError("call baseline() before delta()")
        if rows < 0 or repeat_ids < 0 or not 0.0 <= new_share <= 1.0:
            raise ValueError("rows and repeat_ids must be >= 0 and new_share in [0, 1]")
        if repeat_ids and not rows:
            raise ValueError("repeat_ids needs at least one row to repeat")
        rng, factory = self._rng, self._factory
        previous = self._now
        if minutes_later is None:
            minutes_later = rng.uniform(1.0, 90.0)
        now = previous + max(1, round(minutes_later * 60))
        key = file_key(self.dataset, _to_datetime(now))
        snapshot = factory.snapshot_id()
        # Leave the second half of the window free so repeats can be newer still.
        half = (now - previous) // 2

        open_ids = [tid for tid, t in self._state.items() if t.status not in FINAL_STATUSES]
        closed_ids = [tid for tid, t in self._state.items() if t.status in FINAL_STATUSES]
        n_new = round(rows * new_share)
        n_changed = rows - n_new
        changed = rng.sample(open_ids, min(n_changed, len(open_ids)))
        changed += rng.sample(closed_ids, min(n_changed - len(changed), len(closed_ids)))
        n_new = rows - len(changed)

        batch: list[_Ticket] = []
        for tid in changed:
            ticket = self._state[tid]
            lo = max(ticket.updated, previous) + 1
            self._change(ticket, lo, lo + half)
            batch.append(ticket)
        for _ in range(n_new):
            created = rng.between(previous + 1, previous + 1 + half)
            ticket = factory.new_ticket(created, previous + 1 + half)
            self._state[ticket.ticket_id] = ticket
            batch.append(ticket)
        rng.shuffle(batch)
        for ticket in batch:
            ticket.last_seen = max(ticket.updated, min(now, ticket.updated + rng.between(0, 300)))
        rendered = [factory.render(t, now, key, snapshot) for t in batch]

        last_index = {t.ticket_id: i for i, t in enumerate(batch)}
        for _ in range(repeat_ids):
            ticket = rng.pick(batch)
            room = now - ticket.updated
            self._change(ticket, ticket.updated + 1, ticket.updated + max(1, room // 2))
            ticket.last_seen = ticket.updated
            position = rng.between(last_index[ticket.ticket_id] + 1, len(rendered))
            rendered.insert(position, factory.render(ticket, now, key, snapshot))
            for tid, index in last_index.items():
                if index >= position:
                    last_index[tid] = index + 1
            last_index[ticket.ticket_id] = position

        self._now = now
        return self._emit(now, rendered)

    def _change(self, ticket: _Ticket, lo: int, hi: int) -> None:
        """Apply one source-side change to ``ticket`` with ``updated_at`` in ``[lo, hi]``."""
        rng = self._rng
        targets = _TRANSITION_TABLES.get(ticket.status)
        if targets is not None and rng.random() < STATUS_PROGRESS_SHARE:
            self._factory.set_status(ticket, rng.pick(targets), lo=lo, hi=hi)
            return
        if rng.random() < 0.3:  # reassignment
            department, team, owner = self._factory.assignment(
                ticket.bucket, ticket.service_type, ticket.region
            )
            ticket.department, ticket.assigned_team, ticket.owner = department, team, owner
        ticket.updated = rng.between(lo, hi)
        ticket.last_seen = ticket.updated


def write_baseline_to(fileobj: BinaryIO, rows: int, *, seed: int = 0, dataset: str = "inc") -> int:
    """Stream a ``rows``-row baseline to ``fileobj`` one row at a time; return bytes written.

    The bytes equal ``TicketStream(dataset, seed).baseline(rows).body``, but the file is
    never held in memory (only a small buffer of encoded rows).
    """
    if rows < 0:
        raise ValueError(f"invalid row count {rows}")
    factory = _Factory(_Rng(f"tickets-devkit:{dataset}:{seed}"), dataset)
    now = _start_seconds(None)
    key = file_key(dataset, _to_datetime(now))
    snapshot = factory.snapshot_id()
    rendered = (factory.render(t, now, key, snapshot) for t in factory.baseline_tickets(rows, now))
    lines = csv_lines(itertools.chain([CSV_COLUMNS], rendered))
    written = 0
    while chunk := list(itertools.islice(lines, 1000)):
        data = "".join(chunk).encode("utf-8")
        fileobj.write(data)
        written += len(data)
    return written
