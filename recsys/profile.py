"""Interest tags: what the engine thinks a resident likes, in words they can read and edit.

A tag is one facet value of the catalogue: a category (``category:戏曲``), a kind
(``kind:opera``) or a district (``region:110105``). A resident's tags are derived from the
history the model weighs (the decayed weights it was fitted on, plus live interactions): a
tag's ``weight`` is its share of that history's weight, ``evidence`` the number of history
items carrying it, and ``in_recommendations`` its share of the resident's current list (what
the model makes of it). Labels are plain Chinese: "戏曲 · 常看", "图书 · 看过",
"地区 110105 · 常去", "讲座 · 自选".

A removed tag (``DELETE .../profile/tags/{tag}``) takes its items out of the resident's
history for scoring and out of their lists (:func:`tag_mask`) until they engage with such an
item again; a declared tag (``PUT``) lifts its items for a resident the model cannot
personalise (:data:`recsys.settings.ControlSettings.declared_boost`).
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass

import numpy as np

from recsys.catalog import Catalog

FACETS = ("category", "kind", "region")

KIND_LABELS: dict[str, str] = {
    "event": "活动", "exhibition": "展览", "opera": "戏曲演出", "film": "电影", "book": "图书",
    "digital": "数字资源", "lecture": "讲座", "concert": "音乐会", "training": "培训", "course": "课程",
}
"""Chinese names of the usual kinds (a kind not listed shows as it is spelled)."""

FREQUENT_SHARE = 0.2
"""From this share of a resident's history on, a tag reads "常看"/"常去" rather than "看过"/"去过"."""


@dataclass(frozen=True)
class Tag:
    key: str
    """``facet:value``, what the API's ``{tag}`` resolves to."""
    facet: str
    value: str
    label: str
    weight: float
    evidence: int
    in_recommendations: float = 0.0
    declared: bool = False

    def to_dict(self) -> dict[str, object]:
        return {"tag": self.key, "facet": self.facet, "value": self.value, "label": self.label,
                "weight": round(self.weight, 4), "evidence": self.evidence,
                "in_recommendations": round(self.in_recommendations, 4), "declared": self.declared}


def split_key(key: str) -> tuple[str, str]:
    facet, _, value = key.partition(":")
    return facet, value


def value_name(facet: str, value: str) -> str:
    """How a facet value reads in Chinese."""
    if facet == "kind":
        return KIND_LABELS.get(value, value)
    if facet == "region":
        return f"地区 {value}"
    return value


def _vocabulary(catalog: Catalog, facet: str) -> list[str]:
    return {"category": catalog.categories, "kind": catalog.kinds, "region": catalog.regions}[facet]


def _codes(catalog: Catalog, facet: str) -> np.ndarray:
    codes: np.ndarray = {"category": catalog.category, "kind": catalog.kind, "region": catalog.region}[facet]
    return codes


def resolve(text: str, catalog: Catalog) -> list[str]:
    """The tag keys ``text`` names: a key (``category:戏曲``) or a bare value or Chinese name
    (``戏曲``, ``图书``, ``110105``), matched in every facet; [] when the catalogue has none."""
    text = text.strip()
    facet, value = split_key(text)
    if facet in FACETS and value:
        return [text] if value in _vocabulary(catalog, facet) else []
    found = []
    for facet in FACETS:
        for value in _vocabulary(catalog, facet):
            if text in (value, value_name(facet, value)):
                found.append(f"{facet}:{value}")
    return found


def tag_mask(catalog: Catalog, key: str) -> np.ndarray:
    """Items carrying the tag ``key`` (all False for a tag the catalogue does not know)."""
    facet, value = split_key(key)
    if facet not in FACETS or value not in _vocabulary(catalog, facet):
        return np.zeros(len(catalog), dtype=bool)
    mask: np.ndarray = _codes(catalog, facet) == _vocabulary(catalog, facet).index(value)
    return mask


def any_tag_mask(catalog: Catalog, keys: Mapping[str, float] | list[str]) -> np.ndarray:
    mask = np.zeros(len(catalog), dtype=bool)
    for key in keys:
        mask |= tag_mask(catalog, key)
    return mask


def derive_tags(catalog: Catalog, history_items: np.ndarray, history_weights: np.ndarray, *,
                recommended: np.ndarray | None = None, removed: Mapping[str, float] | None = None,
                declared: Mapping[str, float] | None = None) -> list[Tag]:
    """The resident's tags, heaviest first: one per facet value of their history (removed ones
    left out), then the declared ones the history does not already show."""
    removed, declared = removed or {}, declared or {}
    total = float(np.sum(history_weights))
    recommended = np.asarray(recommended if recommended is not None else [], dtype=np.int64)
    tags: list[Tag] = []
    for facet in FACETS:
        codes = _codes(catalog, facet)[history_items]
        vocabulary = _vocabulary(catalog, facet)
        for code in np.unique(codes[codes >= 0]).tolist():
            key = f"{facet}:{vocabulary[code]}"
            if key in removed:
                continue
            mine = codes == code
            share = float(np.sum(history_weights[mine])) / total if total > 0 else 0.0
            tags.append(_tag(catalog, key, share, int(mine.sum()), recommended, key in declared))
    shown = {tag.key for tag in tags}
    tags += [_tag(catalog, key, 0.0, 0, recommended, True) for key in declared if key not in shown]
    return sorted(tags, key=lambda tag: (-tag.weight, not tag.declared, tag.key))


def _tag(catalog: Catalog, key: str, share: float, evidence: int, recommended: np.ndarray, declared: bool) -> Tag:
    facet, value = split_key(key)
    in_list = float(tag_mask(catalog, key)[recommended].mean()) if len(recommended) else 0.0
    return Tag(key, facet, value, f"{value_name(facet, value)} · {_qualifier(facet, share, declared)}", share,
               evidence, in_list, declared)


def _qualifier(facet: str, share: float, declared: bool) -> str:
    if declared and share == 0.0:
        return "自选"
    frequent = share >= FREQUENT_SHARE
    if facet == "region":
        return "常去" if frequent else "去过"
    return "常看" if frequent else "看过"
