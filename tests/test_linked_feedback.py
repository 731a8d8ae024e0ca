"""Feedback linked to served lists: recommendation_id and position kept from the API to the store,
and impressions recorded without counting as engagement."""

from __future__ import annotations

import time
from pathlib import Path

import polars as pl
import pytest
from fastapi.testclient import TestClient

from features import store
from features.ingest import ingest
from recsys.home import EngineHome
from serving.app import create_app
from tests.serving_fixtures import KEY_HEADERS, keyed_settings, rules_data, write_bundle


@pytest.fixture(scope="module")
def bundle(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return write_bundle(rules_data(seed=0), tmp_path_factory.mktemp("bundle") / "bundle")


def test_linked_interactions_and_impressions_reach_the_store(bundle: Path, tmp_path: Path) -> None:
    home = EngineHome.at(tmp_path)
    with TestClient(create_app(keyed_settings(home=tmp_path, model_dir=bundle)), headers=KEY_HEADERS) as client:
        answer = client.get("/v1/users/u1/recommendations", params={"n": 5}).json()
        listed = [i["item_id"] for i in answer["items"]]
        rec = answer["recommendation_id"]
        now = time.time()
        shown = [{"user_id": "u1", "item_id": item, "action": "impression", "ts": now,
                  "recommendation_id": rec, "position": p} for p, item in enumerate(listed, start=1)]
        click = {"user_id": "u1", "item_id": listed[1], "action": "click", "ts": now + 5,
                 "recommendation_id": rec, "position": 2}
        posted = client.post("/v1/interactions", json=[*shown, click]).json()
        assert posted["accepted"] == len(listed) + 1 and not posted["rejected"]
        bad = client.post("/v1/interactions", json=[{**click, "position": 0}, {**click, "position": "2"}]).json()
        assert [r["index"] for r in bad["rejected"]] == [0, 1]
        # an impression is not engagement: the shown items stay listable, the clicked one leaves
        again = [i["item_id"] for i in client.get("/v1/users/u1/recommendations", params={"n": 5}).json()["items"]]
        assert listed[1] not in again and listed[0] in again
    items = tmp_path / "items.csv"
    pl.DataFrame({"item_id": sorted(set(listed))}).write_csv(items)
    ingest(home, items=items)
    rows = store.scan_interactions(home).collect()
    assert rows.filter(pl.col("action") == "impression").height == len(listed)
    stored_click = rows.filter(pl.col("action") == "click").row(0, named=True)
    assert stored_click["recommendation_id"] == rec and stored_click["position"] == 2
