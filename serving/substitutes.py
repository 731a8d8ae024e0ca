"""Lists with full and out-of-reach events replaced by their series' alternatives (:mod:`recsys.substitution`).

Asked only when the served catalogue can have a substitute at all (a series with a full
event left out, or a radius and any series): the same request is answered once more by the
*shadow* engine (the served model with full events kept, :attr:`serving.state.ServedModel.shadow`)
without the radius, to see which left-out events the list would have held; their best
alternatives the list may show take their places. Full events that are listed (``full_events
= flag``) are marked ``full`` instead.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import replace

import numpy as np

from recsys.delivery import DeliveryEngine
from recsys.query import Filters, RecommendationList, UserContext
from recsys.substitution import marked_full, may_substitute, substituted
from serving.state import ServedModel

Ask = Callable[[DeliveryEngine, Filters], RecommendationList]
"""The request's list from an engine at some filters."""


def for_user(served: ServedModel, listed: RecommendationList, user_id: str, n: int, filters: Filters, *,
             diversity: float, context: UserContext, region: str | None, lang: str) -> RecommendationList:
    """A user's list with its substitutes."""
    def ask(engine: DeliveryEngine, at: Filters) -> RecommendationList:
        return engine.for_user(user_id, n, at, diversity=diversity, context=context, region=region)

    def allowed() -> np.ndarray:
        engine = served.engine
        index, weights = engine.history(user_id, context)
        mask = engine.allowed(filters, engine.audience(engine.age_band_of(index, context)))
        mask[weights.indices] = False  # never an item the resident engaged with
        return mask

    return _with_substitutes(served, listed, n, filters, ask, allowed, lang)


def for_region(served: ServedModel, listed: RecommendationList, region: str, n: int, filters: Filters, *,
               age_band: str | None, lang: str) -> RecommendationList:
    """A district's list with its substitutes."""
    def ask(engine: DeliveryEngine, at: Filters) -> RecommendationList:
        return engine.for_region(region, n, at, age_band=age_band)

    def allowed() -> np.ndarray:
        return served.engine.allowed(filters, served.engine.audience(age_band))

    return _with_substitutes(served, listed, n, filters, ask, allowed, lang)


def _with_substitutes(served: ServedModel, listed: RecommendationList, n: int, filters: Filters, ask: Ask,
                      allowed: Callable[[], np.ndarray], lang: str) -> RecommendationList:
    catalog = served.engine.catalog
    listed = marked_full(listed, catalog)
    if not may_substitute(catalog, filters, full_left_out=served.shadow is not None):
        return listed
    shadow = ask(served.shadow or served.engine, replace(filters, radius_km=None))
    return substituted(listed, shadow, catalog, allowed(), filters, n, lang)
