"""The recipe search every ``recsys train`` runs by default: the engine finds its own recipe.

A city's logs look like nobody's benchmark, so no fixed recipe is right for all of them. Each
run searches, with Optuna's seeded TPE sampler, over model families and their
hyperparameters (:mod:`training.search_space`) and scores every trial on the **validation**
cut of the training period (train | validation | test, :mod:`features.splits`). The test
window is never read here: the job refits the winner on train + validation and scores it
once on test, so the reported metrics stay honest.

The first trials are known recipes, cheapest first: last week's winner (so a retrain never
does worse than reusing it on the new validation window), the configured recipe, then the
shipped ones. The sampler then explores from what they taught it. The search stops at its
wall-time budget or trial count; a trial that would overrun the budget by the time its
family took before is skipped, and a trial that fails (a family that cannot fit this data)
is recorded and passed over.

Trials are cheap to set up: the store is read once, a dataset is built once per decay
half-life, and other confidence transforms are recomputed from the cached weights. Trial
scoring uses at most :data:`MAX_VALIDATION_USERS` validation users (a seeded sample).
"""

from __future__ import annotations

import logging
import math
import time
import warnings
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import optuna

from features.dataset import Dataset, ProtocolChoice, StoreFrames, build_dataset, weights_key
from features.splits import Split, split_with_confidence, with_confidence
from recsys import models
from recsys.models.ease import MAX_EASE_ITEMS
from recsys.settings import EngineSettings
from training.config import TrainConfig, config_from_dict, load_config, shipped_recipes
from training.evaluate import evaluate
from training.search_space import FAMILIES, SearchSpace, params_of, suggest_recipe

log = logging.getLogger(__name__)

Progress = Callable[[str], None]

MAX_VALIDATION_USERS = 20_000
"""Validation users a trial is scored on (a seeded sample when there are more)."""

SELECTION_Z = 2.0
"""A recipe tried earlier (last week's winner, the configured one, a shipped one) is kept over a better-scoring
later trial unless the later one is better by more than this many standard errors of the paired per-user
difference: a search of many trials otherwise picks validation noise (the winner's curse), and a stable
recipe keeps the weekly lists steady."""

PRIORITY = {"previous": 0, "configured": 1, "shipped": 1, "search": 2}
"""Which trials are preferred within noise, by the first word of their origin: last week's winner (stable
lists), then the known recipes by their score, then the sampler's."""

BUDGET_BASE_SECONDS = 60.0
BUDGET_SECONDS_PER_EVENT = 4e-4
BUDGET_MAX_SECONDS = 2_400.0
"""Default budget = base + per event, capped: 100k events get 100 s, 1M 460 s, 5M the 40-minute cap
(the whole weekly job on 5M events stays under an hour on 2 cores)."""

EASE_SECONDS_PER_CUBED_ITEM = 4e-11
"""EASE's fit is a dense items x items inverse on one core: about 30 s at 9k items, 5 minutes at 20k."""

SHIPPED_START = ("itemknn", "popularity", "ease", "als", "hybrid", "hybrid-large")
"""Shipped recipes enqueued after the configured one, cheapest first (the first learner probes the half-life)."""


EASE_BUDGET_SHARE = 0.12
"""One EASE trial may take about this share of the budget: it caps the items EASE covers in the search."""


def ease_cap(budget: float) -> int:
    """Items an EASE trial may cover for its fit to take about :data:`EASE_BUDGET_SHARE` of ``budget``."""
    items = (EASE_BUDGET_SHARE * budget / EASE_SECONDS_PER_CUBED_ITEM) ** (1 / 3)
    return int(min(max(items, 1_000), MAX_EASE_ITEMS))


def auto_budget(n_events: int) -> float:
    """The default wall-time budget of a search over a store of ``n_events`` interactions."""
    return min(BUDGET_MAX_SECONDS, BUDGET_BASE_SECONDS + BUDGET_SECONDS_PER_EVENT * n_events)


@dataclass
class TuneOptions:
    budget_seconds: float | None = None
    """Wall-time budget; None = :func:`auto_budget`."""
    trials: int | None = None
    """At most this many trials (None: until the budget is spent)."""
    seed: int = 0
    families: tuple[str, ...] = FAMILIES
    start_from: list[TrainConfig] = field(default_factory=list)
    """Recipes tried first, in order (last week's winner first)."""


@dataclass
class TrialRecord:
    number: int
    recipe: TrainConfig
    origin: str
    """``search``, or where an enqueued recipe came from (``champion``, ``configured``, ``shipped:als``)."""
    state: str
    ndcg10: float = float("nan")
    recall20: float = float("nan")
    seconds: float = 0.0
    error: str | None = None

    def to_dict(self) -> dict[str, Any]:
        return {"number": self.number, "model": self.recipe.model, "origin": self.origin, "state": self.state,
                "validation_ndcg@10": _finite(self.ndcg10), "validation_recall@20": _finite(self.recall20),
                "seconds": round(self.seconds, 2), "error": self.error, "config_hash": self.recipe.config_hash()}


@dataclass
class TuningResult:
    best: TrainConfig
    best_number: int
    """The trial that gave ``best``."""
    best_ndcg10: float
    configured_ndcg10: float | None
    trials: list[TrialRecord]
    seconds: float
    budget_seconds: float
    validation_users: int
    note: str

    @property
    def completed(self) -> int:
        return sum(t.state == "complete" for t in self.trials)

    def summary(self) -> dict[str, Any]:
        gain = (self.best_ndcg10 / self.configured_ndcg10 if self.configured_ndcg10 else None)
        best = next(t for t in self.trials if t.number == self.best_number)
        return {"trials": len(self.trials), "completed": self.completed, "seconds": round(self.seconds, 1),
                "budget_seconds": round(self.budget_seconds, 1), "validation_users": self.validation_users,
                "best_model": self.best.model, "best_origin": best.origin,
                "best_validation_ndcg@10": _finite(self.best_ndcg10),
                "configured_validation_ndcg@10": _finite(self.configured_ndcg10),
                "gain_over_configured": _finite(gain), "note": self.note}


class DatasetCache:
    """Datasets of one store under several engine settings, built once per weighting (decay half-life,
    action weights).

    Every build uses the same protocol (decided by the first) and seed, so the holdout draws
    and time windows, and so every trial's validation truth, are identical.
    """

    def __init__(self, frames: StoreFrames, test_days: float, seed: int, first: Dataset,
                 settings: EngineSettings) -> None:
        self.frames, self.test_days, self.seed = frames, test_days, seed
        self.protocol: ProtocolChoice = "time" if first.protocol == "time" else "holdout"
        self._by_weighting = {weights_key(settings): first}

    def get(self, settings: EngineSettings) -> Dataset:
        """The dataset with ``settings`` applied (full, split and validation)."""
        key = weights_key(settings)
        if key not in self._by_weighting:
            self._by_weighting[key] = build_dataset(self.frames, settings, test_days=self.test_days, seed=self.seed,
                                                    validation=True, protocol=self.protocol)
        data = self._by_weighting[key]
        assert data.split is not None and data.validation is not None
        return Dataset(full=with_confidence(data.full, settings), split=split_with_confidence(data.split, settings),
                       data_start=data.data_start, data_end=data.data_end, n_events=data.n_events,
                       validation=split_with_confidence(data.validation, settings), protocol=data.protocol,
                       note=data.note)


def tune(cache: DatasetCache, configured: TrainConfig, options: TuneOptions,
         progress: Progress | None = None) -> TuningResult:
    """Search for the best recipe on the validation cut; never reads the test window.

    Four phases share one study, budget and trial count: (1) last week's winners and the
    configured recipe as they are; (2) a probe of the decay half-life with the cheapest family,
    since the shipped recipes cannot know the data's time scale; (3) the shipped recipes with
    the probe's half-life; (4) the sampler, for whatever budget is left.
    """
    say = progress or (lambda message: log.info(message))
    first = cache.get(configured.engine)
    assert first.validation is not None and first.data_start is not None and first.data_end is not None
    budget = options.budget_seconds if options.budget_seconds is not None else auto_budget(first.n_events)
    span_days = (first.data_end - first.data_start).total_seconds() / 86_400
    space = SearchSpace.for_data(configured.engine, span_days, _families(options.families), ease_cap(budget))
    runner = _Runner(cache, space, _validation_sample(first.validation, options.seed), budget, say)
    study = _study(options.seed)
    known = [(f"previous:{i}" if i else "previous", r) for i, r in enumerate(options.start_from)]
    runner.run(study, [*known, ("configured", configured)], options.trials)
    shipped = _shipped(configured.engine, space)
    runner.run(study, _half_life_probe(shipped, space), options.trials)
    half_life = runner.best_half_life(configured.engine.half_life_days)
    runner.run(study, [(origin, _with_half_life(r, half_life)) for origin, r in shipped], options.trials)
    runner.run(study, None, options.trials)
    return runner.result(configured, budget, first.note)


def _families(families: Sequence[str]) -> tuple[str, ...]:
    chosen = tuple(f for f in FAMILIES if f in families)
    if not chosen:
        raise ValueError(f"no model family to search among {list(families)}; choose from {', '.join(FAMILIES)}")
    return chosen


def _study(seed: int) -> optuna.Study:
    optuna.logging.set_verbosity(optuna.logging.WARNING)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        sampler = optuna.samplers.TPESampler(seed=seed, multivariate=True, group=True, n_startup_trials=8,
                                             constant_liar=False)
    return optuna.create_study(direction="maximize", sampler=sampler)


def _shipped(operator: EngineSettings, space: SearchSpace) -> list[tuple[str, TrainConfig]]:
    """The shipped recipes the search starts from, cheapest first, with the operator's engine settings."""
    recipes = shipped_recipes()
    found = []
    for name in SHIPPED_START:
        if name in recipes:
            recipe = space.fitted(_with_operator_engine(load_config(recipes[name]), operator))
            if recipe.model in space.families:
                found.append((f"shipped:{name}", recipe))
    return found


def _half_life_probe(shipped: list[tuple[str, TrainConfig]], space: SearchSpace) -> list[tuple[str, TrainConfig]]:
    """The cheapest shipped recipe of a family that learns from the weights, once per half-life."""
    if len(space.half_lives) < 2:
        return []
    learners = [(origin, r) for origin, r in shipped if r.model != "popularity"]
    if not learners:
        return []
    origin, recipe = learners[0]
    return [(f"{origin}:half-life {h:g}", _with_half_life(recipe, h)) for h in space.half_lives]


def _with_half_life(recipe: TrainConfig, half_life: float) -> TrainConfig:
    engine = EngineSettings(**{**recipe.engine.model_dump(), "half_life_days": half_life})
    return TrainConfig(model=recipe.model, params=recipe.params, engine=engine)


def _with_operator_engine(recipe: TrainConfig, operator: EngineSettings) -> TrainConfig:
    """A shipped recipe keeps its weighting (half-life, transform, alpha) and takes the operator's
    action weights, time zone and index settings."""
    mine = recipe.engine.model_dump(include={"half_life_days", "confidence", "alpha"})
    mine = {k: v for k, v in mine.items() if k in recipe.engine.model_fields_set}
    return TrainConfig(model=recipe.model, params=recipe.params,
                       engine=EngineSettings(**{**operator.model_dump(), **mine}))


def _validation_sample(split: Split, seed: int) -> Split:
    """``split`` with truth for at most :data:`MAX_VALIDATION_USERS` users (a seeded sample)."""
    rows = np.flatnonzero(np.diff(split.truth.indptr) > 0)
    if len(rows) <= MAX_VALIDATION_USERS:
        return split
    keep = np.zeros(split.truth.shape[0], dtype=bool)
    keep[np.random.default_rng(seed).choice(rows, MAX_VALIDATION_USERS, replace=False)] = True
    truth = split.truth.multiply(keep[:, None]).tocsr()
    truth.eliminate_zeros()
    return Split(train=split.train, truth=truth, cutoff=split.cutoff, cold_items=split.cold_items,
                 returns=split.returns)


class _Runner:
    """Runs trials: builds the recipe's validation data, fits, scores, records."""

    def __init__(self, cache: DatasetCache, space: SearchSpace, sample: Split, budget: float, say: Progress) -> None:
        self.cache, self.space, self.sample_truth, self.budget, self.say = cache, space, sample.truth, budget, say
        self.known_items = int(sample.train.known_items.sum())
        self.started = time.perf_counter()
        self.records: list[TrialRecord] = []
        self.cost: dict[str, float] = {}
        self.best = -math.inf
        self.tried: set[str] = set()
        self.per_user: dict[int, np.ndarray] = {}

    def run(self, study: optuna.Study, recipes: list[tuple[str, TrainConfig]] | None, max_trials: int | None) -> None:
        """Try ``recipes`` in order, each once (``None``: let the sampler propose until the budget or the
        trial count is spent)."""
        fresh = [(origin, r) for origin, r in recipes or [] if r.config_hash() not in self.tried]
        for origin, recipe in fresh:
            self.tried.add(recipe.config_hash())
            attrs = {"origin": origin, "recipe": recipe.to_dict()}
            study.enqueue_trial(params_of(recipe, self.space), user_attrs=attrs)
        trials_left = None if max_trials is None else max_trials - len(self.records)
        if (recipes is not None and not fresh) or (trials_left is not None and trials_left <= 0) or self._left() <= 0:
            return
        count = len(fresh) if recipes is not None else trials_left
        if count is not None and trials_left is not None:
            count = min(count, trials_left)
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")  # Optuna's experimental-feature and fixed-parameter warnings
            study.optimize(self.objective, n_trials=count, timeout=self._left(), catch=())

    def best_half_life(self, default: float) -> float:
        """The half-life of the best completed trial so far (``default`` before any)."""
        done = [r for r in self.records if r.state == "complete"]
        if not done:
            return default
        return max(done, key=lambda r: (r.ndcg10, -r.number)).recipe.engine.half_life_days

    def objective(self, trial: optuna.Trial) -> float:
        fixed = trial.user_attrs.get("recipe")
        recipe = suggest_recipe(trial, self.space)  # registers the parameters with the sampler
        if fixed is not None:  # an enqueued recipe is tried exactly as it was written
            recipe = config_from_dict(fixed)
        origin = trial.user_attrs.get("origin", "search")
        record = TrialRecord(trial.number, recipe, origin, "running")
        self.records.append(record)
        if self._would_overrun(recipe):
            record.state = "skipped"
            raise optuna.TrialPruned(f"{recipe.model} would overrun the budget")
        t0 = time.perf_counter()
        try:
            ndcg, recall, per_user = self._score(recipe)
        except Exception as exc:  # one family failing on this data must not stop the weekly run
            record.state, record.error, record.seconds = "failed", str(exc)[:300], time.perf_counter() - t0
            log.warning("trial %d (%s) failed: %s", trial.number, recipe.model, exc, exc_info=True)
            raise optuna.TrialPruned(str(exc)) from exc
        record.seconds = time.perf_counter() - t0
        self.per_user[trial.number] = per_user
        key = _cost_key(recipe)
        self.cost[key] = max(self.cost.get(key, 0.0), record.seconds)
        record.state, record.ndcg10, record.recall20 = "complete", ndcg, recall
        self.best = max(self.best, ndcg)
        self.say(f"tuning: trial {trial.number + 1} {recipe.model} ({origin}) ndcg@10 {ndcg:.4f}, "
                 f"best {self.best:.4f}, {self._left():.0f} s left")
        return ndcg

    def _score(self, recipe: TrainConfig) -> tuple[float, float, np.ndarray]:
        data = self.cache.get(recipe.engine)
        assert data.validation is not None
        split = Split(train=data.validation.train, truth=self.sample_truth, cutoff=data.validation.cutoff,
                      cold_items=data.validation.cold_items, returns=data.validation.returns)
        model = models.create(recipe.model, recipe.params).fit(split.train)
        result = evaluate(model, split, recipe.engine, segments=False)
        assert result.per_user is not None
        return result.metrics["ndcg@10"], result.metrics["recall@20"], result.per_user

    def _left(self) -> float:
        return self.budget - (time.perf_counter() - self.started)

    def _would_overrun(self, recipe: TrainConfig) -> bool:
        """Skip a trial whose family took longer before, or whose dense EASE inverse is estimated to take
        longer, than the budget has left (with 20% slack)."""
        expected = max(self.cost.get(_cost_key(recipe), 0.0), self._ease_seconds(recipe))
        return expected > 1.2 * self._left()

    def _ease_seconds(self, recipe: TrainConfig) -> float:
        params = recipe.resolved_params
        ease = params if recipe.model == "ease" else params.get("ease") if params.get("cf_model") == "ease" else None
        if ease is None:
            return 0.0
        covered = min(self.known_items, int(ease["max_items"]))
        return EASE_SECONDS_PER_CUBED_ITEM * covered ** 3

    def result(self, configured: TrainConfig, budget: float, note: str) -> TuningResult:
        done = [r for r in self.records if r.state == "complete"]
        if not done:
            raise ValueError("the recipe search completed no trial; raise --tune-budget or train with --no-tune")
        top = max(done, key=lambda r: (r.ndcg10, -r.number))
        best = kept_within_noise(done, top, self.per_user)
        wanted = configured.config_hash()  # tried once, perhaps as last week's winner
        configured_score = next((r.ndcg10 for r in done if r.recipe.config_hash() == wanted), None)
        kept = "" if best is top else (f"; kept {best.origin} (trial {best.number}) over trial {top.number}, "
                                       f"better by less than {SELECTION_Z:g} standard errors")
        return TuningResult(best=best.recipe, best_number=best.number, best_ndcg10=best.ndcg10,
                            configured_ndcg10=configured_score,
                            trials=self.records, seconds=time.perf_counter() - self.started, budget_seconds=budget,
                            validation_users=int((np.diff(self.sample_truth.indptr) > 0).sum()), note=note + kept)


def kept_within_noise(done: list[TrialRecord], top: TrialRecord, per_user: dict[int, np.ndarray]) -> TrialRecord:
    """The preferred trial (by :data:`PRIORITY`, then score) that ``top`` does not beat beyond noise:
    a paired comparison over the same validation users (``per_user[trial number]``)."""
    for record in sorted(done, key=lambda r: (PRIORITY.get(r.origin.split(":")[0], 2), -r.ndcg10, r.number)):
        if record is top:
            return top
        difference = per_user[top.number] - per_user[record.number]
        error = difference.std(ddof=1) / math.sqrt(len(difference)) if len(difference) > 1 else math.inf
        if difference.mean() <= SELECTION_Z * error:
            return record
    return top


def _cost_key(recipe: TrainConfig) -> str:
    """Trials that cost alike: a family, a hybrid by its collaborative part."""
    return f"hybrid/{recipe.params.get('cf_model', 'als')}" if recipe.model == "hybrid" else recipe.model


def _finite(value: float | None) -> float | None:
    return None if value is None or not math.isfinite(value) else round(float(value), 6)
