"""The lists' query contract and what each listed item carries, through the API.

A catalogue with start times (some items have none: always available), free items, venues
and providers: a start-time window returns only items starting in it (none without a start
time), ``free_only`` only free items, ``exclude`` never an excluded id; pages of a list never
repeat an item and end with ``next_cursor`` null; an unknown ``kind``, ``category`` or
``age_band`` is a 422 listing the allowed values; every item carries the fields an app renders.
"""

from __future__ import annotations

import datetime as dt
from collections.abc import Iterator
from pathlib import Path

import numpy as np
import pytest
from fastapi.testclient import TestClient

from recsys.bundle import ModelBundle
from recsys.catalog import Catalog
from recsys.delivery import DeliveryEngine
from recsys.models.base import TrainingData
from recsys.query import Filters
from serving.app import create_app
from serving.paging import MAX_LISTED, encode_cursor
from tests.model_fixtures import CATEGORIES
from tests.serving_fixtures import CENTER, DAY, KEY_HEADERS, T0, iso, keyed_settings, rules_data, write_bundle

ZONE = dt.timezone(dt.timedelta(hours=8))
LISTS = ("/v1/users/u5/recommendations", "/v1/regions/110119/recommendations", "/v1/items/i4/similar")


def contract_data() -> TrainingData:
    """:func:`rules_data` with start times (every 4th item none), free items, venues and providers."""
    base = rules_data(seed=0)
    old = base.catalog
    n = len(old)
    catalog = Catalog.from_columns(
        old.items.ids, title=old.title, kind=[old.kind_name(i) for i in range(n)],
        category=[old.category_name(i) for i in range(n)],
        region=[old.regions[int(old.region[i])] for i in range(n)],
        tags=[[old.tag_names[j] for j in old.tags[i].indices] for i in range(n)],
        lat=optional(old.lat), lon=optional(old.lon),
        starts_at=[None if i % 4 == 0 else T0 + (i % 9 - 2) * DAY for i in range(n)],
        ends_at=optional(old.ends_at), hidden=old.hidden.tolist(),
        venue=[None if np.isnan(old.lat[i]) else f"v{i % 7}" for i in range(n)],
        provider=[f"馆{i % 3}" for i in range(n)], is_free=[i % 3 == 0 for i in range(n)],
    )
    return TrainingData(base.matrix, base.weights, catalog, base.users, seed=0)


def optional(values: np.ndarray) -> list[float | None]:
    return [None if np.isnan(v) else float(v) for v in values]


@pytest.fixture(scope="module")
def data() -> TrainingData:
    return contract_data()


@pytest.fixture(scope="module")
def bundle_dir(data: TrainingData, tmp_path_factory: pytest.TempPathFactory) -> Path:
    return write_bundle(data, tmp_path_factory.mktemp("contract") / "bundle")


@pytest.fixture(scope="module")
def client(bundle_dir: Path, tmp_path_factory: pytest.TempPathFactory) -> Iterator[TestClient]:
    app = create_app(keyed_settings(home=tmp_path_factory.mktemp("home"), model_dir=bundle_dir))
    with TestClient(app, headers=KEY_HEADERS) as c:
        yield c


def get(client: TestClient, path: str, **params: object) -> dict:
    response = client.get(path, params=params)
    assert response.status_code == 200, response.text
    return response.json()


def index_of(catalog: Catalog, item: dict) -> int:
    return catalog.items.index_of(item["item_id"])


@pytest.mark.parametrize("path", LISTS)
def test_a_window_returns_only_items_starting_in_it(client: TestClient, data: TrainingData, path: str) -> None:
    after, before = T0 + DAY, T0 + 3 * DAY  # "this weekend"
    body = get(client, path, n=20, at=iso(T0), starts_after=iso(after), starts_before=iso(before))
    assert body["items"]
    for item in body["items"]:
        start = data.catalog.starts_at[index_of(data.catalog, item)]
        assert after <= start <= before  # an item without a start time (nan) fails this too
        assert dt.datetime.fromisoformat(item["starts_at"]).timestamp() == start


@pytest.mark.parametrize("path", LISTS)
def test_free_only_and_exclude(client: TestClient, data: TrainingData, path: str) -> None:
    free = get(client, path, n=10, at=iso(T0), free_only="true")
    assert free["items"] and all(item["is_free"] for item in free["items"])
    assert all(data.catalog.is_free[index_of(data.catalog, item)] for item in free["items"])
    first = [item["item_id"] for item in get(client, path, n=5, at=iso(T0))["items"]]
    response = client.get(path, params=[("n", 5), ("at", iso(T0)), *[("exclude", i) for i in first],
                                        ("exclude", "no-such-item")])
    assert response.status_code == 200
    assert not {item["item_id"] for item in response.json()["items"]} & set(first)


@pytest.mark.parametrize("path", LISTS)
def test_pages_never_repeat_an_item_and_end(client: TestClient, path: str) -> None:
    seen: list[str] = []
    cursor = None
    for _ in range(50):
        params = {"n": 7, **({"cursor": cursor} if cursor else {"at": iso(T0)})}
        body = get(client, path, **params)
        seen.extend(item["item_id"] for item in body["items"])
        cursor = body["next_cursor"]
        if cursor is None:
            break
        assert len(body["items"]) == 7
    assert cursor is None and len(seen) == len(set(seen)) and 7 < len(seen) <= MAX_LISTED


def test_a_cursor_of_another_model_or_garbage_is_a_json_422(client: TestClient) -> None:
    for cursor in (encode_cursor("another-version", T0, [1, 2]), "not-a-cursor", "eJzLSM3JyQcABiwCFQ", "%" * 50):
        response = client.get(LISTS[0], params={"cursor": cursor})
        assert response.status_code == 422 and response.json()["detail"].startswith("cursor:"), response.text


@pytest.mark.parametrize(("path", "name", "value", "allowed"), [
    (LISTS[0], "kind", "concert", ["digital", "event"]),
    (LISTS[0], "category", "杂技", sorted(CATEGORIES)),
    (LISTS[1], "kind", "concert", ["digital", "event"]),
    (LISTS[1], "age_band", "elderly", ["0-17", "18-34", "35-59", "60+"]),
])
def test_unknown_values_are_422_listing_the_allowed(client: TestClient, path: str, name: str, value: str,
                                                    allowed: list[str]) -> None:
    response = client.get(path, params={name: value})
    assert response.status_code == 422
    body = response.json()
    assert body["errors"][0]["allowed"] == allowed and body["errors"][0]["loc"] == ["query", name]
    assert body["detail"].startswith(f"{name}: unknown {name}") and all(a in body["detail"] for a in allowed)


@pytest.mark.parametrize("query", ["starts_after=tomorrow", "starts_before=2026-13-01",
                                   f"starts_after={iso(T0 + DAY)}&starts_before={iso(T0)}"])
def test_a_bad_window_is_a_json_422(client: TestClient, query: str) -> None:
    response = client.get(f"{LISTS[0]}?{query.replace('+', '%2B')}")
    assert response.status_code == 422 and response.json()["detail"].startswith(("starts_after:", "starts_before:"))


def test_items_carry_what_an_app_renders(client: TestClient, data: TrainingData) -> None:
    catalog = data.catalog
    placed = get(client, LISTS[0], n=20, at=iso(T0), lat=CENTER[0], lon=CENTER[1])["items"]
    unplaced = get(client, LISTS[0], n=20, at=iso(T0))["items"]
    assert all(item["distance_km"] is None for item in unplaced)
    for item in placed:
        i = index_of(catalog, item)
        assert item["is_free"] == bool(catalog.is_free[i]) and item["provider"] == catalog.provider[i]
        assert item["venue_id"] == catalog.venue[i] and item["region_code"] == catalog.regions[catalog.region[i]]
        assert item["full"] is False
        if np.isnan(catalog.lat[i]):  # digital: no place, no distance
            assert item["lat"] is None and item["lon"] is None and item["distance_km"] is None
        else:
            expected = float(catalog.distance_km(CENTER[0], CENTER[1])[i])
            assert item["lat"] == catalog.lat[i] and item["distance_km"] == pytest.approx(expected, abs=1e-3)
        for field, values in (("starts_at", catalog.starts_at), ("ends_at", catalog.ends_at)):
            if np.isnan(values[i]):
                assert item[field] is None
            else:
                moment = dt.datetime.fromisoformat(item[field])
                assert moment.utcoffset() == ZONE.utcoffset(None) and moment.timestamp() == values[i]


def test_future_and_out_of_scale_interactions_are_rejected_with_a_reason(client: TestClient) -> None:
    now = dt.datetime.now(dt.UTC)
    posted = client.post("/v1/interactions", json=[
        {"user_id": "u1", "item_id": "i4", "action": "view", "ts": (now + dt.timedelta(days=2)).isoformat()},
        {"user_id": "u1", "item_id": "i4", "action": "rate", "ts": now.isoformat(), "value": 11},
        {"user_id": "u1", "item_id": "i4", "action": "view", "ts": (now + dt.timedelta(hours=20)).isoformat()},
    ])
    assert posted.status_code == 202, posted.text
    assert [(r["index"], r["reason"]) for r in posted.json()["rejected"]] == [
        (0, "future_time"), (1, "rating_out_of_range")]


# ---- diversity that shows ----------------------------------------------------------------------
def test_diversity_one_spreads_a_list_over_the_categories(data: TrainingData, bundle_dir: Path) -> None:
    engine = DeliveryEngine(ModelBundle.load(bundle_dir))
    spread_at_one, spread_at_zero = [], []
    for user in (f"u{i}" for i in range(0, 300, 15)):
        for diversity, found in ((1.0, spread_at_one), (0.0, spread_at_zero)):
            listed = engine.for_user(user, 8, Filters(at=T0), diversity=diversity).items
            found.append(len({data.catalog.category[r.item] for r in listed}))
    assert min(spread_at_one) == len(CATEGORIES)  # 8 slots, 4 categories: every one of them, twice
    assert np.mean(spread_at_zero) < len(CATEGORIES)  # the planted tastes: score order alone repeats


def test_category_bests_reach_categories_beyond_the_top() -> None:
    from recsys.ranking import mmr, top_k, with_category_bests

    scores = np.array([9.0, 8.0, 7.0, 6.0, 5.0, 1.0, 0.5, 0.2])
    categories = np.array([0, 0, 0, 0, 0, 1, 2, -1])
    allowed = np.ones(8, dtype=bool)
    allowed[6] = False
    top = top_k(scores, 3, allowed)
    pool = with_category_bests(top, scores, allowed, categories, 3)
    assert pool.tolist() == [0, 1, 2, 5]  # category 1's best added, category 2 not allowed, unknown not a category
    assert mmr(pool, scores, categories, 3, 1.0).tolist() == [0, 5, 1]
