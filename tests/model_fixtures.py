"""A small planted-preference data set for model contract tests (no store needed)."""

from __future__ import annotations

import numpy as np
import scipy.sparse as sp

from recsys.catalog import Catalog
from recsys.confidence import to_confidence
from recsys.models.base import TrainingData
from recsys.users import UserTable

CATEGORIES = ["戏曲", "音乐", "讲座", "亲子"]


def planted(n_users: int = 300, n_items: int = 80, seed: int = 0, cold_items: int = 8) -> TrainingData:
    """Users in group g (= user % 4) interact mostly with items of category g.

    The last ``cold_items`` items have no interactions at all (new events).
    """
    rng = np.random.default_rng(seed)
    item_category = np.arange(n_items) % len(CATEGORIES)
    rows, cols, vals = [], [], []
    warm = n_items - cold_items
    for user in range(n_users):
        group = user % len(CATEGORIES)
        liked = np.flatnonzero(item_category[:warm] == group)
        picks = rng.choice(liked, size=min(8, len(liked)), replace=False)
        noise = rng.choice(warm, size=2, replace=False)
        for item in np.concatenate([picks, noise]):
            rows.append(user)
            cols.append(int(item))
            vals.append(float(rng.integers(1, 9)))
    weights = sp.csr_matrix((vals, (rows, cols)), shape=(n_users, n_items), dtype=np.float32)
    weights.sum_duplicates()
    catalog = Catalog.from_columns(
        [f"i{i}" for i in range(n_items)],
        title=[f"活动{i}" for i in range(n_items)],
        kind=["event"] * n_items,
        category=[CATEGORIES[c] for c in item_category],
        region=["110101" if i % 2 else "110119" for i in range(n_items)],
        tags=[[CATEGORIES[c] + "标签"] for c in item_category],
    )
    users = UserTable.from_columns(
        [f"u{u}" for u in range(n_users)],
        region=["110119" if u % 2 else "110101" for u in range(n_users)],
        age_band=["60+" if u % 3 == 0 else "18-34" for u in range(n_users)],
        area_type=["rural" if u % 2 else "urban" for u in range(n_users)],
    )
    return TrainingData(to_confidence(weights), weights, catalog, users, seed=seed)


def group_code(data: TrainingData, group: int) -> int:
    """The catalog's category code of planted group ``group`` (codes follow sorted names)."""
    return data.catalog.categories.index(CATEGORIES[group])
