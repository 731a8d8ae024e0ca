"""Residents' requests (点单): ingest, the API, k-anonymous district counts, and answering.

The answering acceptance runs on a copy of the shared trained demo home: a rural senior asks
for 戏曲 in a district whose venues offer none (where the demo's seniors already asked for it);
an opera item in that district arrives through
``recsys ingest``, the model is retrained and reloaded, and the item is in the resident's top
10 with the request's reason while the request reads ``matched``.
"""

from __future__ import annotations

import json
from datetime import UTC, datetime, timedelta
from pathlib import Path

import numpy as np
import polars as pl
import pytest
from fastapi.testclient import TestClient

from features.ingest import ingest
from recsys.home import EngineHome
from serving.app import create_app
from tests.serving_fixtures import KEY_HEADERS, keyed_settings

OPERA = "戏曲"


def requests_file(path: Path, rows: list[dict]) -> Path:
    pl.DataFrame(rows).write_csv(path)
    return path


def test_ingest_keeps_one_request_per_user_and_target_and_forgets_erased_users(tmp_path: Path) -> None:
    home = EngineHome(tmp_path / "home")
    opera = {"user_id": "u1", "region_code": "110116", "category": OPERA, "item_id": None}
    rows = [
        {**opera, "ts": "2026-10-01T10:00:00+08:00"},
        {**opera, "ts": "2026-10-09T10:00:00+08:00"},
        {**opera, "ts": "2026-11-20T10:00:00+08:00"},
        {"user_id": "u2", "region_code": "110116", "category": None, "item_id": "pg1", "ts": "2026-10-02"},
        {"user_id": "u3", "region_code": "11011", "category": OPERA, "item_id": None, "ts": "2026-10-02"},
        {"user_id": "u4", "region_code": "110116", "category": None, "item_id": None, "ts": "2026-10-02"},
    ]
    counts = ingest(home, requests=requests_file(tmp_path / "r.csv", rows)).to_dict()["tables"]["requests"]
    assert counts["reconciles"] and counts["accepted"] == 3 and counts["duplicates"] == 1
    assert counts["reasons"] == {"invalid_region_code": 1, "invalid_request": 1}
    stored = pl.read_parquet(home.requests)
    assert sorted(stored["user_id"].to_list()) == ["u1", "u1", "u2"]
    again = ingest(home, requests=requests_file(tmp_path / "r2.csv", rows[:1])).to_dict()["tables"]["requests"]
    assert again["duplicates"] == 1 and pl.read_parquet(home.requests).height == 3
    home.tombstones.write_text(json.dumps({"user_id": "u1", "erased_at": "2026-11-01T00:00:00Z"}) + "\n")
    ingest(home)
    assert pl.read_parquet(home.requests)["user_id"].to_list() == ["u2"]


@pytest.fixture
def rural_opera(trained_demo_copy: Path) -> dict:
    """The demo's rural district without any opera item, whose seniors asked for it (the planted
    pattern), and seniors of it who have not asked yet."""
    home = EngineHome.at(trained_demo_copy)
    items = pl.read_parquet(home.items)
    users = pl.read_parquet(home.users)
    planted = pl.read_parquet(home.requests)
    with_opera = set(items.filter(pl.col("category") == OPERA)["region_code"].drop_nulls().to_list())
    rural = (users.filter(pl.col("area_type") == "rural").group_by("region_code").len()
             .filter(~pl.col("region_code").is_in(sorted(with_opera))).sort("len", descending=True))
    assert rural.height, "the demo cloud has a rural district without opera"
    region = rural["region_code"][0]
    asked = planted.filter((pl.col("region_code") == region) & (pl.col("category") == OPERA))["user_id"]
    assert asked.n_unique() >= 10, "the demo's seniors there asked for opera"
    senior = users.filter((pl.col("region_code") == region) & (pl.col("age_band") == "60+")
                          & ~pl.col("user_id").is_in(planted["user_id"].implode())).sort("user_id")
    placed = items.filter((pl.col("region_code") == region) & pl.col("lat").is_not_null())
    return {"root": trained_demo_copy, "home": home, "region": region, "user": senior["user_id"][0],
            "asked": asked.n_unique(), "lat": float(placed["lat"].mean()), "lon": float(placed["lon"].mean()),
            "others": senior["user_id"][1:12]}


def test_a_request_is_answered_by_a_new_item_after_ingest_and_retraining(rural_opera: dict) -> None:
    from tests.demo_store import train_cli

    root, region, user = rural_opera["root"], rural_opera["region"], rural_opera["user"]
    settings = keyed_settings(home=root, reload_interval=0)
    with TestClient(create_app(settings), headers=KEY_HEADERS) as client:
        body = {"user_id": user, "region_code": region, "category": OPERA, "note": "想在镇上看京剧"}
        first = client.post("/v1/requests", json=body)
        assert first.status_code == 201, first.text
        assert first.json()["status"] == "open"
        again = client.post("/v1/requests", json=body)
        assert again.status_code == 200 and again.json()["request_id"] == first.json()["request_id"]
        assert client.post("/v1/requests", json={"user_id": user, "region_code": region}).status_code == 422
        opera = client.get(f"/v1/regions/{region}/requests").json()["targets"][0]
        assert opera["category"] == OPERA and opera["requesters"] == rural_opera["asked"] + 1
        dance = {"user_id": rural_opera["others"][0], "region_code": region, "category": "舞蹈"}
        assert client.post("/v1/requests", json=dance).status_code == 201
        fresh = [t for t in client.get(f"/v1/regions/{region}/requests").json()["targets"] if t["category"] == "舞蹈"]
        assert fresh and fresh[0]["suppressed"] and fresh[0]["requesters"] is None  # one of fewer than k residents
        for other in rural_opera["others"]:
            client.post("/v1/requests", json={**body, "user_id": other})
        shown = client.get(f"/v1/regions/{region}/requests").json()["targets"][0]
        assert shown["requesters"] == rural_opera["asked"] + 1 + len(rural_opera["others"]) and not shown["suppressed"]

    start = datetime.now(UTC) + timedelta(days=3)
    item = {"item_id": "op-answer-1", "title": "京剧《锁麟囊》进乡村", "kind": "opera", "category": OPERA,
            "tags": "京剧|进社区演出", "region_code": region, "venue_id": f"v-{region}-stage",
            "lat": rural_opera["lat"], "lon": rural_opera["lon"], "starts_at": start.isoformat(),
            "ends_at": (start + timedelta(hours=3)).isoformat(), "capacity": 300, "provider": "区文化馆联盟",
            "is_free": True}
    items_file = root / "new-item.csv"
    pl.DataFrame([item]).write_csv(items_file)
    ingested = ingest(rural_opera["home"], items=items_file).to_dict()
    assert ingested["tables"]["items"]["accepted"] == 1
    train_cli(root, "--model", "hybrid", "--force")

    with TestClient(create_app(settings), headers=KEY_HEADERS) as client:
        mine = client.get(f"/v1/users/{user}/requests").json()["requests"]
        assert [r["status"] for r in mine] == ["matched"] and mine[0]["matched_item_id"] == "op-answer-1"
        listed = client.get(f"/v1/users/{user}/recommendations", params={"n": 10}).json()["items"]
        answer = [i for i in listed if i["item_id"] == "op-answer-1"]
        assert answer and answer[0]["reason"] == "你点单的戏曲演出已上线", listed


@pytest.fixture(scope="module")
def small_app(tmp_path_factory: pytest.TempPathFactory) -> dict:
    from tests.serving_fixtures import rules_data, write_bundle

    root = tmp_path_factory.mktemp("requests-app")
    data = rules_data()
    bundle = write_bundle(data, root / "bundle")
    return {"home": root / "home", "bundle": bundle, "data": data}


def test_an_offered_category_matches_at_once_and_leads_the_list(small_app: dict) -> None:
    data = small_app["data"]
    user = data.users.users.id_of(1)
    region = data.users.labels("region_code")[1]
    catalog = data.catalog
    here = catalog.region_is(region) & catalog.kind_is("event") & ~catalog.hidden & np.isnan(catalog.ends_at)
    offline = np.flatnonzero(here).tolist()
    category = catalog.category_name(offline[0])
    settings = keyed_settings(home=small_app["home"], model_dir=small_app["bundle"])
    with TestClient(create_app(settings), headers=KEY_HEADERS) as client:
        made = client.post("/v1/requests", json={"user_id": user, "region_code": region, "category": category})
        assert made.status_code == 201 and made.json()["status"] == "matched", made.text
        listed = client.get(f"/v1/users/{user}/recommendations", params={"n": 10}).json()["items"]
        assert listed[0]["reason"] == f"你点单的{category}活动已上线"
        assert catalog.category_name(catalog.items.index_of(listed[0]["item_id"])) == category
        assert client.get(f"/v1/users/{user}/requests").json()["requests"][0]["status"] == "matched"
        erased = client.delete(f"/v1/users/{user}")
        assert erased.status_code in (200, 202), erased.text
        assert client.get(f"/v1/users/{user}/requests").json()["requests"] == []
        again = client.post("/v1/requests", json={"user_id": user, "region_code": region, "category": category})
        assert again.status_code == 409
        assert client.post("/v1/requests", json={"user_id": "x", "region_code": region, "category": category,
                                                  "note": "长" * 400}).status_code == 422
        assert client.post("/v1/requests", json={"user_id": "x", "region_code": region, "category": category},
                           headers={"X-API-Key": "wrong-key-wrong-key"}).status_code == 401
