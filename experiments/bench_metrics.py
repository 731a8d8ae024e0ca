"""Benchmark: offline metrics on 50k users x k=20, against a per-user Python loop peer.

    python experiments/bench_metrics.py
"""

from __future__ import annotations

import time

import numpy as np
import scipy.sparse as sp

from recsys import metrics


def _loop_ndcg(recs: np.ndarray, truth: sp.csr_matrix, k: int) -> float:
    """The obvious per-user implementation, the peer the vectorised one is measured against."""
    values = []
    for user in range(recs.shape[0]):
        relevant = set(truth.indices[truth.indptr[user]:truth.indptr[user + 1]].tolist())
        if not relevant:
            continue
        dcg = sum(1 / np.log2(rank + 2) for rank, item in enumerate(recs[user, :k]) if item in relevant)
        idcg = sum(1 / np.log2(rank + 2) for rank in range(min(len(relevant), k)))
        values.append(dcg / idcg)
    return float(np.mean(values))


def main() -> None:
    rng = np.random.default_rng(7)
    n_users, n_items, k = 50_000, 20_000, 20
    # distinct items per row: a random offset plus a random stride walk never repeats within k
    recs = (rng.integers(0, n_items, (n_users, 1)) + np.arange(k) * 997) % n_items
    rows = np.repeat(np.arange(n_users), 10)
    truth = sp.csr_matrix((np.ones(rows.size), (rows, rng.integers(0, n_items, rows.size))), shape=(n_users, n_items))
    t0 = time.perf_counter()
    fast = metrics.ndcg_at_k(recs, truth, 10)
    t1 = time.perf_counter()
    slow = _loop_ndcg(recs, truth, 10)
    t2 = time.perf_counter()
    print(f"ndcg@10 vectorised {t1 - t0:.3f}s  loop {t2 - t1:.3f}s  speed-up {(t2 - t1) / (t1 - t0):.1f}x  "
          f"(values {fast:.6f} vs {slow:.6f})")


if __name__ == "__main__":
    main()
