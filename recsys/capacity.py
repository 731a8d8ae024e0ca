"""Capacity: an event whose reservations reached its places is full.

Each reservation is one resident's ``reserve`` of the item (a resident who reserves twice
holds one place). Who counts them is the server's business (the store's and the live
posts, :mod:`serving.reservations`); this module says what the counts mean for the
catalogue: :func:`full_items` marks the full items, and :func:`with_capacity` serves them
either left out of every list (``hide``) or listed and marked (the catalogue's ``full``).
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import replace

import numpy as np

from recsys.catalog import Catalog


def full_items(catalog: Catalog, reserved: Mapping[str, int]) -> np.ndarray:
    """Items whose reservations reached their capacity (an item without one is never full)."""
    counts = np.zeros(len(catalog), dtype=np.float64)
    for item_id, count in reserved.items():
        index = catalog.items.index_of(item_id)
        if index >= 0:
            counts[index] = count
    limited = ~np.isnan(catalog.capacity)
    full: np.ndarray = limited & (counts >= np.where(limited, catalog.capacity, np.inf))
    return full


def with_capacity(catalog: Catalog, full: np.ndarray, *, hide: bool) -> Catalog:
    """``catalog`` with ``full`` marked, and left out of every list too when ``hide``."""
    hidden = catalog.hidden | full if hide else catalog.hidden
    return replace(catalog, full=np.asarray(full, dtype=bool), hidden=hidden)
