"""The repeat policy (recsys.repeats): one rule for the API (both paths), batch and evaluation.

A resident viewed two items long ago under ``repeat_after_days = {view: ...}``: one has
returned by the request's moment, the other has not. Every way of making their list (the
full path, the precomputed candidates, the API, batch rows, the evaluation's lists) shows the
first and never the second; before either return time both stay out. The pipeline finds the
pairs that may return (only returning actions) and when.
"""

from __future__ import annotations

import datetime as dt
from pathlib import Path

import numpy as np
import polars as pl
import pytest
import scipy.sparse as sp
from fastapi.testclient import TestClient

from features.dataset import StoreFrames, build_dataset
from features.splits import Split
from recsys import models, repeats
from recsys.bundle import ModelBundle
from recsys.candidate_scoring import attach_candidates
from recsys.delivery import DeliveryEngine
from recsys.models.base import TrainingData
from recsys.query import Filters
from recsys.settings import EngineSettings
from serving.app import create_app
from tests.serving_fixtures import DAY, FAST_HYBRID, KEY_HEADERS, T0, iso, keyed_settings, rules_data
from training.evaluate import evaluation_lists

USER = "u5"


@pytest.fixture(scope="module")
def data() -> TrainingData:
    return rules_data(seed=0)


@pytest.fixture(scope="module")
def pair(data: TrainingData) -> tuple[int, int, int]:
    """(user row, item returned at T0 - 1 day, item returning at T0 + 1 day)."""
    row = data.users.users.index_of(USER)
    lasting = data.catalog.available_at(T0 + 3 * DAY) & data.catalog.available_at(T0 - 3 * DAY)
    history = [int(i) for i in data.weights[row].indices if lasting[i]]
    assert len(history) >= 2
    return row, history[0], history[1]


@pytest.fixture(scope="module")
def bundle(data: TrainingData, pair: tuple[int, int, int]) -> ModelBundle:
    row, back, later = pair
    returns = sp.csr_matrix((np.array([T0 - DAY, T0 + DAY]), ([row, row], [back, later])), shape=data.weights.shape)
    model = models.create("hybrid", FAST_HYBRID).fit(data)
    return ModelBundle(model, data.catalog, data.users, data.weights, EngineSettings(), {"trained_at": iso(T0)},
                       returns=returns)


def listed(items: list[int] | np.ndarray) -> set[int]:
    return {int(i) for i in items if i >= 0}


@pytest.mark.parametrize("at", [T0, T0 - 2 * DAY])
def test_every_path_keeps_out_the_same_items(bundle: ModelBundle, data: TrainingData, pair: tuple[int, int, int],
                                             at: float, tmp_path: Path) -> None:
    row, back, later = pair
    n = len(data.catalog)  # every allowed item: what is in a list is what the rule allows
    full = DeliveryEngine(bundle)
    with_lists = DeliveryEngine(attach_candidates(bundle, k=n))
    assert with_lists.candidates is not None
    paths = {
        "full": listed([r.item for r in full.for_user(USER, n, Filters(at=at), diversity=0.0).items]),
        "candidates": listed([r.item for r in with_lists.for_user(USER, n, Filters(at=at), diversity=0.0).items]),
        "batch": listed(full.top_n_for_rows(np.array([row]), n, at)[0][0]),
    }
    split = Split(train=data, truth=sp.csr_matrix(([1.0], ([row], [0])), shape=data.weights.shape),
                  cutoff=dt.datetime.fromtimestamp(at, dt.UTC), cold_items=np.zeros(n, bool), returns=bundle.returns)
    _, rows, recs = evaluation_lists(bundle.model, split, EngineSettings())
    paths["evaluation"] = listed(recs[list(rows).index(row)])
    directory = bundle.save(tmp_path / "bundle")
    with TestClient(create_app(keyed_settings(home=tmp_path / "home", model_dir=directory)),
                    headers=KEY_HEADERS) as client:
        body = client.get(f"/v1/users/{USER}/recommendations", params={"n": 100, "at": iso(at), "diversity": 0})
        paths["api"] = listed([data.catalog.items.index_of(item["item_id"]) for item in body.json()["items"]])
    history = set(data.weights[row].indices.tolist())
    for name, items in paths.items():
        assert later not in items, name
        assert (back in items) == (at >= T0 - DAY), name
        assert not (items & history) - {back}, name


def test_kept_out_and_rows() -> None:
    returns = sp.csr_matrix((np.array([5.0, 20.0]), ([0, 0], [1, 2])), shape=(2, 4))
    assert repeats.kept_out(np.array([1, 2, 3]), returns, 0, 10.0).tolist() == [2, 3]
    assert repeats.kept_out(np.array([1, 2, 3]), returns, 0, 10.0, fresh={1}).tolist() == [1, 2, 3]
    assert repeats.kept_out(np.array([1, 2, 3]), None, 0, 10.0).tolist() == [1, 2, 3]
    assert repeats.still_out(returns, 0, 10.0).tolist() == [2]
    history = sp.csr_matrix(np.array([[0, 1, 1, 1], [1, 0, 0, 0]], dtype=np.float32))
    assert repeats.kept_out_rows(history, returns, 10.0).toarray().astype(bool).tolist() == [
        [False, False, True, True], [True, False, False, False]]
    assert repeats.kept_out_rows(history, returns, repeats.NEVER).nnz == 2  # the pairs that never return


def test_the_pipeline_finds_the_pairs_that_may_return() -> None:
    start = dt.datetime(2026, 10, 1, tzinfo=dt.UTC)
    rows = [("a", "x", "view", 0), ("a", "x", "click", 2),  # views and clicks: returns 7 days after the click
            ("a", "y", "view", 1), ("a", "y", "reserve", 3),  # reserved: never
            ("b", "x", "attend", 0)]  # attended: never
    interactions = pl.DataFrame({
        "user_id": [r[0] for r in rows], "item_id": [r[1] for r in rows], "action": [r[2] for r in rows],
        "ts": [start + dt.timedelta(days=r[3]) for r in rows], "value": [None] * len(rows),
    }, schema_overrides={"ts": pl.Datetime("us", "UTC"), "value": pl.Float64})
    items = pl.DataFrame({
        "item_id": ["x", "y"], "title": ["X", "Y"], "kind": ["book", "event"], "category": ["文学", "戏曲"],
        "region_code": [None, None], "tags": [[], []], "lat": [None, None], "lon": [None, None],
        "starts_at": [None, None], "ends_at": [None, None], "hidden": [False, False], "venue_id": [None, None],
    }, schema_overrides={"tags": pl.List(pl.String), "region_code": pl.String, "lat": pl.Float64,
                         "lon": pl.Float64, "starts_at": pl.Datetime("us", "UTC"), "ends_at": pl.Datetime("us", "UTC"),
                         "venue_id": pl.String})
    users = pl.DataFrame({"user_id": ["a", "b"], "region_code": [None, None], "age_band": [None, None],
                          "area_type": [None, None]}, schema_overrides={c: pl.String for c in
                                                                       ("region_code", "age_band", "area_type")})
    frames = StoreFrames(interactions.lazy(), users.lazy(), items.lazy())
    settings = EngineSettings(repeat_after_days={"view": 30, "click": 7})
    dataset = build_dataset(frames, settings, test_days=None, now=start + dt.timedelta(days=10))
    returns = dataset.returns
    assert returns is not None and returns.nnz == 1
    user, item = dataset.full.users.users.index_of("a"), dataset.full.catalog.items.index_of("x")
    # the latest of view + 30 days (day 30) and click + 7 days (day 9)
    assert returns[user, item] == (start + dt.timedelta(days=30)).timestamp()
    assert build_dataset(frames, EngineSettings(), test_days=None, now=start + dt.timedelta(days=10)).returns.nnz == 0


def test_settings_refuse_unknown_actions_and_negative_days() -> None:
    with pytest.raises(ValueError, match="unknown actions"):
        EngineSettings(repeat_after_days={"like": 3})
    with pytest.raises(ValueError, match=">= 0"):
        EngineSettings(repeat_after_days={"view": -1})
