"""The hybrid with two collaborative parts: each part counts, the blend learns the planted taste,
and it round-trips through save/load with identical scores."""

from __future__ import annotations

import numpy as np
import pytest

from recsys import models
from recsys.ranking import top_k_batch
from tests.model_fixtures import CATEGORIES, group_code, planted

ALS = {"factors": 16, "iterations": 10}
BLEND = {"cf_model": "itemknn", "itemknn": {"neighbours": 30}, "cf2_model": "als", "als": ALS, "cf2_weight": 0.7}


@pytest.fixture(scope="module")
def data():
    return planted()


def test_the_blend_recovers_the_planted_taste_and_round_trips(data, tmp_path) -> None:
    blend = models.create("hybrid", BLEND).fit(data)
    users = np.arange(data.matrix.shape[0])
    scores = blend.score(users, data.matrix)
    recs = top_k_batch(scores, 5, exclude=data.matrix)
    expected = np.array([group_code(data, u % len(CATEGORIES)) for u in users])[:, None]
    assert (data.catalog.category[recs] == expected).mean() >= 0.7
    blend.save(tmp_path / "blend")
    loaded = models.load(tmp_path / "blend")
    assert np.array_equal(loaded.score(users, data.matrix), scores)


def test_the_second_part_adds_its_weighted_normalised_scores(data) -> None:
    users = np.arange(20)
    history = data.matrix[users]
    blend = models.create("hybrid", BLEND).fit(data)
    single = models.create("hybrid", {**BLEND, "cf2_model": "none"}).fit(data)
    parts = blend.components(users, history)
    assert np.allclose(blend.score(users, history) - single.score(users, history), 0.7 * parts["cf2"], atol=1e-5)
    assert parts["cf2"].max() == pytest.approx(1.0)


def test_two_parts_of_one_kind_are_refused() -> None:
    with pytest.raises(ValueError, match="cf2_model must differ"):
        models.create("hybrid", {"cf_model": "als", "cf2_model": "als"})
