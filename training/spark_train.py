"""The weekly retrain with Spark: features in Spark SQL, ALS fitted by MLlib.

``recsys train --engine spark`` runs the steps of :func:`training.train.train` with two of
them on Spark: the features (:mod:`features.spark_features`, same definitions as the polars
path) and the ALS fit (``pyspark.ml.recommendation.ALS`` with implicit preferences). The
fitted factors become a :class:`recsys.models.als.ALSModel` on the axes the polars path
uses, so evaluation, MLflow logging, the bundle, the registry and the promotion gate are
the shared code of :func:`training.train.evaluate_and_register`, and serving and
``recsys recommend`` cannot tell the engines apart.

The two ALS implementations minimise the same weighted loss (Hu, Koren & Volinsky 2008)
once their inputs are matched:

- confidence: the engine uses ``c = 1 + alpha * log1p(w)``; MLlib uses ``c = 1 + alpha * r``,
  so MLlib gets ``r = log1p(w)`` (``r = w`` for the ``linear`` transform) and ``alpha``;
- regularisation: implicit penalises every factor vector by a constant ``λ``; MLlib (ALS-WR)
  by ``regParam · n``, n = that user's or item's number of ratings. No single ``regParam``
  matches both sides (a typical item has ten times a user's ratings), so it is chosen to
  give the same total penalty over all fitted vectors:
  ``regParam · Σn = regParam · 2·nnz = λ · (users + items)``, i.e.
  ``regParam = λ · (users + items) / (2 · nnz)`` (:func:`mllib_reg_param`).

What differs: MLlib has no warm start, so the refit on all data is a full fit with the
configured ``iterations`` (the implicit path warm-starts for ``refit_iterations``).
Hybrid models are supported: their ALS part is fitted in Spark, content facets and segment
popularity are fitted as usual on the collected matrices. On a cluster master the engine
home must be readable at the same path by every executor (Spark reads the store files
where it runs); ``local[*]`` needs nothing more than a Java runtime.
"""

from __future__ import annotations

import logging
import os
import re
import tempfile
from collections.abc import Iterator, Mapping
from contextlib import ExitStack, contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import scipy.sparse as sp
from pyspark.ml.recommendation import ALS
from pyspark.sql import Column, DataFrame, SparkSession
from pyspark.sql import functions as F

from features import spark_features
from recsys.home import EngineHome
from recsys.models.als import ALSConfig, ALSModel
from recsys.models.base import Recommender, TrainingData
from recsys.models.hybrid import HybridModel
from recsys.settings import EngineSettings
from training.config import TrainConfig
from training.train import (
    Progress,
    Stopwatch,
    TrainOptions,
    TrainResult,
    evaluate_and_register,
    require_split,
    start_training,
)

log = logging.getLogger(__name__)

ENGINE = "spark"
SUPPORTED_MODELS = ("als", "hybrid")
SUPPORTED_TRANSFORMS = ("log", "linear")

LOCAL_DEFAULTS: dict[str, str] = {
    "spark.driver.memory": "2g",
    # local mode talks to itself only: never bind or advertise a routable address
    "spark.driver.host": "127.0.0.1",
    "spark.driver.bindAddress": "127.0.0.1",
}
SESSION_DEFAULTS: dict[str, str] = {
    "spark.ui.enabled": "false",
    "spark.ui.showConsoleProgress": "false",
    "spark.sql.session.timeZone": "UTC",
}
QUIET_LOG4J2 = """\
rootLogger.level = error
rootLogger.appenderRef.stderr.ref = console
appender.console.type = Console
appender.console.name = console
appender.console.target = SYSTEM_ERR
appender.console.layout.type = PatternLayout
appender.console.layout.pattern = %d{HH:mm:ss} %p %c{1}: %m%n
"""


@dataclass(frozen=True)
class SparkOptions:
    """Where Spark runs and how it is configured (``conf`` overrides the defaults)."""

    master: str = "local[*]"
    conf: Mapping[str, str] = field(default_factory=dict)
    quiet: bool = True

    def session_conf(self) -> dict[str, str]:
        chosen = dict(SESSION_DEFAULTS)
        cores = local_cores(self.master)
        if cores is not None:
            chosen.update(LOCAL_DEFAULTS)
            # Spark's 200 shuffle partitions cost seconds per stage on one machine: a few per core
            chosen["spark.sql.shuffle.partitions"] = str(2 * cores)
        chosen.update(self.conf)
        return chosen


def local_cores(master: str) -> int | None:
    """Worker threads of a ``local``, ``local[N]``, ``local[*]`` or ``local[N,F]`` master; None if not local."""
    found = re.fullmatch(r"local(?:\[(\*|\d+)(?:,\d+)?\])?", master.strip())
    if found is None:
        return None
    threads = found.group(1) or "1"
    return (os.cpu_count() or 1) if threads == "*" else max(1, int(threads))


def check_supported(cfg: TrainConfig) -> None:
    """Refuse, before Spark starts, a recipe the Spark engine cannot fit."""
    if cfg.model not in SUPPORTED_MODELS:
        raise ValueError(f"--engine spark fits ALS only: use --model als or --model hybrid "
                         f"(whose collaborative part is ALS), not {cfg.model!r}")
    if cfg.model == "hybrid" and cfg.params.get("cf2_model", "none") != "none":
        raise ValueError("--engine spark fits one ALS part: a hybrid blending two collaborative parts "
                         "(cf2_model) trains with --engine implicit")
    if cfg.engine.confidence not in SUPPORTED_TRANSFORMS:
        raise ValueError(f"--engine spark supports the confidence transforms {', '.join(SUPPORTED_TRANSFORMS)}; "
                         f"MLlib cannot take {cfg.engine.confidence!r} (use --engine implicit)")


def train_spark(home: EngineHome, options: TrainOptions, spark: SparkOptions | None = None,
                progress: Progress | None = None) -> TrainResult:
    """:func:`training.train.train` with the features and the ALS fit on Spark."""
    cfg = options.config
    check_supported(cfg)
    clock = Stopwatch(progress)
    start_training(home, options, clock)
    with ExitStack() as stack:
        session = clock.timed("start spark", lambda: stack.enter_context(spark_session(spark or SparkOptions())))
        features = clock.timed("build features", lambda: spark_features.load_dataset(
            session, home, cfg.engine, test_days=options.test_days, seed=options.seed))
        stack.callback(features.release)
        data = features.local
        split = require_split(data)
        train_pairs = features.train_pairs
        if train_pairs is None:  # pragma: no cover - a split always comes with its train pairs
            raise ValueError("the Spark features have a split but no train pairs")
        model = clock.timed(f"fit {cfg.model} on train", lambda: fit_model(cfg, train_pairs, split.train))
        return evaluate_and_register(
            home, options, data, model, lambda: fit_model(cfg, features.full_pairs, data.full), clock,
            engine=ENGINE, engine_params=_engine_params(session, cfg, split.train, data.full),
        )


@contextmanager
def spark_session(options: SparkOptions) -> Iterator[SparkSession]:
    """The active session if there is one (left running), else a new one stopped on exit."""
    active = SparkSession.getActiveSession()
    if active is not None:
        yield active
        return
    with tempfile.TemporaryDirectory(prefix="recsys-spark-") as tmp:
        builder = SparkSession.builder.master(options.master).appName("recsys-train")
        conf = options.session_conf()
        if local_cores(options.master) is not None:
            # read by the JVM launcher before any conf applies: keeps it from looking up
            # (and announcing) a routable address when the host name resolves to loopback
            os.environ.setdefault("SPARK_LOCAL_IP", "127.0.0.1")
        if options.quiet:
            log4j = Path(tmp) / "log4j2.properties"
            log4j.write_text(QUIET_LOG4J2, encoding="utf-8")
            extra = conf.get("spark.driver.extraJavaOptions", "")
            conf["spark.driver.extraJavaOptions"] = f"{extra} -Dlog4j2.configurationFile={log4j.as_uri()}".strip()
        for key, value in conf.items():
            builder = builder.config(key, value)
        session = builder.getOrCreate()
        if options.quiet:
            session.sparkContext.setLogLevel("ERROR")
            logging.getLogger("py4j").setLevel(logging.WARNING)  # one INFO line per gateway call otherwise
        try:
            yield session
        finally:
            session.stop()


# --------------------------------------------------------------------------- fitting


def fit_model(cfg: TrainConfig, pairs: DataFrame, data: TrainingData) -> Recommender:
    """The recipe's model fitted on ``data``, its ALS part by MLlib on the matching ``pairs``."""
    check_supported(cfg)
    if cfg.model == "als":
        return fit_als(pairs, ALSConfig(**cfg.params), cfg.engine, data)
    hybrid = HybridModel(cfg.params)
    hybrid.cf = fit_als(pairs, hybrid.config.als, cfg.engine, data)
    # the non-collaborative parts are fitted exactly as HybridModel.fit fits them
    return hybrid._fit_rest(data)


def fit_als(pairs: DataFrame, config: ALSConfig, settings: EngineSettings, data: TrainingData) -> ALSModel:
    """MLlib ALS (implicit preferences) on ``(u, i, weight)`` pairs, as an engine ALSModel.

    ``data`` holds the same pairs as matrices: it gives the axes (users x items), the
    rating counts for :func:`mllib_reg_param`, the seed and the known items. Rows or columns
    MLlib saw no rating for get zero factors, as they do in ``implicit``.
    """
    n_users, n_items = data.matrix.shape
    ratings = pairs.select(F.col("u").cast("int").alias("user"), F.col("i").cast("int").alias("item"),
                           rating_column(settings).alias("rating"))
    estimator = ALS(
        rank=config.factors, maxIter=config.iterations, regParam=mllib_reg_param(config.regularization, data.matrix),
        alpha=settings.alpha, implicitPrefs=True, nonnegative=False, seed=data.seed,
        userCol="user", itemCol="item", ratingCol="rating",
    )
    fitted = estimator.fit(ratings)
    model = ALSModel(config)
    # the engine's own persistence hook: these arrays are exactly what a saved ALSModel holds
    model._restore({
        "user_factors": dense_factors(fitted.userFactors, n_users, config.factors),
        "item_factors": dense_factors(fitted.itemFactors, n_items, config.factors),
        "known_items": data.known_items,
    })
    model._fitted = True
    log.debug("MLlib ALS fitted: %d users x %d items, rank %d", n_users, n_items, config.factors)
    return model


def rating_column(settings: EngineSettings) -> Column:
    """MLlib's rating r such that its confidence ``1 + alpha·r`` is the engine's confidence."""
    weight = F.greatest(F.col("weight"), F.lit(0.0))
    if settings.confidence == "log":
        return F.log1p(weight)
    if settings.confidence == "linear":
        return weight
    raise ValueError(f"no MLlib rating for the {settings.confidence!r} confidence transform")


def mllib_reg_param(regularization: float, matrix: sp.csr_matrix) -> float:
    """MLlib's ``regParam`` giving the total penalty of implicit's constant ``regularization``.

    MLlib weighs each vector's penalty by its rating count n (ALS-WR), so over all fitted
    vectors the penalty is ``regParam · Σn = regParam · 2·nnz``; implicit's is
    ``λ · (users + items)`` over the users and items that have ratings.
    """
    if matrix.nnz == 0:
        return regularization
    users = int(np.count_nonzero(np.diff(matrix.indptr)))
    items = int(np.count_nonzero(np.bincount(matrix.indices, minlength=matrix.shape[1])))
    return regularization * (users + items) / (2.0 * matrix.nnz)


def dense_factors(factors: DataFrame, rows: int, rank: int) -> np.ndarray:
    """MLlib's ``(id, features)`` frame as a (rows, rank) float32 array; absent ids stay zero."""
    table = spark_features.to_arrow(factors.select("id", "features"))
    out = np.zeros((rows, rank), dtype=np.float32)
    if table.num_rows:
        ids = table.column("id").to_numpy(zero_copy_only=False)
        values = table.column("features").combine_chunks().flatten().to_numpy(zero_copy_only=False)
        out[ids] = values.reshape(len(ids), rank)
    return out


def _engine_params(session: SparkSession, cfg: TrainConfig, train: TrainingData,
                   full: TrainingData) -> dict[str, Any]:
    als = HybridModel(cfg.params).config.als if cfg.model == "hybrid" else ALSConfig(**cfg.params)
    return {
        "spark.version": session.version,
        "spark.master": session.sparkContext.master,
        "spark.als.reg_param_train": mllib_reg_param(als.regularization, train.matrix),
        "spark.als.reg_param_full": mllib_reg_param(als.regularization, full.matrix),
        "spark.als.refit": f"full fit, {als.iterations} iterations (MLlib has no warm start)",
    }
