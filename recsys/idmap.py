"""Bidirectional maps between external string ids and dense matrix indices.

Every matrix axis (users, items) is described by one :class:`IdMap`. Lookups of unknown
ids return ``-1`` rather than raising, because an unknown user is a normal case for a
recommender (it gets a fallback), not an error.
"""

from __future__ import annotations

import json
from collections.abc import Iterable, Sequence
from pathlib import Path

import numpy as np

UNKNOWN = -1


class IdMap:
    """An ordered, duplicate-free list of ids and the inverse index."""

    __slots__ = ("_ids", "_index")

    def __init__(self, ids: Iterable[str]) -> None:
        self._ids: list[str] = [str(i) for i in ids]
        self._index: dict[str, int] = {value: position for position, value in enumerate(self._ids)}
        if len(self._index) != len(self._ids):
            seen: set[str] = set()
            duplicate = next(i for i in self._ids if i in seen or seen.add(i))  # type: ignore[func-returns-value]
            raise ValueError(f"duplicate id in IdMap: {duplicate!r}")

    def __len__(self) -> int:
        return len(self._ids)

    def __contains__(self, value: object) -> bool:
        return value in self._index

    def __eq__(self, other: object) -> bool:
        return isinstance(other, IdMap) and self._ids == other._ids

    def __repr__(self) -> str:
        return f"IdMap(n={len(self)})"

    @property
    def ids(self) -> list[str]:
        return list(self._ids)

    def index_of(self, value: str) -> int:
        """Index of ``value`` or :data:`UNKNOWN`."""
        return self._index.get(value, UNKNOWN)

    def indices(self, values: Iterable[str]) -> np.ndarray:
        """Indices of many ids (``-1`` where unknown) as an int64 array."""
        get = self._index.get
        return np.fromiter((get(v, UNKNOWN) for v in values), dtype=np.int64)

    def id_of(self, index: int) -> str:
        if not 0 <= index < len(self._ids):
            raise IndexError(f"index {index} outside 0..{len(self._ids) - 1}")
        return self._ids[index]

    def ids_of(self, indices: Sequence[int] | np.ndarray) -> list[str]:
        return [self._ids[int(i)] for i in indices]

    def extended(self, values: Iterable[str]) -> IdMap:
        """A new map with the unseen ``values`` appended (existing indices unchanged)."""
        fresh = [v for v in dict.fromkeys(values) if v not in self._index]
        return IdMap([*self._ids, *fresh]) if fresh else self

    def save(self, path: Path) -> None:
        path.write_text(json.dumps(self._ids, ensure_ascii=False), encoding="utf-8")

    @classmethod
    def load(cls, path: Path) -> IdMap:
        return cls(json.loads(path.read_text(encoding="utf-8")))
