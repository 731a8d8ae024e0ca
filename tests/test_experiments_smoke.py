"""The real data sets through the engine: loaders give contract-valid frames, the holdout
split is what it claims, and the shipped tuned configs beat popularity on MovieLens."""

from __future__ import annotations

import numpy as np
import polars as pl
import pytest

from experiments.compare_models import run_benchmark
from experiments.datasets import (
    GOODBOOKS_TS,
    ContractFrames,
    contract_problems,
    data_dir,
    holdout_split,
    load_goodbooks,
    load_movielens,
)
from features.validate import REASON, validate_interactions
from recsys import models
from recsys.settings import EngineSettings

pytestmark = pytest.mark.skipif(
    not (data_dir() / "ml-latest-small").is_dir() or not (data_dir() / "goodbooks-10k").is_dir(),
    reason=f"real data sets not found in {data_dir()}",
)

SAMPLE_ROWS = 4_000


@pytest.fixture(scope="module")
def movielens() -> ContractFrames:
    return load_movielens(max_rows=SAMPLE_ROWS)


@pytest.fixture(scope="module")
def goodbooks() -> ContractFrames:
    return load_goodbooks(max_rows=SAMPLE_ROWS)


def _ingest_reasons(frames: ContractFrames) -> list[str | None]:
    """What the engine's own ingest validation says about every interaction, sent as text."""
    raw = frames.interactions.select(
        pl.col("user_id"), pl.col("item_id"), pl.col("action"),
        pl.col("ts").dt.strftime("%Y-%m-%dT%H:%M:%S%.fZ").alias("ts"), pl.col("value").cast(pl.String),
    )
    checked = validate_interactions(raw.lazy(), frames.items.select("item_id").lazy(), "UTC").collect()
    return checked[REASON].unique().to_list()


@pytest.mark.parametrize("name", ["movielens", "goodbooks"])
def test_loaders_give_contract_valid_frames(name, request):
    frames: ContractFrames = request.getfixturevalue(name)
    assert contract_problems(frames) == []
    assert _ingest_reasons(frames) == [None]  # not one row would go to quarantine
    assert frames.interactions.height > 0.9 * SAMPLE_ROWS
    assert set(frames.interactions["user_id"]) == set(frames.users["user_id"])


def test_movielens_mapping(movielens):
    raw = pl.read_csv(data_dir() / "ml-latest-small" / "ratings.csv", n_rows=SAMPLE_ROWS)
    favorite = (movielens.interactions["action"] == "favorite").to_numpy()
    np.testing.assert_array_equal(favorite, raw["rating"].to_numpy() >= 4.0)
    assert movielens.interactions["ts"][0].timestamp() == raw["timestamp"][0]
    toy_story = movielens.items.filter(pl.col("item_id") == "1").row(0, named=True)
    assert (toy_story["kind"], toy_story["category"]) == ("film", "Adventure")
    assert "Animation" in toy_story["tags"]


def test_goodbooks_drops_repeated_pairs_and_has_one_synthetic_time(goodbooks):
    assert not goodbooks.interactions.select(pl.struct("user_id", "item_id").is_duplicated().any()).item()
    assert goodbooks.interactions["ts"].unique().to_list() == [GOODBOOKS_TS]
    assert goodbooks.items.height == 10_000
    assert goodbooks.items["kind"].unique().to_list() == ["book"]


def test_holdout_split_holds_out_a_share_of_each_users_positives(goodbooks):
    settings = EngineSettings()
    split = holdout_split(goodbooks, settings, test_fraction=0.2, min_positives=5, seed=3)
    truth, train = split.truth.tocsr(), split.train.weights.tocsr()
    assert truth.nnz > 0
    assert truth.multiply(train).nnz == 0  # no test pair leaks into training

    inter = goodbooks.interactions
    positives = inter.filter(pl.col("action") == "favorite").group_by("user_id").len()
    users = split.train.users.users
    per_user = np.diff(truth.indptr)
    for user_id, n_positive in positives.iter_rows():
        expected = max(1, round(0.2 * n_positive)) if n_positive >= 5 else 0
        assert per_user[users.index_of(user_id)] == expected
    # every held-out pair was a positive interaction, and the draw depends on the seed only
    favorite_keys = set(inter.filter(pl.col("action") == "favorite").select("user_id", "item_id").iter_rows())
    rows, cols = truth.nonzero()
    items = split.train.catalog.items
    assert {(users.id_of(r), items.id_of(c)) for r, c in zip(rows, cols, strict=True)} <= favorite_keys
    again = holdout_split(goodbooks, settings, test_fraction=0.2, min_positives=5, seed=3)
    assert (again.truth != split.truth).nnz == 0
    other = holdout_split(goodbooks, settings, test_fraction=0.2, min_positives=5, seed=4)
    assert (other.truth != split.truth).nnz > 0


@pytest.mark.parametrize("cf_model", ["itemknn", "ease"])
def test_hybrid_with_other_collaborative_parts_round_trips(cf_model, movielens, tmp_path):
    rated = movielens.items.filter(pl.col("item_id").is_in(movielens.interactions["item_id"].implode()))
    small = ContractFrames("ml-sample", movielens.interactions, movielens.users, rated)  # EASE: a small inverse
    split = holdout_split(small, EngineSettings(), seed=0)
    model = models.create("hybrid", {"cf_model": cf_model}).fit(split.train)
    model.save(tmp_path / "m")
    loaded = models.load(tmp_path / "m")
    rows = np.arange(8)
    history = split.train.matrix[rows]
    np.testing.assert_allclose(loaded.score(rows, history), model.score(rows, history), rtol=1e-5)
    assert type(loaded.cf) is type(model.cf) is models.MODELS[cf_model]


@pytest.mark.slow
def test_tuned_models_beat_popularity_on_movielens():
    # The per-user temporal holdout evaluates ~660 users; the global time cutoff only ~20
    # (MovieLens users rate in bursts), too few for any model to differ significantly.
    run = run_benchmark("ml-user", model_names=("popularity", "als", "hybrid-large"))
    ndcg = {r.model: r.metrics["ndcg@10"] for r in run.results}
    half_width = {r.model: r.ndcg_half_width for r in run.results}
    assert run.split_info["test_users"] > 600
    for name in ("als", "hybrid-large"):
        assert ndcg[name] > 1.5 * ndcg["popularity"], ndcg
        assert ndcg[name] - half_width[name] > ndcg["popularity"] + half_width["popularity"], (ndcg, half_width)
