"""Precomputed candidates: the fast path returns what full scoring returns.

The fast path (known user, no live interactions, candidates in the bundle) must equal the
full path item for item and reason for reason, score for score up to float noise (lists are
scored many users per matrix product, the full path one user at a time: the last bits
differ), whenever enough candidates survive the request's filters, and must step aside
otherwise. Also: what the candidate lists
hold, their round trip through a bundle, the server computing them for an old artifact,
and the user route's hand-serialised body and documented query.
"""

from __future__ import annotations

import json
import shutil
import sys
import warnings
from pathlib import Path
from typing import Annotated
from urllib.parse import quote

import numpy as np
import pytest
from fastapi import FastAPI, Query
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

with warnings.catch_warnings():  # starlette's TestClient warns about its httpx dependency
    warnings.simplefilter("ignore")
    from fastapi.testclient import TestClient

from recsys import candidate_scoring, models
from recsys.bundle import BundleError, ModelBundle
from recsys.candidate_scoring import attach_candidates, precompute_candidates
from recsys.candidates import FILE_NAME, NOT_ANCHORED, Candidates, CandidatesError
from recsys.confidence import to_confidence
from recsys.delivery import DeliveryEngine
from recsys.query import Filters, UserContext
from recsys.ranking import top_k
from recsys.reasons import ANCHOR_SIMILARITY, NO_ANCHOR, NO_NOTION, anchor_codes
from recsys.settings import EngineSettings
from serving.app import create_app
from serving.config import ServingSettings
from serving.list_query import UserListQuery
from serving.schemas import UserRecommendations
from tests.serving_fixtures import (
    CENTER,
    COLD_USERS,
    DAY,
    FAST_HYBRID,
    HIDDEN,
    KEY_HEADERS,
    T0,
    iso,
    keyed_settings,
    rules_data,
)
from training import candidate_lists
from training.candidate_lists import CandidateWorkersFailed, precompute_in_processes, save_with_candidates

K = 40
"""Short lists (of 80 items), so that filters often leave too few and the full path must step in."""
COLD_USERS_INDEX = 300
"""The first user of the table without history."""


@pytest.fixture(scope="module")
def bundle() -> ModelBundle:
    data = rules_data(seed=0)
    model = models.create("hybrid", FAST_HYBRID).fit(data)
    plain = ModelBundle(model, data.catalog, data.users, data.weights, EngineSettings(), {"trained_at": "t"})
    return attach_candidates(plain, k=K)


@pytest.fixture(scope="module")
def engines(bundle) -> tuple[DeliveryEngine, DeliveryEngine]:
    """(fast, full): the same bundle served with and without its candidates."""
    fast = DeliveryEngine(bundle)
    full = DeliveryEngine(bundle)
    full.candidates = None
    return fast, full


SCORE_NOISE = 1e-6
"""How far a batched product's score may be from the one-row product's (float32, scores near 1)."""


def listed(result) -> list[tuple]:
    return [(r.item, r.item_id, r.score, r.reason) for r in result.items]


def assert_same_list(got, expected) -> None:
    """The same items, ids, reasons and fallback, in the same order; scores equal up to float noise."""
    assert [(r.item, r.item_id, r.reason) for r in got.items] == \
        [(r.item, r.item_id, r.reason) for r in expected.items]
    assert got.fallback == expected.fallback
    np.testing.assert_allclose([r.score for r in got.items], [r.score for r in expected.items],
                               rtol=SCORE_NOISE, atol=SCORE_NOISE)


# ---- the two paths agree ----------------------------------------------------------------
FAST_PATH_TAKEN: list[bool] = []


@settings(max_examples=300, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(user=st.integers(0, 301), hours=st.floats(-5 * 24, 5 * 24), n=st.integers(1, 12),
       diversity=st.sampled_from([0.0, 0.1, 0.2, 0.35, 1.0]), kind=st.sampled_from([None, None, "event", "digital"]),
       category=st.sampled_from([None, None, None, "讲座"]),
       place=st.one_of(st.none(), st.none(), st.tuples(st.floats(0.5, 30.0), st.booleans())))
def test_fast_path_equals_full_scoring(engines, bundle, user, hours, n, diversity, kind, category, place):
    fast, full = engines
    user_id = bundle.users.users.id_of(user)
    lat, lon, radius = (CENTER[0], CENTER[1], place[0] if place[1] else None) if place else (None, None, None)
    filters = Filters(at=T0 + hours * 3600, kind=kind, category=category, lat=lat, lon=lon, radius_km=radius)
    taken = fast._from_candidates(bundle.candidates, user, n, filters, diversity) is not None
    FAST_PATH_TAKEN.append(taken)
    got = fast.for_user(user_id, n, filters, diversity=diversity)
    expected = full.for_user(user_id, n, filters, diversity=diversity)
    assert_same_list(got, expected)
    if taken:  # the fast path never answers with fewer than n items
        assert len(got.items) == n


def test_both_paths_were_exercised():
    """The property above is only worth something if it compared both kinds of request."""
    assert len(FAST_PATH_TAKEN) >= 100, len(FAST_PATH_TAKEN)
    assert 0.3 < np.mean(FAST_PATH_TAKEN) < 0.97, np.mean(FAST_PATH_TAKEN)


def test_time_alone_decides_the_fast_path(engines, bundle):
    """Unfiltered 6-item lists for many known users, at times around the items' end dates."""
    fast, full = engines
    taken = 0
    for user in range(0, 300, 3):
        for day in (-3, 0, 2):
            filters = Filters(at=T0 + day * DAY + 1800)
            taken += fast._from_candidates(bundle.candidates, user, 6, filters, 0.2) is not None
            user_id = bundle.users.users.id_of(user)
            assert_same_list(fast.for_user(user_id, 6, filters), full.for_user(user_id, 6, filters))
    assert taken == 300  # at most 9 of 80 items are hidden or ended: 30 of 40 candidates always survive


def test_anchors_past_the_anchored_prefix_are_computed_by_the_request(bundle, monkeypatch):
    """Lists anchor only their first ANCHORED candidates; a request that shows a later one
    computes its anchor, and both paths still give the same reasons."""
    monkeypatch.setattr(candidate_scoring, "ANCHORED", 3)
    shallow = precompute_candidates(bundle, k=K)
    monkeypatch.undo()
    codes = shallow.anchors_of(0)
    assert (codes[3:] == NOT_ANCHORED).all() and (codes[:3] != NOT_ANCHORED).all()
    np.testing.assert_array_equal(codes[:3], bundle.candidates.anchors_of(0)[:3])
    fast = DeliveryEngine(bundle)
    fast.use_candidates(shallow)
    full = DeliveryEngine(bundle)
    full.candidates = None
    reached = 0
    for user in range(0, 300, 5):
        for filters, diversity in ((Filters(at=T0), 0.0), (Filters(at=T0, kind="event"), 0.5),
                                   (Filters(at=T0 + 2 * DAY, category="讲座"), 0.2)):
            items, _ = shallow.row(user)
            got = fast.for_user(bundle.users.users.id_of(user), 6, filters, diversity=diversity)
            assert_same_list(got, full.for_user(bundle.users.users.id_of(user), 6, filters, diversity=diversity))
            positions = [int(np.flatnonzero(items == r.item)[0]) for r in got.items if r.item in items]
            reached += any(position >= 3 for position in positions)
    assert reached > 50  # most lists showed a candidate whose anchor the request computed


def test_live_interactions_and_large_lists_take_the_full_path(engines, bundle):
    fast, _ = engines
    candidates = bundle.candidates
    filters = Filters(at=T0)
    assert fast._from_candidates(candidates, 5, K // 5 + 1, filters, 0.2) is None  # 5 x n > k
    item = int(candidates.row(5)[0][0])
    live = fast.for_user("u5", 10, filters, context=UserContext(live_weights={item: 3.0}))
    assert item not in [r.item for r in live.items]  # the full path folded the live item in
    assert fast.for_user(COLD_USERS[0], 10, filters).fallback == "segment_popularity"


# ---- what the lists hold ----------------------------------------------------------------
def test_candidates_are_each_users_top_k(bundle):
    candidates = bundle.candidates
    assert candidates.items.dtype == np.int32 and candidates.scores.dtype == np.float32
    assert candidates.anchors.dtype == np.int16
    codes = set(np.unique(candidates.anchors).tolist())
    assert NO_ANCHOR in codes and max(codes) > 0 and min(codes) >= NO_NOTION  # named anchors and plain reasons
    hidden = {bundle.catalog.items.index_of(i) for i in HIDDEN}
    settings_ = bundle.settings
    for user in (0, 1, 57, 299):
        items, scores = candidates.row(user)
        history = bundle.weights[user]
        full = bundle.model.score(np.array([user]), to_confidence(history, settings_.confidence, settings_.alpha))[0]
        assert len(items) == K and not candidates.is_complete(user)
        assert not set(items.tolist()) & (set(history.indices.tolist()) | hidden)
        np.testing.assert_allclose(scores, full[items], rtol=SCORE_NOISE, atol=SCORE_NOISE)
        np.testing.assert_array_equal(candidates.anchors_of(user), anchor_codes(bundle.model, items, history.indices))
        order = np.lexsort((items, -scores.astype(np.float64)))
        assert order.tolist() == list(range(K))  # best first, ties by lower index
        showable = np.ones(len(full), bool)
        showable[list(hidden)] = False
        showable[history.indices] = False
        # the one-row full path's own top K (this data has no near-ties for float noise to reorder)
        np.testing.assert_array_equal(items, top_k(full, K, showable))
        showable[items] = False
        assert full[showable].max() <= scores[-1] + SCORE_NOISE  # nothing left out beats the last candidate
    for cold in COLD_USERS:  # no history: an empty row that does not claim to be complete
        index = bundle.users.users.index_of(cold)
        assert len(candidates.row(index)[0]) == 0 and not candidates.is_complete(index) and candidates.slot(index) < 0


def test_a_list_holding_everything_is_complete(bundle):
    every = precompute_candidates(bundle, k=500)
    assert every.k == len(bundle.catalog)
    assert [every.is_complete(u) for u in range(every.n_users)] == (np.diff(bundle.weights.indptr) > 0).tolist()
    for user in (0, 11):
        showable = ~bundle.catalog.hidden
        showable[bundle.weights[user].indices] = False
        assert sorted(every.row(user)[0].tolist()) == np.flatnonzero(showable).tolist()


def test_worker_processes_compute_the_same_lists(bundle, tmp_path):
    """Spawned processes load the saved bundle and score whole chunks of the users: the lists of
    one process cutting the same chunks, bit for bit (a batched product's last bits depend on
    its batch, so a worker never cuts chunks of its own)."""
    directory = bundle.save(tmp_path / "b")
    rows = np.flatnonzero(np.diff(bundle.weights.indptr) > 0)
    single = precompute_candidates(bundle, K, chunk=37)
    assert len(rows) > 4 * 37  # several chunks for each worker
    for expected, parallel in ((bundle.candidates, precompute_in_processes(bundle, directory, rows, K, workers=2)),
                               (single, precompute_in_processes(bundle, directory, rows, K, workers=2, chunk=37))):
        for name in ("items", "scores", "anchors", "complete", "lengths", "slots"):
            np.testing.assert_array_equal(getattr(parallel, name), getattr(expected, name))
    # other chunks, other last bits: the same lists on this data (no near-ties), scores up to noise
    np.testing.assert_array_equal(single.items, bundle.candidates.items)
    np.testing.assert_allclose(single.scores, bundle.candidates.scores, rtol=SCORE_NOISE, atol=SCORE_NOISE)


def test_a_failing_worker_is_reported_and_training_scores_in_its_own_process(bundle, tmp_path, monkeypatch):
    rows = np.flatnonzero(np.diff(bundle.weights.indptr) > 0)
    with pytest.raises(CandidateWorkersFailed, match="cannot load model artifact"):
        precompute_in_processes(bundle, tmp_path / "no-bundle-here", rows, K, workers=2)
    plain = ModelBundle(bundle.model, bundle.catalog, bundle.users, bundle.weights, bundle.settings, bundle.manifest)
    monkeypatch.setattr(candidate_lists, "PARALLEL_MIN_USERS", 1)
    monkeypatch.setattr(sys, "executable", shutil.which("false"))  # every worker exits 1 at once
    loaded = ModelBundle.load(save_with_candidates(plain, tmp_path / "b", k=K, workers=2)).candidates
    for name in ("items", "scores", "anchors", "complete", "slots"):
        np.testing.assert_array_equal(getattr(loaded, name), getattr(bundle.candidates, name))


def test_saving_with_candidates_writes_them_into_the_bundle(bundle, tmp_path):
    plain = ModelBundle(bundle.model, bundle.catalog, bundle.users, bundle.weights, bundle.settings, bundle.manifest)
    path = save_with_candidates(plain, tmp_path / "b", k=K)
    loaded = ModelBundle.load(path)
    np.testing.assert_array_equal(loaded.candidates.items, bundle.candidates.items)
    np.testing.assert_array_equal(loaded.candidates.scores, bundle.candidates.scores)


def test_only_the_asked_users_and_stopping(bundle):
    some = precompute_candidates(bundle, k=10, users=[3, 4, COLD_USERS_INDEX])
    assert [len(some.row(u)[0]) for u in (2, 3, 4, 5, COLD_USERS_INDEX)] == [0, 10, 10, 0, 0]
    np.testing.assert_array_equal(some.row(3)[0], bundle.candidates.row(3)[0][:10])
    assert precompute_candidates(bundle, k=10, should_stop=lambda: True) is None


def test_anchor_codes_name_the_closest_history_item_or_say_why_not(bundle):
    """A pure collaborative model cannot relate a never-touched item: its reason is not a name."""
    data = rules_data(seed=0)
    als = models.create("als", {"factors": 8, "iterations": 4, "num_threads": 1}).fit(data)
    cold = int(np.flatnonzero(~als.known_items)[0])
    history = bundle.weights[4].indices
    closeness = als.item_similarity_matrix(np.array([3, 9]), history)
    codes = anchor_codes(als, np.array([cold, 3, 9]), history)
    assert codes[0] == NO_NOTION
    for code, row in zip(codes[1:], closeness, strict=True):
        assert code == (int(np.argmax(row)) if row.max() >= ANCHOR_SIMILARITY else NO_ANCHOR)
    assert anchor_codes(als, np.array([3]), history[:0]).tolist() == [NO_ANCHOR]  # nothing to name


# ---- persistence ------------------------------------------------------------------------
def test_round_trip_through_the_bundle(bundle, tmp_path):
    bundle.save(tmp_path / "b")
    assert (tmp_path / "b" / FILE_NAME).is_file()
    loaded = ModelBundle.load(tmp_path / "b")
    for name in ("items", "scores", "anchors", "complete", "lengths", "slots"):
        np.testing.assert_array_equal(getattr(loaded.candidates, name), getattr(bundle.candidates, name))
    (tmp_path / "b" / FILE_NAME).unlink()
    assert ModelBundle.load(tmp_path / "b").candidates is None  # an old artifact: full scoring


def test_lists_for_the_most_active_users_only(bundle, engines, tmp_path):
    """A capped bundle holds rows for the most active users only; the others get the same
    answers through the full path."""
    plain = ModelBundle(bundle.model, bundle.catalog, bundle.users, bundle.weights, bundle.settings, bundle.manifest)
    capped = ModelBundle.load(save_with_candidates(plain, tmp_path / "b", k=K, max_users=5)).candidates
    activity = np.diff(bundle.weights.indptr)
    covered = np.flatnonzero(capped.slots >= 0)
    assert capped.n_rows == 5 and capped.n_users == len(activity)
    assert activity[covered].min() >= np.sort(activity)[-5]  # the most active
    for user in covered:
        np.testing.assert_array_equal(capped.row(user)[0], bundle.candidates.row(user)[0])
    served = DeliveryEngine(bundle)
    served.use_candidates(capped)
    _, full = engines
    outside = [u for u in range(0, 300, 7) if capped.slot(u) < 0]
    assert len(outside) > 30
    for user in outside:
        user_id = bundle.users.users.id_of(user)
        assert listed(served.for_user(user_id, 6, Filters(at=T0))) == listed(full.for_user(user_id, 6, Filters(at=T0)))


def test_a_file_with_one_row_per_user_still_loads(bundle, tmp_path):
    """Lists written without slots (one row per user, empty rows for users without one)."""
    c = bundle.candidates
    users = c.row_users()
    full = [np.full((c.n_users, c.k), fill, dtype=a.dtype) for fill, a in ((-1, c.items), (np.nan, c.scores),
                                                                            (NO_ANCHOR, c.anchors))]
    for array, compact in zip(full, (c.items, c.scores, c.anchors), strict=True):
        array[users] = compact
    complete = np.zeros(c.n_users, dtype=bool)
    complete[users] = c.complete
    path = Candidates(*full, complete).save(tmp_path / FILE_NAME)
    with np.load(path) as stored:
        assert "slots" not in stored.files
    loaded = Candidates.load(path)
    for user in (0, 7, COLD_USERS_INDEX):
        np.testing.assert_array_equal(loaded.row(user)[0], c.row(user)[0])
        np.testing.assert_array_equal(loaded.anchors_of(user), c.anchors_of(user))
    with pytest.raises(CandidatesError, match="slots"):
        doubled = c.slots.copy()
        doubled[np.flatnonzero(doubled < 0)[0]] = 0  # a second user on row 0
        Candidates(c.items, c.scores, c.anchors, c.complete, doubled)


def test_foreign_or_damaged_candidates_are_refused(bundle, tmp_path):
    directory = bundle.save(tmp_path / "b")
    c = bundle.candidates
    Candidates(c.items[:10], c.scores[:10], c.anchors[:10], c.complete[:10]).save(directory / FILE_NAME)
    with pytest.raises(BundleError, match="candidates"):
        ModelBundle.load(directory)
    shuffled = c.items.copy()
    shuffled[0, 0], shuffled[0, -1] = -1, 7  # padding before an item
    Candidates(shuffled, c.scores, c.anchors, c.complete, c.slots).save(directory / FILE_NAME)
    with pytest.raises(BundleError, match="padding"):
        ModelBundle.load(directory)
    below = c.anchors.copy()
    below[c.slot(0), 0] = NOT_ANCHORED - 1  # no such code
    Candidates(c.items, c.scores, below, c.complete, c.slots).save(directory / FILE_NAME)
    with pytest.raises(BundleError, match="anchors"):
        ModelBundle.load(directory)
    beyond = c.anchors.copy()
    beyond[c.slot(0), 0] = bundle.weights[0].nnz  # one past the user's history
    Candidates(c.items, c.scores, beyond, c.complete, c.slots).save(directory / FILE_NAME)
    with pytest.raises(BundleError, match="anchors"):
        ModelBundle.load(directory)
    (directory / FILE_NAME).write_bytes(b"not a zip")
    with pytest.raises(BundleError, match="cannot load"):
        ModelBundle.load(directory)


# ---- the server -------------------------------------------------------------------------
@pytest.fixture(scope="module")
def old_artifact(bundle, tmp_path_factory) -> Path:
    directory = bundle.save(tmp_path_factory.mktemp("old") / "bundle")
    (directory / FILE_NAME).unlink()
    return directory


def test_server_computes_missing_candidates_in_the_background(old_artifact, tmp_path, bundle):
    app = create_app(keyed_settings(home=tmp_path / "home", model_dir=old_artifact))
    with TestClient(app, headers=KEY_HEADERS) as client:
        holder = app.state.services.holder
        assert holder.wait_for_candidates(60)
        computed = holder.current.engine.candidates
        np.testing.assert_array_equal(computed.items[:, :K], bundle.candidates.items)  # same order, longer
        body = client.get("/v1/users/u7/recommendations", params={"n": 5, "at": iso(T0)}).json()
        assert [i["item_id"] for i in body["items"]] == \
            [r.item_id for r in DeliveryEngine(bundle).for_user("u7", 5, Filters(at=T0)).items]


def test_server_caps_the_users_it_computes_for(old_artifact, tmp_path, bundle):
    app = create_app(ServingSettings(home=tmp_path / "home", model_dir=old_artifact, candidate_users=5))
    with TestClient(app):
        holder = app.state.services.holder
        assert holder.wait_for_candidates(60)
        computed = holder.current.engine.candidates
    activity = np.diff(bundle.weights.indptr)
    covered = np.flatnonzero(computed.slots >= 0)
    assert len(covered) == 5 and activity[covered].min() >= np.sort(activity)[-5]  # the most active
    app = create_app(ServingSettings(home=tmp_path / "home2", model_dir=old_artifact, candidate_users=0))
    with TestClient(app):
        assert app.state.services.holder.current.engine.candidates is None


@pytest.fixture(scope="module")
def client(bundle, tmp_path_factory):
    directory = bundle.save(tmp_path_factory.mktemp("new") / "bundle")
    app = create_app(keyed_settings(home=tmp_path_factory.mktemp("home"), model_dir=directory))
    with TestClient(app, headers=KEY_HEADERS) as c:
        yield c


def test_user_body_is_what_the_response_model_would_send(client, engines):
    """Byte for byte what FastAPI's JSONResponse would make of the validated response model."""
    requests = [("u3", {"n": 7, "at": iso(T0)}), ("u3", {"n": 3, "lat": CENTER[0], "lon": CENTER[1]}),
                ('戏迷 "老王"\\\n', {"n": 4}), ("u8", {"n": 2, "kind": "digital", "diversity": 0})]
    for user, params in requests:
        response = client.get(f"/v1/users/{quote(user, safe='')}/recommendations", params=params)
        assert response.status_code == 200 and response.headers["content-type"] == "application/json"
        model = UserRecommendations.model_validate(response.json())
        rendered = json.dumps(model.model_dump(), ensure_ascii=False, allow_nan=False, separators=(",", ":"))
        assert response.content == rendered.encode("utf-8")
        assert model.user_id == user and len(model.items) == params["n"]
        assert model.fallback == (None if user.startswith("u") else "popularity")
    expected = engines[0].for_user("u3", 7, Filters(at=T0))
    body = client.get("/v1/users/u3/recommendations", params={"n": 7, "at": iso(T0)}).json()
    assert [(i["item_id"], i["score"], i["reason"]) for i in body["items"]] == \
        [(r.item_id, round(r.score, 6), r.reason) for r in expected.items]
    catalog = engines[0].catalog
    assert [(i["title"], i["kind"], i["category"]) for i in body["items"]] == \
        [(catalog.title[r.item], catalog.kind_name(r.item), catalog.category_name(r.item)) for r in expected.items]


def test_user_query_is_documented_as_fastapi_documents_query_parameters(client):
    reference = FastAPI()

    @reference.get("/q")
    def declared(q: Annotated[UserListQuery, Query()]) -> None:  # the fields as individual query parameters
        return None

    expected = {p["name"]: p for p in reference.openapi()["paths"]["/q"]["get"]["parameters"]}
    documented = client.get("/openapi.json").json()["paths"]["/v1/users/{user_id}/recommendations"]["get"]
    parameters = {p["name"]: p for p in documented["parameters"]}
    assert set(parameters) == {"user_id", *UserListQuery.model_fields}
    for name, parameter in expected.items():
        assert parameters[name] == parameter
    response = client.get("/v1/users/u1/recommendations", params={"n": 0, "diversity": 2})
    detail = response.json()["detail"]
    assert response.status_code == 422 and "n: " in detail and "diversity: " in detail

