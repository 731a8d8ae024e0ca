"""The models, by name. ``create(name, params)`` and ``load(directory)`` are the entry points."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

from recsys.models.als import ALSModel
from recsys.models.base import ModelConfig, Recommender, TrainingData
from recsys.models.bpr import BPRModel
from recsys.models.ease import EASEModel
from recsys.models.hybrid import HybridModel
from recsys.models.itemknn import ItemKNNModel
from recsys.models.popularity import PopularityModel

MODELS: dict[str, type[Recommender]] = {
    cls.name: cls for cls in (HybridModel, ALSModel, BPRModel, ItemKNNModel, PopularityModel, EASEModel)
}


def create(name: str, params: dict[str, Any] | None = None) -> Recommender:
    """A new, unfitted model; unknown names and bad parameters raise ValueError."""
    if name not in MODELS:
        raise ValueError(f"unknown model {name!r}; choose one of {', '.join(MODELS)}")
    return MODELS[name](params or {})


def load(directory: Path) -> Recommender:
    """Load a model saved with ``Recommender.save``."""
    meta = json.loads((directory / "model.json").read_text(encoding="utf-8"))
    if meta.get("name") not in MODELS:
        raise ValueError(f"{directory}: unknown model {meta.get('name')!r}")
    return MODELS[meta["name"]].load_state(directory, meta.get("params", {}))


__all__ = ["MODELS", "ModelConfig", "Recommender", "TrainingData", "create", "load"]
