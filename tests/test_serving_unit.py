"""The recommendation API in-process (FastAPI TestClient): rules, errors, live state, reloads."""

from __future__ import annotations

import json
import os
import re
import shutil
import threading
import warnings
from collections.abc import Iterator
from pathlib import Path
from urllib.parse import quote

import numpy as np
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

with warnings.catch_warnings():  # starlette's TestClient warns about its httpx dependency
    warnings.simplefilter("ignore")
    from fastapi.testclient import TestClient

from recsys import models
from recsys.bundle import ModelBundle
from recsys.catalog import Catalog
from recsys.home import EngineHome
from recsys.settings import EngineSettings
from serving.app import create_app
from serving.live import LiveInteractions
from serving.segments import SegmentWriter
from tests.model_fixtures import CATEGORIES
from tests.serving_fixtures import (
    CENTER,
    COLD_USERS,
    DAY,
    HIDDEN,
    KEY_HEADERS,
    T0,
    iso,
    keyed_settings,
    rules_data,
    write_bundle,
)

ADMIN_KEY = "s3cret-admin-key"
USERS = 300


# ---- fixtures ---------------------------------------------------------------------------
@pytest.fixture(scope="module")
def data():
    return rules_data(seed=0)


@pytest.fixture(scope="module")
def bundle_a(data, tmp_path_factory) -> Path:
    return write_bundle(data, tmp_path_factory.mktemp("a") / "bundle", trained_at="2026-11-16T02:00:00+00:00")


@pytest.fixture(scope="module")
def bundle_b(tmp_path_factory) -> Path:
    return write_bundle(rules_data(seed=1), tmp_path_factory.mktemp("b") / "bundle",
                        trained_at="2026-11-23T02:00:00+00:00", metrics={"ndcg@10": 0.3})


@pytest.fixture(scope="module")
def catalog(bundle_a) -> Catalog:
    return ModelBundle.load(bundle_a).catalog


def make_client(home: Path, model_dir: Path, admin_key: str | None = ADMIN_KEY, **extra) -> TestClient:
    """A test app's client sending the test key (every scope) with each request."""
    app = create_app(keyed_settings(home=home, model_dir=model_dir, admin_key=admin_key, **extra))
    return TestClient(app, headers=KEY_HEADERS)


@pytest.fixture(scope="module")
def client(bundle_a, tmp_path_factory) -> Iterator[TestClient]:
    with make_client(tmp_path_factory.mktemp("home"), bundle_a) as c:
        yield c


@pytest.fixture
def own_client(bundle_a, tmp_path) -> Iterator[tuple[TestClient, Path, Path]]:
    """A fresh app over a private copy of bundle A (tests that rewrite the bundle)."""
    model_dir = tmp_path / "model"
    shutil.copytree(bundle_a, model_dir)
    home = tmp_path / "home"
    with make_client(home, model_dir) as c:
        yield c, home, model_dir


def recommend(client: TestClient, user: str, **params) -> dict:
    encoded = quote(user, safe="").replace(".", "%2E")  # else the client resolves "." and ".." segments
    response = client.get(f"/v1/users/{encoded}/recommendations", params=params)
    assert response.status_code == 200, response.text
    return response.json()


def ids(body: dict) -> list[str]:
    return [item["item_id"] for item in body["items"]]


def history_of(data, user: str) -> set[str]:
    row = data.weights[data.users.users.index_of(user)]
    return set(data.catalog.items.ids_of(row.indices))


def assert_deliverable(catalog: Catalog, item_ids: list[str], at: float) -> None:
    for item_id in item_ids:
        i = catalog.items.index_of(item_id)
        assert i >= 0
        assert not catalog.hidden[i], f"{item_id} is hidden"
        assert not catalog.ends_at[i] < at, f"{item_id} ended before the request time"


# ---- the delivery rules -----------------------------------------------------------------
@settings(max_examples=60, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(user=st.integers(0, USERS - 1), day=st.integers(-4, 4), hours=st.sampled_from([0.0, 0.5, 1.5]),
       n=st.integers(1, 30), diversity=st.sampled_from([0.0, 0.2, 1.0]))
def test_user_lists_never_hold_seen_hidden_or_ended_items(client, data, catalog, user, day, hours, n, diversity):
    at = T0 + day * DAY + hours * 3600  # straddles the end times of items 3, 10, 17, 24 ...
    body = recommend(client, f"u{user}", n=n, at=iso(at), diversity=diversity)
    got = ids(body)
    assert body["fallback"] is None and body["user_id"] == f"u{user}"
    assert len(got) == n and len(set(got)) == n
    assert not set(got) & history_of(data, f"u{user}")
    assert not set(got) & set(HIDDEN)
    assert_deliverable(catalog, got, at)


def test_ended_items_come_back_before_their_end(client, catalog):
    """The same fallback list before and after item i24's end: it is dropped only once ended."""
    end = float(catalog.ends_at[catalog.items.index_of("i24")])
    before = ids(recommend(client, "nobody-ends", n=100, at=iso(end - 60)))
    after = ids(recommend(client, "nobody-ends", n=100, at=iso(end + 120)))
    assert "i24" in before and "i24" not in after


@pytest.mark.parametrize("seconds_after_end", [1, 20, 59])
def test_an_item_that_ended_seconds_ago_is_not_shown(client, catalog, seconds_after_end):
    end = float(catalog.ends_at[catalog.items.index_of("i24")])
    assert ids(recommend(client, "nobody-ends", n=100, at=iso(end - 1)))  # sanity: the list is not empty
    assert "i24" not in ids(recommend(client, "nobody-ends", n=100, at=iso(end + seconds_after_end)))


def test_radius_keeps_digital_items_and_drops_far_offline_ones(client, data, catalog):
    lat, lon = CENTER
    body = recommend(client, "u5", n=100, lat=lat, lon=lon, radius_km=12.0, at=iso(T0))
    distance = catalog.distance_km(lat, lon)
    expected = {
        catalog.items.id_of(i) for i in range(len(catalog))
        if (np.isnan(distance[i]) or distance[i] <= 12.0) and not catalog.hidden[i] and not catalog.ends_at[i] < T0
    } - history_of(data, "u5")
    assert set(ids(body)) == expected  # n exceeds the catalog: every allowed item, nothing else
    assert {item["kind"] for item in body["items"]} == {"digital", "event"}
    only_digital = recommend(client, "u5", n=10, lat=lat, lon=lon, radius_km=0.01, at=iso(T0))
    assert len(only_digital["items"]) == 10 and {i["kind"] for i in only_digital["items"]} == {"digital"}


def test_distance_reason_when_a_place_is_given(client):
    body = recommend(client, "nobody-near", n=5, lat=CENTER[0], lon=CENTER[1], at=iso(T0))
    offline = [item for item in body["items"] if item["kind"] == "event"]
    assert offline and all(item["reason"].startswith("距你") for item in offline)


@pytest.mark.parametrize("kind", ["digital", "event"])
def test_kind_filter(client, kind):
    body = recommend(client, "u7", n=10, kind=kind, at=iso(T0))
    assert len(body["items"]) == 10 and {item["kind"] for item in body["items"]} == {kind}


def test_category_filter_and_unknown_kind(client):
    body = recommend(client, "u9", n=5, category="讲座", at=iso(T0))
    assert {item["category"] for item in body["items"]} == {"讲座"}
    unknown = client.get("/v1/users/u9/recommendations", params={"kind": "no-such-kind"})
    assert unknown.status_code == 422 and unknown.json()["errors"][0]["allowed"] == ["digital", "event"]


def test_fallback_labels_name_what_the_list_is(client):
    assert recommend(client, "u3")["fallback"] is None
    assert recommend(client, COLD_USERS[0])["fallback"] == "segment_popularity"
    assert recommend(client, "never-seen", region="110101")["fallback"] == "region_popularity"
    assert recommend(client, "never-seen")["fallback"] == "popularity"
    assert recommend(client, "从未见过的用户")["user_id"] == "从未见过的用户"
    segment = ids(recommend(client, COLD_USERS[0], n=10))
    region = ids(recommend(client, "never-seen", region="110101", n=10))
    assert segment != region


@pytest.mark.parametrize("user", ["戏迷/老王", "line\nbreak", "a b?c#d%e", "..", "u1/recommendations"])
def test_any_id_is_addressable_in_the_path(client, user):
    body = recommend(client, user)
    assert body["user_id"] == user and body["fallback"] == "popularity"


def test_response_shape(client):
    body = recommend(client, "u2", n=3, at=iso(T0))
    assert set(body) == {"user_id", "model_version", "generated_at", "fallback", "items", "next_cursor",
                         "recommendation_id", "variant"}
    assert body["model_version"].startswith("local-")
    assert re.fullmatch(r"[0-9a-f]{32}", body["recommendation_id"]) and body["variant"] == "champion"
    assert set(body["items"][0]) == {"item_id", "title", "kind", "category", "score", "reason", "editorial",
                                     "starts_at", "ends_at", "venue_id", "region_code", "lat", "lon", "is_free",
                                     "provider", "full", "distance_km"}
    assert body["items"][0]["title"].startswith("活动") and body["items"][0]["reason"]


def test_similar_items(client, catalog):
    body = client.get("/v1/items/i4/similar", params={"n": 8, "at": iso(T0)}).json()
    got = ids(body)
    assert body["item_id"] == "i4" and "i4" not in got and len(got) == 8
    assert_deliverable(catalog, got, T0)
    assert {item["category"] for item in body["items"][:3]} == {CATEGORIES[0]}  # planted group of i4


def test_unknown_item_is_a_json_404(client):
    response = client.get(f"/v1/items/{quote('不存在的活动')}/similar")
    assert response.status_code == 404
    assert response.json() == {"detail": "unknown item '不存在的活动'"}


def test_region_lists_and_unknown_region(client, catalog):
    body = client.get("/v1/regions/110119/recommendations", params={"n": 10, "at": iso(T0)}).json()
    assert body["region_code"] == "110119" and len(body["items"]) == 10
    assert_deliverable(catalog, ids(body), T0)
    seniors = client.get("/v1/regions/110119/recommendations", params={"age_band": "60+", "kind": "digital"}).json()
    assert {item["kind"] for item in seniors["items"]} == {"digital"}
    missing = client.get("/v1/regions/999999/recommendations")
    assert missing.status_code == 404 and "999999" in missing.json()["detail"]


# ---- bad input: 422 JSON, never a 500 ---------------------------------------------------
@pytest.mark.parametrize("query", [
    "n=0", "n=101", "n=abc", "lat=91&lon=0", "lat=0&lon=-181", "lat=nan&lon=0", "lat=0&lon=inf",
    "lat=1e999&lon=0", "lat=40", "lon=116", "lat=40&lon=116&radius_km=-1", "lat=40&lon=116&radius_km=inf",
    "radius_km=5", "at=not-a-time", "at=2026-13-45", "diversity=1.5", "diversity=-0.1", "diversity=nan",
])
def test_bad_query_is_422_json(client, query):
    response = client.get(f"/v1/users/u1/recommendations?{query}")
    assert response.status_code == 422, response.text
    assert isinstance(response.json()["detail"], str) and response.json()["detail"]


def test_bad_input_on_other_routes(client):
    assert client.get("/v1/items/i4/similar?n=500").status_code == 422
    assert client.get("/v1/regions/110119/recommendations?at=yesterday").status_code == 422
    assert client.get("/v1/users/" + "x" * 300 + "/recommendations").status_code == 422
    assert client.post("/v1/interactions", content=b"{not json").status_code == 422
    assert client.post("/v1/interactions", json={"user_id": "u1"}).status_code == 422
    missing = client.get("/no/such/route")
    assert missing.status_code == 404 and missing.json() == {"detail": "Not Found"}


def test_unencoded_plus_in_time_is_understood(client):
    response = client.get("/v1/users/u1/recommendations?at=2026-11-20T12:00:00+08:00")
    assert response.status_code == 200


def test_unexpected_errors_are_json_500(bundle_a, tmp_path, monkeypatch):
    app = create_app(keyed_settings(home=tmp_path, model_dir=bundle_a))
    with TestClient(app, raise_server_exceptions=False, headers=KEY_HEADERS) as c:
        engine = app.state.services.holder.current.engine
        monkeypatch.setattr(engine, "for_user", lambda *a, **k: 1 / 0)
        response = c.get("/v1/users/u1/recommendations")
    assert response.status_code == 500 and response.json() == {"detail": "internal server error"}


# ---- posted interactions ----------------------------------------------------------------
def segment_lines(home: Path) -> list[dict]:
    return [json.loads(line) for path in sorted(EngineHome.at(home).incoming.glob("*.jsonl"))
            for line in path.read_text(encoding="utf-8").splitlines()]


def test_new_user_gets_personal_results_after_a_few_interactions(own_client):
    client, home, _ = own_client
    user = "新用户-1"
    before = recommend(client, user, n=10, diversity=0.0, at=iso(T0))
    assert before["fallback"] == "popularity"
    posted = [{"user_id": user, "item_id": f"i{i}", "action": "reserve", "ts": iso(T0 - 3600)} for i in (4, 8, 12)]
    response = client.post("/v1/interactions", json=posted)
    assert response.status_code == 202 and response.json() == {"accepted": 3, "rejected": [], "pending": 0}
    after = recommend(client, user, n=10, diversity=0.0, at=iso(T0))
    assert after["fallback"] is None and ids(after) != ids(before)
    assert not {"i4", "i8", "i12"} & set(ids(after))
    liked = sum(item["category"] == CATEGORIES[0] for item in after["items"])
    assert liked >= 7, after["items"]  # the planted group of items 4, 8, 12
    lines = [line for line in segment_lines(home) if line["user_id"] == user]
    assert [line["item_id"] for line in lines] == ["i4", "i8", "i12"]
    # each line names the posting app (the first inline test key's), which ingest's poisoning defences judge by
    assert lines[0] == {"user_id": user, "item_id": "i4", "action": "reserve", "ts": iso(T0 - 3600), "value": None,
                        "source": "inline-1"}


def test_posted_item_is_excluded_for_a_known_user(own_client):
    client, _, _ = own_client
    top = ids(recommend(client, "u10", n=5, at=iso(T0)))[0]
    response = client.post("/v1/interactions", json=[{"user_id": "u10", "item_id": top, "action": "view", "ts": T0}])
    assert response.json()["accepted"] == 1
    assert top not in ids(recommend(client, "u10", n=50, at=iso(T0)))


def test_each_element_is_validated_on_its_own(own_client):
    client, home, _ = own_client
    batch = [
        {"user_id": "v1", "item_id": "i5", "action": "click", "ts": "2026-11-20T10:00:00"},
        {"user_id": "v1", "item_id": "i5", "action": "like", "ts": "2026-11-20T10:00:00"},
        {"user_id": "v1", "item_id": "i5", "action": "view", "ts": "yesterday"},
        {"user_id": "  ", "item_id": "i5", "action": "view", "ts": 1790000000},
        {"user_id": "v" * 257, "item_id": "i5", "action": "view", "ts": 1790000000},
        {"user_id": "v1", "item_id": "no-such-item", "action": "view", "ts": 1790000000},
        {"user_id": "v1", "action": "view", "ts": 1790000000},
        "not an object",
        {"user_id": "v1", "item_id": "i9", "action": "rate", "ts": 1790000000, "value": 5, "extra": "ignored"},
    ]
    response = client.post("/v1/interactions", json=batch)
    assert response.status_code == 202
    body = response.json()
    assert body["accepted"] == 3 and body["pending"] == 1  # an item not in the catalogue yet is kept
    assert [(r["index"], r["reason"]) for r in body["rejected"]] == [
        (1, "unknown_action"), (2, "unparseable_time"), (3, "missing_required_field"), (4, "id_too_long"),
        (6, "missing_required_field"), (7, "missing_required_field"),
    ]
    lines = segment_lines(home)
    assert [(line["item_id"], line["action"]) for line in lines] == [
        ("i5", "click"), ("no-such-item", "view"), ("i9", "rate")]
    assert lines[0]["ts"] == "2026-11-20T02:00:00+00:00"  # naive time read in Asia/Shanghai
    assert lines[2]["value"] == 5
    assert client.post("/v1/interactions", json=[]).json() == {"accepted": 0, "rejected": [], "pending": 0}


def test_live_state_survives_a_reload(own_client, bundle_b):
    client, _, model_dir = own_client
    user = "reload-user"
    client.post("/v1/interactions", json=[{"user_id": user, "item_id": "i16", "action": "attend", "ts": T0}])
    shutil.rmtree(model_dir)
    shutil.copytree(bundle_b, model_dir)
    assert client.post("/v1/admin/reload", headers={"X-API-Key": ADMIN_KEY}).status_code == 200
    body = recommend(client, user, n=60, at=iso(T0))
    assert body["fallback"] is None and "i16" not in ids(body)


def test_a_reload_drops_the_live_events_the_new_model_was_trained_on(own_client, tmp_path):
    """Events up to the new model's data_end are in its history: counting them live again would
    double the user's engagement at every reload; later events stay live."""
    client, _, model_dir = own_client
    live = client.app.state.services.live
    user = "double-count-user"
    posted = [{"user_id": user, "item_id": "i16", "action": "attend", "ts": T0},
              {"user_id": user, "item_id": "i17", "action": "click", "ts": T0},
              {"user_id": user, "item_id": "i17", "action": "reserve", "ts": T0 + 2 * DAY}]
    assert client.post("/v1/interactions", json=posted).json()["accepted"] == 3
    weights = EngineSettings()
    assert live.of(user) == pytest.approx({"i16": weights.weight_of("attend"),
                                           "i17": weights.weight_of("click") + weights.weight_of("reserve")})
    later = write_bundle(rules_data(seed=1), tmp_path / "later", data_end=iso(T0 + DAY))
    shutil.rmtree(model_dir)
    shutil.copytree(later, model_dir)
    assert client.post("/v1/admin/reload", headers={"X-API-Key": ADMIN_KEY}).status_code == 200
    assert live.of(user) == pytest.approx({"i17": weights.weight_of("reserve")})
    body = recommend(client, user, n=60, at=iso(T0 + 2 * DAY))
    assert "i17" not in ids(body)  # still live: still excluded


def test_live_events_expire_by_time():
    live = LiveInteractions()
    live.add("u", "a", 1.0, at=100.0)
    live.add("u", "a", 2.0, at=300.0)
    live.add("u", "b", 4.0, at=50.0)
    live.add("v", "a", 8.0)  # no time: never trained on
    assert live.expire_trained(200.0) == 1
    assert live.of("u") == {"a": 2.0} and live.of("v") == {"a": 8.0}
    assert live.expire_trained(400.0) == 1 and len(live) == 1
    for at in range(40):  # many events of one item: merged, never lost
        live.add("w", "x", 1.0, at=float(at))
    assert live.of("w") == {"x": 40.0}
    live.expire_trained(38.5)
    assert 1.0 <= live.of("w")["x"] <= 40.0


# ---- model lifecycle --------------------------------------------------------------------
def test_model_info_and_readiness(client):
    info = client.get("/v1/model").json()
    assert info["model"] == "hybrid" and info["source"] == "directory" and info["degraded"] is None
    assert info["trained_at"] == "2026-11-16T02:00:00+00:00" and info["data_end"] == iso(T0 - DAY)
    assert info["metrics"] == {"ndcg@10": 0.25, "recall@20": 0.4}
    assert (info["n_users"], info["n_items"]) == (USERS + len(COLD_USERS), 80)
    assert client.get("/readyz").json() == {"status": "ready", "version": info["version"], "reason": None}
    assert client.get("/healthz").json() == {"status": "ok"}


def test_admin_needs_the_right_key(client, bundle_a, tmp_path):
    assert client.post("/v1/admin/reload", headers={"X-API-Key": ""}).status_code == 401
    assert client.post("/v1/admin/reload", headers={"X-API-Key": "wrong"}).status_code == 401
    assert client.post("/v1/admin/reload", headers={"X-API-Key": "ключ-密钥".encode()}).status_code == 401
    with make_client(tmp_path, bundle_a, admin_key=None, api_keys=None) as disabled:
        for headers in ({"X-API-Key": ""}, {"X-API-Key": ADMIN_KEY}, {"X-API-Key": "anything"}):
            response = disabled.post("/v1/admin/reload", headers=headers)
            assert response.status_code == 404 and "disabled" in response.json()["detail"]


def test_reload_swaps_models_and_a_corrupt_one_keeps_the_old(own_client, bundle_b):
    client, _, model_dir = own_client
    version_a = client.get("/v1/model").json()["version"]
    shutil.rmtree(model_dir)
    shutil.copytree(bundle_b, model_dir)
    response = client.post("/v1/admin/reload", headers={"X-API-Key": ADMIN_KEY})
    assert response.status_code == 200, response.text
    version_b = response.json()["version"]
    assert version_b != version_a and response.json()["previous_version"] == version_a
    assert recommend(client, "u1")["model_version"] == version_b

    npz = model_dir / "model" / "model.npz"  # corrupt: truncated weights, a new manifest
    npz.write_bytes(npz.read_bytes()[: npz.stat().st_size // 2])
    manifest = json.loads((model_dir / "manifest.json").read_text())
    (model_dir / "manifest.json").write_text(json.dumps({**manifest, "trained_at": "corrupt"}))
    failed = client.post("/v1/admin/reload", headers={"X-API-Key": ADMIN_KEY})
    assert failed.status_code == 409
    assert failed.json()["serving_version"] == version_b and "cannot load" in failed.json()["detail"]
    assert client.get("/v1/model").json()["version"] == version_b
    assert recommend(client, "u1")["model_version"] == version_b
    assert client.get("/readyz").json()["status"] == "ready"


def test_start_without_any_model(tmp_path):
    with make_client(tmp_path / "home", tmp_path / "missing") as client:
        assert client.get("/healthz").status_code == 200
        ready = client.get("/readyz")
        assert ready.status_code == 503 and ready.json()["status"] == "unavailable"
        assert "missing" in ready.json()["reason"]
        for response in (client.get("/v1/users/u1/recommendations"), client.get("/v1/model"),
                         client.get("/v1/items/i1/similar"), client.post("/v1/interactions", json=[])):
            assert response.status_code == 503 and "no model" in response.json()["detail"]
        failed = client.post("/v1/admin/reload", headers={"X-API-Key": ADMIN_KEY})
        assert failed.status_code == 503 and failed.json()["serving_version"] is None


def test_degraded_start_serves_the_last_known_good_copy(bundle_a, tmp_path):
    home = tmp_path / "home"
    with make_client(home, bundle_a) as first:
        good = first.get("/v1/model").json()["version"]
    assert (EngineHome.at(home).serving_cache / "bundle" / "manifest.json").is_file()
    with make_client(home, tmp_path / "gone") as client:
        ready = client.get("/readyz").json()
        assert ready["status"] == "degraded" and ready["version"] == good
        assert "last-known-good" in ready["reason"]
        assert client.get("/v1/model").json()["source"] == "last_known_good"
        assert recommend(client, "u1")["model_version"] == good
        assert "recsys_model_degraded 1.0" in client.get("/metrics").text


# ---- reports ----------------------------------------------------------------------------
SUMMARY = {
    "window": {"start": "2026-10-24", "end": "2026-11-20", "days": 28}, "generated_at": "2026-11-20T03:00:00+00:00",
    "min_users": 10, "lang": "zh", "city": {},
    "regions": {
        "110119": {"name": "延庆区", "suppressed": False, "active_users": 80,
                   "top_lifts": [{"segment_type": "region_age", "age_band": "60+", "category": "戏曲",
                                  "share": 0.4, "lift": 2.5, "users": 30}],
                   "gaps": [{"category": "戏曲", "demand_share": 0.3, "supply_share": 0.1, "gap": 0.2,
                             "status": "undersupplied", "supply_items": 3}],
                   "trends": [{"category": "戏曲", "change_pp": 4.0}], "top_items": [{"rank": 1, "item_id": "i4"}]},
        "110101": {"name": "东城区", "suppressed": True, "active_users": None, "top_lifts": [], "gaps": [],
                   "trends": [], "top_items": []},
    },
    "areas": [],
}


def test_reports_are_served_from_the_latest_files(own_client):
    client, home, _ = own_client
    assert client.get("/v1/reports/regions").status_code == 404
    assert client.get("/reports").status_code == 404
    latest = EngineHome.at(home).reports / "latest"
    latest.mkdir(parents=True)
    (latest / "summary.json").write_text(json.dumps(SUMMARY, ensure_ascii=False), encoding="utf-8")
    (latest / "report.html").write_text("<html><body>群众点菜</body></html>", encoding="utf-8")

    regions = client.get("/v1/reports/regions").json()
    assert [r["region_code"] for r in regions["regions"]] == ["110119", "110101"]
    assert regions["regions"][0]["top_lifts"][0]["lift"] == 2.5 and regions["regions"][0]["gaps"][0]["gap"] == 0.2
    assert "trends" not in regions["regions"][0] and regions["window"]["days"] == 28
    one = client.get("/v1/reports/regions/110119").json()
    assert one["name"] == "延庆区" and one["top_items"] == [{"rank": 1, "item_id": "i4"}]
    assert client.get("/v1/reports/regions/000000").status_code == 404
    page = client.get("/reports")
    assert page.status_code == 200 and "群众点菜" in page.text and page.headers["content-type"].startswith("text/html")

    changed = {**SUMMARY, "regions": {"110105": {"name": "朝阳区", "top_lifts": [], "gaps": []}}}
    staging = latest.with_name("staging")  # published like the report job does: a new file
    staging.mkdir()
    (staging / "summary.json").write_text(json.dumps(changed, ensure_ascii=False), encoding="utf-8")
    shutil.rmtree(latest)
    staging.rename(latest)
    assert [r["region_code"] for r in client.get("/v1/reports/regions").json()["regions"]] == ["110105"]


# ---- metrics, docs ----------------------------------------------------------------------
def test_metrics_by_route_template_and_fallback(client):
    recommend(client, "metrics-new-user")
    client.get("/v1/items/nope/similar")
    client.get("/openapi.json")
    client.get("/no/such/path-metrics-label")
    client.get("/v1/items/i4/similar/", follow_redirects=False)
    text = client.get("/metrics").text
    assert 'route="/v1/users/{user_id}/recommendations",status="200"' in text
    assert 'route="/v1/items/{item_id}/similar",status="404"' in text
    assert 'recsys_fallbacks_total{endpoint="users",kind="popularity"}' in text
    assert "recsys_http_request_duration_seconds_bucket" in text and 'recsys_model_info{alias=""' in text
    assert 'route="/openapi.json",status="200"' in text and 'route="unmatched",status="404"' in text
    assert "metrics-new-user" not in text and "path-metrics-label" not in text and "i4" not in text


def test_openapi_docs_have_examples(client):
    spec = client.get("/openapi.json").json()
    assert {"/v1/users/{user_id}/recommendations", "/v1/regions/{region_code}/recommendations",
            "/v1/items/{item_id}/similar", "/v1/interactions", "/v1/model", "/readyz"} <= set(spec["paths"])
    assert spec["components"]["schemas"]["UserRecommendations"]["examples"][0]["items"]
    assert client.get("/docs").status_code == 200


# ---- building blocks --------------------------------------------------------------------
def test_live_interactions_are_bounded_lru():
    live = LiveInteractions(max_users=2, max_items_per_user=3)
    for item in "abcd":
        live.add("u1", item, 1.0)
    live.add("u1", "b", 2.0)
    assert live.of("u1") == {"c": 1.0, "d": 1.0, "b": 3.0}
    live.add("u2", "a", 0.0)
    assert live.of("u2")["a"] > 0  # a zero-weight action still marks the item as seen
    live.of("u1")
    live.add("u3", "a", 1.0)
    assert live.of("u1") == {} or live.of("u2") == {}
    assert len(live) == 2


def test_segment_writer_never_interleaves_concurrent_batches(tmp_path):
    writer = SegmentWriter(tmp_path / "incoming")

    def post(thread: int) -> None:
        for batch in range(40):
            writer.append([{"user_id": f"t{thread}", "item_id": f"b{batch}", "seq": k, "pad": "戏" * 300}
                           for k in range(5)])

    threads = [threading.Thread(target=post, args=(t,)) for t in range(8)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    writer.close()
    lines = [json.loads(line) for line in writer.path.read_text(encoding="utf-8").splitlines()]
    assert len(lines) == 8 * 40 * 5
    for start in range(0, len(lines), 5):  # each batch is contiguous and in order
        batch = lines[start:start + 5]
        assert [r["seq"] for r in batch] == list(range(5))
        assert len({(r["user_id"], r["item_id"]) for r in batch}) == 1


def test_serve_command_passes_options_to_the_workers(monkeypatch, tmp_path):
    from typer.testing import CliRunner

    from training.cli import app

    calls = []
    monkeypatch.setattr("uvicorn.run", lambda *args, **kwargs: calls.append((args, kwargs)))
    for key in ("RECSYS_HOME", "RECSYS_RELOAD_INTERVAL", "RECSYS_MODEL_DIR"):
        monkeypatch.setenv(key, "")  # recorded, so the values the command sets are undone afterwards
        monkeypatch.delenv(key)
    result = CliRunner().invoke(app, ["serve", "--port", "8123", "--workers", "2", "--reload-interval", "30",
                                      "--home", str(tmp_path), "--model-dir", str(tmp_path)])
    assert result.exit_code == 0, result.output
    assert calls == [(("serving.app:create_app",), {
        "factory": True, "host": "127.0.0.1", "port": 8123, "workers": 2, "log_level": "info",
        "http": "serving.connections:GuardedHttpToolsProtocol", "timeout_keep_alive": 5, "access_log": False,
    })]
    assert os.environ["RECSYS_HOME"] == str(tmp_path.resolve())
    assert os.environ["RECSYS_RELOAD_INTERVAL"] == "30.0"
    assert os.environ["RECSYS_MODEL_DIR"] == str(tmp_path.resolve())


# ---- the core's request hot path (optimised for serving) ----------------------------------
def _reference_mmr(candidates, scores, categories, n, diversity):
    """MMR written as its formula (chosen items per category, recounted per step)."""
    candidates = np.asarray(candidates)
    if diversity == 0.0 or len(candidates) <= 1:
        return candidates[:n]
    relevance = np.asarray(scores, dtype=np.float64)[candidates]
    span = relevance.max() - relevance.min()
    relevance = (relevance - relevance.min()) / span if span > 0 else np.ones_like(relevance)
    cats = np.asarray(categories)[candidates]
    chosen, remaining = [], np.ones(len(candidates), dtype=bool)
    while len(chosen) < min(n, len(candidates)):
        picked = [int(cats[p]) for p in chosen]
        redundancy = np.sqrt([picked.count(int(c)) if c >= 0 else 0 for c in cats])
        gain = (1.0 - diversity) * relevance - diversity * redundancy
        gain[~remaining] = -np.inf
        pick = int(np.argmax(gain))
        chosen.append(pick)
        remaining[pick] = False
    return candidates[chosen]


@settings(max_examples=200, deadline=None)
@given(size=st.integers(1, 60), n=st.integers(1, 20), diversity=st.floats(0, 1), seed=st.integers(0, 10_000))
def test_mmr_matches_its_reference(size, n, diversity, seed):
    from recsys.ranking import mmr

    rng = np.random.default_rng(seed)
    scores = rng.random(100).round(2)  # ties on purpose
    categories = rng.integers(-1, 5, 100)
    candidates = rng.choice(100, size, replace=False)
    assert mmr(candidates, scores, categories, n, diversity).tolist() == \
        _reference_mmr(candidates, scores, categories, n, diversity).tolist()


FAST_MODELS = {"als": {"factors": 8, "iterations": 4}, "bpr": {"factors": 8, "iterations": 20},
               "itemknn": {"neighbours": 20}, "ease": {"l2": 20.0}, "popularity": {},
               "hybrid": {"als": {"factors": 8, "iterations": 4}}}
"""Fast parameters of every model in :data:`recsys.models.MODELS`."""


@pytest.mark.parametrize("name", sorted(models.MODELS))
def test_item_similarity_matrix_equals_item_similarity_rows(name):
    from tests.model_fixtures import planted

    data = planted(n_users=120, n_items=40, seed=2, cold_items=4)
    model = models.create(name, FAST_MODELS[name]).fit(data)
    items = np.array([0, 5, 17, 36, 39])  # 36 and 39 are cold
    others = np.array([39, 1, 2, 5, 30, 36, 0])
    matrix = model.item_similarity_matrix(items, others)
    assert matrix.shape == (len(items), len(others))
    for row, item in zip(matrix, items, strict=True):
        full = model.item_similarity(int(item))
        if full is None:
            assert np.isnan(row).all()
        else:
            np.testing.assert_allclose(row, full[others], rtol=1e-5, atol=1e-6)


def test_popularity_fallbacks_are_computed_once_and_read_only(data):
    popularity = models.create("popularity").fit(data)
    first = popularity.segment_scores("110119", "60+")
    assert popularity.segment_scores("110119", "60+") is first and not first.flags.writeable
    expected = popularity._shrunk(popularity.segment_weight[popularity.user_segment[COLD_USERS_INDEX]])
    np.testing.assert_array_equal(first, expected)
    with pytest.raises(ValueError):
        popularity.global_scores()[0] = 1.0
    assert popularity.region_scores("no-such-region") is None


COLD_USERS_INDEX = USERS  # the first history-less user (region 110119, age band 60+)
