"""Poisoning defences: the three rules on small stores, how ingest stores and counts flags, how
readers leave flagged rows out, and how little of the ordinary demo data gets flagged."""

from __future__ import annotations

import json
from datetime import UTC, datetime, timedelta
from pathlib import Path

import polars as pl
import pytest

from democloud import generate
from features import store
from features.events import clean_events
from features.ingest import ingest, store_info
from features.poisoning import Flag, PoisonSettings, flag_rows
from recsys.home import EngineHome
from recsys.provenance import FLAG, SOURCE
from tests.demo_store import DEMO, build_demo_home, write_store_directly

T0 = datetime(2026, 11, 1, 6, 0, tzinfo=UTC)
"""The batch's moment; the background history runs for the 30 days before it."""
FEED = "file:feed.csv"
ESTABLISHED = [f"u{n:03d}" for n in range(200)]
BACKGROUND_ITEMS = [f"b{n:02d}" for n in range(40)]


def frame(rows: list[tuple[str, str, datetime, str | None]]) -> pl.DataFrame:
    return pl.DataFrame(
        {"user_id": [r[0] for r in rows], "item_id": [r[1] for r in rows], "ts": [r[2] for r in rows],
         SOURCE: [r[3] for r in rows]},
        schema={"user_id": pl.String, "item_id": pl.String, "ts": pl.Datetime("us", "UTC"), SOURCE: pl.String},
    )


def background() -> pl.DataFrame:
    """30 days of an ordinary feed: every established user, three events a day across 40 items."""
    rows = [(user, BACKGROUND_ITEMS[(n + day * 7 + k) % len(BACKGROUND_ITEMS)],
             T0 - timedelta(days=30 - day, hours=k), FEED)
            for day in range(30) for n, user in enumerate(ESTABLISHED) for k in range(3)]
    return frame(rows)


def users_table(ids: list[str], registered: datetime | None = None) -> pl.DataFrame:
    return pl.DataFrame({"user_id": ids, "registered_at": [registered] * len(ids)},
                        schema={"user_id": pl.String, "registered_at": pl.Datetime("us", "UTC")})


def new_ids(count: int, prefix: str = "n") -> list[str]:
    return [f"{prefix}{k:04d}" for k in range(count)]


def on_film(users: list[str], at: datetime, source: str = "promo-app") -> list[tuple[str, str, datetime, str]]:
    return [(user, "film", at + timedelta(seconds=k), source) for k, user in enumerate(users)]


def flags_of(batch: pl.DataFrame, history: pl.DataFrame, users: pl.DataFrame | None,
             settings: PoisonSettings | None = None) -> dict[str | None, int]:
    flags = flag_rows(batch, history.lazy(), users, settings)
    assert flags.len() == batch.height
    return dict(flags.value_counts().iter_rows())


# --------------------------------------------------------------------------- who is judged


def test_rows_of_provider_files_are_not_judged_unless_asked() -> None:
    """The same burst, from an operator's file: trusted by default (a historical log has such days)."""
    batch = frame(on_film(new_ids(60), T0, source=FEED))
    assert flags_of(batch, background(), users_table(ESTABLISHED)) == {None: 60}
    assert flags_of(batch, background(), users_table(ESTABLISHED), PoisonSettings(judge_files=True)) == {
        Flag.NEW_USER_BURST.value: 60}


# --------------------------------------------------------------------------- rule 1: bursts of new ids


def test_a_burst_of_new_ids_on_one_item_is_flagged() -> None:
    batch = frame(on_film(new_ids(60), T0))
    assert flags_of(batch, background(), None) == {Flag.NEW_USER_BURST.value: 60}


def test_fewer_new_ids_than_the_threshold_are_no_burst() -> None:
    batch = frame(on_film(new_ids(49), T0))
    assert flags_of(batch, background(), None) == {None: 49}
    assert flags_of(batch, background(), None, PoisonSettings(burst_min_new_users=40)) == {
        Flag.NEW_USER_BURST.value: 49}


def test_new_ids_among_many_regulars_are_no_burst() -> None:
    """60 newcomers on an item 80 regulars also engaged with in the window: 43% new, under half."""
    batch = frame(on_film(new_ids(60), T0) + on_film(ESTABLISHED[:80], T0, source=FEED))
    assert flags_of(batch, background(), None) == {None: 140}


def test_a_burst_straddling_a_window_boundary_is_caught_by_the_shifted_grid() -> None:
    midnight = datetime(2026, 11, 2, tzinfo=UTC)
    ids = new_ids(60)
    before, after = midnight - timedelta(minutes=40), midnight + timedelta(minutes=5)
    batch = frame(on_film(ids[:30], before) + on_film(ids[30:], after))
    assert flags_of(batch, background(), None) == {Flag.NEW_USER_BURST.value: 60}


def test_accounts_registered_before_the_window_are_not_new() -> None:
    ids = new_ids(60)
    batch = frame(on_film(ids, T0))
    long_ago = users_table([*ESTABLISHED, *ids], T0 - timedelta(days=400))
    assert flags_of(batch, background(), long_ago) == {None: 60}
    just_now = users_table([*ESTABLISHED, *ids], T0 - timedelta(minutes=5))
    assert flags_of(batch, background(), just_now) == {Flag.NEW_USER_BURST.value: 60}


def test_nobody_is_new_in_the_first_window_of_a_store() -> None:
    batch = frame(on_film(new_ids(60), T0))
    assert flags_of(batch, background().head(0), None) == {None: 60}


# --------------------------------------------------------------------------- rule 2: one source dominates


def test_a_source_aimed_at_one_item_is_flagged() -> None:
    batch = frame(on_film(ESTABLISHED[:150], T0))
    assert flags_of(batch, background(), None) == {Flag.SOURCE_DOMINANCE.value: 150}


def test_a_source_spread_over_many_items_is_not() -> None:
    """The same 150 rows from an app that also sent 1,000 elsewhere: the film is 13% of its
    events, under ``source_min_focus``."""
    elsewhere = [(ESTABLISHED[k % 200], BACKGROUND_ITEMS[k % 40], T0 - timedelta(hours=k % 48), "promo-app")
                 for k in range(1000)]
    history = pl.concat([background(), frame(elsewhere)])
    batch = frame(on_film(ESTABLISHED[:150], T0))
    assert flags_of(batch, history, None) == {None: 150}


def test_a_source_with_a_minority_of_the_item_is_not() -> None:
    history = pl.concat([background(), frame(on_film(ESTABLISHED[150:], T0 - timedelta(days=3), source=FEED))
                         .vstack(frame(on_film(ESTABLISHED[100:150], T0 - timedelta(days=2), source=FEED)))])
    batch = frame(on_film(ESTABLISHED[:150], T0))  # 150 of 250 events on the film: 60%
    assert flags_of(batch, history, None) == {None: 150}


def test_an_item_with_few_events_cannot_be_dominated() -> None:
    batch = frame(on_film(ESTABLISHED[:99], T0))
    assert flags_of(batch, background(), None) == {None: 99}


# --------------------------------------------------------------------------- rule 3 and precedence


def test_users_missing_from_the_users_table_are_flagged_only_when_there_is_one() -> None:
    batch = frame([("ghost", "b01", T0, "app"), (ESTABLISHED[0], "b01", T0, "app")])
    assert flag_rows(batch, background().lazy(), users_table(ESTABLISHED)).to_list() == [
        Flag.UNKNOWN_USER.value, None]
    assert flag_rows(batch, background().lazy(), None).to_list() == [None, None]


def test_the_first_rule_met_names_the_row() -> None:
    """New made-up ids in a burst are also unknown and also their source's whole output: the burst names them."""
    batch = frame(on_film(new_ids(150), T0))
    assert flags_of(batch, background(), users_table(ESTABLISHED)) == {Flag.NEW_USER_BURST.value: 150}


def test_disabled_flags_nothing() -> None:
    batch = frame(on_film(new_ids(150), T0))
    assert flags_of(batch, background(), users_table(ESTABLISHED), PoisonSettings(enabled=False)) == {None: 150}


def test_thresholds_come_from_the_environment(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("RECSYS_POISON_BURST_MIN_NEW_USERS", "7")
    monkeypatch.setenv("RECSYS_POISON_SOURCE_MAX_SHARE", "0.95")
    settings = PoisonSettings()
    assert (settings.burst_min_new_users, settings.source_max_share) == (7, 0.95)


# --------------------------------------------------------------------------- ingest, store and readers


def write(path: Path, text: str) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(text, encoding="utf-8")
    return path


@pytest.fixture
def small_store(tmp_path: Path) -> EngineHome:
    """A store ingested from files: 200 registered users, 41 items, 30 days of background."""
    home = EngineHome.at(tmp_path / "home")
    items = write(tmp_path / "items.csv", "item_id,kind,category\n"
                  + "".join(f"{i},event,music\n" for i in BACKGROUND_ITEMS) + "film,film,cinema\n")
    users = write(tmp_path / "users.csv", "user_id,region_code,registered_at\n"
                  + "".join(f"{u},110101,2025-01-01T00:00:00+00:00\n" for u in ESTABLISHED))
    interactions = tmp_path / "feed.csv"
    background().with_columns(pl.lit("view").alias("action"), pl.lit(None, pl.String).alias("value")).select(
        "user_id", "item_id", "action", pl.col("ts").dt.strftime("%Y-%m-%dT%H:%M:%S%.6f+00:00"), "value",
    ).write_csv(interactions)
    summary = ingest(home, interactions=interactions, users=users, items=items)
    assert summary.committed and "flagged" not in summary.tables["interactions"].to_dict()
    return home


def post_lines(home: EngineHome, rows: list[tuple[str, str, datetime, str]], action: str = "reserve") -> None:
    """Lines as the API writes them (with the posting app as ``source``) into a segment."""
    lines = [json.dumps({"user_id": u, "item_id": i, "action": action, "ts": ts.isoformat(), "value": None,
                         SOURCE: source}) for u, i, ts, source in rows]
    write(home.incoming / "20261101T060000000000Z-4242.jsonl", "".join(line + "\n" for line in lines))


def test_ingest_keeps_flagged_rows_with_their_reason_and_source(small_store: EngineHome) -> None:
    """The adversarial batch in small: 40 real residents and 60 made-up ids on one untouched item."""
    attack = on_film(ESTABLISHED[:40], T0) + on_film(new_ids(60), T0 + timedelta(minutes=5))
    post_lines(small_store, attack)
    summary = ingest(small_store)
    counts = summary.tables["incoming"].to_dict()
    assert counts["accepted"] == 100 and counts["reconciles"]
    assert counts["flagged"] == {Flag.SOURCE_DOMINANCE.value: 40, Flag.NEW_USER_BURST.value: 60}
    assert counts["flagged_by_source"] == {"promo-app": {Flag.NEW_USER_BURST.value: 60,
                                                         Flag.SOURCE_DOMINANCE.value: 40}}
    stored = store.scan_interactions(small_store).collect()
    film = stored.filter(pl.col("item_id") == "film")
    assert film.height == 100 and film[SOURCE].unique().to_list() == ["promo-app"]
    assert dict(film[FLAG].value_counts().iter_rows()) == {Flag.SOURCE_DOMINANCE.value: 40,
                                                           Flag.NEW_USER_BURST.value: 60}
    assert stored.filter(pl.col("item_id") != "film")[SOURCE].unique().to_list() == [FEED]
    events = clean_events(store.scan_interactions(small_store), store.scan_items(small_store)).collect()
    assert events.height == stored.height - 100 and "film" not in events["item_id"].to_list()
    assert SOURCE not in events.columns and FLAG not in events.columns


def test_store_info_counts_flagged_rows_and_an_unknown_user_flag_lifts(small_store: EngineHome,
                                                                       tmp_path: Path) -> None:
    post_lines(small_store, [("ghost", "b01", T0, "culture-app"), ("ghost", "b02", T0, "culture-app")])
    ingest(small_store)
    info = store_info(small_store)
    assert info["flagged"] == {"rows": 2, "by_reason": {Flag.UNKNOWN_USER.value: 2},
                               "by_source": {"culture-app": {Flag.UNKNOWN_USER.value: 2}}}
    assert info["left_out"] == {"rows": 2, "by_reason": {Flag.UNKNOWN_USER.value: 2}}
    # the weekly users feed lists the resident: their rows count again, and the stored flag stays
    ingest(small_store, users=write(tmp_path / "users-2.csv", "user_id,region_code\nghost,110101\n"))
    info = store_info(small_store)
    assert info["flagged"]["rows"] == 2 and info["left_out"] == {"rows": 0, "by_reason": {}}
    events = clean_events(store.scan_interactions(small_store), store.scan_items(small_store)).collect()
    assert events.filter(pl.col("user_id") == "ghost").height == 2


def test_files_written_before_provenance_read_as_unflagged(tmp_path: Path) -> None:
    """A store from before the provenance columns, then an ingest on top: both kinds of file read together."""
    home = EngineHome.at(tmp_path / "home")
    data = generate(DEMO.__class__(users=300, items=60, days=10, seed=2, end_date=DEMO.end_date))
    write_store_directly(home, data)
    before = store.scan_interactions(home).collect()
    assert before.height == data.interactions.height
    assert before[SOURCE].null_count() == before.height and before[FLAG].null_count() == before.height
    extra = tmp_path / "extra.csv"
    write(extra, "user_id,item_id,action,ts\n" + f"{data.users['user_id'][0]},{data.items['item_id'][0]},view,"
                                                 "2026-10-30T10:00:00+08:00\n")
    ingest(home, interactions=extra)
    after = store.scan_interactions(home).collect()
    assert after.height == before.height + 1
    assert after[SOURCE].drop_nulls().to_list() == ["file:extra.csv"]
    assert store_info(home)["left_out"]["rows"] == 0


# --------------------------------------------------------------------------- ordinary data


def test_ordinary_demo_data_is_not_flagged(tmp_path: Path) -> None:
    """The demo store (20k users, 454k interactions, ingested from files): nothing flagged."""
    demo = build_demo_home(tmp_path / "demo")
    info = store_info(demo.home)
    assert info["interactions"] > 400_000
    assert info["flagged"]["rows"] == 0, info["flagged"]


def test_ordinary_demo_data_without_registration_dates_is_almost_not_flagged() -> None:
    """Without ``registered_at`` every first interaction counts as new: the demo's first days
    (thousands of residents appearing) flag 173 of 453,894 rows (0.04%), and nothing else."""
    data = generate(DEMO)
    batch = data.interactions.with_columns(pl.lit("file:interactions.csv").alias(SOURCE))
    flags = flag_rows(batch, batch.head(0).lazy(), data.users.drop("registered_at"), PoisonSettings(judge_files=True))
    share = (flags.len() - flags.null_count()) / flags.len()
    assert share < 0.001
    assert set(flags.drop_nulls().unique().to_list()) <= {Flag.NEW_USER_BURST.value}
    first_days = batch.filter(flags.is_not_null())["ts"].max() - batch["ts"].min()
    assert first_days < timedelta(days=7)
