"""The approximate inner-product index: recall against exact scoring, filters, persistence,
and the lists a bundle with an index serves."""

from __future__ import annotations

from datetime import UTC, datetime
from pathlib import Path

import numpy as np
import pytest
import scipy.sparse as sp
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from recsys import models
from recsys.ann import (
    INDEX_FILE,
    PARAMS_FILE,
    AnnError,
    InnerProductIndex,
    ann_top_n,
    ann_top_n_batch,
    blend_top_n,
    build_for,
)
from recsys.bundle import ModelBundle
from recsys.candidate_scoring import precompute_candidates
from recsys.catalog import Catalog
from recsys.confidence import to_confidence
from recsys.delivery import DeliveryEngine
from recsys.home import EngineHome
from recsys.models.base import TrainingData
from recsys.query import Filters
from recsys.ranking import top_k
from recsys.settings import AnnSettings, EngineSettings
from recsys.users import UserTable
from tests.demo_store import copy_home, stored_items, train_cli
from training.batch import load_registered, recommend_batch

N_ITEMS, DIM, CLUSTERS = 50_000, 32, 200


def planted_factors(n_items: int, dim: int, clusters: int, n_users: int, seed: int
                    ) -> tuple[np.ndarray, np.ndarray]:
    """Items around ``clusters`` directions with long-tailed norms; users near one direction each."""
    rng = np.random.default_rng(seed)
    centres = rng.standard_normal((clusters, dim)).astype(np.float32)
    items = centres[rng.integers(0, clusters, n_items)] + 0.7 * rng.standard_normal((n_items, dim)).astype(np.float32)
    items *= rng.lognormal(0.0, 0.4, n_items).astype(np.float32)[:, None]
    users = centres[rng.integers(0, clusters, n_users)] + 0.5 * rng.standard_normal((n_users, dim)).astype(np.float32)
    return items.astype(np.float32), users.astype(np.float32)


@pytest.fixture(scope="module")
def planted() -> tuple[InnerProductIndex, np.ndarray, np.ndarray]:
    items, users = planted_factors(N_ITEMS, DIM, CLUSTERS, 200, seed=1)
    known = np.random.default_rng(2).random(N_ITEMS) > 0.05  # some items never interacted with
    return InnerProductIndex.build(items, known, AnnSettings(min_items=0)), items, users


def exact_top(items: np.ndarray, known: np.ndarray, user: np.ndarray, allowed: np.ndarray, n: int) -> np.ndarray:
    return top_k(items @ user, n, allowed & known)


def recall(found: np.ndarray, truth: np.ndarray) -> float:
    return len(set(found.tolist()) & set(truth.tolist())) / len(truth)


def test_recall_at_10_against_exact(planted) -> None:
    index, items, users = planted
    allowed = np.random.default_rng(3).random(N_ITEMS) > 0.3  # ended / hidden / filtered items
    recalls = [recall(ann_top_n(index, user, allowed, 10)[0], exact_top(items, index.known, user, allowed, 10))
               for user in users]
    assert np.mean(recalls) >= 0.95
    assert index.params["nprobe"] < index.params["nlist"]  # really approximate: not every list is scanned


def test_scores_are_exact_and_ordered(planted) -> None:
    index, items, users = planted
    allowed = np.ones(N_ITEMS, dtype=bool)
    found, scores = ann_top_n(index, users[0], allowed, 10)
    np.testing.assert_allclose(scores, items[found] @ users[0], rtol=1e-5)
    assert np.all(np.diff(scores) <= 0)
    assert index.known[found].all()  # items the model never saw are not in the index


@pytest.mark.parametrize("hidden", [40, 400, 4000])
def test_top_hits_all_disallowed_still_yields_n_allowed_items(planted, hidden: int) -> None:
    index, items, users = planted
    recalls = []
    for user in users[:20]:
        allowed = index.known.copy()
        allowed[np.argsort(-(items @ user))[:hidden]] = False  # the first fetch (10 x 4 items) and more
        found, _ = ann_top_n(index, user, allowed, 10)
        assert len(found) == 10 and allowed[found].all()
        recalls.append(recall(found, exact_top(items, index.known, user, allowed, 10)))
    assert np.mean(recalls) >= 0.8


def test_narrow_filter_falls_back_to_the_exact_list(planted) -> None:
    index, items, users = planted
    allowed = np.zeros(N_ITEMS, dtype=bool)
    allowed[np.random.default_rng(4).choice(N_ITEMS, 30, replace=False)] = True  # 30 of 50,000 items allowed
    found, scores = ann_top_n(index, users[7], allowed, 10)
    np.testing.assert_array_equal(found, exact_top(items, index.known, users[7], allowed, 10))
    allowed[:] = False
    assert len(ann_top_n(index, users[7], allowed, 10)[0]) == 0


@settings(max_examples=25, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(share=st.floats(0.0005, 1.0), seed=st.integers(0, 2**16), user=st.integers(0, 199), n=st.integers(1, 60))
def test_filters_are_never_violated(planted, share: float, seed: int, user: int, n: int) -> None:
    index, _, users = planted
    allowed = np.random.default_rng(seed).random(N_ITEMS) < share
    found, scores = ann_top_n(index, users[user], allowed, n)
    assert allowed[found].all() and index.known[found].all()
    assert len(found) == min(n, int((allowed & index.known).sum()))
    assert len(set(found.tolist())) == len(found)
    assert np.all(np.diff(scores) <= 0)


def test_batch_matches_single_rows_and_excludes_histories(planted) -> None:
    index, _, users = planted
    allowed = np.random.default_rng(5).random(N_ITEMS) > 0.2
    history = sp.random(20, N_ITEMS, density=0.002, format="csr", random_state=6, dtype=np.float32)
    batch_items, batch_scores = ann_top_n_batch(index, users[:20], allowed, 10, exclude=history)
    for row in range(20):
        row_allowed = allowed.copy()
        row_allowed[history[row].indices] = False
        single, _ = ann_top_n(index, users[row], row_allowed, 10)
        np.testing.assert_array_equal(batch_items[row], single)
        assert not np.isin(batch_items[row], history[row].indices).any()
    assert np.isfinite(batch_scores).all()


def test_save_load_round_trip_and_deterministic_build(planted, tmp_path: Path) -> None:
    index, items, users = planted
    index.save(tmp_path)
    assert {p.name for p in tmp_path.iterdir()} == {INDEX_FILE, PARAMS_FILE}
    loaded = InnerProductIndex.load(tmp_path, items, index.known)
    rebuilt = InnerProductIndex.build(items, index.known, AnnSettings(min_items=0))
    allowed = np.random.default_rng(7).random(N_ITEMS) > 0.5
    for user in users[:30]:
        expected = ann_top_n(index, user, allowed, 20)
        for other in (loaded, rebuilt):
            got = ann_top_n(other, user, allowed, 20)
            np.testing.assert_array_equal(got[0], expected[0])
            np.testing.assert_array_equal(got[1], expected[1])
    raw, _ = index.search(users[:5], 50)
    np.testing.assert_array_equal(loaded.search(users[:5], 50)[0], raw)


def test_load_refuses_an_index_for_other_factors(planted, tmp_path: Path) -> None:
    index, items, _ = planted
    index.save(tmp_path)
    with pytest.raises(AnnError):
        InnerProductIndex.load(tmp_path, items[:, :16], index.known)
    fewer = index.known.copy()
    fewer[np.flatnonzero(fewer)[:10]] = False
    with pytest.raises(AnnError):
        InnerProductIndex.load(tmp_path, items, fewer)


# ---- models and bundles ----------------------------------------------------------------
N_USERS, MODEL_ITEMS, TASTES = 3000, 12_000, 40
CATEGORIES = ["戏曲", "音乐", "讲座", "亲子", "展览", "电影"]


def taste_data(seed: int = 0) -> TrainingData:
    """Users in taste groups, each group favouring its own few hundred items; a popular background."""
    rng = np.random.default_rng(seed)
    group = rng.integers(0, TASTES, N_USERS)
    favourites = rng.permutation(MODEL_ITEMS - 500)[: TASTES * 250].reshape(TASTES, 250)  # 500 items stay cold
    popular = rng.zipf(1.6, N_USERS * 6) % (MODEL_ITEMS - 500)
    liked = favourites[np.repeat(group, 24), rng.integers(0, 250, N_USERS * 24)]
    rows = np.concatenate([np.repeat(np.arange(N_USERS), 24), np.repeat(np.arange(N_USERS), 6)])
    cols = np.concatenate([liked, popular])
    weights = sp.csr_matrix((rng.integers(1, 9, len(rows)).astype(np.float32), (rows, cols)),
                            shape=(N_USERS, MODEL_ITEMS))
    weights.sum_duplicates()
    category = rng.integers(0, len(CATEGORIES), MODEL_ITEMS)
    catalog = Catalog.from_columns(
        [f"i{i}" for i in range(MODEL_ITEMS)], title=[f"活动{i}" for i in range(MODEL_ITEMS)],
        kind=["event"] * MODEL_ITEMS, category=[CATEGORIES[c] for c in category],
        region=["110101" if i % 2 else "110119" for i in range(MODEL_ITEMS)],
        tags=[[CATEGORIES[c] + "标签"] for c in category],
    )
    users = UserTable.from_columns(
        [f"u{u}" for u in range(N_USERS)], region=["110119" if u % 2 else "110101" for u in range(N_USERS)],
        age_band=["60+" if u % 3 == 0 else "18-34" for u in range(N_USERS)],
        area_type=["rural" if u % 2 else "urban" for u in range(N_USERS)],
    )
    return TrainingData(to_confidence(weights), weights, catalog, users, seed=seed)


@pytest.fixture(scope="module")
def taste() -> TrainingData:
    return taste_data()


@pytest.fixture(scope="module")
def hybrid(taste: TrainingData):
    return models.create("hybrid", {"als": {"factors": 32, "iterations": 6}}).fit(taste)


def test_build_for_respects_the_catalog_threshold_and_model_kind(taste: TrainingData, hybrid) -> None:
    assert build_for(hybrid, MODEL_ITEMS, AnnSettings(min_items=MODEL_ITEMS + 1)) is None
    index = build_for(hybrid, MODEL_ITEMS, AnnSettings(min_items=MODEL_ITEMS))
    assert index is not None and index.n_indexed == int(hybrid.cf.known_items.sum())
    itemknn = models.create("itemknn").fit(taste)
    assert build_for(itemknn, MODEL_ITEMS, AnnSettings(min_items=0)) is None


def test_blend_top_n_matches_full_hybrid_scoring(taste: TrainingData, hybrid) -> None:
    index = build_for(hybrid, MODEL_ITEMS, AnnSettings(min_items=0))
    available = np.random.default_rng(8).random(MODEL_ITEMS) > 0.2
    overlaps = []
    for row in range(0, N_USERS, 15):
        history = taste.matrix[row]
        allowed = available.copy()
        allowed[history.indices] = False
        full = hybrid.score(np.array([row]), history)[0]
        expected = top_k(full, 10, allowed)
        found, scores = blend_top_n(hybrid, index, np.array([row]), history, allowed, 10)
        assert allowed[found].all()
        np.testing.assert_allclose(scores, full[found], rtol=1e-4, atol=1e-6)  # the hybrid's own scores
        overlaps.append(recall(found, expected))
    assert np.mean(overlaps) >= 0.95


def engines(data: TrainingData, model, directory: Path):
    """(exact engine, engine over a saved and reloaded bundle with an index)."""
    settings = EngineSettings(ann=AnnSettings(min_items=0))
    exact = ModelBundle(model, data.catalog, data.users, data.weights, settings)
    indexed = ModelBundle(model, data.catalog, data.users, data.weights, settings,
                          ann=build_for(model, MODEL_ITEMS, settings.ann))
    loaded = ModelBundle.load(indexed.save(directory))
    assert loaded.ann is not None and (directory / INDEX_FILE).is_file()
    return DeliveryEngine(exact), DeliveryEngine(loaded)


@pytest.mark.parametrize("name", ["als", "hybrid"])
def test_bundle_with_index_serves_the_exact_lists(taste: TrainingData, hybrid, name: str, tmp_path: Path) -> None:
    model = hybrid if name == "hybrid" else models.create("als", {"factors": 32, "iterations": 6}).fit(taste)
    exact, approximate = engines(taste, model, tmp_path)
    filters = Filters(at=0.0)
    overlaps, diverse = [], []
    for row in range(0, N_USERS, 20):
        user = f"u{row}"
        want = [r.item for r in exact.for_user(user, 10, filters, diversity=0.0).items]
        got = approximate.for_user(user, 10, filters, diversity=0.0).items
        assert not set(r.item for r in got) & set(taste.weights[row].indices.tolist())  # history never shown
        overlaps.append(recall(np.array([r.item for r in got]), np.array(want)))
        want = [r.item for r in exact.for_user(user, 10, filters).items]
        got_diverse = [r.item for r in approximate.for_user(user, 10, filters).items]
        diverse.append(recall(np.array(got_diverse), np.array(want)))
    assert np.mean(overlaps) >= 0.95 and np.mean(diverse) >= 0.9
    rows = np.arange(0, N_USERS, 10)
    want_rows, _ = exact.top_n_for_rows(rows, 10, at=0.0)
    got_rows, got_scores = approximate.top_n_for_rows(rows, 10, at=0.0)
    assert np.mean([recall(g, w) for g, w in zip(got_rows, want_rows, strict=True)]) >= 0.95
    assert np.isfinite(got_scores).all()


@pytest.mark.parametrize("name", ["als", "hybrid"])
def test_candidates_of_an_indexed_bundle_come_from_the_index(taste: TrainingData, hybrid, name: str,
                                                              tmp_path: Path) -> None:
    """A large catalog's lists are found through its index (not by scoring every item): they
    match the exact lists, hold no seen or hidden item, and serve the same answers."""
    model = hybrid if name == "hybrid" else models.create("als", {"factors": 32, "iterations": 6}).fit(taste)
    exact, approximate = engines(taste, model, tmp_path)
    exact_lists = precompute_candidates(exact.bundle, k=50)
    found = precompute_candidates(approximate.bundle, k=50)
    rows = np.arange(0, N_USERS, 7)
    overlaps = []
    for row in rows:
        items, scores = found.row(row)
        assert len(items) == 50 and not set(items.tolist()) & set(taste.weights[row].indices.tolist())
        assert not approximate.catalog.hidden[items].any() and np.all(np.diff(scores) <= 1e-6)  # best first
        overlaps.append(recall(items[:10], exact_lists.row(row)[0][:10]))
    assert np.mean(overlaps) >= 0.95
    if name == "als":  # the index found them, not a full scoring: somewhere past the top they differ
        assert any(not np.array_equal(found.row(row)[0], exact_lists.row(row)[0]) for row in rows)
    approximate.use_candidates(found)
    filters = Filters(at=0.0)
    served = [recall(np.array([r.item for r in approximate.for_user(f"u{row}", 10, filters, diversity=0.0).items]),
                     np.array([r.item for r in exact.for_user(f"u{row}", 10, filters, diversity=0.0).items]))
              for row in rows]
    assert np.mean(served) >= 0.95


def test_indexed_engine_obeys_request_filters(taste: TrainingData, hybrid, tmp_path: Path) -> None:
    _, approximate = engines(taste, hybrid, tmp_path)
    for row in range(0, N_USERS, 150):
        listed = approximate.for_user(f"u{row}", 10, Filters(at=0.0, category="戏曲")).items
        assert len(listed) == 10
        assert {taste.catalog.category_name(r.item) for r in listed} == {"戏曲"}


def test_training_stores_an_index_above_the_threshold_and_batch_uses_it(trained_small_home: Path, tmp_path: Path,
                                                                        monkeypatch: pytest.MonkeyPatch) -> None:
    root = copy_home(trained_small_home, tmp_path / "home")
    home = EngineHome.at(root)
    items = stored_items(home).height  # every stored item (events and the menu's programmes) is in its catalog
    monkeypatch.setenv("RECSYS_ANN", f'{{"min_items": {items + 1}}}')  # the catalog is below the threshold: no index
    first = train_cli(root, "--model", "als", "--no-promote")
    assert load_registered(home, first["version"])[1].ann is None
    monkeypatch.setenv("RECSYS_ANN", f'{{"min_items": {items}}}')
    second = train_cli(root, "--model", "hybrid", "--no-promote")
    _, bundle = load_registered(home, second["version"])
    assert bundle.ann is not None and bundle.ann.n_indexed == int(bundle.model.cf.known_items.sum())
    users = list(bundle.users.users.ids[:300])
    at = datetime(2026, 10, 31, tzinfo=UTC).timestamp()
    frame = recommend_batch(bundle, users, 10, at=at)
    rows = bundle.users.users.indices(users)
    item_ids = np.asarray(bundle.catalog.items.ids, dtype=object)
    engaged = {(user, item_ids[i]) for user, row in zip(users, rows, strict=True)
               for i in bundle.weights[row].indices.tolist()}
    listed = set(zip(frame["user_id"].to_list(), frame["item_id"].to_list(), strict=True))
    assert frame["user_id"].n_unique() == len(users) and not engaged & listed
    ended = set(item_ids[~bundle.catalog.available_at(at)].tolist())
    assert not ended & set(frame["item_id"].to_list())
