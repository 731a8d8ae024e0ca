"""Acceptance of ``recsys train --engine spark``: Spark features, MLlib ALS, the same artifact.

- the Spark features equal the polars features (axes, weights, split, truth), on a small
  hand-built store with every cleaning rule in play and on the synthetic demo store;
- MLlib gets ratings whose confidence is the engine's, and the regParam mapping;
- ``train --engine spark`` registers a version in a real MLflow store; its bundle loads,
  the API serves it and ``recsys recommend`` writes lists from it; its NDCG@10 is within
  10% of ``implicit`` ALS with the same settings on the same split;
- unsupported recipes are refused before Spark starts.

One local Spark session (2 threads, loopback only) serves the module; the CLI reuses it.
"""

from __future__ import annotations

import json
import math
import os
import shutil
from collections.abc import Iterator
from dataclasses import dataclass
from datetime import UTC, date, datetime, timedelta
from pathlib import Path
from typing import Any

import numpy as np
import polars as pl
import pytest
import scipy.sparse as sp

pytest.importorskip("pyspark")
if shutil.which("java") is None and not os.environ.get("JAVA_HOME"):
    pytest.skip("pyspark needs a Java runtime (`java` not found)", allow_module_level=True)

from fastapi.testclient import TestClient  # noqa: E402
from pyspark.sql import SparkSession  # noqa: E402

from democloud import DemoConfig  # noqa: E402
from features import schemas  # noqa: E402
from features import spark_features as sf  # noqa: E402
from features.dataset import Dataset, load_dataset  # noqa: E402
from recsys.bundle import ModelBundle  # noqa: E402
from recsys.confidence import to_confidence  # noqa: E402
from recsys.home import EngineHome  # noqa: E402
from recsys.models.als import ALSModel  # noqa: E402
from recsys.models.hybrid import HybridModel  # noqa: E402
from recsys.settings import EngineSettings  # noqa: E402
from tests.demo_store import (  # noqa: E402
    DemoHome,
    build_demo_home,
    cli_json,
    describe,
    run_cli,
    train_cli,
)
from training import registry  # noqa: E402
from training.config import TrainConfig, load_config  # noqa: E402
from training.evaluate import Evaluation  # noqa: E402
from training.spark_train import (  # noqa: E402
    SparkOptions,
    check_supported,
    dense_factors,
    fit_model,
    local_cores,
    mllib_reg_param,
    rating_column,
    spark_session,
)
from training.train import _champion_ndcg  # noqa: E402

pytestmark = [pytest.mark.filterwarnings("ignore:PySpark does not yet fully support pandas:FutureWarning"),
              pytest.mark.usefixtures("own_mlflow_store")]

SPARK_DEMO = DemoConfig(users=8000, items=1000, days=45, seed=3, end_date=date(2026, 10, 31))
TEST_CONF = {
    "spark.sql.shuffle.partitions": "4",
    "spark.ui.enabled": "false",
    "spark.driver.memory": "2g",
    "spark.driver.host": "127.0.0.1",
    "spark.driver.bindAddress": "127.0.0.1",
}
# Both engines get these (smaller than the shipped 64 x 15 to keep the MLlib fits short).
ALS_RECIPE = """\
model = "als"
[params]
factors = 32
iterations = 10
regularization = 0.05
[engine]
confidence = "log"
alpha = 2.0
half_life_days = 30
"""
NDCG_TOLERANCE = 0.10
AT = "2026-10-31T12:00:00+08:00"


@pytest.fixture(scope="module")
def spark() -> Iterator[SparkSession]:
    with spark_session(SparkOptions(master="local[2]", conf=TEST_CONF)) as session:
        yield session


@pytest.fixture(scope="module")
def demo(tmp_path_factory: pytest.TempPathFactory) -> DemoHome:
    return build_demo_home(tmp_path_factory.mktemp("spark-demo") / "home", SPARK_DEMO)


@pytest.fixture(scope="module")
def recipe(tmp_path_factory: pytest.TempPathFactory) -> Path:
    path = tmp_path_factory.mktemp("spark-recipe") / "als.toml"
    path.write_text(ALS_RECIPE, encoding="utf-8")
    return path


@dataclass(frozen=True)
class Trained:
    spark: dict[str, Any]
    implicit: dict[str, Any]


@pytest.fixture(scope="module")
def trained(spark: SparkSession, demo: DemoHome, recipe: Path) -> Trained:
    """The demo home after ``train --engine spark`` (version 1) and, for comparison,
    ``train --engine implicit --no-promote`` (version 2), same recipe and seed."""
    spark_run = train_cli(demo.root, "--engine", "spark", "--spark-master", "local[2]", "--config", str(recipe))
    implicit_run = train_cli(demo.root, "--config", str(recipe), "--no-promote")
    return Trained(spark=spark_run, implicit=implicit_run)


# --------------------------------------------------------------------------- features


END = datetime(2026, 10, 1, 12, 0, tzinfo=UTC)
DAY = timedelta(days=1)


def _write_tiny_store(home: EngineHome) -> None:
    """Four items (i2 hidden, i3 hidden=null), users a, b, c (c erased), d only in events;
    an exact duplicate, an event on a hidden item, and an uncommitted file."""
    home.interactions.mkdir(parents=True, exist_ok=True)
    items = pl.DataFrame({"item_id": ["i1", "i2", "i3", "i4"], "title": ["一", "二", "三", "四"],
                          "hidden": [False, True, None, False]})
    items.with_columns(pl.lit(None, dtype=dtype).alias(name) for name, dtype in schemas.ITEMS.items()
                       if name not in items.columns).select(list(schemas.ITEMS)).cast(schemas.ITEMS) \
        .write_parquet(home.items)
    pl.DataFrame({"user_id": ["a", "b", "c"], "region_code": ["110101", "110119", "110101"],
                  "age_band": ["18-34", "60+", "35-59"], "area_type": ["urban", "rural", "urban"],
                  "registered_at": [END - 90 * DAY] * 3}, schema=schemas.USERS).write_parquet(home.users)
    committed = pl.DataFrame({
        "user_id": ["a", "a", "a", "a", "b", "c", "d"],
        "item_id": ["i1", "i1", "i2", "i3", "i1", "i1", "i3"],
        "action": ["reserve", "reserve", "attend", "rate", "view", "attend", "favorite"],
        "ts": [END - 10 * DAY, END - 10 * DAY, END - DAY, END, END - 3 * DAY + timedelta(seconds=0.5),
               END - 2 * DAY, END - 9 * DAY],
        "value": [None, None, None, 5.0, None, None, None],
    }, schema=schemas.INTERACTIONS)
    (home.interactions / "date=2026-09-21").mkdir()
    committed.write_parquet(home.interactions / "date=2026-09-21" / "ing-1.parquet")
    (home.interactions / "date=2026-10-01").mkdir()
    committed.head(1).with_columns(item_id=pl.lit("i4"), user_id=pl.lit("b")) \
        .write_parquet(home.interactions / "date=2026-10-01" / "ing-2.parquet")  # never committed
    home.ingest_log.write_text(json.dumps({"ingest_id": "ing-1"}) + "\n", encoding="utf-8")
    home.tombstones.write_text(json.dumps({"user_id": "c"}) + "\n", encoding="utf-8")


def _assert_same_dataset(polars_data: Dataset, spark_data: Dataset) -> None:
    assert (spark_data.data_start, spark_data.data_end, spark_data.n_events) == \
        (polars_data.data_start, polars_data.data_end, polars_data.n_events)
    assert spark_data.full.users.users.ids == polars_data.full.users.users.ids
    assert spark_data.full.catalog.items.ids == polars_data.full.catalog.items.ids
    for facet in ("region_code", "age_band", "area_type"):
        assert list(spark_data.full.users.labels(facet)) == list(polars_data.full.users.labels(facet))
    assert np.array_equal(spark_data.full.catalog.hidden, polars_data.full.catalog.hidden)
    assert polars_data.split is not None and spark_data.split is not None
    assert spark_data.split.cutoff == polars_data.split.cutoff
    pairs = [(spark_data.full.weights, polars_data.full.weights), (spark_data.full.matrix, polars_data.full.matrix),
             (spark_data.split.train.weights, polars_data.split.train.weights),
             (spark_data.split.train.matrix, polars_data.split.train.matrix)]
    for ours, theirs in pairs:
        assert ours.nnz == theirs.nnz
        assert abs(ours - theirs).max() <= 1e-5 * max(1.0, abs(theirs).max())
    assert (spark_data.split.truth != polars_data.split.truth).nnz == 0
    assert np.array_equal(spark_data.split.cold_items, polars_data.split.cold_items)


def test_spark_features_apply_every_cleaning_rule(spark: SparkSession, tmp_path: Path) -> None:
    home = EngineHome.at(tmp_path / "home")
    _write_tiny_store(home)
    settings = EngineSettings()
    ours = sf.load_dataset(spark, home, settings, test_days=7)
    try:
        data = ours.local
        assert data.full.users.users.ids == ["a", "b", "d"]  # c erased; d known from events only
        assert data.full.catalog.items.ids == ["i1", "i2", "i3", "i4"]
        assert data.n_events == 4  # duplicate, hidden-item and erased events gone, uncommitted file unseen
        half = settings.half_life_days
        expected_full = np.array([
            [5 * 0.5 ** (10 / half), 0, 5.0, 0],  # the reserve counted once; the hidden attend dropped
            [0.5 ** (259_199 / 86_400 / half), 0, 0, 0],  # age 3 days - 0.5 s, in whole seconds: truncated
            [0, 0, 3 * 0.5 ** (9 / half), 0],
        ])
        assert np.allclose(data.full.weights.toarray(), expected_full, rtol=1e-6)
        assert data.split is not None and data.split.cutoff == END - 7 * DAY
        expected_train = np.array([[5 * 0.5 ** (3 / half), 0, 0, 0], [0, 0, 0, 0], [0, 0, 3 * 0.5 ** (2 / half), 0]])
        assert np.allclose(data.split.train.weights.toarray(), expected_train, rtol=1e-6)
        assert data.split.truth.toarray().tolist() == [[0, 0, 1, 0], [0, 0, 0, 0], [0, 0, 0, 0]]
        assert data.split.cold_items.tolist() == [False, True, False, True]
        _assert_same_dataset(load_dataset(home, settings, test_days=7), data)
    finally:
        ours.release()


def test_spark_features_equal_polars_features_on_the_demo_store(spark: SparkSession, demo: DemoHome) -> None:
    settings = load_config(None, "hybrid").engine
    ours = sf.load_dataset(spark, demo.home, settings, test_days=7, seed=0)
    try:
        assert ours.local.full.matrix.nnz > 50_000 and ours.local.split is not None
        assert ours.local.split.truth.nnz > 1_000
        _assert_same_dataset(load_dataset(demo.home, settings, test_days=7, seed=0), ours.local)
        assert ours.full_pairs.count() == ours.local.full.weights.nnz
    finally:
        ours.release()


def test_hybrid_gets_its_als_part_from_spark(spark: SparkSession, tmp_path: Path) -> None:
    home = EngineHome.at(tmp_path / "home")
    _write_tiny_store(home)
    cfg = TrainConfig(model="hybrid", params={"als": {"factors": 4, "iterations": 3}})
    ours = sf.load_dataset(spark, home, cfg.engine, test_days=7)
    try:
        model = fit_model(cfg, ours.full_pairs, ours.local.full)
    finally:
        ours.release()
    assert isinstance(model, HybridModel) and isinstance(model.cf, ALSModel)
    assert model.cf.user_factors.shape == (3, 4) and model.cf.known_items.tolist() == [True, False, True, False]
    scores = model.score(np.arange(3), ours.local.full.matrix)
    assert scores.shape == (3, 4) and np.isfinite(scores).all()


def test_mllib_confidence_is_the_engine_confidence(spark: SparkSession) -> None:
    weights = np.array([0.01, 0.5, 1.0, 3.0, 12.5, 80.0])
    frame = spark.createDataFrame([(float(w),) for w in weights], "weight double")
    for transform in ("log", "linear"):
        settings = EngineSettings(confidence=transform, alpha=3.0)
        ratings = np.array([row[0] for row in frame.select(rating_column(settings)).collect()])
        engine = to_confidence(sp.csr_matrix(weights[None, :]), transform, settings.alpha).toarray().ravel()
        assert np.allclose(1.0 + settings.alpha * ratings, engine, rtol=1e-6)
    with pytest.raises(ValueError, match="bm25"):
        rating_column(EngineSettings(confidence="bm25"))


def test_reg_param_gives_the_same_total_penalty() -> None:
    # 3 users and 2 items with ratings (one empty row, one empty column), 5 ratings
    matrix = sp.csr_matrix(np.array([[1, 1, 0], [0, 1, 0], [0, 0, 0], [1, 1, 0]], dtype=np.float32))
    assert mllib_reg_param(0.1, matrix) == pytest.approx(0.1 * (3 + 2) / (2 * 5))
    assert mllib_reg_param(0.1, sp.csr_matrix((2, 2), dtype=np.float32)) == 0.1


def test_factor_frames_align_on_the_axes(spark: SparkSession) -> None:
    frame = spark.createDataFrame([(3, [1.0, 2.0]), (0, [0.5, -1.0])], "id int, features array<float>")
    assert dense_factors(frame, 5, 2).tolist() == [[0.5, -1.0], [0, 0], [0, 0], [1.0, 2.0], [0, 0]]


def test_local_masters_are_recognised() -> None:
    assert [local_cores(m) for m in ("local", "local[3]", "local[4,2]", "spark://host:7077")] == [1, 3, 4, None]
    assert SparkOptions(master="local[2]").session_conf()["spark.sql.shuffle.partitions"] == "4"
    assert SparkOptions(master="local[2]").session_conf()["spark.driver.bindAddress"] == "127.0.0.1"
    assert "spark.driver.bindAddress" not in SparkOptions(master="spark://host:7077").session_conf()


# --------------------------------------------------------------------------- train, register, serve


def test_spark_train_registers_a_spark_version(trained: Trained, demo: DemoHome) -> None:
    summary = trained.spark
    assert summary["engine"] == "spark" and summary["version"] == "1" and summary["champion"] == "1"
    assert summary["key_metrics"]["ndcg@10"] > summary["baseline_ndcg@10"] > 0
    for step in ("start spark", "build features", "fit als on train", "refit on all data", "register candidate"):
        assert step in summary["timings"]
    client = registry.connect(demo.home)
    versions = {v.version: v for v in registry.versions(client)}
    assert versions["1"].tags["engine"] == "spark" and versions["2"].tags["engine"] == "implicit"
    assert "champion" in versions["1"].aliases
    params = client.get_run(versions["1"].run_id).data.params
    assert params["engine"] == "spark" and params["params.factors"] == "32"
    assert float(params["spark.als.reg_param_train"]) < 0.05  # λ spread over the rating counts


def test_spark_ndcg_is_within_ten_percent_of_implicit(trained: Trained) -> None:
    ours, theirs = trained.spark["key_metrics"]["ndcg@10"], trained.implicit["key_metrics"]["ndcg@10"]
    assert math.isfinite(ours) and theirs > 0
    assert abs(ours - theirs) <= NDCG_TOLERANCE * theirs, f"spark {ours:.4f} vs implicit {theirs:.4f}"


def test_the_spark_bundle_loads_with_spark_factors(trained: Trained, demo: DemoHome, tmp_path: Path) -> None:
    bundle = ModelBundle.load(registry.download_bundle(registry.connect(demo.home), "1", tmp_path))
    assert isinstance(bundle.model, ALSModel)
    factors = bundle.model.user_factors
    assert factors.shape == (len(bundle.users), 32) and bundle.model.item_factors.shape == (len(bundle.catalog), 32)
    active = np.diff(bundle.weights.indptr) > 0
    assert (np.abs(factors[active]).sum(axis=1) > 0).all()  # every user with data has MLlib factors
    assert not factors[~active].any()  # users without any interaction: zeros, as in implicit
    assert bundle.model.known_items.tolist() == (np.diff(bundle.weights.tocsc().indptr) > 0).tolist()


def test_the_api_serves_the_spark_version(trained: Trained, demo: DemoHome,
                                          monkeypatch: pytest.MonkeyPatch) -> None:
    from serving.app import create_app
    from tests.serving_fixtures import KEY_HEADERS, keyed_settings

    monkeypatch.setenv("RECSYS_HOME", str(demo.root))
    user = demo.data.interactions["user_id"][0]
    with TestClient(create_app(keyed_settings()), headers=KEY_HEADERS) as client:
        ready = client.get("/readyz").json()
        assert ready["status"] == "ready" and ready["version"] == "1"
        response = client.get(f"/v1/users/{user}/recommendations", params={"n": 10, "at": AT})
    assert response.status_code == 200, response.text
    body = response.json()
    assert body["model_version"] == "1" and body["fallback"] is None
    assert len(body["items"]) == 10 and len({item["item_id"] for item in body["items"]}) == 10


def test_recommend_writes_lists_from_the_spark_version(trained: Trained, demo: DemoHome, tmp_path: Path) -> None:
    out = tmp_path / "recs.parquet"
    summary = cli_json(run_cli("recommend", "--home", str(demo.root), "--all", "-n", "5", "--at", AT,
                               "--version", "1", "--out", str(out), "--json"))
    frame = pl.read_parquet(out)
    assert summary["version"] == "1" and frame.columns == ["user_id", "rank", "item_id", "score"]
    assert frame["user_id"].n_unique() > 7000 and frame.group_by("user_id").len()["len"].max() == 5


def test_the_gate_refits_a_champion_of_another_engine(trained: Trained, demo: DemoHome, recipe: Path) -> None:
    """Same recipe hash, other engine: the champion is refitted on the split, not assumed equal."""
    client = registry.connect(demo.home)
    implicit_version = {v.version: v for v in registry.versions(client)}["2"]
    cfg = load_config(recipe)
    split = load_dataset(demo.home, cfg.engine, test_days=7).split
    assert split is not None and implicit_version.tags["config_hash"] == cfg.config_hash()
    sentinel = Evaluation(metrics={"ndcg@10": -1.0})
    same_split = lambda _settings: split  # noqa: E731 - the champion's recipe shares this weighting
    assert _champion_ndcg(client, implicit_version, cfg, sentinel, same_split, "implicit") == -1.0
    refitted = _champion_ndcg(client, implicit_version, cfg, sentinel, same_split, "spark")
    assert refitted == pytest.approx(trained.implicit["key_metrics"]["ndcg@10"], abs=1e-3)


# --------------------------------------------------------------------------- refusals


def test_unsupported_recipes_are_refused_before_spark_starts(tmp_path: Path) -> None:
    with pytest.raises(ValueError, match="ALS only"):
        check_supported(load_config(None, "bpr"))
    result = run_cli("train", "--home", str(tmp_path), "--engine", "spark", "--model", "itemknn")
    assert result.exit_code == 2 and "ALS only" in result.stderr, describe(result)
    result = run_cli("train", "--home", str(tmp_path), "--spark-master", "local[2]")
    assert result.exit_code == 2 and "--engine spark" in result.stderr, describe(result)
