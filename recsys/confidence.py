"""From summed interaction weight to ALS confidence.

- ``log`` (default):   c = 1 + α · log(1 + w)   — diminishing returns: the tenth view of
  the same page says less than the first reservation.
- ``linear``:          c = 1 + α · w            — Hu, Koren & Volinsky's original form.
- ``bm25``:            BM25 weighting of w across users and items (implicit's
  ``bm25_weight``), which damps very active users and very popular items.

Training and the API's live fold-in both call :func:`to_confidence`, so a reservation
posted to the API weighs exactly what it would after the next retrain.
"""

from __future__ import annotations

from typing import Literal

import numpy as np
import scipy.sparse as sp
from implicit.nearest_neighbours import bm25_weight

Transform = Literal["log", "linear", "bm25"]


def to_confidence(weights: sp.csr_matrix, transform: Transform = "log", alpha: float = 2.0) -> sp.csr_matrix:
    """Confidence matrix with the same sparsity as ``weights`` (float32)."""
    if alpha <= 0:
        raise ValueError(f"alpha must be > 0, got {alpha}")
    matrix = sp.csr_matrix(weights, dtype=np.float32, copy=True)
    if transform == "log":
        matrix.data = 1.0 + alpha * np.log1p(np.maximum(matrix.data, 0.0))
    elif transform == "linear":
        matrix.data = 1.0 + alpha * np.maximum(matrix.data, 0.0)
    elif transform == "bm25":
        matrix = sp.csr_matrix(bm25_weight(matrix, K1=100, B=0.8), dtype=np.float32)
        matrix.data = 1.0 + alpha * matrix.data
    else:
        raise ValueError(f"unknown confidence transform {transform!r}; use log, linear or bm25")
    return matrix
