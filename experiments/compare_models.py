"""Compare every model on the real data sets with the shipped configs, on one split per data set.

    python -m experiments.compare_models [--dataset ml|ml-user|goodbooks|all] [--seed 0]
                                         [--models als,hybrid] [--mlflow HOME] [--json FILE]

Each model is built from ``experiments/configs/<model>.toml`` (its ``[params]`` and
``[engine]``), fitted on the data set's train part and scored by the engine's own offline
evaluation (:func:`training.evaluate.evaluate`: the serving rules, history excluded). All
models of a data set share the split: the cutoff/holdout and the test truth do not depend on
the engine settings, only the confidence matrix does, and it is rebuilt per distinct
``[engine]`` table. ``±`` is the half-width of a normal 95 % interval of NDCG@10 over the
evaluated users (1.96 · sd / √n); on the MovieLens time split it is wide because only ~20
users are active on both sides of the cutoff.

A data set may pin engine settings that describe its time scale (:data:`ENGINE_OVERRIDES`);
they apply to every model alike and are printed with the table.
"""

from __future__ import annotations

import argparse
import json
import logging
import math
import os
import time
import warnings
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from experiments.datasets import BENCHMARKS, Benchmark, ContractFrames
from features.dataset import Split
from recsys import metrics, models
from recsys.bundle import ModelBundle
from recsys.delivery import DeliveryEngine
from recsys.models.base import Recommender
from recsys.settings import EngineSettings
from training.config import TrainConfig, load_config, shipped_recipe
from training.evaluate import evaluate

log = logging.getLogger(__name__)

MODELS: tuple[str, ...] = ("popularity", "itemknn", "bpr", "als", "ease", "hybrid", "hybrid-large")
"""Config names under experiments/configs/ (a config names its model)."""
COLUMNS: tuple[tuple[str, str], ...] = (("ndcg@10", "NDCG@10"), ("recall@20", "Recall@20"),
                                        ("coverage@10", "Coverage@10"))

ML_HALF_LIFE_DAYS = 3650.0
"""MovieLens spans 21 years: with the cultural cloud's 30-day half-life a five-year-old rating
would weigh 2^-60 and the models would learn from the last months only."""

ENGINE_OVERRIDES: dict[str, dict[str, Any]] = {
    "ml": {"half_life_days": ML_HALF_LIFE_DAYS},
    "ml-user": {"half_life_days": ML_HALF_LIFE_DAYS},
}
"""Engine settings a data set pins for every model alike (its time scale)."""


@dataclass
class Result:
    """One model on one data set."""

    dataset: str
    model: str
    metrics: dict[str, float]
    ndcg_half_width: float
    fit_seconds: float
    eval_users: int
    params: dict[str, Any] = field(default_factory=dict)
    engine: dict[str, Any] = field(default_factory=dict)


@dataclass
class BenchmarkRun:
    """Every model's result on one data set, with what describes the split."""

    benchmark: Benchmark
    results: list[Result]
    split_info: dict[str, Any]


def settings_for(cfg: TrainConfig, dataset: str) -> EngineSettings:
    """The config's engine settings with the data set's pinned overrides on top."""
    overrides = ENGINE_OVERRIDES.get(dataset, {})
    return EngineSettings(**{**cfg.engine.model_dump(), **overrides}) if overrides else cfg.engine


def run_benchmark(key: str, *, seed: int = 0, model_names: tuple[str, ...] = MODELS,
                  config_dir: Path | None = None) -> BenchmarkRun:
    """Fit and evaluate ``model_names`` on data set ``key``."""
    benchmark = BENCHMARKS[key]
    frames = benchmark.load()
    splits: dict[str, Split] = {}
    results = []
    for name in model_names:
        cfg = load_config(config_dir / f"{name}.toml" if config_dir else shipped_recipe(name))
        settings = settings_for(cfg, key)
        split = _split_for(benchmark, frames, settings, seed, splits)
        results.append(_run_model(key, name, cfg, settings, split))
        log.info("%s %s: ndcg@10 %.4f", key, name, results[-1].metrics["ndcg@10"])
    first = next(iter(splits.values()))
    info = {
        "protocol": benchmark.protocol, "cutoff": first.cutoff.isoformat(),
        "users": first.train.matrix.shape[0], "items": first.train.matrix.shape[1],
        "train_pairs": int(first.train.weights.nnz), "test_positives": int(first.truth.nnz),
        "test_users": int((np.diff(first.truth.indptr) > 0).sum()),
        "engine_overrides": ENGINE_OVERRIDES.get(key, {}),
    }
    return BenchmarkRun(benchmark, results, info)


def _split_for(benchmark: Benchmark, frames: ContractFrames, settings: EngineSettings, seed: int,
               cache: dict[str, Split]) -> Split:
    """One split per distinct engine settings; the truth must be the same for all of them."""
    key = json.dumps(settings.model_dump(), sort_keys=True)
    if key not in cache:
        split = benchmark.split(frames, settings, seed=seed)
        for other in cache.values():
            if (split.truth != other.truth).nnz or split.cutoff != other.cutoff:
                raise RuntimeError("engine settings changed the test truth; the comparison would be unfair")
        cache[key] = split
    return cache[key]


def _run_model(dataset: str, name: str, cfg: TrainConfig, settings: EngineSettings, split: Split) -> Result:
    model = models.create(cfg.model, cfg.params)
    started = time.perf_counter()
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # implicit warns about its own internal COO conversions
        model.fit(split.train)
    fit_seconds = time.perf_counter() - started
    evaluation = evaluate(model, split, settings)
    per_user = _per_user_ndcg(model, split, settings)
    if not math.isclose(float(np.nanmean(per_user)), evaluation.ndcg10, rel_tol=1e-6, abs_tol=1e-9):
        raise RuntimeError("per-user NDCG@10 does not reproduce the evaluation's mean")
    half_width = 1.96 * float(np.nanstd(per_user, ddof=1)) / math.sqrt(max(evaluation.n_users, 1))
    return Result(dataset, name, evaluation.metrics, half_width, fit_seconds, evaluation.n_users,
                  cfg.resolved_params, settings.model_dump())


def _per_user_ndcg(model: Recommender, split: Split, settings: EngineSettings) -> np.ndarray:
    """NDCG@10 per evaluated user, produced exactly as :func:`training.evaluate.evaluate` does."""
    train = split.train
    rows = np.flatnonzero(np.diff(split.truth.indptr) > 0)
    engine = DeliveryEngine(ModelBundle(model, train.catalog, train.users, train.weights, settings))
    recs, _ = engine.top_n_for_rows(rows, 10, at=split.cutoff.timestamp())
    return metrics.per_user_ndcg(recs, split.truth[rows], 10)


# --------------------------------------------------------------------------- output


def render(run: BenchmarkRun) -> str:
    """A Markdown table of one data set's results, headed by its protocol."""
    info = run.split_info
    lines = [
        f"### {run.benchmark.key}: {info['protocol']}",
        f"{info['users']} users x {info['items']} items, {info['train_pairs']} train pairs, "
        f"{info['test_positives']} test positives of {info['test_users']} users, cutoff {info['cutoff']}"
        + (f", engine overrides {info['engine_overrides']}" if info["engine_overrides"] else ""),
        "",
        "| model | " + " | ".join(label for _, label in COLUMNS[:1]) + " | ± (95%) | "
        + " | ".join(label for _, label in COLUMNS[1:]) + " | fit s |",
        "|---|---:|---:|" + "---:|" * (len(COLUMNS) - 1) + "---:|",
    ]
    for r in run.results:
        values = [f"{r.metrics.get(key, math.nan):.4f}" for key, _ in COLUMNS]
        lines.append(f"| {r.model} | {values[0]} | {r.ndcg_half_width:.4f} | " + " | ".join(values[1:])
                     + f" | {r.fit_seconds:.1f} |")
    return "\n".join(lines)


def log_to_mlflow(home: str, runs: list[BenchmarkRun], seed: int) -> None:
    """One MLflow run per (data set, model) in the experiment ``offline-comparison``."""
    import mlflow

    from recsys.home import EngineHome

    os.environ.setdefault("MLFLOW_DISABLE_TELEMETRY", "true")
    engine_home = EngineHome.at(home)
    engine_home.root.mkdir(parents=True, exist_ok=True)
    mlflow.set_tracking_uri(engine_home.tracking_uri())
    mlflow.set_experiment("offline-comparison")
    for run in runs:
        for r in run.results:
            with mlflow.start_run(run_name=f"{r.dataset}-{r.model}"):
                mlflow.log_params({"dataset": r.dataset, "model": r.model, "seed": seed,
                                   "protocol": run.split_info["protocol"][:500],
                                   "params": json.dumps(r.params)[:500], "engine": json.dumps(r.engine)[:500]})
                values = {**r.metrics, "ndcg@10.half_width": r.ndcg_half_width, "fit_seconds": r.fit_seconds,
                          "eval_users": float(r.eval_users)}
                mlflow.log_metrics({_metric_key(k): float(v) for k, v in values.items()
                                    if v is not None and math.isfinite(float(v))})


def _metric_key(key: str) -> str:
    key = key.replace("@", "_at_")
    return "".join(ch if ch.isascii() and (ch.isalnum() or ch in "_-./ ") else "_" for ch in key)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--dataset", default="all", choices=[*BENCHMARKS, "all"])
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--models", default=",".join(MODELS), help="comma-separated subset of models")
    parser.add_argument("--configs", type=Path, default=None, help="folder of <model>.toml configs "
                                                                   "(default: the shipped recipes)")
    parser.add_argument("--mlflow", metavar="HOME", help="also log every result to this engine home's MLflow")
    parser.add_argument("--json", type=Path, help="also write the results as JSON")
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.WARNING, format="%(levelname)s %(name)s: %(message)s")

    names = tuple(n.strip() for n in args.models.split(",") if n.strip())
    unknown = sorted(set(names) - set(models.MODELS))
    if unknown:
        parser.error(f"unknown models: {', '.join(unknown)}")
    keys = list(BENCHMARKS) if args.dataset == "all" else [args.dataset]
    runs = []
    for key in keys:
        run = run_benchmark(key, seed=args.seed, model_names=names, config_dir=args.configs)
        runs.append(run)
        print(render(run), end="\n\n", flush=True)
    if args.mlflow:
        log_to_mlflow(args.mlflow, runs, args.seed)
    if args.json:
        payload = [{"dataset": r.dataset, "model": r.model, "fit_seconds": r.fit_seconds, "eval_users": r.eval_users,
                    "ndcg@10.half_width": r.ndcg_half_width, "metrics": r.metrics, "split": run.split_info}
                   for run in runs for r in run.results]
        args.json.write_text(json.dumps(payload, indent=2, default=str), encoding="utf-8")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
