"""Residents' requests (点单) for the demo cloud, and the menu (菜单) of programmes they can ask for.

Two request patterns are planted, so that the planners' report has something known to find
(both written into ``ground_truth.json`` under ``requests``):

* **asked for, not offered**: seniors of a rural district ask for 戏曲, and none of its venues
  offers any (:func:`without_opera`: the rural district with the fewest 戏曲 items, whose few
  are moved to the nearest other district once the behaviour log is drawn);
* **a programme on the menu**: young residents of an urban district ask for one menu
  programme (an item of kind ``programme``) whose category no venue offers.

Around them, a thin background: about one resident in a hundred asks for a category drawn at
random, in their own district, so that most cells stay under the report's ``min_users`` and
the planted ones stand out as a real bureau would see them. Requests fall in the last three
weeks of the data (inside the report's 28-day window). Draws come from their own seed, so
adding requests changes nothing else the generator makes.
"""

from __future__ import annotations

import datetime as dt
import logging
from dataclasses import dataclass, replace
from typing import Any
from zoneinfo import ZoneInfo

import numpy as np
import polars as pl

from features import schemas
from features.districts import DISTRICTS

log = logging.getLogger(__name__)

PROGRAMME = "programme"
REQUEST_COLUMNS: tuple[str, ...] = ("user_id", "region_code", "category", "item_id", "note", "ts")
"""The columns of the demo's requests file (the data contract's requests table)."""


@dataclass(frozen=True)
class MenuProgramme:
    """One menu entry: a touring show, a course or a troupe a district can book."""

    item_id: str
    title: str
    category: str
    tags: tuple[str, ...]
    provider: str


MENU: tuple[MenuProgramme, ...] = (
    MenuProgramme("pg0001", "青年相声·脱口秀专场巡演", "曲艺", ("相声", "脱口秀", "青年"), "演艺集团"),
    MenuProgramme("pg0002", "京剧名家进乡村", "戏曲", ("京剧", "进社区演出"), "演艺集团"),
    MenuProgramme("pg0003", "非遗剪纸传承课（8课时）", "非遗", ("剪纸", "体验"), "区文化馆联盟"),
    MenuProgramme("pg0004", "广场舞编排培训班", "舞蹈", ("广场舞", "培训"), "区文化馆联盟"),
    MenuProgramme("pg0005", "沉浸式数字艺术巡展", "数字艺术", ("沉浸式", "光影"), "市文化馆"),
    MenuProgramme("pg0006", "少儿合唱团组建指导", "音乐", ("合唱", "亲子"), "市文化馆"),
)


@dataclass(frozen=True)
class RequestPattern:
    """Residents of ``age_band`` in ``region_code`` ask for ``category`` or the programme ``item_id``."""

    name: str
    region_code: str
    age_band: str
    share: float
    """Share of the segment's residents who ask."""
    category: str | None = None
    item_id: str | None = None
    note: str = ""


OPERA = "戏曲"
NO_OPERA = "<no opera>"
"""Stands for the district :func:`without_opera` chose."""

PATTERNS: tuple[RequestPattern, ...] = (
    RequestPattern("asked_not_offered", NO_OPERA, "60+", 0.1, category=OPERA, note="希望在镇上也能看到京剧、评剧"),
    RequestPattern("menu_programme", "110108", "18-34", 0.05, item_id="pg0001", note="想在学校附近看相声和脱口秀"),
)
BACKGROUND_SHARE = 0.01
MIN_ASKING = 20
REQUEST_DAYS = 21
_SEED_OFFSET = 15
"""Mixed into the data set's seed: the requests' draws never touch the other tables' streams."""


def menu_frame() -> pl.DataFrame:
    """The menu as catalogue rows (stored items schema): no place, no time, bookable by any district."""
    rows = [{"item_id": p.item_id, "title": p.title, "kind": PROGRAMME, "category": p.category, "tags": list(p.tags),
             "provider": p.provider, "is_free": True, "hidden": False, "editorial": False} for p in MENU]
    return pl.DataFrame([{c: row.get(c) for c in schemas.ITEMS} for row in rows], schema=schemas.ITEMS)


def without_opera(items: pl.DataFrame, users: pl.DataFrame) -> tuple[pl.DataFrame, str]:
    """The catalogue with one rural district offering no 戏曲, and that district's code.

    The district is the rural one (most of its users rural; in a demo too small to have one, the
    most rural) with the fewest located 戏曲 items, the most seniors breaking ties; its 戏曲
    items move to the nearest other district's centre
    (their residents still travelled to them, as residents of outer districts do).
    """
    rural = users.group_by("region_code").agg((pl.col("area_type") == "rural").mean().alias("rural"),
                                               (pl.col("age_band") == "60+").sum().alias("seniors"))
    opera = items.filter((pl.col("category") == OPERA) & pl.col("region_code").is_not_null()).group_by(
        "region_code").len()
    # a rural district when there is one (a tiny demo may have none: then the most rural one)
    ranked = (rural.join(opera, on="region_code", how="left")
              .with_columns(pl.col("len").fill_null(0), (pl.col("rural") >= 0.5).alias("is_rural"))
              .sort(["is_rural", "len", "seniors", "rural", "region_code"],
                    descending=[True, False, True, True, False]))
    code = ranked["region_code"][0]
    here = next(d for d in DISTRICTS if d.code == code)
    others = [d for d in DISTRICTS if d.code != code]
    nearest = min(others, key=lambda d: (d.lat - here.lat) ** 2 + (d.lon - here.lon) ** 2)
    moved = (pl.col("category") == OPERA) & (pl.col("region_code") == code)
    items = items.with_columns(
        pl.when(moved).then(pl.lit(nearest.code)).otherwise(pl.col("region_code")).alias("region_code"),
        pl.when(moved).then(pl.lit(f"v{nearest.code}opera")).otherwise(pl.col("venue_id")).alias("venue_id"),
        pl.when(moved).then(pl.lit(nearest.lat)).otherwise(pl.col("lat")).alias("lat"),
        pl.when(moved).then(pl.lit(nearest.lon)).otherwise(pl.col("lon")).alias("lon"),
    )
    log.info("no 戏曲 in %s: %d items moved to %s", code, int(ranked["len"][0]), nearest.code)
    return items, code


def plant_requests(users: pl.DataFrame, end_date: dt.date, timezone: str, seed: int,
                   categories: tuple[str, ...], no_opera: str) -> tuple[pl.DataFrame, list[dict[str, Any]]]:
    """The requests file's rows (:data:`REQUEST_COLUMNS`, times ISO-8601 with offset) and the truth
    of each planted pattern (its district, segment, target and how many residents asked);
    ``no_opera`` is the district :func:`without_opera` chose."""
    rng = np.random.default_rng([seed, _SEED_OFFSET])
    end = dt.datetime.combine(end_date, dt.time(), tzinfo=ZoneInfo(timezone))
    frames, truth = [], []
    names = {d.code: d.name for d in DISTRICTS}
    for planned in PATTERNS:
        pattern = replace(planned, region_code=no_opera) if planned.region_code == NO_OPERA else planned
        segment = users.filter((pl.col("region_code") == pattern.region_code)
                               & (pl.col("age_band") == pattern.age_band))["user_id"]
        asking = _sample(segment, pattern.share, rng)
        frames.append(_rows(asking, pattern.region_code, pattern.category, pattern.item_id, pattern.note, end, rng))
        truth.append({"pattern": pattern.name, "region_code": pattern.region_code,
                      "region_name": names.get(pattern.region_code, pattern.region_code),
                      "age_band": pattern.age_band, "category": pattern.category or _menu_category(pattern.item_id),
                      "item_id": pattern.item_id, "requesters": len(asking)})
    frames.append(_background(users, categories, end, rng))
    requests = pl.concat(frames).sort("ts", "user_id")
    log.info("planted %d requests (%s)", requests.height, ", ".join(f"{t['pattern']} {t['requesters']}" for t in truth))
    return requests, truth


def _sample(ids: pl.Series, share: float, rng: np.random.Generator) -> list[str]:
    """``share`` of ``ids``, and at least :data:`MIN_ASKING` (all of them when fewer), so that a
    small demo's pattern still clears the report's privacy threshold."""
    count = min(ids.len(), max(round(share * ids.len()), MIN_ASKING))
    return sorted(ids.to_numpy()[rng.choice(ids.len(), count, replace=False)].tolist()) if count else []


def _menu_category(item_id: str | None) -> str | None:
    return next((p.category for p in MENU if p.item_id == item_id), None)


def _rows(user_ids: list[str], region: str | list[str], category: str | list[str] | None, item_id: str | None,
          note: str, end: dt.datetime, rng: np.random.Generator) -> pl.DataFrame:
    """One request per user, on a day of the last :data:`REQUEST_DAYS` days, in the daytime."""
    n = len(user_ids)
    days = rng.integers(1, REQUEST_DAYS + 1, n)
    minutes = rng.integers(8 * 60, 22 * 60, n)
    times = [(end - dt.timedelta(days=int(d)) + dt.timedelta(minutes=int(m))).isoformat()
             for d, m in zip(days, minutes, strict=True)]
    return pl.DataFrame({
        "user_id": user_ids,
        "region_code": region if isinstance(region, list) else [region] * n,
        "category": category if isinstance(category, list) else [category] * n,
        "item_id": [item_id] * n, "note": [note or None] * n, "ts": times,
    }, schema={c: pl.String for c in REQUEST_COLUMNS})


def _background(users: pl.DataFrame, categories: tuple[str, ...], end: dt.datetime,
                rng: np.random.Generator) -> pl.DataFrame:
    """A few residents everywhere asking for one of ``categories`` at random, in their own district."""
    asking = users.filter(pl.Series(rng.random(users.height) < BACKGROUND_SHARE))
    asked = [categories[i] for i in rng.integers(0, len(categories), asking.height)]
    return _rows(asking["user_id"].to_list(), asking["region_code"].to_list(), asked, None, "", end, rng)
