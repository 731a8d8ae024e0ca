"""Who an item is for: items with a ``min_age`` never reach residents who may be younger.

The one place the minors rule lives. Every list of the engine passes through it: the API's
personal lists (both the precomputed and the full path, personalisation on or off), batch
recommend and offline evaluation (both through :meth:`recsys.delivery.DeliveryEngine.top_n_for_rows`).

A resident's age is known only as a band (``0-17``, ``18-34``, ``35-59``, ``60+``), so the
band's youngest age decides: a ``0-17`` resident gets no item whose ``min_age`` is above 0,
an ``18-34`` resident every item up to ``min_age`` 18. A resident of unknown band is treated
as an adult, as the app that signs them in answers for their age.
"""

from __future__ import annotations

import numpy as np

from recsys.catalog import Catalog

YOUNGEST_AGE: dict[str, int] = {"0-17": 0, "18-34": 18, "35-59": 35, "60+": 60}
"""The youngest age of each age band of the data contract."""

MINORS = "0-17"


def youngest_age(age_band: str | None) -> int | None:
    """The youngest age a resident of ``age_band`` may be (None: unknown, no restriction)."""
    return YOUNGEST_AGE.get(age_band) if age_band is not None else None


def restricted(catalog: Catalog, age_band: str | None) -> np.ndarray | None:
    """Items a resident of ``age_band`` must not get (bool mask), or None when none are."""
    youngest = youngest_age(age_band)
    if youngest is None or not np.isfinite(catalog.min_age).any():
        return None
    mask: np.ndarray = np.nan_to_num(catalog.min_age, nan=0.0) > youngest
    return mask if mask.any() else None


def restricted_rows(catalog: Catalog, age_bands: list[str | None]) -> dict[str, np.ndarray]:
    """Per age band among ``age_bands``, its :func:`restricted` mask (bands without one left out)."""
    masks = {}
    for band in sorted({b for b in age_bands if b is not None}):
        mask = restricted(catalog, band)
        if mask is not None:
            masks[band] = mask
    return masks
