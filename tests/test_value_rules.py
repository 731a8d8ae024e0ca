"""Values checked for meaning, at ingest and in the API: a boolean is not a time (nor a
number), ratings lie on the configured scale, region codes have 6 digits, age bands are the
known ones, and items given different values twice in one run are reported by id."""

from __future__ import annotations

import json
import warnings
from pathlib import Path

import polars as pl
import pytest
from pydantic import ValidationError
from typer.testing import CliRunner

with warnings.catch_warnings():  # starlette's TestClient warns about its httpx dependency
    warnings.simplefilter("ignore")
    from fastapi.testclient import TestClient

from features import store
from features.ingest import CONFLICT_EXAMPLES, ingest
from features.validate import REASON
from recsys.contract import AGE_BANDS, InteractionIn, Reason
from recsys.home import EngineHome
from recsys.settings import EngineSettings
from serving.app import create_app
from tests.serving_fixtures import KEY_HEADERS, keyed_settings, rules_data, write_bundle
from training.cli import app


def write_csv(path: Path, header: str, *rows: str) -> Path:
    path.write_text("\n".join([header, *rows]) + "\n", encoding="utf-8")
    return path


@pytest.fixture
def home(tmp_path: Path) -> EngineHome:
    return EngineHome.at(tmp_path / "home")


def quarantined(home: EngineHome, table: str, key: str) -> dict[str, str]:
    rows = store.scan_quarantine(home).collect().filter(pl.col("table") == table)
    return dict(zip(rows[key].to_list(), rows[REASON].to_list(), strict=True))


# ---- a boolean is not a time ------------------------------------------------------------------
def test_the_contract_model_refuses_booleans_for_time_and_value() -> None:
    base = {"user_id": "u", "item_id": "i", "action": "rate"}
    for bad in ({"ts": True}, {"ts": False}, {"ts": 1795000000, "value": True}):
        with pytest.raises(ValidationError, match="boolean"):
            InteractionIn.model_validate({**base, **bad})
    assert InteractionIn.model_validate({**base, "ts": 1795000000, "value": 1}).value == 1.0


def test_a_boolean_time_in_an_api_segment_is_quarantined(home: EngineHome, tmp_path: Path) -> None:
    ingest(home, items=write_csv(tmp_path / "items.csv", "item_id,title", "e1,Opera"))
    home.incoming.mkdir(parents=True)
    lines = [{"user_id": "u1", "item_id": "e1", "action": "view", "ts": True},
             {"user_id": "u2", "item_id": "e1", "action": "rate", "ts": "2026-11-20T10:00:00+08:00", "value": True},
             {"user_id": "u3", "item_id": "e1", "action": "view", "ts": "2026-11-20T10:00:00+08:00"}]
    (home.incoming / "segment.jsonl").write_text("".join(json.dumps(line) + "\n" for line in lines))
    counts = ingest(home).tables["incoming"]
    assert (counts.accepted, counts.quarantined) == (1, 2)
    assert quarantined(home, "incoming", "user_id") == {"u1": Reason.BAD_TIME, "u2": Reason.BAD_VALUE}
    assert store.scan_interactions(home).collect()["user_id"].to_list() == ["u3"]  # no 1970 event


# ---- the rating scale -------------------------------------------------------------------------
def ratings_file(tmp_path: Path) -> Path:
    values = ["0.5", "5", "10", "-10", "10.5", "-11", "100", ""]
    return write_csv(tmp_path / "ratings.csv", "user_id,item_id,action,ts,value",
                     *(f"u{i},e1,rate,2026-11-20T10:00:00+08:00,{v}" for i, v in enumerate(values)),
                     "u9,e1,view,2026-11-20T10:00:00+08:00,300")  # seconds watched: not a rating


def test_ratings_outside_the_scale_are_quarantined(home: EngineHome, tmp_path: Path) -> None:
    ingest(home, items=write_csv(tmp_path / "items.csv", "item_id,title", "e1,Opera"))
    counts = ingest(home, interactions=ratings_file(tmp_path)).tables["interactions"]
    assert counts.reasons == {"rating_out_of_range": 3}
    assert quarantined(home, "interactions", "user_id") == {
        "u4": "rating_out_of_range", "u5": "rating_out_of_range", "u6": "rating_out_of_range"}
    assert sorted(store.scan_interactions(home).collect()["user_id"]) == ["u0", "u1", "u2", "u3", "u7", "u9"]


def test_the_rating_scale_is_configuration(home: EngineHome, tmp_path: Path) -> None:
    ingest(home, items=write_csv(tmp_path / "items.csv", "item_id,title", "e1,Opera"))
    five_stars = EngineSettings(rating_min=1, rating_max=5)
    counts = ingest(home, interactions=ratings_file(tmp_path), settings=five_stars).tables["interactions"]
    assert counts.reasons == {"rating_out_of_range": 6}  # 0.5, 10, -10, 10.5, -11, 100
    with pytest.raises(ValidationError, match="rating_min"):
        EngineSettings(rating_min=5, rating_max=5)
    assert (EngineSettings().rating_min, EngineSettings().rating_max) == (-10, 10)


@pytest.fixture(scope="module")
def bundle(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return write_bundle(rules_data(seed=0), tmp_path_factory.mktemp("values") / "bundle")


def test_the_api_rejects_booleans_and_ratings_off_the_scale(bundle: Path, tmp_path: Path) -> None:
    batch = [
        {"user_id": "v1", "item_id": "i5", "action": "view", "ts": True},
        {"user_id": "v1", "item_id": "i5", "action": "rate", "ts": 1790000000, "value": True},
        {"user_id": "v1", "item_id": "i5", "action": "rate", "ts": 1790000000, "value": 11},
        {"user_id": "v1", "item_id": "i5", "action": "rate", "ts": 1790000000, "value": -10.5},
        {"user_id": "v1", "item_id": "i6", "action": "rate", "ts": 1790000000, "value": 0.5},
        {"user_id": "v1", "item_id": "i7", "action": "rate", "ts": 1790000000, "value": 10},
        {"user_id": "v1", "item_id": "i8", "action": "view", "ts": 1790000000, "value": 3600},
    ]
    app_settings = keyed_settings(home=tmp_path / "home", model_dir=bundle)
    with TestClient(create_app(app_settings), headers=KEY_HEADERS) as client:
        response = client.post("/v1/interactions", json=batch)
    assert response.status_code == 202
    body = response.json()
    assert body["accepted"] == 3
    assert [(r["index"], r["reason"]) for r in body["rejected"]] == [
        (0, "unparseable_time"), (1, "unparseable_value"), (2, "rating_out_of_range"), (3, "rating_out_of_range")]
    assert "-10..10" in body["rejected"][2]["detail"]


# ---- users and items --------------------------------------------------------------------------
def test_region_codes_and_age_bands_are_checked(home: EngineHome, tmp_path: Path) -> None:
    assert AGE_BANDS == ("0-17", "18-34", "35-59", "60+")
    users = write_csv(
        tmp_path / "users.csv", "user_id,region_code,age_band,area_type",
        "ok1,110101,18-34,urban", "ok2,,60+,rural", "ok3, 110229 , 0-17 ,", "ok4,110119,,",
        "r1,1101,18-34,urban", "r2,11010a,18-34,urban", "r3,beijing,,", "r4,1101011,,",
        "a1,110101,25-34,urban", "a2,110101,60 +,urban", "a3,,adult,",
    )
    counts = ingest(home, users=users).tables["users"]
    assert (counts.accepted, counts.quarantined) == (4, 7)
    assert quarantined(home, "users", "user_id") == {
        **{u: "invalid_region_code" for u in ("r1", "r2", "r3", "r4")},
        **{u: "unknown_age_band" for u in ("a1", "a2", "a3")}}
    stored = store.scan_users(home).collect().sort("user_id")
    assert stored.filter(pl.col("user_id") == "ok3").select("region_code", "age_band").row(0) == ("110229", "0-17")

    items = write_csv(tmp_path / "items.csv", "item_id,title,region_code",
                      "e1,Opera,110229", "e2,Digital,", "e3,Bad,北京", "e4,Short,11022")
    counts = ingest(home, items=items).tables["items"]
    assert counts.accepted == 2 and counts.reasons == {"invalid_region_code": 2}


def test_conflicting_item_rows_are_reported_by_id_and_the_last_wins(home: EngineHome, tmp_path: Path) -> None:
    rows = ["e1,Opera,110101", "e1,Opera,110101",            # the same row twice: a duplicate, no conflict
            "e2,Film,110102", "e2,Film (new cut),110102",    # two versions: the last wins
            "e3,Talk,110103", "e3,Talk,110104", "e3,Talk,110103"]
    rows += [f"x{i},Show,110101" for i in range(7)] + [f"x{i},Show (moved),110105" for i in range(7)]
    summary = ingest(home, items=write_csv(tmp_path / "items.csv", "item_id,title,region_code", *rows))
    counts = summary.tables["items"]
    assert counts.conflicting_ids == 9
    assert counts.conflict_examples == ["e2", "e3", "x0", "x1", "x2"][:CONFLICT_EXAMPLES]
    assert summary.to_dict()["tables"]["items"]["conflicting_ids"] == 9
    stored = dict(store.scan_items(home).collect().select("item_id", "title").iter_rows())
    assert stored["e2"] == "Film (new cut)" and stored["x3"] == "Show (moved)"
    regions = dict(store.scan_items(home).collect().select("item_id", "region_code").iter_rows())
    assert regions["e3"] == "110103"

    again = write_csv(tmp_path / "items2.csv", "item_id,title,region_code", "e9,New,110101")
    assert "conflicting_ids" not in ingest(home, items=again).to_dict()["tables"]["items"]  # usual shape


def test_the_cli_names_conflicting_ids(home: EngineHome, tmp_path: Path) -> None:
    items = write_csv(tmp_path / "items.csv", "item_id,title", "e1,Opera", "e1,Opera (revised)")
    result = CliRunner().invoke(app, ["ingest", "--home", str(home.root), "--items", str(items)])
    assert result.exit_code == 0, result.output
    assert "items: 1 id(s) given different values in this run, the last row wins: e1" in result.stdout
