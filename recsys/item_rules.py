"""The rules one catalogue row must obey, row by row: what the API checks before it keeps an item.

Ingest checks provider files with vectorised polars expressions (``features.validate``); the
API checks one item at a time, and must reject exactly what ingest would quarantine, with the
same :class:`recsys.contract.Reason`. Both read the definitions here (the words that mean
true and false, the time spellings, the age bound), and a property test holds the two
readings to the same verdict on the same text.

A row arrives as the texts a CSV would carry (:func:`field_text` turns JSON values into
them), so a value means the same whether an app sent it as a number, a string or a list.
The checks run in the order ingest lists them, and the first one broken is the reason.
"""

from __future__ import annotations

import json
import math
import re
from collections.abc import Mapping
from dataclasses import dataclass, replace
from datetime import datetime
from typing import Any

from recsys.contract import ITEM_COLUMNS, MAX_ID_LENGTH, REGION_CODE_PATTERN, Reason, looks_numeric, parse_timestamp

TRUE_WORDS: tuple[str, ...] = ("true", "1", "yes", "是")
FALSE_WORDS: tuple[str, ...] = ("false", "0", "no", "否")
"""How a flag may be spelled (any case); anything else given is ``unparseable_value``."""

MAX_MIN_AGE = 150
"""A ``min_age`` beyond this (or negative, or fractional) is no age: ``unparseable_number``."""

ISO_TIME_PATTERN = (
    r"^(?P<Y>\d{4})(?:-(?P<M>\d{2})-(?P<D>\d{2})|(?P<M2>\d{2})(?P<D2>\d{2}))"
    r"(?:[Tt ](?:(?P<h>\d{2})(?::(?P<m>\d{2})(?::(?P<s>\d{2})(?:[.,](?P<f>\d+))?)?)?"
    r"|(?P<h2>\d{2})(?:(?P<m2>\d{2})(?:(?P<s2>\d{2})(?:[.,](?P<f2>\d+))?)?)?)"
    r"(?: ?(?P<sign>[+-])(?P<oh>\d{2})(?::?(?P<om>\d{2}))?)?)?$"
)
"""The ISO-8601 spellings providers send (extended or basic form, separator ``T``/``t``/space,
optional offset; ``Z`` is read as ``+00:00`` first). Rarer spellings Python also reads are not times."""

EPOCH_RANGE = (-62_135_596_800.0, 1e11)
"""Epoch seconds a time may be: from year 1 to :func:`recsys.contract.parse_timestamp`'s bound."""
MAX_OFFSET_MINUTES = 24 * 60

TEXT_COLUMNS: tuple[str, ...] = ("title", "kind", "category", "region_code", "venue_id", "provider", "series_id")
FLAG_COLUMNS: tuple[str, ...] = ("is_free", "hidden", "editorial")
TIME_COLUMNS: tuple[str, ...] = ("starts_at", "ends_at")
LONG_ID_COLUMNS: tuple[str, ...] = ("item_id", "venue_id", "series_id")
"""Columns holding ids: longer than :data:`recsys.contract.MAX_ID_LENGTH` is ``id_too_long``."""

WHITE_SPACE = ("\t\n\x0b\x0c\r \x85\xa0\u1680" + "".join(map(chr, range(0x2000, 0x200B)))
               + "\u2028\u2029\u202f\u205f\u3000")
"""Unicode's White_Space characters: what ingest strips from a value (Python's own ``strip`` also
takes the ASCII separators ``\\x1c``-``\\x1f``, which are no space to a provider's file)."""

_ISO = re.compile(ISO_TIME_PATTERN)


@dataclass(frozen=True)
class ItemRow:
    """One valid catalogue row, typed: times in epoch seconds, ``None`` where nothing was given."""

    item_id: str
    title: str | None = None
    kind: str | None = None
    category: str | None = None
    tags: tuple[str, ...] = ()
    region_code: str | None = None
    venue_id: str | None = None
    lat: float | None = None
    lon: float | None = None
    starts_at: float | None = None
    ends_at: float | None = None
    capacity: int | None = None
    provider: str | None = None
    is_free: bool | None = None
    hidden: bool = False
    min_age: int | None = None
    editorial: bool | None = None
    series_id: str | None = None

    def with_hidden(self, hidden: bool) -> ItemRow:
        return replace(self, hidden=hidden)


@dataclass(frozen=True)
class Problem:
    """Why a row is refused: the contract's reason code, the column, and a message for a person."""

    reason: Reason
    column: str
    detail: str


def field_text(value: Any) -> str | None:
    """A JSON value as the text a CSV cell would carry (another JSON value as its JSON text).

    The one reading of a value in a line the API wrote, for interactions and items alike."""
    if value is None:
        return None
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, int | float | str):
        return str(value)
    return json.dumps(value, ensure_ascii=False)


def tags_text(value: Any) -> str | None:
    """Tags as a provider file writes them: a list of strings joined on ``|`` (else :func:`field_text`)."""
    if isinstance(value, list | tuple) and all(isinstance(v, str) for v in value):
        return "|".join(value)
    return field_text(value)


def clean(text: str | None) -> str | None:
    """Surrounding whitespace removed; blank is nothing."""
    if text is None:
        return None
    stripped = text.strip(WHITE_SPACE)
    return stripped or None


def parse_number(text: str | None) -> float | None:
    """A finite number written in ASCII (None when absent or not one)."""
    text = clean(text)
    if text is None or not text.isascii() or "_" in text:
        return None
    try:
        number = float(text)
    except ValueError:
        return None
    return number if math.isfinite(number) else None


def parse_flag(text: str | None) -> bool | None:
    """``true``/``false`` in any of :data:`TRUE_WORDS`/:data:`FALSE_WORDS` (None otherwise)."""
    word = (clean(text) or "").lower()
    return True if word in TRUE_WORDS else False if word in FALSE_WORDS else None


def parse_time(text: str | None, timezone: str) -> float | None:
    """Epoch seconds of a time in a provider's spelling (None when absent or not a time)."""
    text = clean(text)
    if text is None:
        return None
    number = parse_number(text)
    if number is not None or looks_numeric(text):
        if number is None or not EPOCH_RANGE[0] <= number <= EPOCH_RANGE[1]:
            return None
        moment = parse_timestamp(number, timezone)
        return moment.timestamp() if moment is not None else None
    parts = _ISO.fullmatch(text.replace("Z", "+00:00"))
    if parts is None or parts["Y"] == "0000":
        return None
    if parts["oh"] is not None and int(parts["oh"]) * 60 + int(parts["om"] or 0) >= MAX_OFFSET_MINUTES:
        return None
    moment = _from_parts(parts, timezone)
    return moment.timestamp() if moment is not None else None


def _from_parts(parts: re.Match[str], timezone: str) -> datetime | None:
    """The matched spelling as a time; naive ones in ``timezone`` (``fold=0``, as ingest reads them)."""
    month, day = parts["M"] or parts["M2"], parts["D"] or parts["D2"]
    hour, minute = parts["h"] or parts["h2"] or "00", parts["m"] or parts["m2"] or "00"
    second, fraction = parts["s"] or parts["s2"] or "00", parts["f"] or parts["f2"]
    text = f"{parts['Y']}-{month}-{day}T{hour}:{minute}:{second}"
    if fraction:
        text += "." + fraction[:6].ljust(6, "0")
    if parts["sign"]:
        text += f"{parts['sign']}{parts['oh']}:{parts['om'] or '00'}"
    return parse_timestamp(text, timezone)


def check_item(texts: Mapping[str, str | None], timezone: str) -> ItemRow | Problem:
    """The typed row, or the first rule it breaks (the order and reasons ingest uses)."""
    value = {column: clean(texts.get(column)) for column in ITEM_COLUMNS}
    item_id = value["item_id"]
    if item_id is None:
        return Problem(Reason.MISSING_FIELD, "item_id", "item_id is required")
    for column in LONG_ID_COLUMNS:
        if len(value[column] or "") > MAX_ID_LENGTH:
            return Problem(Reason.ID_TOO_LONG, column, f"{column} is longer than {MAX_ID_LENGTH} characters")
    numbers = _numbers(value)
    if isinstance(numbers, Problem):
        return numbers
    lat, lon = numbers["lat"], numbers["lon"]
    if (lat is None) != (lon is None) or not -90 <= (lat or 0) <= 90 or not -180 <= (lon or 0) <= 180:
        return Problem(Reason.BAD_COORDINATES, "lat", "lat and lon must be given together, "
                                                      "within -90..90 and -180..180")
    region = value["region_code"]
    if region is not None and not re.search(REGION_CODE_PATTERN, region):
        return Problem(Reason.BAD_REGION_CODE, "region_code", f"region_code {region!r} is not 6 digits")
    times = {column: parse_time(value[column], timezone) for column in TIME_COLUMNS}
    for column in TIME_COLUMNS:
        if value[column] is not None and times[column] is None:
            return Problem(Reason.BAD_TIME, column, f"{column}: cannot read {value[column]!r} as a time")
    starts, ends = times["starts_at"], times["ends_at"]
    if starts is not None and ends is not None and ends < starts:
        return Problem(Reason.ENDS_BEFORE_STARTS, "ends_at", "ends_at is before starts_at")
    flags = {column: parse_flag(value[column]) for column in FLAG_COLUMNS}
    for column in FLAG_COLUMNS:
        if value[column] is not None and flags[column] is None:
            return Problem(Reason.BAD_VALUE, column, f"{column}: {value[column]!r} is not true or false")
    return ItemRow(
        item_id=item_id, **{column: value[column] for column in TEXT_COLUMNS},
        tags=tags_of(value["tags"]), lat=lat, lon=lon, starts_at=starts, ends_at=ends,
        capacity=_whole(numbers["capacity"]), min_age=_whole(numbers["min_age"]),
        is_free=flags["is_free"], hidden=bool(flags["hidden"]), editorial=flags["editorial"],
    )


def _numbers(value: Mapping[str, str | None]) -> dict[str, float | None] | Problem:
    """lat, lon, capacity (a whole number >= 0) and min_age (whole, 0..:data:`MAX_MIN_AGE`)."""
    numbers = {column: parse_number(value[column]) for column in ("lat", "lon", "capacity", "min_age")}
    capacity, min_age = numbers["capacity"], numbers["min_age"]
    if capacity is not None and (capacity != math.floor(capacity) or capacity < 0):
        numbers["capacity"] = None
    if min_age is not None and (min_age != math.floor(min_age) or not 0 <= min_age <= MAX_MIN_AGE):
        numbers["min_age"] = None
    for column, number in numbers.items():
        if value[column] is not None and number is None:
            return Problem(Reason.BAD_NUMBER, column, f"{column}: {value[column]!r} is not a valid number here")
    return numbers


def _whole(number: float | None) -> int | None:
    return None if number is None else int(number)


def tags_of(text: str | None) -> tuple[str, ...]:
    """``|``-separated tags, each stripped, empty ones dropped."""
    return tuple(tag.strip(WHITE_SPACE) for tag in (text or "").split("|") if tag.strip(WHITE_SPACE))
