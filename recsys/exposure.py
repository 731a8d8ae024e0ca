"""Exposure floors: provider groups (rural venues, 非遗, local troupes) get a minimum share of slots.

The ``[exposure]`` table of a config names groups by catalogue attributes, each with the
share of recommendation slots it must receive over the traffic::

    [exposure.groups.rural_venues]
    area_type = "rural"        # venues in districts where most users are rural
    min_share = 0.12
    [exposure.groups.heritage]
    categories = ["非遗"]
    min_share = 0.08

An item belongs to a group when it matches every attribute the group gives (any value of
a list). The re-ranker adds a bonus ``b_g`` per group to each candidate's score, normalised
to ``[0, 1]`` within the user's candidate list, and ranks by the sum. The bonuses are the
Lagrange multipliers of "maximise the summed normalised score of the shown items subject
to each group's share of the slots": :func:`calibrate` finds, over a sample of the traffic,
the smallest bonuses that meet every floor, so a floor is met where it costs least (users
whose group candidates score nearly as well as their others) rather than by a quota in
every list. Serving applies the calibrated bonuses per request (:func:`served_floors`,
:func:`reorder`: the delivery engine's one ranking step for every path of a user's list and
for batch lists); a floor the candidates cannot meet (too few group items near the top) stays
as close as the bonus cap allows.
"""

from __future__ import annotations

import logging
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any, Literal

import numpy as np
from pydantic import BaseModel, ConfigDict, Field

from recsys.catalog import Catalog
from recsys.users import UserTable

log = logging.getLogger(__name__)

MAX_BONUS = 2.0
"""A bonus of 1 lifts a group's weakest candidate above the best other one; 2 leaves room for overlaps."""
SEARCH_STEPS = 24
ROUNDS = 4
"""Rounds of per-group searches: raising one group's bonus can push another group's items down."""
MANIFEST_KEY = "exposure"
"""Where a bundle's manifest keeps the calibrated bonuses (``{"bonus": {group: value}, ...}``)."""


class ExposureGroup(BaseModel):
    """One provider group: which catalogue items belong to it and the slot share it must get."""

    model_config = ConfigDict(extra="forbid")

    min_share: float = Field(ge=0, le=1, description="minimum share of recommendation slots")
    categories: list[str] = Field(default_factory=list)
    kinds: list[str] = Field(default_factory=list)
    regions: list[str] = Field(default_factory=list, description="district codes of the items")
    providers: list[str] = Field(default_factory=list)
    tags: list[str] = Field(default_factory=list)
    area_type: Literal["urban", "rural"] | None = Field(
        None, description="items located in districts where most users have this area type")


class ExposureSettings(BaseModel):
    """The ``[exposure]`` table: groups with floors, how deep the re-ranker looks, the gate's tolerance."""

    model_config = ConfigDict(extra="forbid")

    groups: dict[str, ExposureGroup] = Field(default_factory=dict)
    depth: int = Field(50, ge=10, le=500, description="candidates per list the re-ranker chooses from")
    tolerance: float = Field(0.01, ge=0, le=1, description="the gate accepts a share this far below its floor")
    sample_users: int = Field(20_000, ge=100, description="users whose lists calibrate the bonuses at training")

    @property
    def enabled(self) -> bool:
        return bool(self.groups)


def majority_regions(users: UserTable, area_type: str) -> set[str]:
    """Districts where at least half the users have ``area_type`` (e.g. the rural districts)."""
    if area_type not in users.areas:
        return set()
    code = users.areas.index(area_type)
    found = set()
    for index, name in enumerate(users.regions):
        members = users.region == index
        if members.any() and (users.area[members] == code).mean() >= 0.5:
            found.add(name)
    return found


def group_mask(catalog: Catalog, users: UserTable, group: ExposureGroup) -> np.ndarray:
    """Items of ``group``: every given attribute matches (any listed value of it)."""
    mask = np.ones(len(catalog), dtype=bool)
    if group.categories:
        mask &= np.isin(catalog.category, _codes(catalog.categories, group.categories))
    if group.kinds:
        mask &= np.isin(catalog.kind, _codes(catalog.kinds, group.kinds))
    regions = set(group.regions)
    if group.area_type is not None:
        majority = majority_regions(users, group.area_type)
        regions = (regions & majority) if regions else majority
        mask &= bool(regions)  # no such district: the group is empty, not everything
    if regions:
        mask &= np.isin(catalog.region, _codes(catalog.regions, sorted(regions)))
    if group.providers:
        wanted = set(group.providers)
        mask &= np.array([p in wanted for p in catalog.provider], dtype=bool) if catalog.provider else False
    if group.tags:
        columns = [catalog.tag_names.index(t) for t in group.tags if t in catalog.tag_names]
        tagged = np.asarray(catalog.tags[:, columns].sum(axis=1)).ravel() > 0 if columns else False
        mask &= tagged
    return mask


def _codes(vocabulary: list[str], values: list[str]) -> np.ndarray:
    return np.array([vocabulary.index(v) for v in values if v in vocabulary], dtype=np.int64)


@dataclass(frozen=True)
class Floors:
    """The groups of one catalogue as masks, their floors, and the calibrated bonuses."""

    names: tuple[str, ...]
    members: np.ndarray
    """Groups x items, bool."""
    floors: np.ndarray
    bonus: np.ndarray

    @classmethod
    def of(cls, settings: ExposureSettings, catalog: Catalog, users: UserTable,
           bonus: Mapping[str, float] | None = None) -> Floors:
        names = tuple(settings.groups)
        members = np.array([group_mask(catalog, users, settings.groups[n]) for n in names], dtype=bool)
        members = members.reshape(len(names), len(catalog))
        floors = np.array([settings.groups[n].min_share for n in names], dtype=np.float64)
        given = np.array([float((bonus or {}).get(n, 0.0)) for n in names], dtype=np.float64)
        return cls(names, members, floors, given)

    def with_bonus(self, bonus: np.ndarray) -> Floors:
        return Floors(self.names, self.members, self.floors, np.asarray(bonus, dtype=np.float64))

    def bonus_by_name(self) -> dict[str, float]:
        return {name: float(b) for name, b in zip(self.names, self.bonus, strict=True)}


def normalised(scores: np.ndarray, items: np.ndarray) -> np.ndarray:
    """Scores rescaled to ``[0, 1]`` within each row's valid candidates; ``-inf`` where no item."""
    valid = items >= 0
    values = np.where(valid, scores, np.nan).astype(np.float64)
    with np.errstate(all="ignore"):
        low = np.nanmin(np.where(valid, values, np.inf), axis=1, keepdims=True)
        high = np.nanmax(np.where(valid, values, -np.inf), axis=1, keepdims=True)
        span = np.where(high > low, high - low, 1.0)
        scaled = (values - low) / span
    return np.where(valid & np.isfinite(scaled), scaled, np.where(valid, 0.0, -np.inf))


def rerank(items: np.ndarray, scores: np.ndarray, floors: Floors, n: int) -> np.ndarray:
    """The top ``n`` of each row's candidates by normalised score plus the bonuses of their groups.

    ``items``/``scores``: users x candidates, best first, ``-1`` where a list is short. Returns
    users x ``n`` item indices (``-1`` padded).
    """
    items = np.atleast_2d(items)
    adjusted = normalised(np.atleast_2d(scores), items) + lift(items, floors)
    order = np.argsort(-adjusted, axis=1, kind="stable")[:, :n]
    return np.take_along_axis(items, order, axis=1)


def lift(items: np.ndarray, floors: Floors) -> np.ndarray:
    """The summed bonuses of each candidate's groups (0 for no group and for padding)."""
    if not len(floors.names):
        return np.zeros(items.shape)
    per_item = floors.bonus @ floors.members.astype(np.float64)
    return np.where(items >= 0, per_item[np.maximum(items, 0)], 0.0)


def shares(recs: np.ndarray, floors: Floors) -> np.ndarray:
    """Each group's share of the filled slots of ``recs``."""
    filled = recs >= 0
    total = max(int(filled.sum()), 1)
    picked = np.maximum(recs, 0)
    return np.array([float((floors.members[g][picked] & filled).sum()) / total for g in range(len(floors.names))])


def calibrate(items: np.ndarray, scores: np.ndarray, floors: Floors, n: int) -> Floors:
    """The smallest bonuses (per group, by bisection) whose re-ranked lists meet every floor.

    Repeated for :data:`ROUNDS` rounds since the groups compete for slots; a group whose
    floor is out of reach keeps :data:`MAX_BONUS`.
    """
    bonus = np.zeros(len(floors.names))
    for _ in range(ROUNDS):
        before = bonus.copy()
        for g in range(len(floors.names)):
            bonus[g] = _smallest_bonus(items, scores, floors, bonus, g, n)
        if np.allclose(before, bonus, atol=1e-4):
            break
    result = floors.with_bonus(bonus)
    log.info("exposure bonuses %s give shares %s against floors %s", np.round(bonus, 4),
             np.round(shares(rerank(items, scores, result, n), result), 4), floors.floors)
    return result


def _smallest_bonus(items: np.ndarray, scores: np.ndarray, floors: Floors, bonus: np.ndarray, g: int,
                    n: int) -> float:
    def share_at(value: float) -> float:
        trial = bonus.copy()
        trial[g] = value
        candidate = floors.with_bonus(trial)
        return float(shares(rerank(items, scores, candidate, n), candidate)[g])

    target = floors.floors[g]
    if share_at(0.0) >= target:
        return 0.0
    if share_at(MAX_BONUS) < target:
        return MAX_BONUS
    low, high = 0.0, MAX_BONUS
    for _ in range(SEARCH_STEPS):
        middle = (low + high) / 2
        if share_at(middle) >= target:
            high = middle
        else:
            low = middle
    return high


def served_floors(settings: ExposureSettings, manifest: Mapping[str, Any], catalog: Catalog,
                  users: UserTable) -> Floors | None:
    """The floors a served model applies: its configured groups with the bonuses calibrated at
    training (the manifest's :data:`MANIFEST_KEY`); None when it has no floors or no bonus lifts anything."""
    calibrated = manifest.get(MANIFEST_KEY) or {}
    bonus = calibrated.get("bonus") if isinstance(calibrated, Mapping) else None
    if not settings.enabled or not bonus:
        return None
    floors = Floors.of(settings, catalog, users, bonus)
    return floors if bool((floors.bonus > 0).any()) else None


def reorder(pool: np.ndarray, scores: np.ndarray, floors: Floors) -> np.ndarray:
    """One user's candidate ``pool`` (item indices) scored as :func:`rerank` ranks it: the scores
    normalised within the pool plus the bonuses of each item's groups (aligned with ``pool``)."""
    items = np.asarray(pool, dtype=np.int64)[None, :]
    adjusted = normalised(np.asarray(scores, dtype=np.float64)[None, :], items) + lift(items, floors)
    return np.asarray(adjusted[0], dtype=np.float64)
