"""Short plain-language reasons shown next to each recommendation (Chinese by default).

A reason must be true: "因为你参加过《…》" only names an item from the user's own history
that the model finds similar; "距你 2.3 公里" only when the caller sent a place.
"""

from __future__ import annotations

import numpy as np
import scipy.sparse as sp

from recsys.catalog import Catalog
from recsys.models.base import Recommender
from recsys.query import Filters

PHRASES = {
    "zh": {
        "attended": "因为你参加过《{title}》",
        "viewed": "因为你看过《{title}》",
        "new_in_category": "你关注的类别有新活动",
        "taste": "符合你的兴趣",
        "distance": "距你 {km:.1f} 公里",
        "segment_popularity": "与你同区同龄的人都在看",
        "region_popularity": "本区热门",
        "popularity": "全市热门",
        "regional": "本区居民喜爱",
        "similar": "与《{title}》相似",
        "declared_interests": "你选择的兴趣",
        "editorial": "编辑推荐",
        "editorial_match": "编辑推荐 · 符合你的兴趣",
    },
    "en": {
        "attended": "Because you attended “{title}”",
        "viewed": "Because you viewed “{title}”",
        "new_in_category": "New in a category you follow",
        "taste": "Matches your interests",
        "distance": "{km:.1f} km from you",
        "segment_popularity": "Popular with people like you nearby",
        "region_popularity": "Popular in this district",
        "popularity": "Popular in the city",
        "regional": "Loved by residents of this district",
        "similar": "Similar to “{title}”",
        "declared_interests": "From the interests you picked",
        "editorial": "Editors' pick",
        "editorial_match": "Editors' pick for your interests",
    },
}

ANCHOR_SIMILARITY = 0.3
"""Below this, the closest history item is too far to be named as the reason."""

ATTENDED_WEIGHT = 5.0
"""History weight from which we say "attended" rather than "viewed" (a reservation)."""

NO_ANCHOR = -1
"""Anchor code: the model relates the item to the history, but no history item closely enough."""
NO_NOTION = -2
"""Anchor code: the model cannot relate the item to other items at all."""


def anchor_codes(model: Recommender, items: np.ndarray, history_items: np.ndarray) -> np.ndarray:
    """Per item, which history item its reason names: a position in ``history_items`` (the
    closest one, if at least :data:`ANCHOR_SIMILARITY`), else :data:`NO_ANCHOR` or
    :data:`NO_NOTION` (int32).

    Independent of the request, so training stores it with each user's candidates.
    """
    codes = np.full(len(items), NO_ANCHOR, dtype=np.int32)
    if not len(items):
        return codes
    # items x history only, in one call: a per-item similarity to the whole catalog is the
    # most expensive thing a request could do, and a reason needs just these pairs
    closeness = model.item_similarity_matrix(items, history_items)
    no_notion = np.isnan(closeness).any(axis=1)
    if len(history_items):
        best = closeness.argmax(axis=1)
        anchored = ~no_notion & (closeness[np.arange(len(items)), best] >= ANCHOR_SIMILARITY)
        codes[anchored] = best[anchored]
    codes[no_notion] = NO_NOTION
    return codes


class Reasons:
    """The reasons of one catalog's lists, in one language; ``model`` says which items are alike."""

    def __init__(self, catalog: Catalog, model: Recommender, lang: str = "zh") -> None:
        if lang not in PHRASES:
            raise ValueError(f"unsupported language {lang!r}; use one of {', '.join(PHRASES)}")
        self.catalog = catalog
        self.model = model
        self.phrases = PHRASES[lang]
        self._facets: sp.csr_matrix | None = None
        self._titled_phrases: dict[tuple[str, int], str] = {}

    def _say(self, key: str, **values: object) -> str:
        if "title" in values and self.phrases is PHRASES["zh"]:
            values["title"] = _inside_title_marks(str(values["title"]))
        return self.phrases[key].format(**values)

    def content_similarity(self, item: int) -> np.ndarray:
        if self._facets is None:
            self._facets = self.catalog.feature_matrix()
        return np.asarray((self._facets @ self._facets[item].T).todense()).ravel().astype(np.float32)

    def _distance(self, item: int, filters: Filters, distances: _Distances | None = None) -> str | None:
        if filters.lat is None or filters.lon is None or np.isnan(self.catalog.lat[item]):
            return None
        km = float((distances or _Distances(self.catalog, filters)).km(item))
        return self._say("distance", km=km)

    def _titled(self, key: str, anchor: int) -> str:
        """``key``'s phrase naming item ``anchor`` (remembered: titles never change in a catalog)."""
        phrase = self._titled_phrases.get((key, anchor))
        if phrase is None:
            phrase = self._say(key, title=self.catalog.title[anchor] or self.catalog.items.id_of(anchor))
            self._titled_phrases[(key, anchor)] = phrase
        return phrase

    def personal(self, chosen: np.ndarray, history: sp.csr_matrix, filters: Filters) -> list[str]:
        return self.personal_for(chosen, history.indices, history.data, filters)

    def personal_for(self, chosen: np.ndarray, history_items: np.ndarray, history_weights: np.ndarray,
                     filters: Filters, codes: np.ndarray | None = None) -> list[str]:
        """Reasons for ``chosen`` given the user's history as parallel (item, weight) arrays;
        ``codes`` are their :func:`anchor_codes` when the caller has them stored."""
        codes = anchor_codes(self.model, chosen, history_items) if codes is None else codes
        user_categories: set[int] | None = None
        distances = _Distances(self.catalog, filters)
        reasons = []
        for item, code in zip(chosen.tolist(), codes.tolist(), strict=True):
            if code >= 0:
                attended = history_weights[code] >= ATTENDED_WEIGHT
                reasons.append(self._titled("attended" if attended else "viewed", int(history_items[code])))
                continue
            if code == NO_NOTION:
                if user_categories is None:
                    user_categories = set(self.catalog.category[history_items].tolist())
                if int(self.catalog.category[item]) in user_categories:
                    reasons.append(self._say("new_in_category"))
                    continue
            reasons.append(self._distance(item, filters, distances) or self._say("taste"))
        return reasons

    def fallback(self, chosen: np.ndarray, label: str, filters: Filters) -> list[str]:
        distances = _Distances(self.catalog, filters)
        return [self._distance(i, filters, distances) or self._say(label) for i in chosen.tolist()]

    def regional(self, chosen: np.ndarray, filters: Filters) -> list[str]:
        return [self._say("regional") for _ in chosen.tolist()]

    def similar(self, chosen: np.ndarray, anchor: int, filters: Filters) -> list[str]:
        title = self.catalog.title[anchor] or self.catalog.items.id_of(anchor)
        distances = _Distances(self.catalog, filters)
        return [self._distance(i, filters, distances) or self._say("similar", title=title) for i in chosen.tolist()]


class _Distances:
    """Distances from the request's place, computed at most once per list (not once per item)."""

    def __init__(self, catalog: Catalog, filters: Filters) -> None:
        self.catalog, self.filters = catalog, filters
        self._km: np.ndarray | None = None

    def km(self, item: int) -> float:
        if self._km is None:
            self._km = self.catalog.distance_km(self.filters.lat, self.filters.lon)
        return self._km[item]


def _inside_title_marks(title: str) -> str:
    """A title to print inside 《》: without its own outer 《》, inner 《》 as 〈〉 (《河北梆子〈大登殿〉》)."""
    if title.startswith("《") and title.endswith("》") and title.count("《") == 1:
        return title[1:-1]
    return title.replace("《", "〈").replace("》", "〉")
