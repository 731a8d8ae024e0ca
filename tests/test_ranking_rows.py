"""Row-wise top-k: the vectorised selection behind candidate lists and evaluation returns, row
for row, exactly what :func:`recsys.ranking.top_k` returns (same items, same order, ties to the
lower index), including rows with ties across the cut, non-finite scores and short rows."""

from __future__ import annotations

import numpy as np
import scipy.sparse as sp
from hypothesis import given, settings
from hypothesis import strategies as st
from hypothesis.extra import numpy as hnp

from recsys.ranking import top_k, top_k_batch, top_k_rows

# few distinct values, so that ties across the k-th place are the rule, not the exception
VALUES = st.sampled_from([0.0, 0.5, 1.0, 1.5, 2.0, -1.0, np.inf, -np.inf, np.nan])


def _per_row(scores: np.ndarray, k: int) -> np.ndarray:
    out = np.full((scores.shape[0], k), -1, dtype=np.int64)
    for row in range(scores.shape[0]):
        best = top_k(scores[row], k)
        out[row, : len(best)] = best
    return out


@settings(max_examples=300, deadline=None)
@given(scores=hnp.arrays(np.float32, st.tuples(st.integers(0, 12), st.integers(1, 40)), elements=VALUES),
       k=st.integers(1, 50))
def test_rows_are_top_k_row_by_row(scores, k):
    np.testing.assert_array_equal(top_k_rows(scores, k), _per_row(scores, k))


def test_a_tie_across_the_cut_goes_to_the_lower_indices():
    scores = np.array([[1.0, 3.0, 1.0, 2.0, 1.0, 1.0],
                       [0.0, 0.0, 0.0, 0.0, 0.0, 0.0],
                       [5.0, -np.inf, np.nan, 4.0, -np.inf, 4.0]], dtype=np.float32)
    assert top_k_rows(scores, 3).tolist() == [[1, 3, 0], [0, 1, 2], [0, 3, 5]]
    assert top_k_rows(scores, 5).tolist() == [[1, 3, 0, 2, 4], [0, 1, 2, 3, 4], [0, 3, 5, -1, -1]]


def test_batch_applies_the_shared_mask_and_each_rows_exclusions():
    rng = np.random.default_rng(0)
    scores = rng.integers(0, 4, size=(30, 25)).astype(np.float32)
    allowed = rng.random(25) < 0.8
    exclude = sp.random(30, 25, density=0.2, format="csr", random_state=1)
    masked = scores.copy()
    masked[:, ~allowed] = -np.inf
    masked[exclude.nonzero()] = -np.inf
    got = top_k_batch(scores, 7, allowed, exclude=exclude)
    np.testing.assert_array_equal(got, _per_row(masked, 7))
    for row in range(30):
        listed = got[row][got[row] >= 0]
        assert allowed[listed].all() and not set(listed.tolist()) & set(exclude[row].indices.tolist())


def test_double_precision_scores_keep_their_order():
    """Values equal in float32 but not in float64 are not a tie (top_k compares in float64)."""
    scores = np.array([[1.0, 1.0 + 1e-12, 0.5, 1.0 + 2e-12]])
    assert top_k_rows(scores, 2).tolist() == [[3, 1]] == [top_k(scores[0], 2).tolist()]
    assert top_k_rows(np.array([[3, 1, 2, 3]]), 3).tolist() == [[0, 3, 2]]  # integer scores
