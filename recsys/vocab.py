"""Small helpers to store categorical columns as integer codes plus a vocabulary."""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np

MISSING = -1


def encode(values: Sequence[str | None]) -> tuple[np.ndarray, list[str]]:
    """Codes (``-1`` for missing/empty) and the sorted vocabulary of the non-missing values."""
    vocabulary = sorted({v for v in values if v})
    position = {v: i for i, v in enumerate(vocabulary)}
    codes = np.fromiter((position[v] if v else MISSING for v in values), dtype=np.int32, count=len(values))
    return codes, vocabulary


def code_of(vocabulary: Sequence[str], value: str | None) -> int:
    """The code of ``value`` in ``vocabulary`` or ``-1``."""
    if not value:
        return MISSING
    try:
        return list(vocabulary).index(value)
    except ValueError:
        return MISSING


def decode(codes: np.ndarray, vocabulary: Sequence[str]) -> list[str | None]:
    return [vocabulary[c] if c >= 0 else None for c in codes.tolist()]
