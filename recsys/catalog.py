"""The item catalog as column arrays aligned with the item axis of every matrix.

Ranking needs a handful of item facts per request (is it hidden, has it ended, where is
it, what kind and category is it); keeping them as numpy arrays makes each filter one
vectorised comparison instead of a loop over items.
"""

from __future__ import annotations

import json
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import scipy.sparse as sp

from recsys.idmap import IdMap
from recsys.vocab import code_of, encode

EARTH_RADIUS_KM = 6371.0088


@dataclass(eq=False)
class Catalog:
    """Item side data. Times are epoch seconds (``nan`` = open-ended), coordinates degrees."""

    items: IdMap
    title: list[str]
    kind: np.ndarray
    kinds: list[str]
    category: np.ndarray
    categories: list[str]
    region: np.ndarray
    regions: list[str]
    tags: sp.csr_matrix
    tag_names: list[str]
    lat: np.ndarray
    lon: np.ndarray
    starts_at: np.ndarray
    ends_at: np.ndarray
    hidden: np.ndarray
    venue: list[str | None] = field(default_factory=list)
    provider: list[str | None] = field(default_factory=list)
    """Who supplies each item (exposure groups select by it); empty for a catalogue without the column."""
    min_age: np.ndarray = field(default_factory=lambda: np.full(0, np.nan))
    """Youngest age each item is meant for (``nan`` = everyone); see :mod:`recsys.audience`."""
    editorial: np.ndarray = field(default_factory=lambda: np.zeros(0, dtype=bool))
    """Whether each item is in the operators' curated pool (:mod:`recsys.editorial`)."""
    is_free: np.ndarray = field(default_factory=lambda: np.zeros(0, dtype=bool))
    """Whether each item is free of charge (unknown reads as not free)."""
    capacity: np.ndarray = field(default_factory=lambda: np.full(0, np.nan))
    """Places of each item (``nan`` = no limit); reservations count against it (:mod:`recsys.capacity`)."""
    series: list[str | None] = field(default_factory=list)
    """Each item's ``series_id``: items sharing one stand in for each other (:mod:`recsys.substitution`)."""
    full: np.ndarray = field(default_factory=lambda: np.zeros(0, dtype=bool))
    """Whether each item's reservations reached its capacity: the server's live count, never saved."""

    def __post_init__(self) -> None:
        # A catalog saved (or built) before these columns existed gets their neutral values.
        n = len(self.items)
        if len(self.min_age) != n:
            self.min_age = np.full(n, np.nan)
        if len(self.editorial) != n:
            self.editorial = np.zeros(n, dtype=bool)
        if len(self.is_free) != n:
            self.is_free = np.zeros(n, dtype=bool)
        if len(self.capacity) != n:
            self.capacity = np.full(n, np.nan)
        if len(self.series) != n:
            self.series = [None] * n
        if len(self.full) != n:
            self.full = np.zeros(n, dtype=bool)

    @classmethod
    def from_columns(
        cls,
        item_ids: Sequence[str],
        *,
        title: Sequence[str | None] | None = None,
        kind: Sequence[str | None] | None = None,
        category: Sequence[str | None] | None = None,
        region: Sequence[str | None] | None = None,
        tags: Sequence[Sequence[str] | None] | None = None,
        lat: Sequence[float | None] | None = None,
        lon: Sequence[float | None] | None = None,
        starts_at: Sequence[float | None] | None = None,
        ends_at: Sequence[float | None] | None = None,
        hidden: Sequence[bool | None] | None = None,
        venue: Sequence[str | None] | None = None,
        provider: Sequence[str | None] | None = None,
        min_age: Sequence[float | None] | None = None,
        editorial: Sequence[bool | None] | None = None,
        is_free: Sequence[bool | None] | None = None,
        capacity: Sequence[float | None] | None = None,
        series: Sequence[str | None] | None = None,
    ) -> Catalog:
        """Build from plain columns; missing columns mean "unknown" for every item."""
        n = len(item_ids)
        nothing: list[None] = [None] * n
        kind_codes, kinds = encode(list(kind or nothing))
        category_codes, categories = encode(list(category or nothing))
        region_codes, regions = encode(list(region or nothing))
        tag_matrix, tag_names = _tag_matrix(list(tags or nothing))
        return cls(
            items=IdMap(item_ids),
            title=[t or "" for t in (title or nothing)],
            kind=kind_codes, kinds=kinds,
            category=category_codes, categories=categories,
            region=region_codes, regions=regions,
            tags=tag_matrix, tag_names=tag_names,
            lat=_floats(lat, n), lon=_floats(lon, n),
            starts_at=_floats(starts_at, n), ends_at=_floats(ends_at, n),
            hidden=np.array([bool(h) for h in (hidden or [False] * n)], dtype=bool),
            venue=list(venue or nothing),
            provider=list(provider or nothing),
            min_age=_floats(min_age, n), editorial=_flags(editorial, n), is_free=_flags(is_free, n),
            capacity=_floats(capacity, n), series=list(series or nothing),
        )

    def __len__(self) -> int:
        return len(self.items)

    # ---- masks -----------------------------------------------------------------------
    def available_at(self, at: float) -> np.ndarray:
        """Items that may be shown at epoch ``at``: not hidden and not ended.

        Events in the future are allowed (people book ahead); open-ended items stay.
        """
        ended = self.ends_at < at  # nan compares False, so open-ended items stay
        available: np.ndarray = ~self.hidden & ~ended
        return available

    def starts_within(self, after: float | None, before: float | None) -> np.ndarray:
        """Items whose ``starts_at`` lies in ``[after, before]`` (either bound may be open).

        An item without a start time (always available: a book, a video) is outside every
        window: a window asks what starts then, and such an item starts at no time.
        """
        starts = self.starts_at
        inside: np.ndarray = ~np.isnan(starts)
        if after is not None:
            inside &= starts >= after
        if before is not None:
            inside &= starts <= before
        return inside

    def has_place(self) -> np.ndarray:
        placed: np.ndarray = ~(np.isnan(self.lat) | np.isnan(self.lon))
        return placed

    def within_radius(self, lat: float, lon: float, radius_km: float) -> np.ndarray:
        """Items within ``radius_km`` of a point; items without a place (digital) are kept."""
        distance = self.distance_km(lat, lon)
        within: np.ndarray = np.isnan(distance) | (distance <= radius_km)
        return within

    def distance_km(self, lat: float, lon: float, items: np.ndarray | None = None) -> np.ndarray:
        """Haversine distance from a point to every item, or to ``items`` (indices) only
        (``nan`` for items without a place)."""
        lats, lons = (self.lat, self.lon) if items is None else (self.lat[items], self.lon[items])
        phi1, phi2 = np.radians(lat), np.radians(lats)
        dphi = phi2 - phi1
        dlmb = np.radians(lons - lon)
        a = np.sin(dphi / 2) ** 2 + np.cos(phi1) * np.cos(phi2) * np.sin(dlmb / 2) ** 2
        distance: np.ndarray = 2 * EARTH_RADIUS_KM * np.arcsin(np.sqrt(np.clip(a, 0.0, 1.0)))
        return distance

    def kind_is(self, kind: str) -> np.ndarray:
        return self.kind == code_of(self.kinds, kind) if kind in self.kinds else np.zeros(len(self), bool)

    def category_is(self, category: str) -> np.ndarray:
        if category not in self.categories:
            return np.zeros(len(self), bool)
        matches: np.ndarray = self.category == code_of(self.categories, category)
        return matches

    def region_is(self, region: str) -> np.ndarray:
        return self.region == code_of(self.regions, region) if region in self.regions else np.zeros(len(self), bool)

    def category_name(self, index: int) -> str | None:
        code = int(self.category[index])
        return self.categories[code] if code >= 0 else None

    def kind_name(self, index: int) -> str | None:
        code = int(self.kind[index])
        return self.kinds[code] if code >= 0 else None

    # ---- content features ------------------------------------------------------------
    def feature_matrix(self, weights: dict[str, float] | None = None) -> sp.csr_matrix:
        """Items x features (category, kind, tags, region one-hots), rows L2-normalised.

        Used for metadata affinity and item-to-item content similarity; the block weights
        say how much each facet counts.
        """
        w = {"category": 1.0, "kind": 0.5, "tags": 0.7, "region": 0.6, **(weights or {})}
        blocks = [
            _one_hot(self.category, len(self.categories)) * w["category"],
            _one_hot(self.kind, len(self.kinds)) * w["kind"],
            _row_normalise(self.tags) * w["tags"],
            _one_hot(self.region, len(self.regions)) * w["region"],
        ]
        return _row_normalise(sp.hstack(blocks, format="csr", dtype=np.float32))

    # ---- persistence -----------------------------------------------------------------
    def save(self, directory: Path) -> None:
        directory.mkdir(parents=True, exist_ok=True)
        np.savez_compressed(
            directory / "catalog.npz",
            kind=self.kind, category=self.category, region=self.region,
            lat=self.lat, lon=self.lon, starts_at=self.starts_at, ends_at=self.ends_at,
            hidden=self.hidden, tags_indptr=self.tags.indptr, tags_indices=self.tags.indices,
            min_age=self.min_age, editorial=self.editorial, is_free=self.is_free, capacity=self.capacity,
        )
        meta = {
            "items": self.items.ids, "title": self.title, "kinds": self.kinds,
            "categories": self.categories, "regions": self.regions, "tag_names": self.tag_names,
            "venue": self.venue, "provider": self.provider, "series": self.series,
        }
        (directory / "catalog.json").write_text(json.dumps(meta, ensure_ascii=False), encoding="utf-8")

    @classmethod
    def load(cls, directory: Path) -> Catalog:
        meta = json.loads((directory / "catalog.json").read_text(encoding="utf-8"))
        with np.load(directory / "catalog.npz", allow_pickle=False) as arrays:
            a = {k: arrays[k] for k in arrays.files}
        n = len(meta["items"])
        tags = sp.csr_matrix(
            (np.ones(len(a["tags_indices"]), np.float32), a["tags_indices"], a["tags_indptr"]),
            shape=(n, len(meta["tag_names"])),
        )
        return cls(
            items=IdMap(meta["items"]), title=meta["title"],
            kind=a["kind"], kinds=meta["kinds"], category=a["category"], categories=meta["categories"],
            region=a["region"], regions=meta["regions"], tags=tags, tag_names=meta["tag_names"],
            lat=a["lat"], lon=a["lon"], starts_at=a["starts_at"], ends_at=a["ends_at"],
            hidden=a["hidden"], venue=meta["venue"], provider=meta.get("provider", []),
            series=meta.get("series", []),
            **{name: a[name] for name in ("min_age", "editorial", "is_free", "capacity") if name in a},
        )


def _floats(values: Sequence[float | None] | None, n: int) -> np.ndarray:
    if values is None:
        return np.full(n, np.nan)
    return np.array([np.nan if v is None else float(v) for v in values], dtype=np.float64)


def _flags(values: Sequence[bool | None] | None, n: int) -> np.ndarray:
    if values is None:
        return np.zeros(n, dtype=bool)
    return np.array([bool(v) for v in values], dtype=bool)


def _tag_matrix(tags: list[Sequence[str] | None]) -> tuple[sp.csr_matrix, list[str]]:
    names = sorted({t for row in tags if row for t in row if t})
    position = {t: i for i, t in enumerate(names)}
    indptr, indices = [0], []
    for row in tags:
        columns = sorted({position[t] for t in (row or []) if t})
        indices.extend(columns)
        indptr.append(len(indices))
    data = np.ones(len(indices), dtype=np.float32)
    return sp.csr_matrix((data, indices, indptr), shape=(len(tags), len(names))), names


def _one_hot(codes: np.ndarray, width: int) -> sp.csr_matrix:
    rows = np.flatnonzero(codes >= 0)
    data = np.ones(len(rows), dtype=np.float32)
    return sp.csr_matrix((data, (rows, codes[rows])), shape=(len(codes), max(width, 0)))


def _row_normalise(matrix: sp.csr_matrix) -> sp.csr_matrix:
    norms = np.sqrt(np.asarray(matrix.multiply(matrix).sum(axis=1)).ravel())
    scale = np.divide(1.0, norms, out=np.zeros_like(norms), where=norms > 0)
    return sp.csr_matrix(sp.diags(scale.astype(np.float32)) @ matrix)
