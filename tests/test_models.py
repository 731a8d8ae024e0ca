"""Model contract: every model fits, recovers a planted preference, round-trips through
save/load with identical scores, folds in unknown users, and treats cold items honestly."""

from __future__ import annotations

import numpy as np
import pytest
import scipy.sparse as sp

from recsys import models
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
PERSONAL = ["als", "bpr", "itemknn", "ease", "hybrid"]


@pytest.fixture(scope="module")
def data():
    return planted()


@pytest.fixture(scope="module")
def fitted(data):
    return {name: models.create(name, params).fit(data) for name, params in FAST.items()}


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


@pytest.mark.parametrize("name", list(FAST))
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


@pytest.mark.parametrize("name", ["als", "bpr", "itemknn", "ease"])
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
