"""The default model for the cultural cloud: collaborative + content + segment popularity.

    score(u, i) = w_cf · cf(u, i) / max_j cf(u, j)
                [+ w_cf2 · cf2(u, i) / max_j cf2(u, j)]
                + w_content · cos(profile(u), f(i))
                + w_pop · pop_seg(u)(i) / max_j pop_seg(u)(j)

``cf`` is the collaborative model named by ``cf_model``: ALS (default; warm-started on
refit, folds in new users), item-kNN or EASE, each with its own typed config. An optional
second collaborative part ``cf2_model`` of another kind blends two views of the same history
(a neighbourhood model and a factor model err differently); ``f(i)`` the
item's L2-normalised facets (category, kind, tags, region);
``profile(u)`` the confidence-weighted sum of the facets of the user's history. An event
announced yesterday has no interactions, so ALS cannot score it, but its facets can match
a user's taste: that is how new events reach people ("你关注的类别有新活动").
"""

from __future__ import annotations

from typing import Literal, Self

import numpy as np
import scipy.sparse as sp
from pydantic import Field, model_validator

from recsys.models.als import ALSConfig, ALSModel
from recsys.models.base import (
    ContentView,
    FactorBlend,
    FactorView,
    ModelConfig,
    PopularityScores,
    Recommender,
    TrainingData,
    csr_arrays,
    csr_from,
    sparse_row_dots,
)
from recsys.models.ease import EASEConfig, EASEModel
from recsys.models.itemknn import ItemKNNConfig, ItemKNNModel
from recsys.models.popularity import PopularityConfig, PopularityModel

CF_MODELS: dict[str, type[Recommender]] = {"als": ALSModel, "itemknn": ItemKNNModel, "ease": EASEModel}
"""The collaborative parts a hybrid can use; each reads the config table of its own name."""


class HybridConfig(ModelConfig):
    cf_model: Literal["als", "itemknn", "ease"] = "als"
    cf2_model: Literal["none", "als", "itemknn", "ease"] = Field(
        "none", description="an optional second collaborative part, of another kind than cf_model")
    cf2_weight: float = Field(0.0, ge=0)
    als: ALSConfig = ALSConfig()
    itemknn: ItemKNNConfig = ItemKNNConfig()
    ease: EASEConfig = EASEConfig()
    popularity: PopularityConfig = PopularityConfig()
    cf_weight: float = Field(1.0, ge=0)
    content_weight: float = Field(0.3, ge=0)
    popularity_weight: float = Field(0.2, ge=0)
    facet_weights: dict[str, float] = Field(
        default_factory=lambda: {"category": 1.0, "kind": 0.5, "tags": 0.7, "region": 0.6}
    )

    @model_validator(mode="after")
    def _two_kinds(self) -> HybridConfig:
        if self.cf2_model == self.cf_model:
            raise ValueError(f"cf2_model must differ from cf_model ({self.cf_model!r}); use 'none' for one part")
        return self


class HybridModel(Recommender):
    name = "hybrid"
    Config = HybridConfig
    config: HybridConfig

    def fit(self, data: TrainingData) -> Self:
        self.cf = self._new_cf().fit(data)
        if self.blended:
            self.cf2 = self._new_cf(self.config.cf2_model).fit(data)
        return self._fit_rest(data)

    def refit(self, data: TrainingData) -> Self:
        if not self._fitted:
            return self.fit(data)
        self.cf = self.cf.refit(data)  # warm-started where the part can
        if self.blended:
            self.cf2 = self.cf2.refit(data)
        return self._fit_rest(data)

    def _new_cf(self, name: str | None = None) -> Recommender:
        name = name or self.config.cf_model
        return CF_MODELS[name](getattr(self.config, name))

    @property
    def blended(self) -> bool:
        """Whether a second collaborative part takes part in the score."""
        return self.config.cf2_model != "none"

    def _fit_rest(self, data: TrainingData) -> Self:
        self.popularity = PopularityModel(self.config.popularity).fit(data)
        self.facets = data.catalog.feature_matrix(self.config.facet_weights)
        self._fitted = True
        return self

    # ---- scoring ---------------------------------------------------------------------
    def components(self, users: np.ndarray, history: sp.csr_matrix) -> dict[str, np.ndarray]:
        """The three normalised parts, each (len(users), n_items); used to explain a score."""
        parts = {
            "cf": _collaborative(self.cf, users, history),
            "content": self.content_scores(history),
            "popularity": _row_max_normalised(self.popularity.score(users, history)),
        }
        if self.blended:
            parts["cf2"] = _collaborative(self.cf2, users, history)
        return parts

    def content_scores(self, history: sp.csr_matrix) -> np.ndarray:
        profile = np.asarray((history.astype(np.float32) @ self.facets).todense())
        norms = np.linalg.norm(profile, axis=1, keepdims=True)
        profile = np.divide(profile, norms, out=np.zeros_like(profile), where=norms > 0)
        return np.asarray(self.facets @ profile.T, dtype=np.float32).T

    def score(self, users: np.ndarray, history: sp.csr_matrix) -> np.ndarray:
        self._require_fitted()
        users = self.check_rows(users, history)
        parts = self.components(users, history)
        cfg = self.config
        combined = (cfg.cf_weight * parts["cf"] + cfg.content_weight * parts["content"]
                    + cfg.popularity_weight * parts["popularity"])
        if self.blended:
            combined += cfg.cf2_weight * parts["cf2"]
        return combined.astype(np.float32, copy=False)

    def factor_view(self) -> FactorView | None:
        """The collaborative part's factors, when it has them; a blend of two collaborative
        parts has no single factor view, so it is scored exactly."""
        return None if self.blended else self.cf.factor_view()

    def factor_blend(self, users: np.ndarray, history: sp.csr_matrix) -> FactorBlend:
        """The collaborative term around the factor view, and the content and popularity terms
        as :meth:`score` computes them for this one user."""
        popularity = self.popularity.score(users, history)[0]
        peak = popularity.max() if len(popularity) else 0.0
        normalised = np.divide(popularity, peak, out=np.zeros_like(popularity), where=peak > 0)
        cfg = self.config
        return FactorBlend(cfg.cf_weight, ((cfg.content_weight, self.content_scores(history)[0]),
                                           (cfg.popularity_weight, normalised.astype(np.float32))))

    def popularity_part(self) -> PopularityScores:
        return self.popularity

    def content_view(self) -> ContentView:
        """The content term of :meth:`score`: an item announced after training reaches users through it."""
        return ContentView(self.facets, dict(self.config.facet_weights), self.config.content_weight)

    def item_similarity(self, item: int) -> np.ndarray | None:
        content = np.asarray((self.facets @ self.facets[item].T).todense()).ravel().astype(np.float32)
        collaborative = self.cf.item_similarity(item)
        if collaborative is None:
            return content
        return 0.7 * collaborative + 0.3 * content

    def item_similarity_matrix(self, items: np.ndarray, others: np.ndarray) -> np.ndarray:
        items, others = np.asarray(items, dtype=np.int64), np.asarray(others, dtype=np.int64)
        content = sparse_row_dots(self.facets, items, others)
        collaborative = self.cf.item_similarity_matrix(items, others)
        return np.where(np.isnan(collaborative), content, 0.7 * collaborative + 0.3 * content).astype(np.float32)

    # ---- persistence -----------------------------------------------------------------
    def _arrays(self) -> dict[str, np.ndarray]:
        arrays = {f"cf.{k}": v for k, v in self.cf._arrays().items()}
        if self.blended:
            arrays.update({f"cf2.{k}": v for k, v in self.cf2._arrays().items()})
        arrays.update({f"pop.{k}": v for k, v in self.popularity._arrays().items()})
        arrays.update(csr_arrays("facets", self.facets))
        return arrays

    def _restore(self, arrays: dict[str, np.ndarray]) -> None:
        self.cf = self._new_cf()
        self.cf._restore({k[3:]: v for k, v in arrays.items() if k.startswith("cf.")})
        self.cf._fitted = True
        if self.blended:
            self.cf2 = self._new_cf(self.config.cf2_model)
            self.cf2._restore({k[4:]: v for k, v in arrays.items() if k.startswith("cf2.")})
            self.cf2._fitted = True
        self.popularity = PopularityModel(self.config.popularity)
        self.popularity._restore({k[4:]: v for k, v in arrays.items() if k.startswith("pop.")})
        self.popularity._fitted = True
        self.facets = csr_from("facets", arrays)


def _collaborative(part: Recommender, users: np.ndarray, history: sp.csr_matrix) -> np.ndarray:
    """A collaborative part's scores, unscorable items at 0, each row scaled to a maximum of 1."""
    scores = part.score(users, history)
    return _row_max_normalised(np.where(np.isfinite(scores), scores, 0.0))


def _row_max_normalised(scores: np.ndarray) -> np.ndarray:
    peak = scores.max(axis=1, keepdims=True)
    return np.divide(scores, peak, out=np.zeros_like(scores), where=peak > 0).astype(np.float32)


