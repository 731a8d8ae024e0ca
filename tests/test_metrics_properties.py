"""Properties of recsys.metrics on random small cases, checked against a per-user oracle."""

from __future__ import annotations

import math

import numpy as np
import pytest
import scipy.sparse as sp
from hypothesis import given, settings
from hypothesis import strategies as st

from recsys import metrics as m

ACCURACY = {
    "precision": m.precision_at_k,
    "recall": m.recall_at_k,
    "ndcg": m.ndcg_at_k,
    "map": m.map_at_k,
    "hit_rate": m.hit_rate_at_k,
    "mrr": m.mrr_at_k,
}

FAST = settings(max_examples=150, deadline=None)


@st.composite
def cases(draw: st.DrawFn) -> tuple[np.ndarray, sp.csr_matrix, int]:
    """(recs, truth, k): unique items per row, -1 anywhere in a row, k sometimes beyond k_max."""
    n_users = draw(st.integers(1, 7))
    n_items = draw(st.integers(1, 10))
    k_max = draw(st.integers(0, 6))
    rows = []
    for _ in range(n_users):
        items = draw(st.lists(st.integers(0, n_items - 1), unique=True, max_size=k_max))
        row = items + [-1] * (k_max - len(items))
        rows.append(draw(st.permutations(row)) if draw(st.booleans()) else row)
    recs = np.array(rows, dtype=np.int64).reshape(n_users, k_max)
    dense = np.array(
        draw(st.lists(st.lists(st.booleans(), min_size=n_items, max_size=n_items),
                      min_size=n_users, max_size=n_users))
    )
    k = draw(st.integers(1, k_max + 2))
    return recs, sp.csr_matrix(dense.astype(np.float64)), k


def _oracle(recs: np.ndarray, truth: sp.csr_matrix, k: int) -> dict[str, float]:
    """Textbook per-user loops, written independently of the vectorised code."""
    per: dict[str, list[float]] = {name: [] for name in ACCURACY}
    for u in range(recs.shape[0]):
        relevant = set(truth[u].indices[truth[u].data != 0].tolist())
        if not relevant:
            continue
        top = [int(i) for i in recs[u, :k]] + [-1] * max(0, k - recs.shape[1])
        rel = [1 if i in relevant else 0 for i in top]
        n_hits = sum(rel)
        per["precision"].append(n_hits / k)
        per["recall"].append(n_hits / len(relevant))
        dcg = sum(r / math.log2(j + 2) for j, r in enumerate(rel))
        idcg = sum(1 / math.log2(j + 2) for j in range(min(len(relevant), k)))
        per["ndcg"].append(dcg / idcg)
        ap = sum(sum(rel[: j + 1]) / (j + 1) for j, r in enumerate(rel) if r)
        per["map"].append(ap / min(len(relevant), k))
        per["hit_rate"].append(1.0 if n_hits else 0.0)
        first = next((j for j, r in enumerate(rel) if r), None)
        per["mrr"].append(0.0 if first is None else 1 / (first + 1))
    return {name: (sum(v) / len(v) if v else math.nan) for name, v in per.items()}


def _same(a: float, b: float) -> bool:
    return (math.isnan(a) and math.isnan(b)) or math.isclose(a, b, rel_tol=1e-12, abs_tol=1e-12)


@FAST
@given(cases())
def test_matches_per_user_oracle(case) -> None:
    recs, truth, k = case
    expected = _oracle(recs, truth, k)
    for name, metric in ACCURACY.items():
        assert _same(metric(recs, truth, k), expected[name]), name


@FAST
@given(cases())
def test_hits_matrix_matches_set_membership(case) -> None:
    recs, truth, k = case
    hits = m.hits_matrix(recs, truth, k)
    assert hits.shape == (recs.shape[0], k)
    dense = truth.toarray() != 0
    for u in range(recs.shape[0]):
        for j in range(k):
            item = recs[u, j] if j < recs.shape[1] else -1
            assert hits[u, j] == (item >= 0 and bool(dense[u, item]))


@FAST
@given(cases())
def test_metrics_are_bounded_and_nan_only_without_truth(case) -> None:
    recs, truth, k = case
    has_truth = truth.getnnz(axis=1).max() > 0
    for name, metric in ACCURACY.items():
        value = metric(recs, truth, k)
        if has_truth:
            assert 0.0 <= value <= 1.0, name
        else:
            assert math.isnan(value), name
    n_items = truth.shape[1]
    assert 0.0 <= m.catalog_coverage(recs, n_items, k) <= 1.0
    counts = np.arange(n_items) % 4
    value = m.novelty(recs, counts, 4, k)
    assert math.isnan(value) or value >= 0.0
    value = m.intra_list_diversity(recs, np.arange(n_items) % 3, k)
    assert math.isnan(value) or 0.0 <= value <= 1.0
    value = m.cold_item_recall(recs, truth, np.arange(n_items) % 2 == 0, k)
    assert math.isnan(value) or 0.0 <= value <= 1.0
    value = m.slot_share(recs, np.arange(n_items) % 2 == 1, k)
    assert math.isnan(value) or 0.0 <= value <= 1.0


@FAST
@given(cases())
def test_precision_times_k_counts_the_hits(case) -> None:
    recs, truth, k = case
    eligible = truth.getnnz(axis=1) > 0
    if not eligible.any():
        return
    total_hits = m.hits_matrix(recs, truth, k)[eligible].sum()
    assert m.precision_at_k(recs, truth, k) * k * eligible.sum() == pytest.approx(total_hits)


@FAST
@given(cases())
def test_hit_rate_bounds_precision_and_mrr(case) -> None:
    recs, truth, k = case
    hit_rate = m.hit_rate_at_k(recs, truth, k)
    if math.isnan(hit_rate):
        return
    assert hit_rate >= m.precision_at_k(recs, truth, k) - 1e-12
    assert m.mrr_at_k(recs, truth, k) <= hit_rate + 1e-12


@FAST
@given(cases(), st.randoms(use_true_random=False))
def test_invariant_to_permuting_users(case, rnd) -> None:
    recs, truth, k = case
    order = np.array(rnd.sample(range(recs.shape[0]), recs.shape[0]))
    shuffled_recs, shuffled_truth = recs[order], truth[order]
    for name, metric in ACCURACY.items():
        assert _same(metric(recs, truth, k), metric(shuffled_recs, shuffled_truth, k)), name
    report = m.evaluate_ranking(recs, truth, (k,), item_category=np.arange(truth.shape[1]) % 3)
    shuffled = m.evaluate_ranking(
        shuffled_recs, shuffled_truth, (k,), item_category=np.arange(truth.shape[1]) % 3
    )
    assert report.keys() == shuffled.keys()
    assert all(_same(report[key], shuffled[key]) for key in report)


@FAST
@given(cases())
def test_perfect_ranking_scores_one(case) -> None:
    _, truth, k = case
    # Every user gets exactly their relevant items first (at most k of them), then padding.
    n_users = truth.shape[0]
    recs = np.full((n_users, k), -1, dtype=np.int64)
    for u in range(n_users):
        items = truth[u].indices[:k]
        recs[u, : items.size] = items
    fits = (truth.getnnz(axis=1) > 0) & (truth.getnnz(axis=1) <= k)
    ndcg = m.per_user_ndcg(recs, truth, k)
    np.testing.assert_allclose(ndcg[truth.getnnz(axis=1) > 0], 1.0)
    if fits.all() and fits.any():
        assert m.recall_at_k(recs, truth, k) == pytest.approx(1.0)
        assert m.map_at_k(recs, truth, k) == pytest.approx(1.0)
        assert m.mrr_at_k(recs, truth, k) == pytest.approx(1.0)


@FAST
@given(cases(), st.data())
def test_moving_a_hit_below_a_miss_lowers_ndcg(case, data) -> None:
    recs, truth, k = case
    width = min(k, recs.shape[1])
    hits = m.hits_matrix(recs, truth, k)[:, :width]
    # Slots where a hit sits directly above a miss (an empty slot is a miss too).
    users, slots = np.nonzero(hits[:, :-1] & ~hits[:, 1:])
    if users.size == 0:
        return
    pick = data.draw(st.integers(0, users.size - 1))
    u, j = users[pick], slots[pick]
    swapped = recs.copy()
    swapped[u, [j, j + 1]] = swapped[u, [j + 1, j]]
    before = m.per_user_ndcg(recs, truth, k)
    after = m.per_user_ndcg(swapped, truth, k)
    assert after[u] < before[u]
    others = np.arange(recs.shape[0]) != u
    np.testing.assert_array_equal(after[others], before[others])


@FAST
@given(cases())
def test_k_beyond_lists_equals_explicit_padding(case) -> None:
    recs, truth, k = case
    padded = np.hstack([recs, np.full((recs.shape[0], 3), -1, dtype=np.int64)])
    assert m.evaluate_ranking(recs, truth, (k,)).keys() == m.evaluate_ranking(padded, truth, (k,)).keys()
    report, report_padded = m.evaluate_ranking(recs, truth, (k,)), m.evaluate_ranking(padded, truth, (k,))
    assert all(_same(report[key], report_padded[key]) for key in report)


@FAST
@given(cases(), st.integers(1, 4))
def test_evaluate_ranking_agrees_with_single_metrics(case, extra) -> None:
    recs, truth, k = case
    n_items = truth.shape[1]
    cold = np.arange(n_items) % 2 == 0
    report = m.evaluate_ranking(recs, truth, (k, k + extra), cold_items_mask=cold)
    for kk in (k, k + extra):
        for name, metric in ACCURACY.items():
            assert _same(report[f"{name}@{kk}"], metric(recs, truth, kk)), (name, kk)
        assert _same(report[f"coverage@{kk}"], m.catalog_coverage(recs, n_items, kk))
        assert _same(report[f"cold_recall@{kk}"], m.cold_item_recall(recs, truth, cold, kk))


@FAST
@given(
    st.lists(st.one_of(st.just(math.nan), st.floats(0, 1)), min_size=1, max_size=20),
    st.data(),
)
def test_segment_means_match_a_dictionary_of_lists(values, data) -> None:
    labels = data.draw(st.lists(st.sampled_from("abc"), min_size=len(values), max_size=len(values)))
    groups: dict[str, list[float]] = {}
    for value, label in zip(values, labels, strict=True):
        groups.setdefault(label, []).append(value)
    means = m.segment_means(np.array(values), np.array(labels))
    counts = m.segment_counts(np.array(values), np.array(labels))
    assert set(means) == set(counts) == set(groups)
    for label, members in groups.items():
        kept = [v for v in members if not math.isnan(v)]
        assert counts[label] == len(kept)
        assert _same(means[label], sum(kept) / len(kept) if kept else math.nan)
