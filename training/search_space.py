"""The recipes a search may try: model families, their hyperparameters and the engine's weighting.

A recipe is a :class:`training.config.TrainConfig`. This module maps an Optuna trial to one
(:func:`suggest_recipe`) and a known recipe back to trial parameters (:func:`params_of`), so
last week's winner and the shipped recipes can be enqueued as the first trials and the
sampler learns from them. Parameter names are shared between a family and the hybrid's
collaborative part of the same kind (``als.factors`` is one dimension whether ALS stands alone
or inside the hybrid), so what the search learns about ALS serves both.

The engine settings searched are the ones that change what the models learn from: the decay
half-life (including none), the confidence transform and its alpha. Action weights, the time
zone and the approximate-index settings are the operator's and stay as configured.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import optuna

from recsys.models.ease import MAX_EASE_ITEMS
from recsys.settings import EngineSettings
from training.config import TrainConfig

FAMILIES: tuple[str, ...] = ("popularity", "itemknn", "ease", "als", "bpr", "hybrid")
"""Every model family the search may pick (names of :data:`recsys.models.MODELS`)."""

HYBRID_CF: tuple[str, ...] = ("als", "ease", "itemknn")
WEIGHTED_FAMILIES = frozenset({"itemknn", "als", "bpr", "hybrid", "ease"})
"""Families whose input is the confidence matrix (popularity reads the decayed weights only)."""

HALF_LIVES: tuple[float, ...] = (0.0, 7.0, 30.0, 90.0, 365.0, 1095.0)
"""Half-lives in days the search tries; 0 = no decay."""
ALS_FACTORS: tuple[int, ...] = (32, 64, 128, 256, 512)
BPR_FACTORS: tuple[int, ...] = (32, 64, 128, 256)
CONFIDENCES: tuple[str, ...] = ("log", "linear", "bm25")

FLOATS: dict[str, tuple[float, float, bool]] = {
    "engine.alpha": (0.1, 100.0, True),
    "popularity.shrinkage": (0.0, 500.0, False),
    "itemknn.k1": (0.3, 3.0, False),
    "itemknn.b": (0.0, 1.0, False),
    "ease.l2": (1.0, 20_000.0, True),
    "als.regularization": (0.01, 300.0, True),
    "bpr.learning_rate": (0.003, 0.2, True),
    "bpr.regularization": (1e-5, 0.1, True),
    "hybrid.content_weight": (0.0, 1.0, False),
    "hybrid.popularity_weight": (0.0, 1.0, False),
    "hybrid.cf2_weight": (0.0, 1.0, False),
}
"""(low, high, log scale) of every float dimension."""
INTS: dict[str, tuple[int, int, bool]] = {
    "itemknn.neighbours": (10, 1000, True),
    "als.iterations": (6, 24, False),
    "bpr.iterations": (30, 300, True),
}


@dataclass(frozen=True)
class SearchSpace:
    """What one search may vary: the families and the half-lives that make sense for the data."""

    families: tuple[str, ...]
    half_lives: tuple[float, ...]
    base_engine: EngineSettings
    ease_max_items: int = MAX_EASE_ITEMS
    """EASE covers at most this many items in the search (its fit grows with the cube of it)."""

    @classmethod
    def for_data(cls, base_engine: EngineSettings, data_span_days: float,
                 families: Sequence[str] = FAMILIES, ease_max_items: int = MAX_EASE_ITEMS) -> SearchSpace:
        """Half-lives longer than twice the data's span behave like no decay: left out. A store with one
        timestamp has nothing to decay, so only the configured half-life remains (it cannot matter)."""
        if data_span_days <= 0:
            lives: tuple[float, ...] = (base_engine.half_life_days,)
        else:
            lives = tuple(h for h in HALF_LIVES if h == 0 or h <= 2 * data_span_days)
        return cls(tuple(families), lives, base_engine, ease_max_items)

    def fitted(self, recipe: TrainConfig) -> TrainConfig:
        """``recipe`` with its EASE part (if any) covering at most :attr:`ease_max_items` items."""
        params = dict(recipe.params)
        if recipe.model == "ease":
            params["max_items"] = min(params.get("max_items", MAX_EASE_ITEMS), self.ease_max_items)
        elif recipe.model == "hybrid" and "ease" in (params.get("cf_model"), params.get("cf2_model")):
            ease = dict(params.get("ease", {}))
            ease["max_items"] = min(ease.get("max_items", MAX_EASE_ITEMS), self.ease_max_items)
            params["ease"] = ease
        else:
            return recipe
        return TrainConfig(model=recipe.model, params=params, engine=recipe.engine)


def suggest_recipe(trial: optuna.Trial, space: SearchSpace) -> TrainConfig:
    """The recipe this trial proposes."""
    family = _categorical(trial, "family", space.families)
    params = _family_params(trial, family)
    engine = _engine(trial, space, family)
    return space.fitted(TrainConfig(model=family, params=params, engine=engine))


def _family_params(trial: optuna.Trial, family: str) -> dict[str, Any]:
    if family == "hybrid":
        cf = _categorical(trial, "hybrid.cf_model", HYBRID_CF)
        params = {"cf_model": cf, cf: _family_params(trial, cf), "cf_weight": 1.0,
                  "content_weight": _float(trial, "hybrid.content_weight"),
                  "popularity_weight": _float(trial, "hybrid.popularity_weight")}
        second = _categorical(trial, "hybrid.cf2_model", ("none", *HYBRID_CF))
        if second not in ("none", cf):  # a blend of two kinds of collaborative model
            params.update({"cf2_model": second, second: _family_params(trial, second),
                           "cf2_weight": _float(trial, "hybrid.cf2_weight")})
        return params
    if family == "popularity":
        return {"shrinkage": _float(trial, "popularity.shrinkage"),
                "by_segment": _categorical(trial, "popularity.by_segment", (True, False))}
    if family == "itemknn":
        similarity = _categorical(trial, "itemknn.similarity", ("bm25", "cosine"))
        params: dict[str, Any] = {"neighbours": _int(trial, "itemknn.neighbours"), "similarity": similarity}
        if similarity == "bm25":
            params.update(k1=_float(trial, "itemknn.k1"), b=_float(trial, "itemknn.b"))
        return params
    if family == "ease":
        return {"l2": _float(trial, "ease.l2"), "binary": _categorical(trial, "ease.binary", (True, False))}
    if family == "als":
        return {"factors": _categorical(trial, "als.factors", ALS_FACTORS),
                "regularization": _float(trial, "als.regularization"), "iterations": _int(trial, "als.iterations")}
    if family == "bpr":
        return {"factors": _categorical(trial, "bpr.factors", BPR_FACTORS),
                "learning_rate": _float(trial, "bpr.learning_rate"),
                "regularization": _float(trial, "bpr.regularization"), "iterations": _int(trial, "bpr.iterations")}
    raise ValueError(f"unknown family {family!r}")


def _engine(trial: optuna.Trial, space: SearchSpace, family: str) -> EngineSettings:
    values = space.base_engine.model_dump()
    values["half_life_days"] = _categorical(trial, "engine.half_life_days", space.half_lives)
    if family in WEIGHTED_FAMILIES:
        values["confidence"] = _categorical(trial, "engine.confidence", CONFIDENCES)
        values["alpha"] = _float(trial, "engine.alpha")
    return EngineSettings(**values)


def _categorical(trial: optuna.Trial, name: str, choices: Sequence[Any]) -> Any:
    return trial.suggest_categorical(name, list(choices))


def _float(trial: optuna.Trial, name: str) -> float:
    low, high, log = FLOATS[name]
    return trial.suggest_float(name, low, high, log=log)


def _int(trial: optuna.Trial, name: str) -> int:
    low, high, log = INTS[name]
    return trial.suggest_int(name, low, high, log=log)


# ---- known recipes as trial parameters ----------------------------------------------------


def params_of(recipe: TrainConfig, space: SearchSpace) -> dict[str, Any]:
    """The trial parameters closest to ``recipe`` inside ``space`` (values outside are clamped or
    left for the sampler); the exact recipe travels with the trial, this only teaches the sampler."""
    out: dict[str, Any] = {}
    _put(out, "family", recipe.model, space.families)
    resolved = recipe.resolved_params
    if recipe.model == "hybrid":
        cf = resolved["cf_model"]
        _put(out, "hybrid.cf_model", cf, HYBRID_CF)
        _put_family(out, cf, resolved[cf])
        for key in ("content_weight", "popularity_weight", "cf2_weight"):
            _put_float(out, f"hybrid.{key}", resolved[key] / resolved["cf_weight"] if resolved["cf_weight"] else 0.0)
        second = resolved["cf2_model"]
        _put(out, "hybrid.cf2_model", second, ("none", *HYBRID_CF))
        if second != "none":
            _put_family(out, second, resolved[second])
    else:
        _put_family(out, recipe.model, resolved)
    _put(out, "engine.half_life_days", recipe.engine.half_life_days, space.half_lives)
    _put(out, "engine.confidence", recipe.engine.confidence, CONFIDENCES)
    _put_float(out, "engine.alpha", recipe.engine.alpha)
    return out


def _put_family(out: dict[str, Any], family: str, params: dict[str, Any]) -> None:
    for key, value in params.items():
        name = f"{family}.{key}"
        if name in FLOATS:
            _put_float(out, name, value)
        elif name in INTS:
            low, high, _ = INTS[name]
            out[name] = int(min(max(value, low), high))
    choices = {"als.factors": ALS_FACTORS, "bpr.factors": BPR_FACTORS, "itemknn.similarity": ("bm25", "cosine"),
               "ease.binary": (True, False), "popularity.by_segment": (True, False)}
    for name, options in choices.items():
        family_of, key = name.split(".")
        if family_of == family and key in params:
            _put(out, name, params[key], options)


def _put(out: dict[str, Any], name: str, value: Any, choices: Sequence[Any]) -> None:
    if value in choices:
        out[name] = value


def _put_float(out: dict[str, Any], name: str, value: float) -> None:
    low, high, _ = FLOATS[name]
    if math.isfinite(value):
        out[name] = float(min(max(value, low), high))
