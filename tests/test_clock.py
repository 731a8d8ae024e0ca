"""A clock nobody can push: event times further ahead of this machine's clock than
``max_future_skew_days`` are rejected by the API, quarantined by ingest, skipped by the
servers' replay, and the planner report's window never ends after the wall clock (even on a
store that already holds a ``9999-12-31`` event)."""

from __future__ import annotations

import datetime as dt
import json
import warnings
from pathlib import Path

import polars as pl
import pytest
from typer.testing import CliRunner

with warnings.catch_warnings():  # starlette's TestClient warns about its httpx dependency
    warnings.simplefilter("ignore")
    from fastapi.testclient import TestClient

from features import schemas, store
from features.ingest import ingest
from features.validate import REASON, validate_interactions
from recsys.contract import Reason, latest_event_time
from recsys.home import EngineHome
from recsys.settings import EngineSettings
from serving.app import create_app
from serving.erasure import ErasedUsers
from serving.live import LiveInteractions
from serving.peers import PeerInteractions
from serving.segment_tail import SegmentTail
from serving.segments import SegmentWriter
from tests.serving_fixtures import KEY_HEADERS, keyed_settings, rules_data, write_bundle
from tests.test_report_aggregates import tiny_items, tiny_users
from training.cli import app
from training.report import write_report

UTC = dt.UTC
FAR_FUTURE = "9999-12-31T00:00:00+00:00"


def now() -> dt.datetime:
    return dt.datetime.now(UTC)


def iso(moment: dt.datetime) -> str:
    return moment.isoformat()


# ---- the rule ---------------------------------------------------------------------------------
def test_latest_event_time_is_the_clock_plus_the_skew() -> None:
    clock = dt.datetime(2026, 11, 30, 12, tzinfo=UTC)
    assert latest_event_time(1.0, clock) == dt.datetime(2026, 12, 1, 12, tzinfo=UTC)
    assert latest_event_time(0.0, clock) == clock
    assert latest_event_time(1e300, clock) == dt.datetime.max.replace(tzinfo=UTC)  # no overflow
    assert EngineSettings().max_future_skew_days == 1.0


def test_validation_quarantines_only_times_after_the_limit() -> None:
    limit = dt.datetime(2026, 11, 30, 12, tzinfo=UTC)
    raw = pl.DataFrame({
        "user_id": ["u"] * 4, "item_id": ["i"] * 4, "action": ["view"] * 4, "value": [None] * 4,
        "ts": ["2026-11-30T12:00:00+00:00", "2026-11-30T12:00:00.000001+00:00", "9999-12-31", "soon"],
    }, schema={c: pl.String for c in ("user_id", "item_id", "action", "ts", "value")})
    catalog = pl.LazyFrame({"item_id": ["i"]})
    reasons = validate_interactions(raw.lazy(), catalog, "UTC", latest=limit).collect()[REASON].to_list()
    assert reasons == [None, Reason.FUTURE_TIME, Reason.FUTURE_TIME, Reason.BAD_TIME]
    unlimited = validate_interactions(raw.lazy(), catalog, "UTC").collect()[REASON].to_list()
    assert unlimited == [None, None, None, Reason.BAD_TIME]


# ---- ingest -----------------------------------------------------------------------------------
def write_csv(path: Path, header: str, *rows: str) -> Path:
    path.write_text("\n".join([header, *rows]) + "\n", encoding="utf-8")
    return path


def test_ingest_quarantines_future_rows_and_accepts_the_others(tmp_path: Path) -> None:
    home = EngineHome.at(tmp_path / "home")
    items = write_csv(tmp_path / "items.csv", "item_id,title", "e1,Opera", "e2,Film")
    soon, later = now() + dt.timedelta(hours=1), now() + dt.timedelta(days=3)
    interactions = write_csv(
        tmp_path / "interactions.csv", "user_id,item_id,action,ts,value",
        "u1,e1,view,2026-11-20T10:00:00+08:00,",
        f"u2,e1,view,{FAR_FUTURE},",                # the provider's "no date"
        f"u3,e2,click,{iso(later)},",               # three days ahead: beyond the 1-day skew
        f"u4,e2,reserve,{iso(soon)},",              # a clock one hour fast: within the skew
        "u5,e2,view,4102444800,",                   # 2100-01-01 as epoch seconds
    )
    summary = ingest(home, items=items, interactions=interactions)
    counts = summary.tables["interactions"]
    assert (counts.input_rows, counts.accepted, counts.quarantined) == (5, 2, 3)
    assert counts.reasons == {Reason.FUTURE_TIME.value: 3}
    stored = store.scan_interactions(home).collect().sort("user_id")
    assert stored["user_id"].to_list() == ["u1", "u4"]
    quarantined = store.scan_quarantine(home).collect().sort("user_id")
    assert quarantined["user_id"].to_list() == ["u2", "u3", "u5"]
    assert set(quarantined[REASON]) == {"future_time"}
    assert quarantined.filter(pl.col("user_id") == "u2")["ts"].item() == FAR_FUTURE  # raw text kept


def test_the_skew_is_one_setting(tmp_path: Path) -> None:
    home = EngineHome.at(tmp_path / "home")
    items = write_csv(tmp_path / "items.csv", "item_id,title", "e1,Opera")
    ahead = now() + dt.timedelta(days=3)
    interactions = write_csv(tmp_path / "interactions.csv", "user_id,item_id,action,ts",
                             f"u1,e1,view,{iso(ahead)}", f"u2,e1,view,{FAR_FUTURE}")
    summary = ingest(home, items=items, interactions=interactions,
                     settings=EngineSettings(max_future_skew_days=5))
    assert summary.tables["interactions"].accepted == 1
    assert summary.tables["interactions"].reasons == {"future_time": 1}


# ---- the API ----------------------------------------------------------------------------------
@pytest.fixture(scope="module")
def bundle(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return write_bundle(rules_data(seed=0), tmp_path_factory.mktemp("clock") / "bundle")


def test_a_future_dated_post_is_rejected_with_future_time(bundle: Path, tmp_path: Path) -> None:
    home = tmp_path / "home"
    batch = [
        {"user_id": "c1", "item_id": "i5", "action": "view", "ts": "9999-12-31"},
        {"user_id": "c1", "item_id": "i6", "action": "view", "ts": iso(now() - dt.timedelta(hours=1))},
        {"user_id": "c1", "item_id": "i7", "action": "view", "ts": (now() + dt.timedelta(days=2)).timestamp()},
        {"user_id": "c1", "item_id": "i8", "action": "view", "ts": iso(now() + dt.timedelta(minutes=5))},
    ]
    with TestClient(create_app(keyed_settings(home=home, model_dir=bundle)), headers=KEY_HEADERS) as client:
        response = client.post("/v1/interactions", json=batch)
    assert response.status_code == 202
    body = response.json()
    assert body["accepted"] == 2
    assert [(r["index"], r["reason"]) for r in body["rejected"]] == [
        (0, "future_time"), (2, "future_time")]
    assert "9999-12-31" in body["rejected"][0]["detail"]
    lines = [json.loads(line) for path in EngineHome.at(home).incoming.glob("*.jsonl")
             for line in path.read_text(encoding="utf-8").splitlines()]
    assert sorted(line["item_id"] for line in lines) == ["i6", "i8"]  # nothing rejected is kept


# ---- the servers' replay ----------------------------------------------------------------------
def test_replay_skips_lines_from_the_future(tmp_path: Path) -> None:
    """A segment written by a server that did not check the clock: its future line would
    outlive every reload in live state (no data_end ever reaches it), so it is not applied."""
    directory = tmp_path / "incoming"
    other = SegmentWriter(directory, started=dt.datetime(2026, 11, 1, tzinfo=UTC), pid=2)
    recent = iso(now() - dt.timedelta(hours=1))
    other.append([{"user_id": "u", "item_id": "i1", "action": "view", "ts": recent, "value": None},
                  {"user_id": "u", "item_id": "i2", "action": "view", "ts": FAR_FUTURE, "value": None}])
    live = LiveInteractions()
    manifest = {"data_end": "2026-11-01 00:00:00+00:00"}
    served = _served(manifest)
    peers = PeerInteractions(SegmentTail(directory, directory / "own.jsonl"), live,
                             ErasedUsers(tmp_path / "none.jsonl"), lambda: served)
    stats = peers.poll()
    assert (stats.lines, stats.applied, stats.future, stats.invalid) == (2, 1, 1, 0)
    assert set(live.of("u")) == {"i1"}


def _served(manifest: dict) -> object:
    import functools
    from types import SimpleNamespace

    from serving.state import ServedModel

    stub = SimpleNamespace(bundle=SimpleNamespace(settings=EngineSettings()), manifest=manifest, version="1")
    stub.data_end = functools.partial(ServedModel.data_end, stub)  # the server's own reading of data_end
    return stub


# ---- the planner report -----------------------------------------------------------------------
def _older_store(root: Path) -> EngineHome:
    """A store written before the clock rule: one 9999-12-31 event among real ones."""
    home = EngineHome(root)
    home.store.mkdir(parents=True, exist_ok=True)
    tiny_users().write_parquet(home.users)
    tiny_items().write_parquet(home.items)
    real = [dict(user_id=u, item_id=i, action="view", ts=dt.datetime(2026, 10, 30, tzinfo=UTC), value=None)
            for u, i in (("u1", "opA"), ("u2", "fiA"), ("u5", "fiB"))]
    future = [dict(user_id="u3", item_id="opA", action="view",
                   ts=dt.datetime(9999, 12, 31, 23, 59, 59, tzinfo=UTC), value=None)]
    for day, rows in (("2026-10-30", real), ("9999-12-31", future)):
        partition = home.interactions / f"date={day}"
        partition.mkdir(parents=True, exist_ok=True)
        pl.DataFrame(rows, schema=schemas.INTERACTIONS).write_parquet(partition / "old-ingest.parquet")
    home.ingest_log.write_text(json.dumps({"ingest_id": "old-ingest"}) + "\n", encoding="utf-8")
    return home


def test_report_runs_normally_on_a_store_holding_a_9999_event(tmp_path: Path) -> None:
    home = _older_store(tmp_path / "home")
    assert store.scan_interactions(home).select(pl.len()).collect().item() == 4  # the future row is there
    result = write_report(home, window_days=7, min_users=1)
    assert result.window_end == dt.datetime(2026, 10, 30, tzinfo=UTC)  # the latest real interaction
    assert result.window_start == dt.datetime(2026, 10, 23, tzinfo=UTC)
    meta = json.loads((result.out_dir / "meta.json").read_text(encoding="utf-8"))
    assert meta["window_end"] == "2026-10-30T00:00:00+00:00"
    assert "2026" in (result.out_dir / "report.html").read_text(encoding="utf-8")

    cli = CliRunner().invoke(app, ["report", "--home", str(home.root), "--window-days", "7",
                                   "--min-users", "1", "--json"])
    assert cli.exit_code == 0, cli.output
    assert json.loads(cli.stdout)["window_end"] == "2026-10-30T00:00:00+00:00"


def test_report_refuses_a_window_end_in_the_future(tmp_path: Path) -> None:
    home = _older_store(tmp_path / "home")
    cli = CliRunner().invoke(app, ["report", "--home", str(home.root), "--at", "2999-01-01T00:00:00+00:00"])
    assert cli.exit_code == 2
    assert "in the future" in cli.stderr


def test_window_never_ends_after_now() -> None:
    from features.aggregates import window_bounds

    interactions = pl.LazyFrame({"ts": [dt.datetime(2026, 10, 1, tzinfo=UTC), dt.datetime(2026, 12, 5, tzinfo=UTC)]},
                                schema={"ts": schemas.UTC_TIME})
    clock = dt.datetime(2026, 11, 30, tzinfo=UTC)
    latest = window_bounds(interactions, window_days=7, at=None, now=clock).collect()
    assert latest["window_end"].item() == dt.datetime(2026, 10, 1, tzinfo=UTC)
    given = window_bounds(interactions, window_days=7, at=dt.datetime(2027, 1, 1, tzinfo=UTC), now=clock).collect()
    assert given["window_end"].item() == clock
