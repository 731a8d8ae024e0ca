"""Vectorised validation of provider rows: raw strings in, typed columns plus a ``reason`` out.

Every input (CSV, Parquet, the API's JSON lines, rows coming back from quarantine) is first
turned into a frame of *strings* with the contract's column names, so one set of polars
expressions decides for all of them. A validator keeps the raw columns (they go to
quarantine unchanged) and adds the typed value of each column under :func:`typed` plus a
``reason`` column: ``null`` for a valid row, else the first :class:`recsys.contract.Reason`
the row breaks, in the order the checks are listed in each validator.

Time parsing agrees with :func:`recsys.contract.parse_timestamp` on the formats providers
send: epoch seconds (int, float, numeric string) and ISO-8601 dates/date-times in extended
(``2024-05-01T19:30:00.5+08:00``) or basic (``20240501T193000+0800``) form, separator
``T``/``t``/space, optional ``Z``/``±HH[[:]MM]`` offset. Naive times are read in the
settings' time zone (the earlier instant when a clock change makes them ambiguous, the
offset before the change when they fall into a gap, as ``zoneinfo`` does with ``fold=0``).
Rarer spellings Python's ``fromisoformat`` also takes (week dates, offsets with seconds,
any separator character) are treated as unparseable here.
"""

from __future__ import annotations

from datetime import datetime

import polars as pl

from features import schemas
from recsys.contract import ACTIONS, AGE_BANDS, AREA_TYPES, MAX_ID_LENGTH, REGION_CODE_PATTERN, Reason
from recsys.item_rules import EPOCH_RANGE, FALSE_WORDS, ISO_TIME_PATTERN, MAX_MIN_AGE, MAX_OFFSET_MINUTES, TRUE_WORDS

REASON = "reason"
ROW = "row_number"
SOURCE = "source"
TABLE = "table"
RAW_LINE = "raw_line"
TORN = "__torn"

# The flag words, the age bound and the time spellings are the core's (recsys.item_rules), which
# the API checks single rows with: one statement of each rule for both readings.
_EPOCH_MIN, _EPOCH_MAX = EPOCH_RANGE
_MAX_OFFSET_MINUTES = MAX_OFFSET_MINUTES
_ISO = ISO_TIME_PATTERN

QUARANTINE_VALUE_COLUMNS: tuple[str, ...] = tuple(
    dict.fromkeys([*schemas.INTERACTIONS, *schemas.USERS, *schemas.ITEMS])
)
"""Every contract column, kept as the original string in a quarantine file."""

QUARANTINE: dict[str, pl.DataType] = {
    "ingest_id": pl.String(),
    TABLE: pl.String(),
    SOURCE: pl.String(),
    ROW: pl.Int64(),
    REASON: pl.String(),
    RAW_LINE: pl.String(),
    **{column: pl.String() for column in QUARANTINE_VALUE_COLUMNS},
}
"""Schema of ``store/quarantine/<ingest-id>.parquet``."""


def typed(column: str) -> str:
    """Name of the typed value of ``column`` in a validated frame (the raw string keeps its name)."""
    return f"{column}.typed"


def clean_text(column: str) -> pl.Expr:
    """The raw string stripped of surrounding whitespace; blank becomes null."""
    text = pl.col(column).str.strip_chars()
    return pl.when(text.str.len_bytes() > 0).then(text)


def with_time(frame: pl.LazyFrame, column: str, out: str, time_zone: str) -> pl.LazyFrame:
    """Add ``out``: the text of ``column`` parsed to ``Datetime(us, UTC)``, null where it is not a time."""
    text, number, parts = f"{out}.__text", f"{out}.__number", f"{out}.__parts"
    frame = frame.with_columns(clean_text(column).alias(text)).with_columns(
        pl.col(text).cast(pl.Float64, strict=False).alias(number)
    ).with_columns(
        # Materialised once (every field below reads the same match), and only for non-numbers.
        pl.when(pl.col(number).is_null()).then(pl.col(text))
        .str.replace_all("Z", "+00:00", literal=True).str.extract_groups(_ISO).alias(parts)
    )
    seconds = pl.col(number)
    from_epoch = pl.when(seconds.is_finite() & seconds.is_between(_EPOCH_MIN, _EPOCH_MAX)).then(
        _epoch_micros(seconds).cast(schemas.UTC_TIME)
    )
    # A numeric string is read as epoch seconds only, as parse_timestamp does.
    parsed = pl.when(seconds.is_not_null()).then(from_epoch).otherwise(_from_iso_parts(pl.col(parts), time_zone))
    return frame.with_columns(parsed.alias(out)).drop(text, number, parts)


def parse_times(texts: pl.Series, time_zone: str) -> pl.Series:
    """Parse a Series of strings eagerly (the rules of :func:`with_time`)."""
    frame = pl.DataFrame({"text": texts.cast(pl.String)}).lazy()
    return with_time(frame, "text", "parsed", time_zone).collect()["parsed"]


def _epoch_micros(seconds: pl.Expr) -> pl.Expr:
    """Seconds to whole microseconds, rounding the fraction half-to-even like CPython."""
    whole = pl.when(seconds >= 0).then(seconds.floor()).otherwise(seconds.ceil())
    micros = ((seconds - whole) * 1e6).round(0, mode="half_to_even")
    return whole.cast(pl.Int64) * 1_000_000 + micros.cast(pl.Int64)


def _from_iso_parts(parts: pl.Expr, time_zone: str) -> pl.Expr:
    def field(*names: str) -> pl.Expr:
        return pl.coalesce([parts.struct.field(n) for n in names])

    year, month, day = field("Y"), field("M", "M2"), field("D", "D2")
    hour, minute = field("h", "h2").fill_null("00"), field("m", "m2").fill_null("00")
    second, fraction = field("s", "s2").fill_null("00"), field("f", "f2")
    stamp = pl.concat_str([year, month, day, hour, minute, second], separator=" ")
    local = stamp.str.strptime(pl.Datetime("us"), "%Y %m %d %H %M %S", strict=False)
    # chrono reads second 60 as a leap second and year 0 as valid; Python rejects both.
    in_range = (second.cast(pl.Int32, strict=False) < 60) & (year != "0000")
    micros = fraction.str.slice(0, 6).str.pad_end(6, "0").cast(pl.Int64, strict=False).fill_null(0)
    local = pl.when(in_range).then(local + pl.duration(microseconds=micros))

    sign = pl.when(parts.struct.field("sign") == "-").then(-1).otherwise(1)
    offset_minutes = sign * (
        parts.struct.field("oh").cast(pl.Int64, strict=False) * 60
        + parts.struct.field("om").cast(pl.Int64, strict=False).fill_null(0)
    )
    with_offset = pl.when(offset_minutes.abs() < _MAX_OFFSET_MINUTES).then(
        (local - pl.duration(minutes=offset_minutes)).dt.replace_time_zone("UTC")
    )
    return (
        pl.when(parts.struct.field("sign").is_null())
        .then(_localize(local, time_zone))
        .otherwise(with_offset)
        .cast(schemas.UTC_TIME)
    )


def _localize(naive: pl.Expr, time_zone: str) -> pl.Expr:
    """Naive local times to UTC, matching ``zoneinfo`` with ``fold=0``."""
    direct = naive.dt.replace_time_zone(time_zone, ambiguous="earliest", non_existent="null")
    # A time inside a spring-forward gap takes the offset in force just before the gap.
    day = pl.duration(days=1)
    before_gap = (naive - day).dt.replace_time_zone(time_zone, ambiguous="earliest", non_existent="null") + day
    return pl.coalesce([direct, before_gap]).dt.convert_time_zone("UTC")


def parse_number(text: pl.Expr) -> pl.Expr:
    """Finite float or null."""
    number = text.cast(pl.Float64, strict=False)
    return pl.when(number.is_finite()).then(number)


def parse_bool(text: pl.Expr) -> pl.Expr:
    """true/false/1/0/yes/no (any case) to Boolean; anything else null."""
    word = text.str.to_lowercase()
    return pl.when(word.is_in(TRUE_WORDS)).then(True).when(word.is_in(FALSE_WORDS)).then(False)


def _too_long(*columns: str) -> pl.Expr:
    return pl.any_horizontal([clean_text(c).str.len_chars() > MAX_ID_LENGTH for c in columns]).fill_null(False)


def _unparsed(column: str, parsed: pl.Expr) -> pl.Expr:
    """Text was given but did not parse."""
    return clean_text(column).is_not_null() & parsed.is_null()


def _after(moment: pl.Expr, latest: datetime | None) -> pl.Expr:
    """``moment`` is later than ``latest`` (never, when there is no limit)."""
    if latest is None:
        return pl.lit(False)
    return (moment > pl.lit(latest, dtype=schemas.UTC_TIME)).fill_null(False)


def _off_scale(action: pl.Expr, value: pl.Expr, scale: tuple[float, float] | None) -> pl.Expr:
    """A ``rate`` whose value lies outside the rating scale (mirrors :func:`recsys.contract.rating_in_scale`)."""
    if scale is None:
        return pl.lit(False)
    low, high = scale
    return ((action == "rate") & ~value.is_between(low, high)).fill_null(False)


def _bad_region_code(column: str) -> pl.Expr:
    """A region code was given and is not 6 digits."""
    code = pl.col(column)
    return (code.is_not_null() & ~code.str.contains(REGION_CODE_PATTERN)).fill_null(False)


def _first_reason(checks: list[tuple[pl.Expr, Reason]]) -> pl.Expr:
    chain = pl.when(checks[0][0]).then(pl.lit(checks[0][1].value))
    for condition, reason in checks[1:]:
        chain = chain.when(condition).then(pl.lit(reason.value))
    return chain.otherwise(pl.lit(None, dtype=pl.String)).alias(REASON)


def validate_interactions(raw: pl.LazyFrame, catalog: pl.LazyFrame, time_zone: str, *,
                          latest: datetime | None = None,
                          rating_scale: tuple[float, float] | None = None) -> pl.LazyFrame:
    """Type interaction rows and name the first rule each breaks.

    ``raw`` holds the interaction columns as strings (and optionally a boolean ``__torn``
    for API lines that were not valid JSON); ``catalog`` has one ``item_id`` column.
    An event time after ``latest`` (aware; see :func:`recsys.contract.latest_event_time`)
    is :attr:`Reason.FUTURE_TIME`; ``None`` accepts any time. A ``rate`` value outside
    ``rating_scale`` (min, max; the settings' ``rating_min``/``rating_max``) is
    :attr:`Reason.RATING_OUT_OF_RANGE`; ``None`` accepts any value.
    """
    if TORN not in raw.collect_schema():
        raw = raw.with_columns(pl.lit(False).alias(TORN))
    known = catalog.select(pl.col("item_id").alias(typed("item_id"))).unique().with_columns(
        pl.lit(True).alias("__in_catalog")
    )
    frame = with_time(raw, "ts", typed("ts"), time_zone).with_columns(
        clean_text("user_id").alias(typed("user_id")),
        clean_text("item_id").alias(typed("item_id")),
        clean_text("action").str.to_lowercase().alias(typed("action")),
        parse_number(clean_text("value")).alias(typed("value")),
        *_attribution(raw),
    ).join(known, on=typed("item_id"), how="left", maintain_order="left")
    missing = pl.any_horizontal([pl.col(typed(c)).is_null() for c in ("user_id", "item_id", "action")])
    missing = missing | clean_text("ts").is_null()
    checks = [
        (pl.col(TORN), Reason.TORN_LINE),
        (missing, Reason.MISSING_FIELD),
        (_too_long("user_id", "item_id"), Reason.ID_TOO_LONG),
        (~pl.col(typed("action")).is_in(ACTIONS), Reason.UNKNOWN_ACTION),
        (pl.col(typed("ts")).is_null(), Reason.BAD_TIME),
        (_after(pl.col(typed("ts")), latest), Reason.FUTURE_TIME),
        (_unparsed("value", pl.col(typed("value"))), Reason.BAD_VALUE),
        (_off_scale(pl.col(typed("action")), pl.col(typed("value")), rating_scale), Reason.RATING_OUT_OF_RANGE),
        (pl.col("__in_catalog").is_null(), Reason.UNKNOWN_ITEM),
    ]
    return frame.with_columns(_first_reason(checks)).drop("__in_catalog")


def _attribution(raw: pl.LazyFrame) -> list[pl.Expr]:
    """The list an interaction names and its position, typed (an unreadable position is left null:
    both are optional, and a row is not refused over them)."""
    present = raw.collect_schema()
    position = clean_text("position").cast(pl.Float64, strict=False)
    return [
        (clean_text("recommendation_id") if "recommendation_id" in present else pl.lit(None, pl.String))
        .alias(typed("recommendation_id")),
        (pl.when((position >= 1) & (position == position.floor())).then(position).cast(pl.Int64)
         if "position" in present else pl.lit(None, pl.Int64)).alias(typed("position")),
    ]


def validate_users(raw: pl.LazyFrame, time_zone: str) -> pl.LazyFrame:
    """Type user rows and name the first rule each breaks."""
    frame = with_time(raw, "registered_at", typed("registered_at"), time_zone).with_columns(
        clean_text("user_id").alias(typed("user_id")),
        clean_text("region_code").alias(typed("region_code")),
        clean_text("age_band").alias(typed("age_band")),
        clean_text("area_type").str.to_lowercase().alias(typed("area_type")),
    )
    area, band = pl.col(typed("area_type")), pl.col(typed("age_band"))
    checks = [
        (pl.col(typed("user_id")).is_null(), Reason.MISSING_FIELD),
        (_too_long("user_id"), Reason.ID_TOO_LONG),
        (area.is_not_null() & ~area.is_in(AREA_TYPES), Reason.BAD_AREA_TYPE),
        (_bad_region_code(typed("region_code")), Reason.BAD_REGION_CODE),
        (band.is_not_null() & ~band.is_in(AGE_BANDS), Reason.BAD_AGE_BAND),
        (_unparsed("registered_at", pl.col(typed("registered_at"))), Reason.BAD_TIME),
    ]
    return frame.with_columns(_first_reason(checks))


def validate_items(raw: pl.LazyFrame, time_zone: str) -> pl.LazyFrame:
    """Type catalog rows and name the first rule each breaks."""
    capacity = parse_number(clean_text("capacity"))
    whole_capacity = pl.when((capacity == capacity.floor()) & (capacity >= 0)).then(capacity.cast(pl.Int64))
    min_age = parse_number(clean_text("min_age"))
    whole_age = pl.when((min_age == min_age.floor()) & min_age.is_between(0, MAX_MIN_AGE)).then(min_age.cast(pl.Int64))
    tags = (
        clean_text("tags").fill_null("").str.split("|")
        # stripped first, then the blank ones dropped: " a | |b " is two tags, not three
        .list.eval(pl.element().str.strip_chars()).list.eval(pl.element().filter(pl.element().str.len_bytes() > 0))
    )
    frame = with_time(raw, "starts_at", typed("starts_at"), time_zone)
    frame = with_time(frame, "ends_at", typed("ends_at"), time_zone).with_columns(
        *(clean_text(c).alias(typed(c)) for c in
          ("item_id", "title", "kind", "category", "region_code", "venue_id", "provider", "series_id")),
        tags.alias(typed("tags")),
        parse_number(clean_text("lat")).alias(typed("lat")),
        parse_number(clean_text("lon")).alias(typed("lon")),
        whole_capacity.alias(typed("capacity")),
        parse_bool(clean_text("is_free")).alias(typed("is_free")),
        parse_bool(clean_text("hidden")).alias(typed("hidden")),
        whole_age.alias(typed("min_age")),
        parse_bool(clean_text("editorial")).alias(typed("editorial")),
    )
    lat, lon = pl.col(typed("lat")), pl.col(typed("lon"))
    starts, ends = pl.col(typed("starts_at")), pl.col(typed("ends_at"))
    if TORN not in raw.collect_schema():  # only the API's item lines can be torn
        frame = frame.with_columns(pl.lit(False).alias(TORN))
    checks = [
        (pl.col(TORN), Reason.TORN_LINE),
        (pl.col(typed("item_id")).is_null(), Reason.MISSING_FIELD),
        (_too_long("item_id", "venue_id", "series_id"), Reason.ID_TOO_LONG),
        (_unparsed("lat", lat) | _unparsed("lon", lon) | _unparsed("capacity", pl.col(typed("capacity")))
         | _unparsed("min_age", pl.col(typed("min_age"))), Reason.BAD_NUMBER),
        ((lat.is_null() != lon.is_null()) | ~lat.is_between(-90, 90).fill_null(True)
         | ~lon.is_between(-180, 180).fill_null(True), Reason.BAD_COORDINATES),
        (_bad_region_code(typed("region_code")), Reason.BAD_REGION_CODE),
        (_unparsed("starts_at", starts) | _unparsed("ends_at", ends), Reason.BAD_TIME),
        ((ends < starts).fill_null(False), Reason.ENDS_BEFORE_STARTS),
        (_unparsed("is_free", pl.col(typed("is_free"))) | _unparsed("hidden", pl.col(typed("hidden")))
         | _unparsed("editorial", pl.col(typed("editorial"))), Reason.BAD_VALUE),
    ]
    # Missing ``hidden`` means shown; set after the checks so a bad value is still caught.
    return frame.with_columns(_first_reason(checks)).with_columns(pl.col(typed("hidden")).fill_null(False))


VALIDATORS = {"users": validate_users, "items": validate_items}


def typed_table(validated: pl.LazyFrame, table: str) -> pl.LazyFrame:
    """The typed columns of a validated frame under their stored names and schema."""
    stored = schemas.SCHEMAS[table]
    return validated.select([pl.col(typed(c)).cast(dtype).alias(c) for c, dtype in stored.items()])
