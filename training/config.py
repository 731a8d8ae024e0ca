"""Training configuration: which model, its hyperparameters, and the engine settings.

Configs are TOML files; the shipped recipes are package data (``experiments/configs/<name>.toml``,
read with :mod:`importlib.resources`, so an installed wheel has them too)::

    model = "hybrid"
    [params]          # the model's typed config (see recsys.models)
    [engine]          # EngineSettings: action weights, half-life, confidence transform

The config hash identifies "the same recipe": the promotion gate uses it to know whether
the champion must be refitted to be compared on a new test window.
"""

from __future__ import annotations

import hashlib
import json
import tomllib
from dataclasses import dataclass, field
from importlib import resources
from importlib.resources.abc import Traversable
from pathlib import Path
from typing import Any

from recsys import models
from recsys.settings import EngineSettings, engine_table

RECIPES_PACKAGE = "experiments"
RECIPES_FOLDER = "configs"
DEFAULT_RECIPE = "hybrid"
"""The recipe ``recsys train`` starts from when no config or model is named."""


def shipped_recipes() -> dict[str, Traversable]:
    """Every recipe the package ships, by name (the file stem)."""
    folder = resources.files(RECIPES_PACKAGE) / RECIPES_FOLDER
    return {entry.name.removesuffix(".toml"): entry for entry in folder.iterdir() if entry.name.endswith(".toml")}


def shipped_recipe(name: str) -> Traversable:
    """The shipped recipe ``name``; a missing one is an error, never a silent fallback to defaults."""
    recipes = shipped_recipes()
    if name not in recipes:
        raise ValueError(f"no shipped recipe named {name!r} (shipped: {', '.join(sorted(recipes)) or 'none'}); "
                         "is the package installed with its data files?")
    return recipes[name]


@dataclass(frozen=True)
class TrainConfig:
    model: str
    params: dict[str, Any] = field(default_factory=dict)
    engine: EngineSettings = field(default_factory=EngineSettings)

    def __post_init__(self) -> None:
        models.create(self.model, self.params)  # validate now: bad params fail before any work

    @property
    def resolved_params(self) -> dict[str, Any]:
        """Params with every default filled in (what the model actually used)."""
        return models.create(self.model, self.params).config.model_dump()

    def config_hash(self) -> str:
        # the ANN index only speeds up serving the same model, and the exposure floors re-rank its lists:
        # neither is part of the recipe the gate compares
        engine = self.engine.model_dump(exclude={"ann", "exposure"})
        recipe = {"model": self.model, "params": self.resolved_params, "engine": engine}
        return hashlib.sha256(json.dumps(recipe, sort_keys=True, default=str).encode()).hexdigest()[:16]

    def to_dict(self) -> dict[str, Any]:
        return {"model": self.model, "params": self.resolved_params, "engine": self.engine.model_dump()}


def load_config(path: Path | Traversable | None = None, model: str | None = None) -> TrainConfig:
    """The config at ``path``; else the shipped recipe of ``model`` (default :data:`DEFAULT_RECIPE`)."""
    if path is None:
        path = shipped_recipe(model or DEFAULT_RECIPE)
    try:
        raw = tomllib.loads(path.read_text(encoding="utf-8"))
    except (OSError, UnicodeDecodeError, tomllib.TOMLDecodeError) as exc:
        raise ValueError(f"cannot read config {path}: {exc}") from exc
    chosen = model or raw.get("model", "hybrid")
    if model and raw.get("model") not in (None, model):
        raw_params: dict[str, Any] = {}  # the file's params belong to another model
    else:
        raw_params = raw.get("params", {})
    return TrainConfig(model=chosen, params=raw_params, engine=EngineSettings(**engine_table(raw)))


def config_from_dict(recipe: dict[str, Any]) -> TrainConfig:
    return TrainConfig(model=recipe["model"], params=recipe.get("params", {}),
                       engine=EngineSettings(**recipe.get("engine", {})))
