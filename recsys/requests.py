"""Residents' requests (点单): what a resident asks for, when it counts as answered, and its status.

A request names a district and a target: a ``category`` and/or ``kind`` ("戏曲 performances
here"), or the ``item_id`` of a menu programme (an item of kind :data:`PROGRAMME`: a touring
show, a course or a troupe a district can book). The same rules serve the API, ingest and
the planners' report:

* validation (:class:`RequestIn`), with a bounded note and an optional wanted period;
* de-duplication: one request per user and target within :data:`DEDUP_DAYS` (:func:`target_key`);
* answering (:func:`answers`): an item answers a request when it is not hidden, not a menu
  programme or a digital item (the resident asked for something in their district), is
  live at or after the request, lies in the requested district or within ``near_km`` of
  its centre, and matches the target: the category and kind given, or for a programme an
  item carrying the programme's id among its tags or the programme's title;
* status (:func:`status_of`): ``matched`` once an answering item exists, ``closed`` when the
  wanted period ended (or :data:`OPEN_DAYS` passed) without one, else ``open``.
"""

from __future__ import annotations

import hashlib
import math
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from typing import Literal

import numpy as np
from pydantic import BaseModel, ConfigDict, Field, StrictFloat, StrictInt, StrictStr, model_validator

from recsys.catalog import Catalog
from recsys.contract import MAX_ID_LENGTH, REGION_CODE_PATTERN, parse_timestamp

PROGRAMME = "programme"
"""The kind of a menu entry (菜单): requested by residents, booked by the bureau."""
DIGITAL = "digital"
MAX_NOTE = 280
DEDUP_DAYS = 30
OPEN_DAYS = 180
NEAR_KM = 10.0
REQUEST_COLUMNS: tuple[str, ...] = (
    "request_id", "user_id", "region_code", "category", "kind", "item_id", "note", "wanted_from", "wanted_until",
    "ts", "source",
)
"""The requests table of the data contract (``user_id``, ``region_code``, ``ts`` and a target required)."""

Status = Literal["open", "matched", "closed"]


class RequestIn(BaseModel):
    """One request as posted or read from a provider file (times as ISO-8601 strings or epoch seconds)."""

    model_config = ConfigDict(extra="ignore", str_strip_whitespace=True)

    user_id: str = Field(min_length=1, max_length=MAX_ID_LENGTH)
    region_code: str = Field(pattern=REGION_CODE_PATTERN)
    category: str | None = Field(None, min_length=1, max_length=64)
    kind: str | None = Field(None, min_length=1, max_length=64)
    item_id: str | None = Field(None, min_length=1, max_length=MAX_ID_LENGTH)
    note: str | None = Field(None, max_length=MAX_NOTE)
    # strict: a JSON true/false is not a time (lax parsing would read it as 1970-01-01)
    wanted_from: StrictStr | StrictFloat | StrictInt | None = None
    wanted_until: StrictStr | StrictFloat | StrictInt | None = None

    @model_validator(mode="after")
    def _one_target(self) -> RequestIn:
        if self.item_id is None and self.category is None and self.kind is None:
            raise ValueError("target: a request needs a category and/or kind, or the item_id of a menu programme")
        if self.item_id is not None and (self.category is not None or self.kind is not None):
            raise ValueError("target: give either item_id (a menu programme) or category/kind, not both")
        return self


@dataclass(frozen=True)
class Request:
    """A stored request (times UTC)."""

    request_id: str
    user_id: str
    region_code: str
    category: str | None
    kind: str | None
    item_id: str | None
    note: str | None
    wanted_from: datetime | None
    wanted_until: datetime | None
    ts: datetime
    source: str | None = None

    @property
    def target(self) -> str:
        return target_key(self.category, self.kind, self.item_id)


def target_key(category: str | None, kind: str | None, item_id: str | None) -> str:
    """The target as one string: ``item:<id>`` or ``category:<c>|kind:<k>`` (absent parts empty)."""
    if item_id:
        return f"item:{item_id}"
    return f"category:{category or ''}|kind:{kind or ''}"


def request_id_of(user_id: str, target: str, ts: datetime) -> str:
    """A stable id for a row that came without one: the same row read twice gets the same id."""
    digest = hashlib.sha256(f"{user_id}\x1f{target}\x1f{ts.isoformat()}".encode()).hexdigest()
    return f"rq{digest[:20]}"


def parse_request(row: RequestIn, ts: datetime, timezone: str, request_id: str | None = None,
                  source: str | None = None) -> Request:
    """A validated row as a :class:`Request`; raises ``ValueError`` for an unreadable wanted period."""
    wanted_from = _time(row.wanted_from, timezone, "wanted_from")
    wanted_until = _time(row.wanted_until, timezone, "wanted_until")
    if wanted_from and wanted_until and wanted_until < wanted_from:
        raise ValueError("wanted_until: before wanted_from")
    if wanted_until and wanted_until < ts:
        raise ValueError("wanted_until: the wanted period ended before the request was made")
    target = target_key(row.category, row.kind, row.item_id)
    return Request(request_id or request_id_of(row.user_id, target, ts), row.user_id, row.region_code, row.category,
                   row.kind, row.item_id, row.note or None, wanted_from, wanted_until, ts.astimezone(UTC), source)


def _time(value: str | float | None, timezone: str, name: str) -> datetime | None:
    if value is None or value == "":
        return None
    moment = parse_timestamp(value, timezone)
    if moment is None:
        raise ValueError(f"{name}: cannot read {value!r} as a time")
    return moment.astimezone(UTC)


def is_duplicate(request: Request, earlier: list[Request]) -> Request | None:
    """The earlier request by the same user for the same target within :data:`DEDUP_DAYS`, if any."""
    window = timedelta(days=DEDUP_DAYS)
    for other in earlier:
        if (other.user_id == request.user_id and other.target == request.target
                and abs(request.ts - other.ts) <= window):
            return other
    return None


# ---- answering ------------------------------------------------------------------------------
def district_centres(catalog: Catalog) -> dict[str, tuple[float, float]]:
    """The mean position of each district's located items: where "near the district" is measured from."""
    centres = {}
    placed = catalog.has_place()
    for code, name in enumerate(catalog.regions):
        members = placed & (catalog.region == code)
        if members.any():
            centres[name] = (float(catalog.lat[members].mean()), float(catalog.lon[members].mean()))
    return centres


def answers(request: Request, catalog: Catalog, centres: dict[str, tuple[float, float]],
            near_km: float = NEAR_KM) -> np.ndarray:
    """Indices of the catalogue items that answer ``request`` (rule in the module docstring)."""
    mask = ~catalog.hidden & ~catalog.kind_is(PROGRAMME) & ~catalog.kind_is(DIGITAL)
    asked = request.ts.timestamp()
    mask &= ~(catalog.ends_at < asked)  # nan (open-ended) compares False: still live
    mask &= _target_mask(request, catalog)
    if not mask.any():
        return np.flatnonzero(mask)
    here = catalog.region_is(request.region_code)
    centre = centres.get(request.region_code)
    if centre is not None:
        distance = catalog.distance_km(*centre)
        here |= ~np.isnan(distance) & (distance <= near_km)
    return np.flatnonzero(mask & here)


def _target_mask(request: Request, catalog: Catalog) -> np.ndarray:
    if request.item_id is not None:
        mask = np.zeros(len(catalog), dtype=bool)
        if request.item_id in catalog.tag_names:
            column = catalog.tag_names.index(request.item_id)
            mask |= np.asarray(catalog.tags[:, column].todense()).ravel() > 0
        title = catalog.title[catalog.items.index_of(request.item_id)] if request.item_id in catalog.items else ""
        if title:
            mask |= np.array([t == title for t in catalog.title], dtype=bool)
        return mask
    mask = np.ones(len(catalog), dtype=bool)
    if request.category is not None:
        mask &= catalog.category_is(request.category)
    if request.kind is not None:
        mask &= catalog.kind_is(request.kind)
    return mask


@dataclass(frozen=True)
class Answer:
    """A request's status and, once matched, the first answering item and when it became available."""

    status: Status
    item: int | None = None
    matched_at: datetime | None = None


def status_of(request: Request, catalog: Catalog, centres: dict[str, tuple[float, float]], now: datetime,
              near_km: float = NEAR_KM) -> Answer:
    """Where ``request`` stands at ``now`` against ``catalog`` (the module docstring's rules)."""
    found = answers(request, catalog, centres, near_km)
    if len(found):
        starts = catalog.starts_at[found]
        # the answer counts from when it was available to the resident: its start, or the request
        available = np.where(np.isnan(starts), -math.inf, starts)
        first = int(found[np.argmin(available)])
        start = catalog.starts_at[first]
        moment = request.ts if math.isnan(start) else max(request.ts, datetime.fromtimestamp(start, UTC))
        return Answer("matched", first, moment)
    ends = request.wanted_until or request.ts + timedelta(days=OPEN_DAYS)
    return Answer("closed" if now > ends else "open")


KIND_NOUNS: dict[str, tuple[str, str]] = {
    "opera": ("演出", "performances"), "event": ("活动", "events"), "exhibition": ("展览", "exhibitions"),
    "film": ("放映", "screenings"), "course": ("课程", "courses"), "lecture": ("讲座", "lectures"),
}
"""How a reason names a kind of item (zh, en); other kinds read as activities."""


def answered_reason(request: Request, catalog: Catalog, item: int, lang: str = "zh") -> str:
    """The line shown next to an item that answers the resident's request, e.g. "你点单的戏曲演出已上线"."""
    zh = lang == "zh"
    if request.item_id is not None:
        title = catalog.title[item] or request.item_id
        return f"你点单的《{title}》已上线" if zh else f"The programme you asked for, {title}, is now on"
    kind = catalog.kind_name(item) or request.kind or ""
    noun = KIND_NOUNS.get(kind, ("活动", "activities"))[0 if zh else 1]
    if zh:
        return f"你点单的{request.category or ''}{noun}已上线"
    return f"The {request.category + ' ' if request.category else ''}{noun} you asked for are now on"
