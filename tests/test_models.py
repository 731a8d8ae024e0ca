"""Model contract: every model fits, recovers a planted preference, round-trips through
save/load with identical scores, folds in unknown users, treats cold items honestly, and
explains a list (items x history similarities) at the cost of those pairs, never of the
whole catalog per item. EASE: the closed form, over its most active items only."""

from __future__ import annotations

import json
import logging

import numpy as np
import pytest
import scipy.sparse as sp

from recsys import models
from recsys.models.base import TrainingData
from recsys.ranking import top_k_batch
from tests.model_fixtures import CATEGORIES, group_code, planted

FAST = {
    "als": {"factors": 16, "iterations": 10},
    "bpr": {"factors": 16, "iterations": 60},
    "itemknn": {"neighbours": 30},
    "ease": {"l2": 20.0},
    "popularity": {},
    "hybrid": {"als": {"factors": 16, "iterations": 10}},
}
"""Fast parameters of every model in :data:`recsys.models.MODELS` (a model missing here fails the fits)."""
PERSONAL = [name for name in models.MODELS if name != "popularity"]
COLLABORATIVE = [name for name in PERSONAL if name != "hybrid"]


@pytest.fixture(scope="module")
def data():
    return planted()


@pytest.fixture(scope="module")
def fitted(data):
    return {name: models.create(name, FAST[name]).fit(data) for name in models.MODELS}


def _category_hit_rate(model, data) -> float:
    users = np.arange(data.matrix.shape[0])
    recs = top_k_batch(model.score(users, data.matrix), 5, exclude=data.matrix)
    categories = data.catalog.category[recs]
    expected = np.array([group_code(data, u % len(CATEGORIES)) for u in users])[:, None]
    return float((categories == expected).mean())


@pytest.mark.parametrize("name", PERSONAL)
def test_recovers_planted_preference(name, fitted, data):
    # Random guessing hits the user's group category 25% of the time.
    assert _category_hit_rate(fitted[name], data) >= 0.7


def test_popularity_is_not_personal(fitted, data):
    assert _category_hit_rate(fitted["popularity"], data) < 0.5


@pytest.mark.parametrize("name", list(models.MODELS))
def test_save_load_roundtrip_scores_identical(name, fitted, data, tmp_path):
    fitted[name].save(tmp_path / name)
    loaded = models.load(tmp_path / name)
    users = np.arange(10)
    np.testing.assert_allclose(loaded.score(users, data.matrix[users]),
                               fitted[name].score(users, data.matrix[users]), rtol=1e-5)


@pytest.mark.parametrize("name", PERSONAL)
def test_fold_in_unknown_user_follows_history(name, fitted, data):
    # A new user whose history is three opera (category 0) items gets opera first.
    opera_code = group_code(data, 0)
    opera = np.flatnonzero((data.catalog.category == opera_code) & data.known_items)[:3]
    history = sp.csr_matrix((np.full(3, 4.0, np.float32), (np.zeros(3, int), opera)), shape=(1, data.matrix.shape[1]))
    scores = fitted[name].score(np.array([-1]), history)
    recs = top_k_batch(scores, 5, exclude=history)[0]
    assert (data.catalog.category[recs] == opera_code).mean() >= 0.6


@pytest.mark.parametrize("name", COLLABORATIVE)
def test_pure_collaborative_models_cannot_score_cold_items(name, fitted, data):
    scores = fitted[name].score(np.arange(20), data.matrix[:20])
    assert np.isneginf(scores[:, ~data.known_items]).all()


def test_hybrid_scores_cold_items_through_metadata(fitted, data):
    cold = np.flatnonzero(~data.known_items)
    scores = fitted["hybrid"].score(np.arange(40), data.matrix[:40])
    assert np.isfinite(scores[:, cold]).all()
    # a user of group g prefers the cold items of category g over other cold items
    for user in range(40):
        own = cold[data.catalog.category[cold] == group_code(data, user % 4)]
        other = cold[data.catalog.category[cold] != group_code(data, user % 4)]
        assert scores[user, own].mean() > scores[user, other].mean()


def test_fits_are_deterministic_for_a_seed(data):
    first = models.create("als", FAST["als"]).fit(data).score(np.arange(5), data.matrix[:5])
    second = models.create("als", FAST["als"]).fit(data).score(np.arange(5), data.matrix[:5])
    np.testing.assert_array_equal(first, second)


def test_unknown_model_and_bad_params_raise_value_error():
    with pytest.raises(ValueError, match="unknown model"):
        models.create("svd")
    with pytest.raises(ValueError):
        models.create("als", {"factors": 0})
    with pytest.raises(ValueError):
        models.create("als", {"no_such_param": 1})


# ---- explaining at the cost of the model ------------------------------------------------
FAMILIES = {
    **{name: (name, params) for name, params in FAST.items()},
    "ease-capped": ("ease", {"l2": 20.0, "max_items": 40}),
    "hybrid-itemknn": ("hybrid", {"cf_model": "itemknn", "itemknn": FAST["itemknn"]}),
    "hybrid-ease": ("hybrid", {"cf_model": "ease", "ease": {"l2": 20.0, "max_items": 40}}),
}
"""Every model family, and every collaborative part a hybrid can have."""


@pytest.fixture(scope="module")
def families(data):
    return {label: models.create(name, params).fit(data) for label, (name, params) in FAMILIES.items()}


def _per_item(model, items: np.ndarray, others: np.ndarray) -> np.ndarray:
    """What ``item_similarity_matrix`` must equal: each item's similarity to the catalog, at ``others``."""
    rows = [model.item_similarity(int(i)) for i in items]
    return np.array([np.full(len(others), np.nan) if row is None else row[others] for row in rows], np.float32)


def _forbid_per_item(model, monkeypatch) -> None:
    """Make the catalog-wide per-item similarity fail, in the model and its collaborative part."""
    def refuse(item: int):
        raise AssertionError(f"item_similarity({item}) asked for the whole catalog to explain a few pairs")
    for part in (model, getattr(model, "cf", None)):
        if part is not None:
            monkeypatch.setattr(part, "item_similarity", refuse)


@pytest.mark.parametrize("label", list(FAMILIES))
def test_explaining_pairs_never_scores_the_whole_catalog(label, families, data, monkeypatch):
    """Reasons need items x history similarities; every family computes just those pairs, with
    the values of its per-item similarity (NaN for an item it cannot relate)."""
    model = families[label]
    cold = np.flatnonzero(~data.known_items)
    items = np.array([0, 5, 13, 47, 71, cold[0], 2])
    others = np.array([1, 2, 14, 33, cold[1], 60, 0])
    expected = _per_item(model, items, others)
    _forbid_per_item(model, monkeypatch)
    got = model.item_similarity_matrix(items, others)
    assert got.shape == (len(items), len(others)) and got.dtype == np.float32
    np.testing.assert_allclose(got, expected, rtol=1e-5, atol=1e-6)  # NaN where expected is NaN, and only there
    if label != "popularity":
        assert np.isfinite(got).sum() >= len(others) * 2 and (np.abs(got[np.isfinite(got)]) > 0).any()


# ---- EASE ------------------------------------------------------------------------------
def _dense_ease(data, l2: float) -> np.ndarray:
    """The textbook fit over the whole catalog: B = I - P / diag(P), P = (XᵀX + λI)⁻¹ (np.linalg.inv)."""
    x = data.matrix.toarray().astype(np.float64)
    x[x > 0] = 1.0
    precision = np.linalg.inv(x.T @ x + l2 * np.eye(x.shape[1]))
    weights = -precision / np.diag(precision)
    np.fill_diagonal(weights, 0.0)
    return weights.astype(np.float32)


def test_ease_fit_is_the_closed_form(fitted, data):
    """The in-place Cholesky inverse over the known items gives the textbook weights."""
    model = fitted["ease"]
    reference = _dense_ease(data, 20.0)
    known = np.flatnonzero(data.known_items)
    np.testing.assert_array_equal(model.items, known)
    np.testing.assert_allclose(model.weights, reference[np.ix_(known, known)], rtol=1e-4, atol=1e-6)
    scores = model.score(np.arange(30), data.matrix[:30])
    x = data.matrix[:30].toarray()
    np.testing.assert_allclose(scores[:, known], ((x > 0) @ reference)[:, known], rtol=1e-4, atol=1e-5)


def test_ease_covers_only_the_most_active_items(families, data):
    model = families["ease-capped"]
    counts = np.diff(data.matrix.tocsc().indptr)
    assert model.weights.shape == (40, 40) and len(model.items) == 40
    order = np.lexsort((np.arange(len(counts)), -counts))  # most users first, ties by lower index
    np.testing.assert_array_equal(model.items, np.sort(order[:40]))
    uncovered = np.setdiff1d(np.flatnonzero(data.known_items), model.items)
    assert len(uncovered) == data.known_items.sum() - 40
    scores = model.score(np.arange(50), data.matrix[:50])
    assert np.isneginf(scores[:, uncovered]).all() and np.isfinite(scores[:, model.items]).all()
    assert model.item_similarity(int(uncovered[0])) is None
    assert _category_hit_rate(model, data) >= 0.7  # the covered items still carry the taste


def test_a_hybrid_scores_the_items_its_ease_part_leaves_out(families, data):
    """As with cold items: content and popularity score what EASE does not cover."""
    hybrid = families["hybrid-ease"]
    uncovered = np.setdiff1d(np.arange(data.matrix.shape[1]), hybrid.cf.items)
    users = np.arange(40)
    scores = hybrid.score(users, data.matrix[users])
    parts = hybrid.components(users, data.matrix[users])
    assert np.isfinite(scores).all() and (parts["cf"][:, uncovered] == 0).all()
    expected = hybrid.config.content_weight * parts["content"] + hybrid.config.popularity_weight * parts["popularity"]
    np.testing.assert_allclose(scores[:, uncovered], expected[:, uncovered], rtol=1e-6)
    assert (scores[:, uncovered] > 0).any()


def test_ease_round_trips_with_its_covered_items(families, data, tmp_path):
    model = families["ease-capped"]
    model.save(tmp_path / "m")
    with np.load(tmp_path / "m" / "model.npz", allow_pickle=False) as stored:
        assert set(stored.files) == {"weights", "known_items", "items", "precision_diag"}
    loaded = models.load(tmp_path / "m")
    users = np.arange(20)
    np.testing.assert_array_equal(loaded.score(users, data.matrix[users]), model.score(users, data.matrix[users]))
    pairs = (np.array([0, 4, 9]), np.array([1, 2, 3, 11]))
    np.testing.assert_array_equal(loaded.item_similarity_matrix(*pairs), model.item_similarity_matrix(*pairs))


def test_an_ease_model_saved_before_max_items_still_loads(fitted, data, tmp_path):
    """Old artifacts hold catalog x catalog weights and no covered-item list: same scores, same reasons."""
    reference = _dense_ease(data, 20.0)
    directory = tmp_path / "old"
    directory.mkdir()
    np.savez(directory / "model.npz", weights=reference, known_items=data.known_items)
    (directory / "model.json").write_text(json.dumps({"name": "ease", "params": {"l2": 20.0, "binary": True}}))
    old, new = models.load(directory), fitted["ease"]
    users = np.arange(30)
    np.testing.assert_allclose(old.score(users, data.matrix[users]), new.score(users, data.matrix[users]),
                               rtol=1e-4, atol=1e-5)
    items, others = np.array([0, 3, 8, 79]), np.array([1, 2, 5, 6, 78])
    np.testing.assert_allclose(old.item_similarity_matrix(items, others), new.item_similarity_matrix(items, others),
                               rtol=1e-4, atol=1e-5)
    np.testing.assert_allclose(old.item_similarity_matrix(items, others), _per_item(old, items, others),
                               rtol=1e-5, atol=1e-6)


def test_ease_explains_a_pair_from_two_columns_and_cached_norms(families, monkeypatch):
    """After the first call, explaining k x h pairs reads k + h weight columns: no catalog-wide norms."""
    model = families["ease"]
    read: list[int] = []
    original = type(model)._item_vectors

    def counted(self, positions):
        read.append(len(positions))
        return original(self, positions)

    monkeypatch.setattr(type(model), "_item_vectors", counted)
    model.item_similarity_matrix(np.array([0, 1]), np.array([2]))  # warms the norm cache
    read.clear()
    model.item_similarity_matrix(np.array([0, 4, 9, 12]), np.array([1, 2, 3]))
    assert sum(read) == 7


def test_factor_similarity_norms_follow_a_refit(data):
    """The norms a factor model keeps for explaining are those of its current factors."""
    model = models.create("als", FAST["als"]).fit(data)
    items, others = np.array([0, 7, 21]), np.array([1, 2, 3, 40])
    before = model.item_similarity_matrix(items, others)
    model.item_factors = np.roll(model.item_factors, 1, axis=0)  # as a refit assigns new factors
    after = model.item_similarity_matrix(items, others)
    np.testing.assert_allclose(after, _per_item(model, items, others), rtol=1e-5, atol=1e-6)
    assert not np.allclose(after, before)


def test_ease_inverts_in_float64_when_float32_could_be_off(data, caplog):
    """Items always taken together and a tiny ridge make XᵀX + λI ill-conditioned: the fit notices
    and inverts in float64, with the textbook weights; a well-conditioned fit stays in float32."""
    twins = data.matrix.tolil()
    twins[:, 1] = twins[:, 0]  # item 1 has exactly item 0's users
    twinned = TrainingData(twins.tocsr(), data.weights, data.catalog, data.users, seed=data.seed)
    with caplog.at_level(logging.INFO, logger="recsys.models.ease"):
        model = models.create("ease", {"l2": 1e-3}).fit(twinned)
    assert "inverting in float64" in caplog.text
    known = np.flatnonzero(twinned.known_items)
    reference = _dense_ease(twinned, 1e-3)[np.ix_(known, known)]
    np.testing.assert_allclose(model.weights, reference, rtol=1e-3, atol=1e-5 * np.abs(reference).max())
    caplog.clear()
    with caplog.at_level(logging.INFO, logger="recsys.models.ease"):
        models.create("ease", {"l2": 20.0}).fit(data)
    assert "float64" not in caplog.text
