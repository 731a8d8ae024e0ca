"""The synthetic cultural cloud: stored schemas, determinism, live windows, planted effects."""

from __future__ import annotations

import datetime as dt
import json
from zoneinfo import ZoneInfo

import polars as pl
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from typer.testing import CliRunner

from democloud import EFFECTS, DemoConfig, DemoData, generate, write_demo
from features import schemas
from features.districts import CORE_CODES, DISTRICTS

END = dt.date(2025, 6, 30)
SHANGHAI = ZoneInfo("Asia/Shanghai")
SMALL = DemoConfig(users=3_000, items=400, days=30, seed=7, end_date=END)


@pytest.fixture(scope="module")
def small() -> DemoData:
    return generate(SMALL)


@pytest.fixture(scope="module")
def default_size() -> DemoData:
    """The default size: planted effects need enough users in small rural segments."""
    return generate(DemoConfig(seed=3, end_date=END))


def _window(end: dt.date, days: int) -> tuple[dt.datetime, dt.datetime]:
    first = dt.datetime.combine(end - dt.timedelta(days=days - 1), dt.time(), tzinfo=SHANGHAI)
    after = dt.datetime.combine(end + dt.timedelta(days=1), dt.time(), tzinfo=SHANGHAI)
    return first.astimezone(dt.UTC), after.astimezone(dt.UTC)


def _joined(data: DemoData) -> pl.DataFrame:
    return (
        data.interactions
        .join(data.items, on="item_id", how="left", validate="m:1")
        .join(data.users, on="user_id", how="left", suffix="_user", validate="m:1")
    )


def test_frames_have_the_stored_schemas(small: DemoData) -> None:
    assert dict(small.users.schema) == schemas.USERS
    assert dict(small.items.schema) == schemas.ITEMS
    assert dict(small.interactions.schema) == schemas.INTERACTIONS
    assert small.users.height == 3_000
    assert small.items.height == 400
    assert small.users["user_id"].n_unique() == 3_000
    assert small.items["item_id"].n_unique() == 400


def test_same_seed_and_end_date_give_identical_frames(small: DemoData) -> None:
    again = generate(SMALL)
    assert again.users.equals(small.users)
    assert again.items.equals(small.items)
    assert again.interactions.equals(small.interactions)
    assert again.ground_truth == small.ground_truth


def test_another_seed_gives_other_data(small: DemoData) -> None:
    other = generate(DemoConfig(users=3_000, items=400, days=30, seed=8, end_date=END))
    assert not other.users.equals(small.users)
    assert not other.interactions.equals(small.interactions)


def test_default_end_date_is_today_in_shanghai() -> None:
    before = dt.datetime.now(SHANGHAI).date()
    data = generate(DemoConfig(users=50, items=20, days=3))
    after = dt.datetime.now(SHANGHAI).date()
    assert data.ground_truth["end_date"] in {before.isoformat(), after.isoformat()}


def test_users_live_in_beijing_districts(small: DemoData) -> None:
    users = small.users
    assert set(users["region_code"].unique()) == {d.code for d in DISTRICTS}
    assert set(users["age_band"].unique()) == {"0-17", "18-34", "35-59", "60+"}
    core = users.filter(pl.col("region_code").is_in(sorted(CORE_CODES)))
    assert set(core["area_type"].unique()) == {"urban"}
    outer_rural = users.filter(~pl.col("region_code").is_in(sorted(CORE_CODES)))["area_type"].eq("rural").mean()
    assert 0.55 <= outer_rural <= 0.8
    by_district = users.group_by("region_code").len()
    count = dict(by_district.iter_rows())
    assert count["110105"] > 3 * count["110119"]  # populous Chaoyang vs Yanqing


def test_interactions_lie_inside_live_windows(small: DemoData) -> None:
    first, after = _window(END, SMALL.days)
    rows = _joined(small)
    assert rows["kind"].null_count() == 0 and rows["region_code_user"].null_count() == 0
    assert rows["ts"].min() >= first
    assert rows["ts"].max() < after
    assert rows.filter(pl.col("ts") < pl.col("registered_at")).height == 0

    lead = dt.timedelta(days=14)
    one_evening = rows.filter(pl.col("kind").is_in(["event", "opera", "film"]))
    too_early = pl.col("ts") < pl.col("starts_at") - lead
    assert one_evening.filter(too_early | (pl.col("ts") > pl.col("ends_at"))).is_empty()
    exhibitions = rows.filter(pl.col("kind") == "exhibition")
    assert exhibitions.filter((pl.col("ts") < pl.col("starts_at")) | (pl.col("ts") > pl.col("ends_at"))).is_empty()
    digital = rows.filter(pl.col("kind") == "digital")
    assert digital.filter(pl.col("ts") < pl.col("starts_at")).is_empty()
    assert one_evening.height > 0 and exhibitions.height > 0 and digital.height > 0


def test_funnel_order_and_attendance(small: DemoData) -> None:
    rows = _joined(small)
    attend = rows.filter(pl.col("action") == "attend")
    assert attend.height > 0
    assert set(attend["kind"].unique()) <= {"event", "opera", "film", "exhibition"}
    assert attend.filter(pl.col("ts") < pl.col("starts_at")).is_empty()
    first_reserve = (
        rows.filter(pl.col("action") == "reserve")
        .group_by("user_id", "item_id").agg(pl.col("ts").min().alias("booked"))
    )
    checked = attend.join(first_reserve, on=["user_id", "item_id"], how="left")
    assert checked["booked"].null_count() == 0
    assert checked.filter(pl.col("ts") < pl.col("booked")).is_empty()
    assert rows.filter((pl.col("action") == "reserve") & (pl.col("kind") == "digital")).is_empty()
    # one booking and one attendance per user and item
    bookings = rows.filter(pl.col("action").is_in(["reserve", "attend"]))
    assert bookings.select("user_id", "item_id", "action").is_duplicated().sum() == 0

    counts = dict(rows["action"].value_counts().iter_rows())
    assert counts["view"] > counts["click"] > counts["reserve"] > counts["attend"] > 0
    assert counts["share"] > 0 and counts["favorite"] > 0
    rates = rows.filter(pl.col("action") == "rate")["value"]
    assert rates.len() > 0 and rates.is_in([1.0, 2.0, 3.0, 4.0, 5.0]).all()
    others = rows.filter(pl.col("action") != "rate")
    assert others["value"].null_count() == others.height


def test_digital_items_have_no_place_and_offline_items_do(small: DemoData) -> None:
    items = small.items
    digital = items.filter(pl.col("kind") == "digital")
    assert digital.height > 0
    for column in ("region_code", "venue_id", "lat", "lon", "ends_at", "capacity"):
        assert digital[column].null_count() == digital.height, column
    offline = items.filter(pl.col("kind") != "digital")
    for column in ("region_code", "venue_id", "lat", "lon", "ends_at", "capacity", "starts_at"):
        assert offline[column].null_count() == 0, column
    assert offline["lat"].is_between(39.3, 41.2).all() and offline["lon"].is_between(115.3, 117.6).all()
    assert set(offline["region_code"].unique()) <= {d.code for d in DISTRICTS}
    assert offline.filter(pl.col("ends_at") <= pl.col("starts_at")).is_empty()
    # several items share a venue, and a venue stays in one district
    venues = offline.group_by("venue_id").agg(pl.len(), pl.col("region_code").n_unique().alias("districts"))
    assert venues["len"].max() >= 3 and venues["districts"].max() == 1


def test_catalog_content(small: DemoData) -> None:
    items = small.items
    assert set(items["kind"].unique()) == {"event", "exhibition", "opera", "film", "digital"}
    assert set(items.filter(pl.col("kind") == "opera")["category"].unique()) == {"戏曲"}
    opera_tags = set(items.filter(pl.col("kind") == "opera")["tags"].explode().unique())
    assert {"京剧", "昆曲", "评剧"} <= opera_tags
    assert items["title"].str.contains("《").all() and items["title"].str.contains("》").all()
    assert items["tags"].list.len().min() >= 1
    assert 1 <= items["provider"].n_unique() <= 8
    assert items["hidden"].sum() <= 0.05 * items.height
    assert items["is_free"].mean() > 0.6
    hours = items.filter(pl.col("kind") == "event").select(
        ((pl.col("ends_at") - pl.col("starts_at")).dt.total_minutes() / 60).alias("h"))["h"]
    assert hours.min() >= 1.5 and hours.max() <= 3.5
    weeks = items.filter(pl.col("kind") == "exhibition").select(
        (pl.col("ends_at") - pl.col("starts_at")).dt.total_days().alias("d"))["d"]
    assert weeks.min() >= 13


def test_upcoming_items_exist_with_early_reservations(small: DemoData) -> None:
    _, after = _window(END, SMALL.days)
    upcoming = small.items.filter(pl.col("starts_at") >= after)
    assert upcoming.height > 0
    assert upcoming["starts_at"].max() <= after + dt.timedelta(days=31)
    early = small.interactions.filter(pl.col("item_id").is_in(upcoming["item_id"].implode()))
    assert early.filter(pl.col("action") == "reserve").height > 0
    assert early.filter(pl.col("action") == "attend").is_empty()


def test_popularity_is_long_tailed(small: DemoData) -> None:
    per_item = small.interactions.group_by("item_id").len().sort("len", descending=True)["len"]
    top_tenth = per_item.head(max(1, per_item.len() // 10)).sum()
    assert top_tenth >= 0.35 * per_item.sum()


def test_planted_effects_are_found_by_share_ratio(default_size: DemoData) -> None:
    rows = (
        default_size.interactions.select("user_id", "item_id")
        .join(default_size.users.select("user_id", "region_code", "age_band"), on="user_id")
        .join(default_size.items.select("item_id", "category"), on="item_id")
    )
    city = rows.group_by("category").len().with_columns(city_share=pl.col("len") / pl.col("len").sum())
    truth = default_size.ground_truth["effects"]
    assert len(truth) >= 7
    assert {e["category"] for e in truth} >= {"戏曲", "数字艺术", "亲子"}
    for effect in truth:
        in_segment = (pl.col("region_code") == effect["region_code"]) & (pl.col("age_band") == effect["age_band"])
        segment = rows.filter(in_segment)
        lift = (
            segment.group_by("category").len()
            .with_columns(share=pl.col("len") / pl.col("len").sum())
            .join(city.select("category", "city_share"), on="category")
            .with_columns(lift=pl.col("share") / pl.col("city_share"))
            .sort("lift", descending=True)
        )
        ratio = lift.filter(pl.col("category") == effect["category"])["lift"].item()
        assert ratio >= 2.0, (effect, ratio)
        assert effect["category"] in lift["category"].head(3).to_list(), (effect, lift.head(3))


def test_offline_items_draw_mostly_nearby_users(default_size: DemoData) -> None:
    rows = _joined(default_size)
    offline = rows.filter(pl.col("kind") != "digital")
    assert (offline["region_code"] == offline["region_code_user"]).mean() > 0.25
    # Yanqing's offline items are seen by Yanqing users far above Yanqing's share of users...
    yanqing_user_share = (default_size.users["region_code"] == "110119").mean()
    yanqing_items = offline.filter(pl.col("region_code") == "110119")
    assert (yanqing_items["region_code_user"] == "110119").mean() > 5 * yanqing_user_share
    # ...while digital items reach Yanqing users in proportion (no distance penalty).
    digital = rows.filter(pl.col("kind") == "digital")
    assert (digital["region_code_user"] == "110119").mean() > 0.5 * yanqing_user_share


def test_rural_users_are_served(default_size: DemoData) -> None:
    rows = _joined(default_size)
    per_area = rows.group_by("area_type").agg(
        (pl.len() / pl.col("user_id").n_unique()).alias("per_user"),
        (pl.col("action").is_in(["reserve", "attend"])).sum().alias("bookings"),
    )
    per_user = dict(per_area.select("area_type", "per_user").iter_rows())
    assert per_user["rural"] >= 0.8 * per_user["urban"]
    offline = default_size.items.filter(pl.col("kind") != "digital")
    assert set(offline["region_code"].unique()) == {d.code for d in DISTRICTS}  # local supply everywhere
    assert 0 < default_size.items["hidden"].sum() <= 0.03 * default_size.items.height
    rural_bookings = dict(per_area.select("area_type", "bookings").iter_rows())["rural"]
    assert rural_bookings > 1_000


def test_write_demo_round_trips(tmp_path, small: DemoData) -> None:
    paths = write_demo(small, tmp_path / "demo")
    assert set(paths) == {"users", "items", "interactions", "ground_truth", "programmes", "requests"}
    assert pl.read_parquet(paths["interactions"]).equals(small.interactions)
    assert pl.read_parquet(paths["programmes"]).equals(small.programmes)
    assert pl.read_csv(paths["requests"], infer_schema=False).equals(small.requests)
    assert pl.read_parquet(paths["items"]).equals(small.items)
    assert pl.read_parquet(paths["users"]).equals(small.users)
    truth = json.loads(paths["ground_truth"].read_text(encoding="utf-8"))
    assert truth["seed"] == 7 and truth["end_date"] == "2025-06-30"
    assert len(truth["districts"]) == 16 and sum(d["urban"] for d in truth["districts"]) == 6
    assert {"region_code", "region_name", "age_band", "category", "multiplier"} <= set(truth["effects"][0])
    assert {(e["region_code"], e["category"]) for e in truth["effects"]} == {
        (e.region_code, e.category) for e in EFFECTS}
    assert {p["pattern"] for p in truth["requests"]} == {"asked_not_offered", "menu_programme"}
    assert not list((tmp_path / "demo").glob("*.tmp"))


def test_cli_writes_the_files_and_a_json_summary(tmp_path) -> None:
    from training.cli import app

    out = tmp_path / "cli"
    result = CliRunner().invoke(app, [
        "demo-data", "--out", str(out), "--users", "400", "--items", "60", "--days", "10", "--seed", "2",
        "--end-date", "2025-06-30", "--json",
    ])
    assert result.exit_code == 0, result.output
    summary = json.loads(result.stdout)
    assert summary["users"] == 400 and summary["items"] == 60 and summary["end_date"] == "2025-06-30"
    assert summary["interactions"] == pl.read_parquet(out / "interactions.parquet").height > 0
    assert {p.name for p in out.iterdir()} == {"users.parquet", "items.parquet", "interactions.parquet",
                                               "ground_truth.json", "programmes.parquet", "requests.csv"}


def test_cli_rejects_a_bad_end_date(tmp_path) -> None:
    from training.cli import app

    result = CliRunner().invoke(app, ["demo-data", "--out", str(tmp_path), "--end-date", "2025-02-30"])
    assert result.exit_code == 2
    assert not list(tmp_path.iterdir())


@settings(max_examples=15, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(
    users=st.integers(1, 300), items=st.integers(5, 80), days=st.integers(1, 20), seed=st.integers(0, 2**32 - 1),
)
def test_any_small_config_keeps_the_contract(users: int, items: int, days: int, seed: int) -> None:
    data = generate(DemoConfig(users=users, items=items, days=days, seed=seed, end_date=END))
    assert dict(data.interactions.schema) == schemas.INTERACTIONS
    assert data.users.height == users and data.items.height == items
    first, after = _window(END, days)
    if data.interactions.height:
        assert data.interactions["ts"].min() >= first and data.interactions["ts"].max() < after
        assert data.interactions["item_id"].is_in(data.items["item_id"].implode()).all()
        assert data.interactions["user_id"].is_in(data.users["user_id"].implode()).all()


def test_tags_are_distinct_within_an_item(small: DemoData) -> None:
    tags = small.items["tags"]
    assert (tags.list.len() == tags.list.unique().list.len()).all()
