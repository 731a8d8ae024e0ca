"""Short plain-language reasons shown next to each recommendation (Chinese by default).

A reason must be true: "因为你参加过《…》" only names an item from the user's own history
that the model finds similar; "距你 2.3 公里" only when the caller sent a place.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

import numpy as np
import scipy.sparse as sp

if TYPE_CHECKING:
    from recsys.bundle import ModelBundle
    from recsys.delivery import Filters

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
    },
}

ANCHOR_SIMILARITY = 0.3
"""Below this, the closest history item is too far to be named as the reason."""

ATTENDED_WEIGHT = 5.0
"""History weight from which we say "attended" rather than "viewed" (a reservation)."""


class Reasons:
    def __init__(self, bundle: ModelBundle, lang: str = "zh") -> None:
        if lang not in PHRASES:
            raise ValueError(f"unsupported language {lang!r}; use one of {', '.join(PHRASES)}")
        self.catalog = bundle.catalog
        self.model = bundle.model
        self.phrases = PHRASES[lang]
        self._facets: sp.csr_matrix | None = None

    def _say(self, key: str, **values: object) -> str:
        if "title" in values and self.phrases is PHRASES["zh"]:
            values["title"] = _inside_title_marks(str(values["title"]))
        return self.phrases[key].format(**values)

    def content_similarity(self, item: int) -> np.ndarray:
        if self._facets is None:
            self._facets = self.catalog.feature_matrix()
        return np.asarray((self._facets @ self._facets[item].T).todense()).ravel().astype(np.float32)

    def _distance(self, item: int, filters: Filters) -> str | None:
        if filters.lat is None or filters.lon is None or np.isnan(self.catalog.lat[item]):
            return None
        km = float(self.catalog.distance_km(filters.lat, filters.lon)[item])
        return self._say("distance", km=km)

    def personal(self, chosen: np.ndarray, history: sp.csr_matrix, filters: Filters) -> list[str]:
        history_items, history_weights = history.indices, history.data
        user_categories = {int(self.catalog.category[j]) for j in history_items}
        # chosen x history only, in one call: a per-item similarity to the whole catalog is the
        # most expensive thing a request could do, and a reason needs just these pairs
        closeness = self.model.item_similarity_matrix(chosen, history_items)
        return [self._personal_one(item, row, history_items, history_weights, user_categories, filters)
                for item, row in zip(chosen.tolist(), closeness, strict=True)]

    def _personal_one(self, item: int, closeness: np.ndarray, history_items: np.ndarray,
                      history_weights: np.ndarray, user_categories: set[int], filters: Filters) -> str:
        no_notion = bool(np.isnan(closeness).any())  # the model cannot relate this item to others
        if not no_notion and len(history_items):
            best = int(np.argmax(closeness))
            if closeness[best] >= ANCHOR_SIMILARITY:
                anchor = int(history_items[best])
                key = "attended" if history_weights[best] >= ATTENDED_WEIGHT else "viewed"
                return self._say(key, title=self.catalog.title[anchor] or self.catalog.items.id_of(anchor))
        if no_notion and int(self.catalog.category[item]) in user_categories:
            return self._say("new_in_category")
        return self._distance(item, filters) or self._say("taste")

    def fallback(self, chosen: np.ndarray, label: str, filters: Filters) -> list[str]:
        return [self._distance(i, filters) or self._say(label) for i in chosen.tolist()]

    def regional(self, chosen: np.ndarray, filters: Filters) -> list[str]:
        return [self._say("regional") for _ in chosen.tolist()]

    def similar(self, chosen: np.ndarray, anchor: int, filters: Filters) -> list[str]:
        title = self.catalog.title[anchor] or self.catalog.items.id_of(anchor)
        return [self._distance(i, filters) or self._say("similar", title=title) for i in chosen.tolist()]


def _inside_title_marks(title: str) -> str:
    """A title to print inside 《》: without its own outer 《》, inner 《》 as 〈〉 (《河北梆子〈大登殿〉》)."""
    if title.startswith("《") and title.endswith("》") and title.count("《") == 1:
        return title[1:-1]
    return title.replace("《", "〈").replace("》", "〉")
