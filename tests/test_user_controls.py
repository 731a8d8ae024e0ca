"""Residents control their recommendations, in-process and on files.

On a bundle of the planted rules data whose catalogue has ``min_age`` 18 items and an
editorial pool: the minors rule in the API (both paths), batch and evaluation; editorial
slots for personalised, non-personalised and district lists; personalisation off equals an
anonymous caller of no district; a removed tag leaves the list at once and comes back with an
engagement; ``not_interested`` leaves out the item and its three nearest items; the controls
log survives a new app on the same home, is counted in /metrics and is erased with the user.
The real two-worker server is tests/test_user_controls_workers.py.
"""

from __future__ import annotations

import dataclasses
import json
import warnings
from collections.abc import Iterator
from datetime import UTC, datetime
from pathlib import Path

import numpy as np
import pytest

with warnings.catch_warnings():  # starlette's TestClient warns about its httpx dependency
    warnings.simplefilter("ignore")
    from fastapi.testclient import TestClient

from features.splits import Split
from recsys import audience
from recsys.bundle import ModelBundle
from recsys.controls import ControlsLog, read_controls
from recsys.home import EngineHome
from recsys.models.base import TrainingData
from serving.app import create_app
from tests.serving_fixtures import KEY_HEADERS, READ_KEY, T0, iso, keyed_settings, rules_data, write_bundle
from training.batch import recommend_batch
from training.evaluate import evaluation_lists

AT = iso(T0)
ADMIN_KEY = "user-controls-admin-key"
EDITORIAL = ("i5", "i40", "i41", "i66")
MINOR = "u3"


def controlled_data() -> TrainingData:
    """The rules data with every 4th item (from 1) for adults only and a small editorial pool;
    u3 is a minor."""
    data = rules_data()
    catalog = data.catalog
    n = len(catalog)
    min_age = np.array([18.0 if i % 4 == 1 else np.nan for i in range(n)])
    pool = np.isin(np.asarray(catalog.items.ids), EDITORIAL)
    catalog = dataclasses.replace(catalog, min_age=min_age, editorial=pool)
    users = data.users
    ages = users.labels("age_band").tolist()
    ages[users.users.index_of(MINOR)] = "0-17"
    minors = dataclasses.replace(users, age=np.array([users.ages.index(a) if a in users.ages else -1 for a in ages]))
    if "0-17" not in users.ages:
        vocabulary = [*users.ages, "0-17"]
        minors = dataclasses.replace(users, ages=vocabulary,
                                     age=np.array([vocabulary.index(a) if a else -1 for a in ages]))
    return dataclasses.replace(data, catalog=catalog, users=minors)


@pytest.fixture(scope="module")
def data() -> TrainingData:
    return controlled_data()


@pytest.fixture(scope="module")
def bundle_dir(data: TrainingData, tmp_path_factory: pytest.TempPathFactory) -> Path:
    return write_bundle(data, tmp_path_factory.mktemp("controls") / "bundle")


def make_client(home: Path, bundle_dir: Path) -> TestClient:
    app = create_app(keyed_settings(home=home, model_dir=bundle_dir, admin_key=ADMIN_KEY))
    return TestClient(app, headers=KEY_HEADERS)


@pytest.fixture
def client(tmp_path: Path, bundle_dir: Path) -> Iterator[TestClient]:
    with make_client(tmp_path / "home", bundle_dir) as test_client:
        yield test_client


def listed(client: TestClient, user: str, n: int = 10, **params: object) -> dict:
    response = client.get(f"/v1/users/{user}/recommendations", params={"n": n, "at": AT, **params})
    assert response.status_code == 200, response.text
    return response.json()


def ids(body: dict) -> list[str]:
    return [item["item_id"] for item in body["items"]]


def restricted_ids(data: TrainingData) -> set[str]:
    mask = audience.restricted(data.catalog, "0-17")
    assert mask is not None
    return {data.catalog.items.id_of(int(i)) for i in np.flatnonzero(mask)}


# ---- minors ------------------------------------------------------------------------------
def test_a_minor_never_gets_an_adults_only_item_in_api_batch_or_evaluation(client, data, bundle_dir):
    adults_only = restricted_ids(data)
    for n in (10, 40):  # the precomputed path and the full path
        assert not set(ids(listed(client, MINOR, n))) & adults_only
    client.post("/v1/interactions", json=[{"user_id": MINOR, "item_id": "i0", "action": "view", "ts": AT}])
    assert not set(ids(listed(client, MINOR, 40))) & adults_only  # live history: the full path
    adult = ids(listed(client, "u4", 40))
    assert set(adult) & adults_only, "adults get adults-only items (else the test proves nothing)"
    cold = client.get("/v1/users/new-teen/recommendations", params={"n": 40, "at": AT}).json()
    assert set(ids(cold)) & adults_only  # the caller did not say the age: an adult
    bundle = ModelBundle.load(bundle_dir)
    frame = recommend_batch(bundle, None, 40, T0)
    assert not set(frame.filter(frame["user_id"] == MINOR)["item_id"].to_list()) & adults_only
    split = Split(train=data, truth=data.weights, cutoff=datetime.fromtimestamp(T0, UTC),
                  cold_items=np.zeros(len(data.catalog), dtype=bool))
    _, rows, recs = evaluation_lists(bundle.model, split, bundle.settings)
    minor_row = int(np.flatnonzero(rows == data.users.users.index_of(MINOR))[0])
    shown = {data.catalog.items.id_of(int(i)) for i in recs[minor_row] if i >= 0}
    assert shown and not shown & adults_only


# ---- editorial slots ----------------------------------------------------------------------
def test_editorial_slots_hold_their_position_for_every_list(client, bundle_dir):
    slot = ModelBundle.load(bundle_dir).settings.controls.editorial_slots[0]
    for body in (listed(client, "u5"), listed(client, "a-stranger"),
                 client.get("/v1/regions/110119/recommendations", params={"at": AT}).json()):
        marked = [i for i, item in enumerate(body["items"]) if item["editorial"]]
        assert marked == [slot - 1], body
        assert body["items"][slot - 1]["item_id"] in EDITORIAL
        assert body["items"][slot - 1]["reason"].startswith("编辑推荐")
    client.put("/v1/users/u5/settings", json={"personalized": False})
    off = listed(client, "u5")
    assert off["fallback"] == "not_personalized"
    assert [i for i, item in enumerate(off["items"]) if item["editorial"]] == [slot - 1]


# ---- personalisation off ----------------------------------------------------------------------
def test_personalisation_off_is_the_anonymous_list_and_lasts_in_a_new_app(client, tmp_path, bundle_dir):
    before = listed(client, "u0")
    anonymous = listed(client, "someone-unknown")
    assert ids(before) != ids(anonymous)
    answer = client.put("/v1/users/u0/settings", json={"personalized": False})
    assert answer.status_code == 200 and answer.json() == {"user_id": "u0", "personalized": False,
                                                           "senior_mode": False}
    off = listed(client, "u0")
    assert ids(off) == ids(anonymous) and off["fallback"] == "not_personalized"
    assert [i["reason"] for i in off["items"]] == [i["reason"] for i in anonymous["items"]]
    assert "recsys_user_controls{control=\"not_personalized\"} 1.0" in client.get("/metrics").text
    with make_client(tmp_path / "home", bundle_dir) as restarted:
        assert restarted.get("/v1/users/u0/settings").json()["personalized"] is False
        assert ids(listed(restarted, "u0")) == ids(anonymous)
        restarted.put("/v1/users/u0/settings", json={"personalized": True})
        assert ids(listed(restarted, "u0")) == ids(before)


def test_bad_settings_and_tags_are_4xx_with_a_message(client):
    for body in ({}, {"personalized": "no"}, {"personalized": None}, {"surprise": True}, [1]):
        answer = client.put("/v1/users/u0/settings", json=body)
        assert answer.status_code == 422 and answer.json()["detail"], body
    answer = client.delete("/v1/users/u0/profile/tags/no-such-tag")
    assert answer.status_code == 404 and "/" not in answer.json()["detail"]
    reader = {"X-API-Key": READ_KEY}
    assert client.put("/v1/users/u0/settings", json={"personalized": False}, headers=reader).status_code == 403
    assert client.get("/v1/users/u0/settings", headers={"X-API-Key": ""}).status_code == 401
    assert client.get("/v1/users/u0/profile", headers=reader).status_code == 200


# ---- interest tags ------------------------------------------------------------------------------
def test_a_removed_tag_leaves_the_list_at_once_and_an_engagement_brings_it_back(client, data):
    profile = client.get("/v1/users/u0/profile").json()
    top = profile["tags"][0]
    category = next(tag for tag in profile["tags"] if tag["facet"] == "category")
    assert top["label"].count(" · ") == 1 and top["evidence"] > 0 and 0 < top["weight"] <= 1
    name = category["value"]
    assert name in {item["category"] for item in listed(client, "u0", 20)["items"]}
    answer = client.delete(f"/v1/users/u0/profile/tags/{name}")
    assert answer.status_code == 200 and f"category:{name}" in answer.json()["tags"]
    assert name not in {item["category"] for item in listed(client, "u0", 20)["items"] if not item["editorial"]}
    assert f"category:{name}" in client.get("/v1/users/u0/profile").json()["removed_tags"]
    item = next(data.catalog.items.id_of(i) for i in range(len(data.catalog))
                if data.catalog.category_name(i) == name and not data.catalog.hidden[i])
    client.post("/v1/interactions", json=[{"user_id": "u0", "item_id": item, "action": "reserve", "ts": AT}])
    assert client.get("/v1/users/u0/profile").json()["removed_tags"] == []
    assert name in {i["category"] for i in listed(client, "u0", 20)["items"]}


def test_a_cold_resident_declares_interests(client, data):
    name = data.catalog.categories[2]
    assert client.put(f"/v1/users/newcomer/profile/tags/{name}").status_code == 200
    body = listed(client, "newcomer")
    assert body["fallback"] == "declared_interests"
    assert {item["category"] for item in body["items"][:2]} == {name}
    assert client.get("/v1/users/newcomer/profile").json()["tags"][0]["label"].endswith("自选")


# ---- not interested ------------------------------------------------------------------------------
def test_not_interested_leaves_out_the_item_and_its_three_nearest(client):
    first = listed(client, "u7", 20)["items"][0]["item_id"]
    nearest = ids(client.get(f"/v1/items/{first}/similar", params={"n": 3, "at": AT}).json())
    assert len(nearest) == 3
    answer = client.post("/v1/interactions", json=[
        {"user_id": "u7", "item_id": first, "action": "not_interested", "ts": AT}])
    assert answer.json()["accepted"] == 1
    after = ids(listed(client, "u7", 20))
    assert first not in after and not set(nearest) & set(after)
    later = iso(T0 + 40 * 86_400)  # past the 30-day demotion: the neighbours may return, the item never
    assert first not in ids(listed(client, "u7", 20, at=later))


# ---- erasure ------------------------------------------------------------------------------------
def test_an_erasure_drops_the_controls_in_the_server_and_the_ingest_blanks_them(client, tmp_path):
    from features.ingest import ingest

    client.put("/v1/users/u9/settings", json={"personalized": False})
    client.put("/v1/users/u8/settings", json={"senior_mode": True})
    admin = {"X-API-Key": ADMIN_KEY}
    assert client.delete("/v1/users/u9", headers=admin).status_code == 200
    assert client.get("/v1/users/u9/settings").json()["personalized"] is True
    assert client.put("/v1/users/u9/settings", json={"personalized": False}).status_code == 409
    assert listed(client, "u9")["fallback"] != "not_personalized"
    home = EngineHome.at(tmp_path / "home")
    ingest(home)
    lines = [json.loads(line) for line in home.controls.read_text().splitlines() if line.strip()]
    assert {line["user_id"] for line in lines} == {"u8"}
    assert set(read_controls(home.controls)) == {"u8"}
    assert ControlsLog(home.controls).of("u8").senior_mode
