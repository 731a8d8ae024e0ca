"""A trained model serving a catalogue that grew since it was trained.

Items created through the API after training sit after the trained items on the item axis
(:func:`recsys.live_catalog.overlaid_catalog`). :class:`WithNewItems` answers for the whole
axis: the trained items exactly as the model does, the new ones through the model's content
path (:meth:`recsys.models.base.Recommender.content_view`), which is how the hybrid reaches
an event nobody has touched yet. With no interactions, the collaborative and popularity
terms of a new item are 0, so its score is the content term alone, as the hybrid would give
it after a retrain on the same (empty) history. Item-to-item similarity involving a new item
is its facet cosine: the model has no other notion of it.

A model without a content path leaves new items unscored (``-inf``, like a pure
collaborative model's cold items) and lets :class:`recsys.delivery.DeliveryEngine` compare
them by the catalogue's facets for ``/similar``. The wrapper serves only: it is never fitted
or saved, and the next training learns the new items properly.
"""

from __future__ import annotations

from typing import ClassVar, NoReturn

import numpy as np
import scipy.sparse as sp

from recsys.catalog import Catalog
from recsys.idmap import IdMap
from recsys.models.base import (
    ContentView,
    ModelConfig,
    PopularityScores,
    Recommender,
    TrainingData,
    sparse_row_dots,
)


class WithNewItems(Recommender):
    """``base`` over its ``n_trained`` items, plus the items appended after them."""

    name: ClassVar[str] = "with_new_items"
    Config: ClassVar[type[ModelConfig]] = ModelConfig

    def __init__(self, base: Recommender, trained: Catalog, served: Catalog) -> None:
        super().__init__(ModelConfig())
        self.base = base
        self.config = base.config
        self.n_trained = len(trained)
        self.n_items = len(served)
        self._fitted = True
        view = base.content_view()
        self.view = view
        self.new_facets: sp.csr_matrix | None = None
        self.facets: sp.csr_matrix | None = None
        if view is not None:
            new = np.arange(self.n_trained, self.n_items)
            self.new_facets = facets_in_trained_space(trained, served, new, view.facet_weights)
            self.facets = sp.vstack([view.facets, self.new_facets], format="csr", dtype=np.float32)
        self._popularity = _padded(base.popularity_part(), self.n_items - self.n_trained)

    # ---- never trained or saved ---------------------------------------------------------
    def fit(self, data: TrainingData) -> NoReturn:
        raise TypeError("a model serving new items is not trained; train the model it wraps")

    def _arrays(self) -> NoReturn:
        raise TypeError("a model serving new items is not saved; the next training learns them")

    def _restore(self, arrays: dict[str, np.ndarray]) -> NoReturn:
        raise TypeError("a model serving new items is never loaded")

    # ---- scoring ----------------------------------------------------------------------------
    def score(self, users: np.ndarray, history: sp.csr_matrix) -> np.ndarray:
        users = self.check_rows(users, history)
        history = sp.csr_matrix(history)
        trained = self.base.score(users, history[:, : self.n_trained])
        added = np.full((len(users), self.n_items - self.n_trained), -np.inf, dtype=np.float32)
        if self.view is not None and self.facets is not None and self.new_facets is not None:
            profile = np.asarray((history.astype(np.float32) @ self.facets).todense())
            norms = np.linalg.norm(profile, axis=1, keepdims=True)
            profile = np.divide(profile, norms, out=np.zeros_like(profile), where=norms > 0)
            added = self.view.weight * np.asarray(self.new_facets @ profile.T, dtype=np.float32).T
        return np.hstack([trained, added.astype(np.float32)])

    def item_similarity(self, item: int) -> np.ndarray | None:
        facets = self.facets
        if item >= self.n_trained:  # only its facets are known
            if facets is None:
                return None
            return np.asarray((facets @ facets[item].T).todense()).ravel().astype(np.float32)
        trained = self.base.item_similarity(item)
        if trained is None:
            return None
        added = np.zeros(self.n_items - self.n_trained, dtype=np.float32)
        if facets is not None and self.new_facets is not None:
            added = np.asarray((self.new_facets @ facets[item].T).todense()).ravel().astype(np.float32)
        return np.concatenate([trained, added])

    def item_similarity_matrix(self, items: np.ndarray, others: np.ndarray) -> np.ndarray:
        items, others = np.asarray(items, dtype=np.int64), np.asarray(others, dtype=np.int64)
        out = np.full((len(items), len(others)), np.nan, dtype=np.float32)
        old_rows, old_columns = items < self.n_trained, others < self.n_trained
        if old_rows.any() and old_columns.any():
            block = self.base.item_similarity_matrix(items[old_rows], others[old_columns])
            out[np.ix_(old_rows, old_columns)] = block
        if self.facets is not None:
            content = sparse_row_dots(self.facets, items, others)
            involves_new = ~old_rows[:, None] | ~old_columns[None, :]
            out = np.where(involves_new, content, out).astype(np.float32)
        return out

    def content_view(self) -> ContentView | None:
        if self.view is None or self.facets is None:
            return None
        return ContentView(self.facets, self.view.facet_weights, self.view.weight)

    def popularity_part(self) -> PopularityScores | None:
        return self._popularity


def facets_in_trained_space(trained: Catalog, served: Catalog, items: np.ndarray,
                            weights: dict[str, float]) -> sp.csr_matrix:
    """Facet rows of ``served`` items in the columns the model was trained with.

    ``served`` extends ``trained``'s vocabularies at their end (:func:`recsys.live_catalog.overlaid_catalog`):
    a category, kind, tag or region the model never saw has no column, and counts for nothing.
    """
    items = np.asarray(items, dtype=np.int64)

    def known(codes: np.ndarray, width: int) -> np.ndarray:
        picked = codes[items]
        return np.where(picked < width, picked, -1)

    tags = served.tags[items][:, : len(trained.tag_names)]
    subset = Catalog(
        items=IdMap(served.items.ids_of(items)), title=[""] * len(items),
        kind=known(served.kind, len(trained.kinds)), kinds=trained.kinds,
        category=known(served.category, len(trained.categories)), categories=trained.categories,
        region=known(served.region, len(trained.regions)), regions=trained.regions,
        tags=sp.csr_matrix(tags), tag_names=trained.tag_names,
        lat=served.lat[items], lon=served.lon[items], starts_at=served.starts_at[items],
        ends_at=served.ends_at[items], hidden=served.hidden[items],
    )
    return subset.feature_matrix(weights)


class _PaddedPopularity:
    """A popularity over the trained items, 0 for the items added since (nobody engaged with them)."""

    def __init__(self, base: PopularityScores, added: int) -> None:
        self.base = base
        self.added = added
        self._global: np.ndarray | None = None

    def _pad(self, scores: np.ndarray) -> np.ndarray:
        zeros = np.zeros((*scores.shape[:-1], self.added), dtype=scores.dtype)
        return np.concatenate([scores, zeros], axis=-1)

    def global_scores(self) -> np.ndarray:
        if self._global is None:  # every fallback list asks for it
            self._global = self._pad(self.base.global_scores())
        return self._global

    def segment_scores(self, region: str | None, age_band: str | None) -> np.ndarray | None:
        scores = self.base.segment_scores(region, age_band)
        return None if scores is None else self._pad(scores)

    def region_scores(self, region: str | None) -> np.ndarray | None:
        scores = self.base.region_scores(region)
        return None if scores is None else self._pad(scores)

    def score(self, users: np.ndarray, history: sp.csr_matrix) -> np.ndarray:
        trained = sp.csr_matrix(history)[:, : history.shape[1] - self.added]
        return self._pad(self.base.score(users, trained))


def _padded(popularity: PopularityScores | None, added: int) -> PopularityScores | None:
    return None if popularity is None else _PaddedPopularity(popularity, added)
