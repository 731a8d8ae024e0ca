"""The recipe search: it never sees the test part, it reaches the best fixed recipe on real data, and a
store without a usable time split still trains, on a per-user holdout that it names.

The real-data tests read ``../shared/data`` (skipped where it is absent) and use subsamples sized
so that every shipped recipe fits in seconds: the question is whether the search finds a recipe
at least as good as the best fixed one, scored by the engine's own evaluation on a test part the
search never saw.
"""

from __future__ import annotations

import zipfile
from datetime import UTC, datetime, timedelta
from pathlib import Path

import numpy as np
import polars as pl
import pytest
import scipy.sparse as sp

from democloud import DemoConfig, generate
from experiments.bench_tune import score
from experiments.datasets import ContractFrames, data_dir, load_goodbooks, load_movielens
from features.dataset import StoreFrames, build_dataset
from features.splits import TruthPairs, draw_holdout, holdout_splits
from recsys import models
from recsys.catalog import Catalog
from recsys.models.base import TrainingData
from recsys.settings import EngineSettings
from recsys.users import UserTable
from tests.demo_store import cli_json, describe, prepare_mlflow_env, run_cli
from training.config import TrainConfig, load_config, shipped_recipe, shipped_recipes
from training.tune import DatasetCache, TrialRecord, TuneOptions, TuningResult, kept_within_noise, tune

SEED = 0
TEST_DAYS = 7.0


# --------------------------------------------------------------------------- helpers


def search(frames: StoreFrames, configured: TrainConfig, trials: int, *, test_days: float = TEST_DAYS
           ) -> tuple[TuningResult, DatasetCache]:
    first = build_dataset(frames, configured.engine, test_days=test_days, seed=SEED, validation=True,
                          protocol="auto")
    cache = DatasetCache(frames, test_days, SEED, first, configured.engine)
    return tune(cache, configured, TuneOptions(budget_seconds=3_600, trials=trials, seed=SEED)), cache


def ndcg_on_test(recipe: TrainConfig, cache: DatasetCache) -> float:
    """The recipe fitted on train (+ validation) and scored once on the test part (as the benchmark does)."""
    return score(recipe, cache)["ndcg@10"]


def demo_frames(users: int = 3_000, items: int = 250, days: int = 40) -> StoreFrames:
    data = generate(DemoConfig(users=users, items=items, days=days, seed=5))
    return StoreFrames(data.interactions.lazy(), data.users.lazy(), data.items.lazy())


def with_test_window_scrambled(frames: StoreFrames, seed: int = 1) -> StoreFrames:
    """The same store with every event of the test window (but the last, which fixes ``data_end``)
    moved to another random visible item: different test truth, identical everything before it."""
    events = frames.interactions.collect().sort("ts")
    end = events["ts"].max()
    visible = frames.items.filter(~pl.col("hidden").fill_null(False)).select("item_id").collect()["item_id"]
    in_window = (pl.col("ts") >= end - timedelta(days=TEST_DAYS)) & (pl.col("ts") < end)
    moved = events.filter(in_window)
    picks = np.random.default_rng(seed).choice(visible.to_numpy(), moved.height)
    scrambled = pl.concat([events.filter(~in_window), moved.with_columns(pl.Series("item_id", picks))])
    return StoreFrames(scrambled.lazy(), frames.users, frames.items)


# --------------------------------------------------------------------------- the test part is never seen


def test_trials_never_see_the_test_window() -> None:
    frames = demo_frames().collected()
    scrambled = with_test_window_scrambled(frames)
    configured = load_config(model="hybrid")
    plain, plain_cache = search(frames, configured, trials=6)
    other, other_cache = search(scrambled, configured, trials=6)
    base = plain_cache.get(configured.engine)
    assert base.protocol == "time" and base.validation is not None and base.split is not None
    # the scrambling did change what the test part holds ...
    assert (base.split.truth != other_cache.get(configured.engine).split.truth).nnz > 0
    # ... and no trial saw a difference: same scores, same winner
    assert [t.ndcg10 for t in plain.trials] == [t.ndcg10 for t in other.trials]
    assert plain.best.config_hash() == other.best.config_hash()
    assert plain.completed >= 5


def test_the_validation_window_ends_where_the_test_window_starts() -> None:
    data = build_dataset(demo_frames(), EngineSettings(), test_days=TEST_DAYS, seed=SEED, validation=True,
                         protocol="auto")
    assert data.split is not None and data.validation is not None
    assert data.validation.cutoff == data.split.cutoff - timedelta(days=TEST_DAYS)
    # the inner train holds fewer pairs than train: the validation window's events are not in it
    assert data.validation.train.weights.nnz < data.split.train.weights.nnz
    # no validation truth pair is something the inner train already knew
    known = data.validation.train.weights.multiply(data.validation.truth)
    assert known.nnz == 0


def test_holdout_keeps_both_held_parts_out_of_what_the_search_learns_from() -> None:
    rng = np.random.default_rng(0)
    users, items = 200, 60
    pairs = np.unique(np.column_stack([rng.integers(0, users, 4_000), rng.integers(0, items, 4_000)]), axis=0)
    truth = TruthPairs(pairs, np.zeros(len(pairs), dtype=np.int64), "positive")
    draw = draw_holdout(truth, users, seed=3)
    assert len(np.intersect1d(draw.test, draw.validation)) == 0 and len(draw.validation) > 0
    weights = sp.csr_matrix((np.ones(len(pairs), np.float32), (pairs[:, 0], pairs[:, 1])), shape=(users, items))
    full = TrainingData(weights, weights, Catalog.from_columns([f"i{i}" for i in range(items)]),
                        UserTable.from_columns([f"u{u}" for u in range(users)]))
    test, validation = holdout_splits(full, truth, draw, EngineSettings(), cutoff=datetime.now(UTC))
    assert validation is not None
    assert test.train.weights.multiply(test.truth).nnz == 0
    assert validation.train.weights.multiply(validation.truth).nnz == 0
    assert validation.train.weights.multiply(test.truth).nnz == 0  # the test part is out of the search's data
    assert validation.truth.multiply(test.truth).nnz == 0


# --------------------------------------------------------------------------- real data


def _real(loader, max_users: int, max_items: int) -> ContractFrames:
    if not (data_dir() / "goodbooks-10k").exists():
        pytest.skip(f"the real data sets are not at {data_dir()}")
    frames = loader()
    inter = frames.interactions
    top_items = inter.group_by("item_id").len().sort(["len", "item_id"], descending=[True, False]).head(max_items)
    kept_users = inter.select("user_id").unique().sort("user_id").head(max_users)
    inter = inter.join(top_items.select("item_id"), on="item_id", how="semi").join(kept_users, on="user_id",
                                                                                       how="semi")
    items = frames.items.join(top_items.select("item_id"), on="item_id", how="semi")
    return ContractFrames(frames.name, inter, frames.users.join(kept_users, on="user_id", how="semi"), items)


@pytest.mark.slow
@pytest.mark.parametrize(("loader", "users", "items"), [(load_goodbooks, 2_500, 1_500), (load_movielens, 700, 2_500)],
                         ids=["goodbooks", "movielens"])
def test_the_search_reaches_the_best_fixed_recipe_on_real_data(loader, users: int, items: int) -> None:
    frames = _real(loader, users, items).store_frames().collected()
    configured = load_config(model="hybrid")
    result, cache = search(frames, configured, trials=12)
    fixed = {name: ndcg_on_test(load_config(shipped_recipe(name)), cache) for name in ("ease", "itemknn", "als")}
    tuned = ndcg_on_test(result.best, cache)
    best_name = max(fixed, key=fixed.get)
    assert tuned >= 0.97 * fixed[best_name], (tuned, fixed, result.summary())
    assert tuned > 1.5 * ndcg_on_test(load_config(model="popularity"), cache)


# --------------------------------------------------------------------------- one timestamp, via the CLI


@pytest.mark.slow
def test_a_store_with_one_timestamp_trains_on_a_per_user_holdout_and_says_so(tmp_path: Path) -> None:
    frames = _real(load_goodbooks, 1_500, 800)  # goodbooks: every interaction at one synthetic time
    assert frames.interactions["ts"].n_unique() == 1
    ratings = frames.interactions.select("user_id", "item_id", pl.lit("rate").alias("action"),
                                         pl.col("ts").dt.strftime("%Y-%m-%dT%H:%M:%S%z").alias("ts"),
                                         pl.when(pl.col("action") == "favorite").then(5.0).otherwise(2.0)
                                         .alias("value"))
    ratings.write_csv(tmp_path / "interactions.csv")
    frames.items.select("item_id", "title", "kind").write_csv(tmp_path / "items.csv")
    prepare_mlflow_env()
    home = tmp_path / "home"
    ingest = run_cli("ingest", "--home", str(home), "--items", str(tmp_path / "items.csv"),
                     "--interactions", str(tmp_path / "interactions.csv"), "--json")
    assert ingest.exit_code == 0, describe(ingest)
    summary = cli_json(run_cli("train", "--home", str(home), "--json", "--trials", "4"))
    assert "per-user holdout" in summary["split"] and "same time" in summary["split"], summary["split"]
    assert summary["tuning"]["completed"] >= 3
    assert summary["key_metrics"]["ndcg@10"] > 0.05
    assert summary["lift_over_popularity"] > 1.0
    assert summary["promoted"] is True


def test_a_store_too_small_to_learn_from_is_refused_with_what_it_needs() -> None:
    frames = demo_frames(users=40, items=30, days=10)
    with pytest.raises(ValueError, match="training needs at least 10"):
        build_dataset(frames, EngineSettings(), test_days=TEST_DAYS, seed=SEED, validation=True, protocol="auto")


# --------------------------------------------------------------------------- recipes ship with the package


def test_every_model_has_a_shipped_recipe_and_a_missing_one_is_an_error() -> None:
    assert set(models.MODELS) <= set(shipped_recipes())
    with pytest.raises(ValueError, match="no shipped recipe named 'nope'"):
        load_config(model="nope")


@pytest.mark.slow
def test_a_built_wheel_carries_the_recipes(tmp_path: Path) -> None:
    import subprocess
    import sys

    root = Path(__file__).resolve().parents[1]
    built = subprocess.run([sys.executable, "-m", "pip", "wheel", "--no-deps", "-q",
                            "-w", str(tmp_path), str(root)], capture_output=True, text=True, timeout=300)
    assert built.returncode == 0, built.stderr
    wheel = next(tmp_path.glob("cultural_recsys-*.whl"))
    names = set(zipfile.ZipFile(wheel).namelist())
    assert {f"experiments/configs/{name}.toml" for name in shipped_recipes()} <= names



# --------------------------------------------------------------------------- choosing among trials


def _record(number: int, origin: str, ndcg: float) -> TrialRecord:
    return TrialRecord(number, load_config(model="popularity"), origin, "complete", ndcg10=ndcg)


def test_a_known_recipe_is_kept_unless_a_later_trial_beats_it_beyond_noise() -> None:
    rng = np.random.default_rng(0)
    base = rng.random(4_000)
    noise = rng.normal(0.0, 0.05, 4_000)
    per_user = {0: base, 1: base + noise + 0.001, 2: base + noise + 0.02}
    shipped, close, far = _record(0, "shipped:ease", base.mean()), _record(1, "search", per_user[1].mean()), \
        _record(2, "search", per_user[2].mean())
    # a search trial better by a hair (well within the paired standard error) does not replace the known recipe
    assert kept_within_noise([shipped, close], close, per_user) is shipped
    # one better by 0.02 on every user (about 25 standard errors) does
    assert kept_within_noise([shipped, close, far], far, per_user) is far
    # last week's winner comes first among equals
    previous = _record(3, "previous", base.mean())
    per_user[3] = base.copy()
    assert kept_within_noise([shipped, previous, close], close, per_user) is previous
