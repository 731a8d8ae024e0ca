"""Report aggregates on a tiny hand-made table: every number checked against hand arithmetic.

The table (window of 7 days ending 2026-10-31T00:00Z, so "now" is (10-24, 10-31] and
"prev" is (10-17, 10-24]):

district A = 110101 (users u1-u4, u8; age 60+, urban), district B = 110119 (u5-u7; 18-29, rural).
Items: opA opera in A (no start: standing), fiA film in A, fiA2 film in A that ended 10-20
(not live), fiA3 film in A ending 10-25 (live), hidA opera in A but hidden, fiB film in B,
dig film without a district (digital, outside supply).

Now:  u1 opA attend(8); u2 opA view(1); u2 fiA view(1); u3 fiA click(1); u4 fiA reserve(5);
      u4 hidA view (hidden: ignored); u5 fiB view(1); u6 fiB view(1); u7 fiB view(1);
      u5 opA rate 4 (4 x 1 = 4).
Prev: u1 opA view; u2 fiA view; u3 fiA view at exactly 10-24T00:00 (the boundary belongs to
      prev); u5 fiB view; u6 fiB view. u8's only interaction is on 10-01 (outside both).
"""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

import polars as pl
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from features import schemas
from features.aggregates import ReportTables, plan_report

A, B = "110101", "110119"
AT = datetime(2026, 10, 31, tzinfo=UTC)


def t(text: str) -> datetime:
    return datetime.fromisoformat(text).replace(tzinfo=UTC)


def tiny_users() -> pl.DataFrame:
    rows = [dict(user_id=f"u{i}", region_code=A, age_band="60+", area_type="urban", registered_at=None)
            for i in (1, 2, 3, 4, 8)]
    rows += [dict(user_id=f"u{i}", region_code=B, age_band="18-29", area_type="rural", registered_at=None)
             for i in (5, 6, 7)]
    return pl.DataFrame(rows, schema=schemas.USERS)


def _item(item_id: str, category: str, region: str | None, *, hidden: bool = False,
          starts: datetime | None = None, ends: datetime | None = None) -> dict:
    return dict(item_id=item_id, title=item_id.upper(), kind="event", category=category, tags=[],
                region_code=region, venue_id=None, lat=None, lon=None, starts_at=starts, ends_at=ends,
                capacity=None, provider="p", is_free=True, hidden=hidden)


def tiny_items() -> pl.DataFrame:
    return pl.DataFrame([
        _item("opA", "opera", A),
        _item("fiA", "film", A, starts=t("2026-10-01T00:00:00")),
        _item("fiA2", "film", A, ends=t("2026-10-20T00:00:00")),
        _item("fiA3", "film", A, ends=t("2026-10-25T00:00:00")),
        _item("hidA", "opera", A, hidden=True),
        _item("fiB", "film", B),
        _item("dig", "film", None),
    ], schema=schemas.ITEMS)


def _ev(user: str, item: str, action: str, ts: str, value: float | None = None) -> dict:
    return dict(user_id=user, item_id=item, action=action, ts=t(ts), value=value)


def tiny_interactions() -> pl.DataFrame:
    return pl.DataFrame([
        _ev("u1", "opA", "attend", "2026-10-30T10:00:00"),
        _ev("u2", "opA", "view", "2026-10-29T10:00:00"),
        _ev("u2", "fiA", "view", "2026-10-29T11:00:00"),
        _ev("u3", "fiA", "click", "2026-10-28T10:00:00"),
        _ev("u4", "fiA", "reserve", "2026-10-27T10:00:00"),
        _ev("u4", "hidA", "view", "2026-10-27T11:00:00"),
        _ev("u5", "fiB", "view", "2026-10-30T00:00:00"),
        _ev("u6", "fiB", "view", "2026-10-30T00:00:00"),
        _ev("u7", "fiB", "view", "2026-10-31T00:00:00"),
        _ev("u5", "opA", "rate", "2026-10-26T00:00:00", 4.0),
        _ev("u1", "opA", "view", "2026-10-20T00:00:00"),
        _ev("u2", "fiA", "view", "2026-10-20T00:00:00"),
        _ev("u3", "fiA", "view", "2026-10-24T00:00:00"),
        _ev("u5", "fiB", "view", "2026-10-18T00:00:00"),
        _ev("u6", "fiB", "view", "2026-10-18T00:00:00"),
        _ev("u8", "fiA", "view", "2026-10-01T00:00:00"),
    ], schema=schemas.INTERACTIONS)


def run(min_users: int = 2, at: datetime | None = AT, interactions: pl.DataFrame | None = None) -> ReportTables:
    frame = tiny_interactions() if interactions is None else interactions
    return plan_report(frame.lazy(), tiny_users().lazy(), tiny_items().lazy(),
                       window_days=7, min_users=min_users, at=at).collect()


def cell(frame: pl.DataFrame, **keys: str | None) -> dict:
    """The one row of ``frame`` matching ``keys`` (None matches null)."""
    condition = pl.lit(True)
    for column, value in keys.items():
        condition &= pl.col(column).is_null() if value is None else pl.col(column) == value
    rows = frame.filter(condition).to_dicts()
    assert len(rows) == 1, (keys, rows)
    return rows[0]


@pytest.fixture(scope="module")
def tables() -> ReportTables:
    return run()


@pytest.fixture(scope="module")
def arithmetic() -> ReportTables:
    """The numbers with nothing suppressed (min_users = 1), for the checks by hand."""
    return run(min_users=1)


def test_window_bounds(tables: ReportTables) -> None:
    bounds = tables.bounds.row(0, named=True)
    assert bounds["window_end"] == AT
    assert bounds["window_start"] == t("2026-10-24T00:00:00")
    assert bounds["prev_start"] == t("2026-10-17T00:00:00")


def test_window_end_defaults_to_latest_interaction() -> None:
    # The latest interaction is u7's view at 2026-10-31T00:00, so the default equals AT.
    default = run(at=None)
    assert default.bounds["window_end"][0] == AT
    assert default.preferences.equals(run(at=AT).preferences)


def test_share_and_lift_by_hand(arithmetic: ReportTables) -> None:
    prefs = arithmetic.preferences
    # City now: active u1..u7 = 7. Opera: u1, u2, u5 = 3 (u4's hidden opera view does not count)
    # -> 3/7. Film: u2, u3, u4 (fiA) and u5, u6, u7 (fiB) = 6 -> 6/7.
    opera_a = cell(prefs, segment_type="region", region_code=A, category="opera")
    # District A: active u1..u4 = 4 (u8 is outside the window); opera u1, u2 = 2 -> 2/4 = 0.5;
    # lift = 0.5 / (3/7) = 7/6.
    assert opera_a["active_users"] == 4
    assert opera_a["engaged_users"] == 2
    assert opera_a["share"] == pytest.approx(0.5)
    assert opera_a["city_share"] == pytest.approx(3 / 7)
    assert opera_a["lift"] == pytest.approx(7 / 6)
    # Film in A: u2, u3, u4 = 3 -> 3/4 = 0.75; lift = 0.75 / (6/7) = 0.875.
    film_a = cell(prefs, segment_type="region", region_code=A, category="film")
    assert (film_a["engaged_users"], film_a["share"], film_a["lift"]) == (3, pytest.approx(0.75),
                                                                          pytest.approx(0.875))
    # Film in B: u5, u6, u7 of 3 active -> 1.0; lift = 1 / (6/7) = 7/6.
    film_b = cell(prefs, segment_type="region", region_code=B, category="film")
    assert film_b["share"] == pytest.approx(1.0) and film_b["lift"] == pytest.approx(7 / 6)
    # District x age and area x age segments hold the same people here, so the same numbers.
    same = cell(prefs, segment_type="region_age", region_code=A, age_band="60+", category="opera")
    area = cell(prefs, segment_type="area_age", area_type="urban", age_band="60+", category="opera")
    assert same["share"] == area["share"] == pytest.approx(0.5)


def test_supply_demand_gap_and_status_by_hand(arithmetic: ReportTables) -> None:
    sd = arithmetic.supply_demand
    # Demand of A: opera 8 (u1 attend) + 1 (u2 view) = 9; film 1 + 1 + 5 = 7; total 16.
    # Supply of A: live opera items: opA (standing) = 1; live film items: fiA and fiA3 = 2
    # (fiA2 ended 10-20, before the window opened 10-24; hidA is hidden); total 3.
    opera = cell(sd, region_code=A, category="opera")
    assert opera["demand_share"] == pytest.approx(9 / 16)           # 0.5625
    assert opera["supply_share"] == pytest.approx(1 / 3)
    assert opera["gap"] == pytest.approx(9 / 16 - 1 / 3)            # 0.2292
    assert opera["status"] == "undersupplied"                       # 0.5625 >= 1.5 * 0.333 = 0.5
    assert (opera["demand_users"], opera["supply_items"]) == (2, 1)
    film = cell(sd, region_code=A, category="film")
    assert film["demand_share"] == pytest.approx(7 / 16)            # 0.4375
    assert film["supply_share"] == pytest.approx(2 / 3)
    assert film["gap"] == pytest.approx(7 / 16 - 2 / 3)
    assert film["status"] == "oversupplied"                         # 0.667 >= 1.5 * 0.4375 = 0.656
    # B: film 3 views = 3, opera rate 4 x 1 = 4, total 7; only fiB is located in B.
    film_b = cell(sd, region_code=B, category="film")
    assert film_b["demand_share"] == pytest.approx(3 / 7)
    assert film_b["supply_share"] == pytest.approx(1.0)
    assert film_b["status"] == "oversupplied"
    # The digital item has no district: no row of any district counts it.
    assert sd["supply_items"].sum() == 4                            # opA, fiA, fiA3, fiB


def test_trend_by_hand(tables: ReportTables) -> None:
    tr = tables.trends
    # Film in A: now 3/4; prev: active u1, u2, u3 (u3's view at exactly 10-24 is prev) = 3,
    # film u2, u3 = 2 -> 2/3. Change = (0.75 - 0.6667) * 100 = +8.33 pp.
    film_a = cell(tr, segment_type="region", region_code=A, category="film")
    assert film_a["share_now"] == pytest.approx(0.75)
    assert film_a["share_prev"] == pytest.approx(2 / 3)
    assert film_a["change_pp"] == pytest.approx(25 / 3)
    # Film in B: now 3/3, prev u5, u6 of 2 -> 1.0; change 0.
    assert cell(tr, segment_type="region", region_code=B, category="film")["change_pp"] == pytest.approx(0.0)


def test_cells_below_min_users_carry_no_numbers(tables: ReportTables) -> None:
    # Opera in B rests on one user (u5) < 2: no share, lift or count.
    opera_b = cell(tables.preferences, segment_type="region", region_code=B, category="opera")
    assert opera_b["suppressed"] is True
    assert all(opera_b[k] is None for k in ("active_users", "engaged_users", "share", "city_share", "lift"))
    # Its demand side is suppressed too; supply (the catalog) stays.
    sd = cell(tables.supply_demand, region_code=B, category="opera")
    assert sd["suppressed"] is True
    assert all(sd[k] is None for k in ("demand_share", "gap", "status", "demand_users"))
    assert sd["supply_items"] == 0
    # Opera in A had one user in the previous window (u1): its trend is suppressed.
    trend = cell(tables.trends, segment_type="region", region_code=A, category="opera")
    assert trend["suppressed"] is True and trend["share_now"] is None and trend["change_pp"] is None
    # A segment nobody in the window belongs to (A x 18-29) is suppressed whole.
    empty = tables.preferences.filter((pl.col("region_code") == A) & (pl.col("age_band") == "18-29"))
    assert empty.height == 2 and empty["suppressed"].all() and empty["active_users"].null_count() == 2


def test_raising_min_users_suppresses_more() -> None:
    # With min_users = 4 only cells resting on >= 4 users survive: A's segment (4 active) but
    # every category cell of A has <= 3 engaged users, so nothing in A keeps a share.
    strict = run(min_users=4)
    region_a = strict.preferences.filter((pl.col("segment_type") == "region") & (pl.col("region_code") == A))
    assert region_a["suppressed"].all() and region_a["share"].null_count() == region_a.height
    assert strict.top_items.filter(pl.col("region_code") == A).height == 0


def run_with_young_users(young: dict[str, list[str]]) -> ReportTables:
    """The tiny table plus district-A users aged 18-29, each engaging with the given items now
    (and u6 at the opera, so that B's opera cell is shown and the districts stay out of it)."""
    users = pl.concat([tiny_users(), pl.DataFrame(
        [dict(user_id=u, region_code=A, age_band="18-29", area_type="urban", registered_at=None) for u in young],
        schema=schemas.USERS)])
    events = [(u, item) for u, items in young.items() for item in items] + [("u6", "opA")]  # B: 2 at the opera
    extra = pl.DataFrame([_ev(u, item, "view", "2026-10-29T12:00:00") for u, item in events],
                         schema=schemas.INTERACTIONS)
    return plan_report(pl.concat([tiny_interactions(), extra]).lazy(), users.lazy(), tiny_items().lazy(),
                       window_days=7, min_users=2, at=AT).collect()


def bands_of_a(tables: ReportTables, category: str) -> dict[str, dict]:
    rows = tables.preferences.filter((pl.col("segment_type") == "region_age") & (pl.col("region_code") == A)
                                     & (pl.col("category") == category))
    return {row["age_band"]: row for row in rows.to_dicts()}


def test_a_hidden_district_cannot_be_recovered_from_the_city_total(tables: ReportTables) -> None:
    # Opera in B rests on u5 alone: hidden. The city row shows 3 opera users, so showing A's 2
    # would give B's 1 away: A's opera cell is hidden too, here and in the supply-demand table.
    assert cell(tables.city, period="now", category="opera")["engaged_users"] == 3
    for region in (A, B):
        prefs = cell(tables.preferences, segment_type="region", region_code=region, category="opera")
        assert prefs["suppressed"] and prefs["engaged_users"] is None, region
        demand = cell(tables.supply_demand, region_code=region, category="opera")
        assert demand["suppressed"] and demand["demand_users"] is None and demand["supply_items"] is not None
    # Film rests on 3 users in each district: both shown.
    film = tables.preferences.filter((pl.col("segment_type") == "region") & (pl.col("category") == "film"))
    assert film["engaged_users"].to_list() == [3, 3]
    # The same rule over the area x age segments, whose total is the city's too.
    rural = cell(tables.preferences, segment_type="area_age", area_type="rural", age_band="18-29", category="opera")
    urban = cell(tables.preferences, segment_type="area_age", area_type="urban", age_band="60+", category="opera")
    assert rural["suppressed"] and urban["suppressed"]


def test_a_hidden_age_band_cannot_be_recovered_from_the_district_total() -> None:
    # One young user in A, at the opera: the 18-29 band (1 active) is hidden, and so is the
    # 60+ opera cell, or A's opera total (3) minus 60+ (2) would give the young one away. Film,
    # where the hidden band holds nobody, keeps its 60+ numbers; A's own row stays published.
    tables = run_with_young_users({"u9": ["opA"]})
    opera, film = bands_of_a(tables, "opera"), bands_of_a(tables, "film")
    assert opera["18-29"]["suppressed"] and opera["60+"]["suppressed"] and opera["60+"]["engaged_users"] is None
    assert film["18-29"]["suppressed"] and not film["60+"]["suppressed"] and film["60+"]["engaged_users"] == 3
    opera_a = cell(tables.preferences, segment_type="region", region_code=A, category="opera")
    assert (opera_a["suppressed"], opera_a["active_users"], opera_a["engaged_users"]) == (False, 5, 3)
    # The same differencing inside one category: three young users (a published band), only
    # one of them at the opera. Opera 18-29 (1) is hidden, so opera 60+ (2) must be too; film,
    # where both bands are large enough, keeps its numbers.
    tables = run_with_young_users({"u9": ["opA"], "u10": ["fiA"], "u11": ["fiA"]})
    opera, film = bands_of_a(tables, "opera"), bands_of_a(tables, "film")
    assert opera["18-29"]["suppressed"] and opera["60+"]["suppressed"]
    assert not film["18-29"]["suppressed"] and not film["60+"]["suppressed"]
    assert (film["18-29"]["engaged_users"], film["60+"]["engaged_users"]) == (2, 3)


def test_an_empty_hidden_band_reveals_nobody_and_hides_nothing_else(tables: ReportTables) -> None:
    # A x 18-29 holds nobody: A x 60+ keeps its numbers although A's total equals them.
    bands = bands_of_a(tables, "opera")
    assert bands["18-29"]["suppressed"] and not bands["60+"]["suppressed"]
    assert bands["60+"]["engaged_users"] == 2


def test_top_items_rank_by_distinct_users(arithmetic: ReportTables, tables: ReportTables) -> None:
    # A: fiA engaged by u2, u3, u4 (3 users), opA by u1, u2 (2). B: fiB by u5, u6, u7; opA by u5 (1).
    rows = arithmetic.top_items.select("region_code", "rank", "item_id", "users").rows()
    assert rows == [(A, 1, "fiA", 3), (A, 2, "opA", 2), (B, 1, "fiB", 3), (B, 2, "opA", 1)]
    # With min_users = 2, B's opA rests on one user; A's opA is the only opera item A's users
    # touched, so its 2 would be A's hidden opera cell (hidden to protect B's): neither is listed.
    rows = tables.top_items.select("region_code", "rank", "item_id", "users").rows()
    assert rows == [(A, 1, "fiA", 3), (B, 1, "fiB", 3)]


def test_duplicates_count_once() -> None:
    doubled = pl.concat([tiny_interactions(), tiny_interactions()])
    again = run(min_users=1, interactions=doubled)
    opera = cell(again.supply_demand, region_code=A, category="opera")
    assert opera["demand_share"] == pytest.approx(9 / 16)


@st.composite
def random_log(draw: st.DrawFn) -> pl.DataFrame:
    users = [f"u{i}" for i in (1, 2, 3, 4, 5, 6, 7, 8)]
    items = ["opA", "fiA", "fiA3", "hidA", "fiB", "dig"]
    rows = draw(st.lists(st.tuples(st.sampled_from(users), st.sampled_from(items),
                                   st.sampled_from(["view", "click", "attend", "rate"]),
                                   st.integers(0, 13 * 24)), min_size=1, max_size=60))
    return pl.DataFrame(
        [dict(user_id=u, item_id=i, action=a, ts=AT - timedelta(hours=h), value=3.0 if a == "rate" else None)
         for u, i, a, h in rows], schema=schemas.INTERACTIONS)


@settings(max_examples=40, deadline=None)
@given(random_log(), st.integers(1, 4))
def test_published_numbers_always_rest_on_enough_users(log: pl.DataFrame, min_users: int) -> None:
    result = run(min_users=min_users, interactions=log)
    shown = result.preferences.filter(~pl.col("suppressed"))
    assert (shown["engaged_users"] >= min_users).all() and (shown["active_users"] >= min_users).all()
    assert ((shown["share"] >= 0) & (shown["share"] <= 1)).all()
    assert ((shown["lift"] - shown["share"] / shown["city_share"]).abs() < 1e-12).all()
    hidden = result.preferences.filter(pl.col("suppressed"))
    for column in ("active_users", "engaged_users", "share", "city_share", "lift"):
        assert hidden[column].null_count() == hidden.height
    sd = result.supply_demand
    assert (sd.filter(~pl.col("suppressed"))["demand_users"] >= min_users).all()
    assert sd.filter(pl.col("suppressed"))["demand_share"].null_count() == sd["suppressed"].sum()
    per_region = sd.group_by("region_code").agg(pl.col("demand_share").sum())
    assert (per_region["demand_share"] <= 1.0 + 1e-9).all()
    trends = result.trends.filter(pl.col("suppressed"))
    assert trends["change_pp"].null_count() == trends.height


@settings(max_examples=40, deadline=None)
@given(random_log(), st.integers(2, 4))
def test_no_hidden_district_cell_can_be_recovered_from_the_city_total(log: pl.DataFrame, min_users: int) -> None:
    """Against the true counts (nothing suppressed): wherever the city's row is shown and a hidden
    district cell holds anybody, at least two are hidden, holding min_users together or being all."""
    truth = run(min_users=1, interactions=log).preferences.filter(pl.col("segment_type") == "region")
    result = run(min_users=min_users, interactions=log)
    published = result.preferences.filter(pl.col("segment_type") == "region")
    city = result.city.filter(pl.col("period") == "now")
    cells = published.select("region_code", "category", "suppressed").join(
        truth.select("region_code", "category", "engaged_users"), on=["region_code", "category"])
    for category, group in cells.group_by("category"):
        if cell(city, category=category[0])["suppressed"]:
            continue
        hidden = group.filter(pl.col("suppressed"))
        if hidden["engaged_users"].sum() == 0:
            continue
        assert hidden.height >= 2, group
        assert hidden["engaged_users"].sum() >= min_users or hidden.height == group.height, group
    listed = result.top_items.join(published.select("region_code", "category", "suppressed"),
                                   on=["region_code", "category"])
    assert listed.height == result.top_items.height and not listed["suppressed"].any()
