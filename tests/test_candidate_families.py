"""Every model family precomputes its serving lists at the cost of its own model.

Lists are scored a chunk of users per model call (one matrix product, not one per user) and
explained from item x history pairs (never a per-item similarity to the whole catalog), for
every family and every collaborative part of a hybrid; and they are, user by user, the
full path's one-row top k: the same items in the same order, scores up to float noise.
"""

from __future__ import annotations

import math
from types import SimpleNamespace

import numpy as np
import pytest

from recsys import models
from recsys.bundle import ModelBundle
from recsys.candidate_scoring import CHUNK_SCORE_BYTES, CHUNK_USERS, chunk_size, precompute_candidates
from recsys.confidence import to_confidence
from recsys.ranking import top_k
from recsys.reasons import anchor_codes
from recsys.settings import EngineSettings
from tests.model_fixtures import planted

FAMILIES = {
    "als": ("als", {"factors": 16, "iterations": 10}),
    "bpr": ("bpr", {"factors": 16, "iterations": 60}),
    "itemknn": ("itemknn", {"neighbours": 30}),
    "ease": ("ease", {"l2": 20.0, "max_items": 50}),
    "popularity": ("popularity", {}),
    "hybrid-als": ("hybrid", {"als": {"factors": 16, "iterations": 10}}),
    "hybrid-itemknn": ("hybrid", {"cf_model": "itemknn", "itemknn": {"neighbours": 30}}),
    "hybrid-ease": ("hybrid", {"cf_model": "ease", "ease": {"l2": 20.0, "max_items": 50}}),
}
K = 15
CHUNK = 64
SCORE_NOISE = 1e-6
"""How far a batched product's score may be from the one-row product's (float32)."""


@pytest.fixture(scope="module")
def data():
    return planted()


def _bundle(model, data, settings: EngineSettings | None = None) -> ModelBundle:
    return ModelBundle(model, data.catalog, data.users, data.weights, settings or EngineSettings(), {})


class _Spy:
    """Records how many users each model call scored; refuses catalog-wide per-item similarity."""

    def __init__(self, model, monkeypatch) -> None:
        self.calls: list[int] = []
        score = model.score

        def counted(users, history):
            self.calls.append(len(users))
            return score(users, history)

        def refuse(item: int):
            raise AssertionError(f"item_similarity({item}): a catalog-wide row to explain a few pairs")

        monkeypatch.setattr(model, "score", counted)
        for part in (model, getattr(model, "cf", None)):
            if part is not None:
                monkeypatch.setattr(part, "item_similarity", refuse)


def _assert_full_path_lists(bundle: ModelBundle, lists, users) -> None:
    """Each user's list is the one-row full path's top K, with its anchors."""
    settings = bundle.settings
    for user in users:
        history = bundle.weights[user]
        full = bundle.model.score(np.array([user]), to_confidence(history, settings.confidence, settings.alpha))[0]
        showable = ~bundle.catalog.hidden
        showable[history.indices] = False
        items, scores = lists.row(user)
        np.testing.assert_array_equal(items, top_k(full, K, showable))
        np.testing.assert_allclose(scores, full[items], rtol=SCORE_NOISE, atol=SCORE_NOISE)
        np.testing.assert_array_equal(lists.anchors_of(user), anchor_codes(bundle.model, items, history.indices))


def test_every_model_is_among_the_families() -> None:
    assert {name for name, _ in FAMILIES.values()} == set(models.MODELS)


@pytest.mark.parametrize("label", list(FAMILIES))
def test_lists_cost_one_model_call_per_chunk_and_match_the_full_path(label, data, monkeypatch):
    name, params = FAMILIES[label]
    bundle = _bundle(models.create(name, params).fit(data), data)
    spy = _Spy(bundle.model, monkeypatch)
    lists = precompute_candidates(bundle, K, chunk=CHUNK)
    users = np.flatnonzero(np.diff(data.weights.indptr) > 0)
    assert spy.calls == [CHUNK] * (len(users) // CHUNK) + [len(users) % CHUNK] * (len(users) % CHUNK > 0)
    assert len(spy.calls) == math.ceil(len(users) / CHUNK)
    monkeypatch.undo()
    _assert_full_path_lists(bundle, lists, users)


def test_bm25_confidence_is_computed_per_user_as_the_full_path_does(data):
    """bm25 weighs a row against the rows it comes with: batching it would change every score."""
    settings = EngineSettings(confidence="bm25")
    bundle = _bundle(models.create("als", {"factors": 16, "iterations": 10}).fit(data), data, settings)
    rows = data.weights[:CHUNK]
    together = to_confidence(rows, "bm25", settings.alpha)
    alone = to_confidence(rows[3], "bm25", settings.alpha)
    assert not np.allclose(together[3].data, alone.data)  # so the test below can fail
    lists = precompute_candidates(bundle, K, chunk=CHUNK)
    _assert_full_path_lists(bundle, lists, range(0, 300, 7))


def test_chunks_hold_a_bounded_block_of_scores():
    assert chunk_size(SimpleNamespace(catalog=range(10_000))) == CHUNK_USERS
    for n_items in (100_000, 1_000_000, 50_000_000):
        size = chunk_size(SimpleNamespace(catalog=range(n_items)))
        assert 1 <= size < CHUNK_USERS and (size == 1 or size * n_items * 4 <= CHUNK_SCORE_BYTES)
