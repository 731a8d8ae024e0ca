"""The weekly retrain: features -> tune -> fit -> evaluate -> refit -> MLflow -> register -> gate.

By default the job searches for its recipe (:mod:`training.tune`) on a validation cut of the
training period, starting from last week's winner; the winner is refitted on train +
validation and scored once on the test part, which the search never saw. ``tune=False``
trains the configured recipe as given. Either way a store whose time windows cannot judge a
model is split per user instead (:mod:`features.splits`), and the run says so.

The champion alias moves only at the very end, after every artifact is logged and the
gate passed; any failure before that leaves the MLflow run FAILED and the champion where
it was. The gate's decision, every reason and the figures it compared are logged to the
run (``gate.*`` tags and ``gate.json``), with the data-health comparison of the store's
newest week (:mod:`features.health`: ``health.*`` metrics, ``health.json``).

With ``only_new_data`` a run whose store holds no event after the champion's ``data_end``
stops before any work (:class:`NoNewData`): a scheduled retrain on unchanged data is
nothing to do, not a new version.
"""

from __future__ import annotations

import json
import logging
import math
import tempfile
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field, replace
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import mlflow
import polars as pl

from features import health
from features.dataset import Dataset, StoreFrames, build_dataset, weights_key
from features.events import clean_events
from features.ingest import ingest
from features.lock import file_lock
from features.splits import Split, split_with_confidence
from recsys import models
from recsys.ann import build_for as build_ann_index
from recsys.bundle import ModelBundle
from recsys.candidates import DEFAULT_MAX_USERS
from recsys.delivery import DeliveryEngine
from recsys.home import EngineHome
from recsys.model_card import facts_from_bundle
from recsys.model_card import flat as _flat
from recsys.models.base import Recommender
from recsys.settings import EngineSettings, HealthSettings
from training import gate, model_card, registry
from training.candidate_lists import save_with_candidates
from training.config import TrainConfig, config_from_dict
from training.evaluate import Evaluation, evaluate
from training.exposure_eval import MANIFEST_KEY as EXPOSURE_KEY
from training.exposure_eval import calibrated_manifest, floor_misses
from training.search_space import FAMILIES
from training.tune import DatasetCache, TuneOptions, TuningResult, tune

log = logging.getLogger(__name__)

Progress = Callable[[str], None]
KEY_METRICS = ("ndcg@10", "recall@20", "coverage@10", "rural_urban_ndcg_ratio", "cold_recall@20")


@dataclass
class TrainOptions:
    config: TrainConfig
    test_days: float = 7.0
    seed: int = 0
    promote: bool = True
    tolerance: float = 0.02
    rural_floor: float = 0.8
    report: bool = False
    candidate_users: int = DEFAULT_MAX_USERS
    """Users given precomputed serving lists, the most active first (:mod:`recsys.candidates`)."""
    tune: bool = True
    """Search for the recipe (``config`` is its first candidate); False trains ``config`` as given."""
    tune_budget: float | None = None
    """Wall-time budget of the search in seconds; None = sized to the store (:func:`training.tune.auto_budget`)."""
    tune_trials: int | None = None
    families: tuple[str, ...] = FAMILIES
    """Model families the search may pick (``recsys train --model X`` searches X only)."""
    only_new_data: bool = False
    """Stop with :class:`NoNewData` when the store has no event after the champion's ``data_end``."""
    health: HealthSettings = field(default_factory=HealthSettings)
    """Thresholds of the data-health comparison logged with the run."""


@dataclass
class TrainResult:
    version: str | None
    run_id: str
    model: str
    metrics: dict[str, float]
    baseline: dict[str, float]
    promoted: bool
    gate: dict[str, Any]
    champion: str | None
    seconds: float
    timings: dict[str, float] = field(default_factory=dict)
    report_dir: str | None = None
    engine: str = "implicit"
    split: str = ""
    """How the data was split, in a sentence."""
    tuning: dict[str, Any] | None = None
    """The search's summary (:meth:`training.tune.TuningResult.summary`), None with ``tune=False``."""
    notes: list[str] = field(default_factory=list)
    health: dict[str, Any] | None = None
    """The data-health comparison (:meth:`features.health.HealthReport.to_dict`), None on an empty store."""
    promote_asked: bool = True
    """False with ``--no-promote``: not promoting was the plan, not the gate's refusal."""

    @property
    def refused(self) -> bool:
        """Trained and registered, but the gate kept the champion."""
        return self.promote_asked and not self.promoted

    def to_dict(self) -> dict[str, Any]:
        key = {k: self.metrics.get(k) for k in KEY_METRICS}
        return {
            "version": self.version, "run_id": self.run_id, "model": self.model, "promoted": self.promoted,
            "champion": self.champion, "gate": self.gate, "key_metrics": key,
            "baseline_ndcg@10": self.baseline.get("ndcg@10"),
            "lift_over_popularity": self.metrics.get("lift_over_popularity.ndcg@10"),
            "seconds": round(self.seconds, 2), "timings": self.timings, "report_dir": self.report_dir,
            "engine": self.engine, "split": self.split, "tuning": self.tuning, "notes": self.notes,
            "health": self.health, "status": "refused" if self.refused else "promoted" if self.promoted
            else "registered",
            "exposure": {k: v for k, v in self.metrics.items() if k.startswith("exposure.")} or None,
        }


class NoNewData(Exception):
    """The store has no event after the champion's ``data_end``: a retrain would learn nothing new."""

    def __init__(self, champion: str, data_end: datetime, newest: datetime | None) -> None:
        self.champion, self.data_end, self.newest = champion, data_end, newest
        super().__init__(f"nothing to do: no new data since champion version {champion} was trained "
                         f"(its data ends {data_end.isoformat()}, the store's newest event is "
                         f"{newest.isoformat() if newest else 'none'}); --force trains anyway")

    def to_dict(self) -> dict[str, Any]:
        return {"status": "nothing_to_do", "promoted": False, "champion": self.champion,
                "champion_data_end": self.data_end.isoformat(),
                "newest_event": self.newest.isoformat() if self.newest else None, "message": str(self)}


class Stopwatch:
    """Announces each step through ``progress`` and records how long it took."""

    def __init__(self, progress: Progress | None = None) -> None:
        self.say: Progress = progress or (lambda step: log.info(step))
        self.started = time.perf_counter()
        self.timings: dict[str, float] = {}

    def timed(self, step: str, fn: Callable[[], Any]) -> Any:
        self.say(step)
        t0 = time.perf_counter()
        value = fn()
        self.timings[step] = round(time.perf_counter() - t0, 3)
        return value


def train(home: EngineHome, options: TrainOptions, progress: Progress | None = None) -> TrainResult:
    clock = Stopwatch(progress)
    cfg = options.config
    start_training(home, options, clock)
    frames = clock.timed("read the store", lambda: StoreFrames.read(home).collected())
    first: Dataset = clock.timed("build features", lambda: build_dataset(
        frames, cfg.engine, test_days=options.test_days, seed=options.seed, validation=options.tune,
        protocol="auto"))
    cache = DatasetCache(frames, options.test_days, options.seed, first, cfg.engine) if options.tune else None
    tuning = None
    if cache is not None:
        search = TuneOptions(budget_seconds=options.tune_budget, trials=options.tune_trials, seed=options.seed,
                             families=options.families, start_from=previous_recipes(home))
        tuning = clock.timed("tune", lambda: tune(cache, cfg, search, progress=clock.say))
        cfg = tuning.best
        options = replace(options, config=cfg)
    data = cache.get(cfg.engine) if cache is not None else first
    split = require_split(data)
    model = clock.timed(f"fit {cfg.model} on train", lambda: models.create(cfg.model, cfg.params).fit(split.train))

    def split_for(settings: EngineSettings) -> Split:
        """The same split under another recipe's weighting (the gate refits the champion's recipe on it)."""
        if cache is not None:
            return require_split(cache.get(settings))
        if weights_key(settings) == weights_key(cfg.engine):
            return split_with_confidence(split, settings)
        protocol = "time" if data.protocol == "time" else "holdout"
        return require_split(build_dataset(frames, settings, test_days=options.test_days, seed=options.seed,
                                           protocol=protocol))

    return evaluate_and_register(home, options, data, model, lambda: model.refit(data.full), clock,
                                 tuning=tuning, split_for=split_for)


def start_training(home: EngineHome, options: TrainOptions, clock: Stopwatch) -> None:
    """What every training engine does first: fold in pending API lines, check the registry
    (refuses a swapped one), and with ``only_new_data`` stop when nothing arrived since the
    champion was trained (:class:`NoNewData`)."""
    clock.timed("ingest pending API interactions", lambda: ingest_incoming(home))
    client = clock.timed("check the registry", lambda: registry.begin_training(home))
    if options.only_new_data:
        clock.timed("look for new data", lambda: require_new_data(home, client))


def require_new_data(home: EngineHome, client: Any) -> None:
    """Raise :class:`NoNewData` when a champion exists and the store's newest usable event (as
    training counts them: visible items, not flagged, not in the future) is not after its ``data_end``."""
    current = registry.champion(client)
    if current is None:
        return
    data_end = registry.data_end_of(client, current)
    if data_end is None:  # a champion of unknown data: training is the safe answer
        return
    frames = StoreFrames.read(home)
    newest = (clean_events(frames.interactions, frames.items)
              .filter(pl.col("ts") <= pl.lit(datetime.now(UTC), dtype=pl.Datetime("us", "UTC")))
              .select(pl.col("ts").max()).collect().item())
    if newest is not None and newest <= data_end:  # an empty store goes on, to its own clear error
        raise NoNewData(current.version, data_end, newest)


def previous_recipes(home: EngineHome) -> list[TrainConfig]:
    """Last week's winners, to be tried first: the champion's recipe, then the newest version's."""
    try:
        client = registry.connect(home)
        found = [registry.champion(client)]
        newest = registry.versions(client)
        found.append(max(newest, key=lambda v: int(v.version)) if newest else None)
    except Exception as exc:  # a registry outage must not stop the search; it starts from the defaults
        log.warning("cannot read previous recipes from the registry: %s", exc)
        return []
    recipes = []
    for version in found:
        recipe = _recipe_of(client, version) if version is not None else None
        if recipe is not None and recipe.model in models.MODELS:
            recipes.append(recipe)
    return recipes


def require_split(data: Dataset) -> Split:
    if data.split is None:
        raise ValueError("a time split is required for training (test_days > 0)")
    return data.split


def evaluate_and_register(home: EngineHome, options: TrainOptions, data: Dataset, model: Recommender,
                          refit: Callable[[], Recommender], clock: Stopwatch, *, engine: str = "implicit",
                          engine_params: dict[str, Any] | None = None, tuning: TuningResult | None = None,
                          split_for: Callable[[EngineSettings], Split] | None = None) -> TrainResult:
    """The steps after the fit on train, shared by every training engine.

    ``model`` is fitted on ``data.split.train``; ``refit()`` returns it fitted on all data.
    ``engine`` names the fitting engine (tagged on the version, and part of "the same
    recipe" for the gate); ``engine_params`` are logged with the run; ``tuning`` is the
    search that chose the recipe, logged as nested trial runs. ``split_for(settings)`` gives
    the same split under another weighting, for refitting the champion's recipe.
    """
    cfg = options.config
    split = require_split(data)
    evaluation: Evaluation = clock.timed("evaluate", lambda: evaluate(model, split, cfg.engine))
    baseline = clock.timed("evaluate popularity baseline", lambda: _baseline(split, cfg))
    metrics = dict(evaluation.metrics)
    metrics.update(_lifts(metrics, baseline.metrics))
    model = clock.timed("refit on all data", refit)

    client = registry.connect(home)
    champion_before = registry.champion(client)
    data_health = clock.timed("check data health", lambda: health.check_safely(home, options.health, cfg.engine))
    with mlflow.start_run(run_name=f"{cfg.model}-{datetime.now(UTC):%Y%m%dT%H%M%S}",
                          tags=registry.run_tags()) as run:
        _log_run(cfg, options, data, metrics, baseline, evaluation)
        mlflow.set_tag("split", data.note)
        _log_health(data_health)
        mlflow.log_params({k: str(v)[:500] for k, v in {"engine": engine, **(engine_params or {})}.items()})
        if tuning is not None:
            clock.timed("log trials", lambda: _log_tuning(tuning))
        with tempfile.TemporaryDirectory(prefix="recsys-train-") as tmp:
            bundle = _bundle_of(model, data, options, metrics, split)
            bundle_dir = clock.timed("save bundle", lambda: _save_bundle(bundle, options, Path(tmp)))
            model_uri = clock.timed("log model", lambda: registry.log_bundle(bundle_dir))
        tags = {"config_hash": cfg.config_hash(), "ndcg_at_10": f"{evaluation.ndcg10:.6f}",
                "rural_urban_ndcg_ratio": f"{evaluation.rural_urban_ratio:.6f}",
                "test_cutoff": split.cutoff.isoformat(), "model": cfg.model, "engine": engine,
                "split": data.protocol, registry.DATA_END_TAG: data.data_end.isoformat() if data.data_end else ""}
        version = clock.timed("register candidate", lambda: registry.register(client, model_uri, tags))
        champion_ndcg = clock.timed("re-evaluate champion", lambda: _champion_ndcg(
            client, champion_before, cfg, evaluation, split_for or (lambda _settings: split), engine))
        decision = gate.decide(evaluation.ndcg10, evaluation.rural_urban_ratio, champion_ndcg,
                               tolerance=options.tolerance, rural_floor=options.rural_floor)
        gate.require_floors(decision, floor_misses(metrics, cfg.engine.exposure))
        if champion_ndcg is not None:
            mlflow.log_metric("champion_ndcg_at_10_same_window", champion_ndcg)
        promoted = options.promote and decision.promote
        if not options.promote:
            decision.reasons.append("--no-promote given")
        gate.log_decision(decision, promoted, version=version, champion=champion_before.version
                          if champion_before else None, candidate_ndcg=evaluation.ndcg10,
                          candidate_ratio=evaluation.rural_urban_ratio, champion_ndcg=champion_ndcg,
                          tolerance=options.tolerance, rural_floor=options.rural_floor)
        model_card.log_card(facts_from_bundle(bundle, version, model_card.gate_of(
            mlflow.get_run(run.info.run_id).data.tags)))
        report_dir = None
        if options.report:
            report_dir = clock.timed("planner report", lambda: _report(home, run.info.run_id))
        if promoted:
            registry.promote(client, version, by="train")
        mlflow.set_tag("promoted", str(promoted).lower())
    champion_now = registry.champion(client)
    return TrainResult(
        version=version, run_id=run.info.run_id, model=cfg.model, metrics=metrics, baseline=baseline.metrics,
        promoted=promoted, gate=decision.to_dict(), champion=champion_now.version if champion_now else None,
        seconds=time.perf_counter() - clock.started, timings=clock.timings, report_dir=report_dir, engine=engine,
        split=data.note, tuning=tuning.summary() if tuning else None, notes=_notes(cfg, tuning, metrics),
        health=data_health.to_dict() if data_health else None, promote_asked=options.promote,
    )


def _log_health(report: health.HealthReport | None) -> None:
    """The data-health comparison on the run: figures as metrics, warnings as tags, all in ``health.json``."""
    if report is None:
        return
    mlflow.log_dict(report.to_dict(), "health.json")
    mlflow.log_metrics(_mlflow_safe(report.metrics()))
    mlflow.set_tag("health.status", "warning" if report.warnings else "ok")
    for number, warning in enumerate(report.warnings):
        mlflow.set_tag(f"health.warning.{number}", warning[:5000])


def _notes(cfg: TrainConfig, tuning: TuningResult | None, metrics: dict[str, float]) -> list[str]:
    """Plain sentences for the operator about what the run chose and why."""
    notes = []
    if cfg.model == "popularity":
        notes.append("no personalised recipe beat popularity on validation: serving popularity"
                     if tuning else "serving popularity (the configured recipe)")
    lift = metrics.get("lift_over_popularity.ndcg@10")
    if lift is not None and math.isfinite(lift) and lift < 1.0 and cfg.model != "popularity":
        notes.append(f"on the test part the chosen recipe reached {lift:.2f}x the popularity baseline")
    return notes


def _log_tuning(tuning: TuningResult) -> None:
    """The search as nested runs under the training run (one per trial) plus a summary."""
    summary = tuning.summary()
    mlflow.log_dict({"summary": summary, "trials": [t.to_dict() for t in tuning.trials],
                     "best": tuning.best.to_dict()}, "tuning.json")
    mlflow.log_params({"tune.trials": summary["trials"], "tune.budget_seconds": summary["budget_seconds"],
                       "tune.best_origin": summary["best_origin"]})
    mlflow.log_metrics(_mlflow_safe({"tune.seconds": tuning.seconds, "tune.best_validation_ndcg@10": tuning.best_ndcg10,
                                     "tune.configured_validation_ndcg@10": tuning.configured_ndcg10 or float("nan"),
                                     "tune.validation_users": float(tuning.validation_users)}))
    for trial in tuning.trials:
        with mlflow.start_run(run_name=f"trial-{trial.number}-{trial.recipe.model}", nested=True):
            mlflow.set_tags({"trial.state": trial.state, "trial.origin": trial.origin})
            params = {"model": trial.recipe.model, **{f"params.{k}": v for k, v in _flat(trial.recipe.params).items()},
                      **{f"engine.{k}": v for k, v in trial.recipe.engine.model_dump(
                          include={"half_life_days", "confidence", "alpha"}).items()}}
            mlflow.log_params({k: str(v)[:500] for k, v in params.items()})
            mlflow.log_metrics(_mlflow_safe({"validation_ndcg@10": trial.ndcg10, "validation_recall@20": trial.recall20,
                                             "fit_seconds": trial.seconds}))


LOCK_WAIT_SECONDS = 600
"""How long training waits for a running ingest to finish before giving up."""
TRAIN_LOCK = "train.lock"
"""The home's training lock (``$RECSYS_HOME/train.lock``): one training at a time."""


class TrainingRunning(ValueError):
    """Another training of the same home holds the training lock; the message names it."""


@contextmanager
def training_lock(home: EngineHome, wait_seconds: float = 0) -> Iterator[None]:
    """Hold the home's training lock, waiting up to ``wait_seconds`` for a running training.

    Two trainings of one home would race for the champion alias and double the machine's
    load; a scheduled run that overlaps a long one waits or stops with :class:`TrainingRunning`.
    """
    home.root.mkdir(parents=True, exist_ok=True)
    with file_lock(home.root / TRAIN_LOCK, wait_seconds=wait_seconds, command="recsys train", what="training",
                   error=TrainingRunning):
        yield


def ingest_incoming(home: EngineHome) -> None:
    """Fold the API's durable interaction segments into the store before reading it.

    This goes through the store's writer lock, so a train started during an ingest waits
    for it (and an ingest started meanwhile waits for this one) instead of interleaving.
    """
    if home.incoming.exists():
        ingest(home, include_incoming=True, wait_seconds=LOCK_WAIT_SECONDS)


def _baseline(split: Split, cfg: TrainConfig) -> Evaluation:
    popularity = models.create("popularity").fit(split.train)
    return evaluate(popularity, split, cfg.engine)


def _lifts(metrics: dict[str, float], baseline: dict[str, float]) -> dict[str, float]:
    out = {}
    for key in ("ndcg@10", "recall@20", "map@10"):
        if baseline.get(key):
            out[f"lift_over_popularity.{key}"] = metrics[key] / baseline[key]
    return out


def _champion_ndcg(client, champion: registry.VersionInfo | None, cfg: TrainConfig, evaluation: Evaluation,
                   split_for: Callable[[EngineSettings], Split], engine: str = "implicit") -> float | None:
    """The champion's NDCG@10 on this run's test window.

    The champion's recipe is refitted on this run's train split and evaluated on the same
    test window (its stored artifact has already seen that window, so scoring it directly
    would flatter it). The same recipe with the same seed on the same engine yields the same
    model, so its score is the candidate's and no refit is needed. (A champion's recipe is
    refitted with ``implicit`` whatever engine trained it.)
    """
    if champion is None:
        return None
    same_engine = champion.tags.get("engine", "implicit") == engine
    if same_engine and champion.tags.get("config_hash") == cfg.config_hash():
        return evaluation.ndcg10
    recipe = _recipe_of(client, champion)
    if recipe is None:
        log.warning("champion %s has no recipe; comparing with its recorded NDCG@10", champion.version)
        recorded = champion.tags.get("ndcg_at_10")
        return float(recorded) if recorded else None
    split = split_for(recipe.engine)
    champion_model = models.create(recipe.model, recipe.params).fit(split.train)
    return evaluate(champion_model, split, recipe.engine).ndcg10


def _recipe_of(client, champion: registry.VersionInfo) -> TrainConfig | None:
    try:
        local = mlflow.artifacts.download_artifacts(run_id=champion.run_id, artifact_path="config.json")
        return config_from_dict(json.loads(Path(local).read_text(encoding="utf-8")))
    except Exception as exc:  # a foreign or damaged champion must not block training
        log.warning("cannot read champion %s config: %s", champion.version, exc)
        return None


def _log_run(cfg: TrainConfig, options: TrainOptions, data: Dataset, metrics: dict[str, float],
             baseline: Evaluation, evaluation: Evaluation) -> None:
    params = {"model": cfg.model, "test_days": options.test_days, "seed": options.seed, "split": data.protocol,
              "config_hash": cfg.config_hash(), "n_users": data.full.matrix.shape[0],
              "n_items": data.full.matrix.shape[1], "n_events": data.n_events,
              "data_end": str(data.data_end)}
    params.update({f"params.{k}": v for k, v in _flat(cfg.resolved_params).items()})
    params.update({f"engine.{k}": v for k, v in _flat(cfg.engine.model_dump()).items()})
    mlflow.log_params({k: str(v)[:500] for k, v in params.items()})
    mlflow.log_metrics(_mlflow_safe(metrics))
    mlflow.log_metrics(_mlflow_safe({f"baseline.{k}": v for k, v in baseline.metrics.items()}))
    mlflow.log_metric("eval_users", evaluation.n_users)
    mlflow.log_dict(cfg.to_dict(), "config.json")
    if evaluation.segments:
        columns = list(evaluation.segments[0])
        mlflow.log_table({c: [row[c] for row in evaluation.segments] for c in columns}, "evaluation/segments.json")


def _bundle_of(model: Recommender, data: Dataset, options: TrainOptions, metrics: dict[str, float],
               split: Split) -> ModelBundle:
    """The artifact: the model, its data's axes, the residents' dismissals, the editorial pool (the
    pool file merged into the catalogue's flags) and, for its description, every metric and the gate."""
    cfg = options.config
    manifest = {
        "trained_at": datetime.now(UTC).isoformat(), "data_start": str(data.data_start),
        "data_end": str(data.data_end), "test_cutoff": split.cutoff.isoformat(),
        "config_hash": cfg.config_hash(), "metrics": {k: metrics.get(k) for k in KEY_METRICS},
        "evaluation_metrics": {k: float(v) for k, v in metrics.items() if v is not None and math.isfinite(v)},
        "gate": {"tolerance": options.tolerance, "rural_floor": options.rural_floor},
    }
    model_card.merge_pool_file(data.full.catalog, cfg.engine.controls)
    model_card.log_pool(data.full.catalog, cfg.engine.controls)
    bundle = ModelBundle(model, data.full.catalog, data.full.users, data.full.weights, cfg.engine, manifest,
                         dismissed=data.dismissed, returns=data.returns)
    if cfg.engine.exposure.enabled and data.data_end is not None:
        manifest[EXPOSURE_KEY] = calibrated_manifest(DeliveryEngine(bundle), data.data_end.timestamp(),
                                                     cfg.engine.exposure, seed=options.seed)
    return bundle


def _save_bundle(bundle: ModelBundle, options: TrainOptions, directory: Path) -> Path:
    cfg = options.config
    bundle.ann = build_ann_index(bundle.model, len(bundle.catalog), cfg.engine.ann)  # None below ann.min_items items
    # with the server's per-user fast path
    return save_with_candidates(bundle, directory / "bundle", max_users=options.candidate_users)


def _report(home: EngineHome, run_id: str) -> str | None:
    from training import report

    out = home.reports / "latest"
    report.write_report(home, out, window_days=28, min_users=10, lang="zh")
    report.log_report_to_mlflow(out, run_id=run_id)
    return str(out)


def _mlflow_safe(metrics: dict[str, float]) -> dict[str, float]:
    """MLflow metric keys allow a restricted alphabet; non-finite values are dropped."""
    safe = {}
    for key, value in metrics.items():
        if value is None or not math.isfinite(float(value)):
            continue
        key = key.replace("@", "_at_")
        safe["".join(ch if ch.isascii() and (ch.isalnum() or ch in "_-./ ") else "_" for ch in key)] = float(value)
    return safe
