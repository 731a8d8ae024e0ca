"""User side data aligned with the user axis: region, age band and area type codes.

Segments (region x age band) drive fallbacks for users without history and the
per-segment evaluation that shows whether rural users are served as well as urban ones.
"""

from __future__ import annotations

import json
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from recsys.idmap import IdMap
from recsys.vocab import code_of, encode


@dataclass(eq=False)
class UserTable:
    users: IdMap
    region: np.ndarray
    regions: list[str]
    age: np.ndarray
    ages: list[str]
    area: np.ndarray
    areas: list[str]

    @classmethod
    def from_columns(
        cls,
        user_ids: Sequence[str],
        region: Sequence[str | None] | None = None,
        age_band: Sequence[str | None] | None = None,
        area_type: Sequence[str | None] | None = None,
    ) -> UserTable:
        nothing: list[None] = [None] * len(user_ids)
        region_codes, regions = encode(list(region or nothing))
        age_codes, ages = encode(list(age_band or nothing))
        area_codes, areas = encode(list(area_type or nothing))
        return cls(IdMap(user_ids), region_codes, regions, age_codes, ages, area_codes, areas)

    def __len__(self) -> int:
        return len(self.users)

    @property
    def n_segments(self) -> int:
        return max(len(self.regions), 1) * max(len(self.ages), 1)

    def segment(self, region_code: int, age_code: int) -> int:
        """Dense segment code for region x age band, ``-1`` if either is unknown."""
        if region_code < 0 or age_code < 0:
            return -1
        return region_code * len(self.ages) + age_code

    def segments(self) -> np.ndarray:
        """Segment code of every user (``-1`` where region or age band is unknown)."""
        known = (self.region >= 0) & (self.age >= 0)
        return np.where(known, self.region * max(len(self.ages), 1) + self.age, -1).astype(np.int64)

    def region_code_of(self, region: str | None) -> int:
        return code_of(self.regions, region)

    def age_code_of(self, age_band: str | None) -> int:
        return code_of(self.ages, age_band)

    def labels(self, facet: str) -> np.ndarray:
        """String label per user for ``region_code``, ``age_band`` or ``area_type`` ('' if unknown)."""
        codes, vocabulary = {
            "region_code": (self.region, self.regions),
            "age_band": (self.age, self.ages),
            "area_type": (self.area, self.areas),
        }[facet]
        names = np.array([*vocabulary, ""], dtype=object)
        return names[np.where(codes >= 0, codes, len(vocabulary))]

    def save(self, directory: Path) -> None:
        directory.mkdir(parents=True, exist_ok=True)
        np.savez_compressed(directory / "users.npz", region=self.region, age=self.age, area=self.area)
        meta = {"users": self.users.ids, "regions": self.regions, "ages": self.ages, "areas": self.areas}
        (directory / "users.json").write_text(json.dumps(meta, ensure_ascii=False), encoding="utf-8")

    @classmethod
    def load(cls, directory: Path) -> UserTable:
        meta = json.loads((directory / "users.json").read_text(encoding="utf-8"))
        with np.load(directory / "users.npz", allow_pickle=False) as a:
            return cls(IdMap(meta["users"]), a["region"], meta["regions"], a["age"], meta["ages"],
                       a["area"], meta["areas"])
