"""Hand-computed values for every metric in recsys.metrics, plus its input validation.

The shared toy case (6 items, 4 users, k_max = 3):

    user  truth        recs          hits at k=3
    u0    {0, 2}       [0, 1, 2]     [1, 0, 1]
    u1    {1}          [2, 1, -1]    [0, 1, 0]
    u2    {}           [0, 1, 2]     (no truth: left out of accuracy means)
    u3    {3, 4, 5}    [0, -1, -1]   [0, 0, 0]
"""

from __future__ import annotations

import math

import numpy as np
import pytest
import scipy.sparse as sp

from recsys import metrics as m

LOG2_3 = math.log2(3)
N_ITEMS = 6


def _truth(rows: list[list[int]], n_items: int = N_ITEMS) -> sp.csr_matrix:
    """A binary CSR truth matrix from per-user item lists."""
    r = [u for u, items in enumerate(rows) for _ in items]
    c = [i for items in rows for i in items]
    return sp.csr_matrix((np.ones(len(c)), (r, c)), shape=(len(rows), n_items))


@pytest.fixture
def recs() -> np.ndarray:
    return np.array([[0, 1, 2], [2, 1, -1], [0, 1, 2], [0, -1, -1]], dtype=np.int64)


@pytest.fixture
def truth() -> sp.csr_matrix:
    return _truth([[0, 2], [1], [], [3, 4, 5]])


# --------------------------------------------------------------------------- hits


def test_hits_matrix_marks_relevant_slots(recs, truth) -> None:
    expected = np.array([[1, 0, 1], [0, 1, 0], [0, 0, 0], [0, 0, 0]], dtype=bool)
    hits = m.hits_matrix(recs, truth, 3)
    assert hits.dtype == bool
    np.testing.assert_array_equal(hits, expected)


def test_hits_matrix_pads_columns_beyond_the_lists(recs, truth) -> None:
    # k=5 > k_max=3: the two missing slots are empty, hence False.
    hits = m.hits_matrix(recs, truth, 5)
    assert hits.shape == (4, 5)
    assert not hits[:, 3:].any()
    np.testing.assert_array_equal(hits[:, :3], m.hits_matrix(recs, truth, 3))


def test_hits_matrix_truncates_to_k(recs, truth) -> None:
    np.testing.assert_array_equal(m.hits_matrix(recs, truth, 1), [[True], [False], [False], [False]])


def test_empty_slot_is_not_the_previous_users_last_item() -> None:
    # u0 likes item 5 (the last item); u1's slot -1 would key to (u1 * 6 - 1) = (u0, item 5)
    # if padding were not masked.
    truth = _truth([[5], [0]])
    hits = m.hits_matrix(np.array([[1], [-1]]), truth, 1)
    np.testing.assert_array_equal(hits, [[False], [False]])


def test_explicit_zero_and_duplicate_truth_entries() -> None:
    # u0 stores item 1 with value 0 (not relevant) and item 2 twice (1 + 1: relevant once).
    truth = sp.csr_matrix(
        (np.array([0.0, 1.0, 1.0]), np.array([1, 2, 2]), np.array([0, 3])), shape=(1, 4)
    )
    np.testing.assert_array_equal(m.hits_matrix(np.array([[1, 2]]), truth, 2), [[False, True]])
    # |truth(u0)| = 1, so recall = 1/1 (a duplicate must not double the denominator).
    assert m.recall_at_k(np.array([[1, 2]]), truth, 2) == 1.0


def test_truth_accepts_other_sparse_formats(recs, truth) -> None:
    expected = m.hits_matrix(recs, truth, 3)
    np.testing.assert_array_equal(m.hits_matrix(recs, truth.tocoo(), 3), expected)
    np.testing.assert_array_equal(m.hits_matrix(recs, sp.csr_array(truth), 3), expected)


# --------------------------------------------------------------------------- accuracy at k=3


def test_precision_at_3(recs, truth) -> None:
    # u0 2/3, u1 1/3, u3 0/3 (u2 has no truth) -> (2/3 + 1/3 + 0) / 3 = 1/3
    assert m.precision_at_k(recs, truth, 3) == pytest.approx(1 / 3)


def test_recall_at_3(recs, truth) -> None:
    # u0 2/2, u1 1/1, u3 0/3 -> (1 + 1 + 0) / 3 = 2/3
    assert m.recall_at_k(recs, truth, 3) == pytest.approx(2 / 3)


def test_ndcg_at_3(recs, truth) -> None:
    # u0: DCG = 1/log2(2) + 1/log2(4) = 1.5, IDCG over min(2,3)=2 slots = 1 + 1/log2(3)
    # u1: DCG = 1/log2(3), IDCG = 1;  u3: DCG = 0
    u0 = 1.5 / (1 + 1 / LOG2_3)
    u1 = 1 / LOG2_3
    assert m.ndcg_at_k(recs, truth, 3) == pytest.approx((u0 + u1 + 0) / 3)


def test_per_user_ndcg_has_nan_for_users_without_truth(recs, truth) -> None:
    values = m.per_user_ndcg(recs, truth, 3)
    assert values.shape == (4,)
    np.testing.assert_allclose(values[[0, 1, 3]], [1.5 / (1 + 1 / LOG2_3), 1 / LOG2_3, 0.0])
    assert math.isnan(values[2])


def test_map_at_3(recs, truth) -> None:
    # u0: P@1 * 1 + P@3 * 1 = 1 + 2/3 = 5/3, / min(2,3)=2 -> 5/6
    # u1: P@2 * 1 = 1/2, / min(1,3)=1 -> 1/2;  u3: 0
    # mean = (5/6 + 1/2 + 0) / 3 = (4/3) / 3 = 4/9
    assert m.map_at_k(recs, truth, 3) == pytest.approx(4 / 9)


def test_hit_rate_at_3(recs, truth) -> None:
    # u0 hit, u1 hit, u3 miss -> 2/3
    assert m.hit_rate_at_k(recs, truth, 3) == pytest.approx(2 / 3)


def test_mrr_at_3(recs, truth) -> None:
    # first hit: u0 rank 1 -> 1, u1 rank 2 -> 1/2, u3 none -> 0; mean = 1.5 / 3 = 1/2
    assert m.mrr_at_k(recs, truth, 3) == pytest.approx(0.5)


# --------------------------------------------------------------------------- accuracy at other k


def test_accuracy_at_1(recs, truth) -> None:
    # Only slot 1 counts: u0 [0] hit, u1 [2] miss, u3 [0] miss.
    assert m.precision_at_k(recs, truth, 1) == pytest.approx(1 / 3)  # (1 + 0 + 0) / 3
    assert m.recall_at_k(recs, truth, 1) == pytest.approx(1 / 6)  # (1/2 + 0 + 0) / 3
    assert m.ndcg_at_k(recs, truth, 1) == pytest.approx(1 / 3)  # u0: 1 / IDCG(min(2,1)=1) = 1
    assert m.map_at_k(recs, truth, 1) == pytest.approx(1 / 3)  # u0: P@1 / min(2,1) = 1
    assert m.hit_rate_at_k(recs, truth, 1) == pytest.approx(1 / 3)
    assert m.mrr_at_k(recs, truth, 1) == pytest.approx(1 / 3)


def test_k_beyond_list_length_scores_missing_slots_as_misses(recs, truth) -> None:
    # k=5 > k_max=3. Precision divides by 5: (2/5 + 1/5 + 0) / 3 = 1/5.
    assert m.precision_at_k(recs, truth, 5) == pytest.approx(1 / 5)
    # The other metrics see no new hits and the same ideal lengths as at k=3.
    assert m.recall_at_k(recs, truth, 5) == pytest.approx(2 / 3)
    assert m.ndcg_at_k(recs, truth, 5) == pytest.approx(m.ndcg_at_k(recs, truth, 3))
    assert m.map_at_k(recs, truth, 5) == pytest.approx(4 / 9)
    assert m.mrr_at_k(recs, truth, 5) == pytest.approx(0.5)


def test_k_beyond_list_length_equals_explicit_padding(recs, truth) -> None:
    padded = np.hstack([recs, np.full((4, 2), -1)])
    for metric in (m.precision_at_k, m.recall_at_k, m.ndcg_at_k, m.map_at_k, m.hit_rate_at_k, m.mrr_at_k):
        assert metric(recs, truth, 5) == metric(padded, truth, 5), metric.__name__


def test_ideal_dcg_is_capped_at_k() -> None:
    # One user with 3 relevant items, k=2, both slots hit: IDCG over min(3,2)=2 slots -> nDCG 1.
    # MAP: (P@1 + P@2) / min(3,2) = (1 + 1) / 2 = 1.  Recall stays standard: 2/3.
    truth = _truth([[0, 1, 2]], n_items=4)
    recs = np.array([[1, 0]])
    assert m.ndcg_at_k(recs, truth, 2) == pytest.approx(1.0)
    assert m.map_at_k(recs, truth, 2) == pytest.approx(1.0)
    assert m.recall_at_k(recs, truth, 2) == pytest.approx(2 / 3)


def test_interior_empty_slot_keeps_its_position() -> None:
    # [-1, 0]: the hit sits at rank 2 -> nDCG = (1/log2 3) / 1, MRR = 1/2, AP = P@2 = 1/2.
    truth = _truth([[0]], n_items=2)
    recs = np.array([[-1, 0]])
    assert m.ndcg_at_k(recs, truth, 2) == pytest.approx(1 / LOG2_3)
    assert m.mrr_at_k(recs, truth, 2) == pytest.approx(0.5)
    assert m.map_at_k(recs, truth, 2) == pytest.approx(0.5)


def test_no_user_with_truth_gives_nan() -> None:
    truth = _truth([[], []], n_items=3)
    recs = np.array([[0, 1], [2, -1]])
    for metric in (m.precision_at_k, m.recall_at_k, m.ndcg_at_k, m.map_at_k, m.hit_rate_at_k, m.mrr_at_k):
        assert math.isnan(metric(recs, truth, 2)), metric.__name__
    assert np.isnan(m.per_user_ndcg(recs, truth, 2)).all()


def test_zero_users_gives_nan() -> None:
    recs = np.empty((0, 3), dtype=np.int64)
    truth = sp.csr_matrix((0, 4))
    assert math.isnan(m.ndcg_at_k(recs, truth, 3))
    assert m.hits_matrix(recs, truth, 3).shape == (0, 3)


def test_zero_columns_of_recs_are_all_misses() -> None:
    # recs with k_max = 0: every slot is empty; u0 has truth -> precision 0, recall 0.
    truth = _truth([[1]], n_items=2)
    recs = np.empty((1, 0), dtype=np.int64)
    assert m.precision_at_k(recs, truth, 3) == 0.0
    assert m.recall_at_k(recs, truth, 3) == 0.0


# --------------------------------------------------------------------------- cold items


def test_cold_item_recall(recs, truth) -> None:
    cold = np.zeros(N_ITEMS, dtype=bool)
    cold[[2, 3]] = True
    # Cold truth: u0 {2}, u3 {3}; u1 and u2 have none (left out).
    # k=3: u0 recommends 2 -> 1/1; u3 recommends [0] -> 0/1; mean = 1/2
    assert m.cold_item_recall(recs, truth, cold, 3) == pytest.approx(0.5)
    # k=1: u0 [0] -> 0, u3 [0] -> 0
    assert m.cold_item_recall(recs, truth, cold, 1) == 0.0


def test_cold_item_recall_is_nan_without_cold_truth(recs, truth) -> None:
    assert math.isnan(m.cold_item_recall(recs, truth, np.zeros(N_ITEMS, dtype=bool), 3))
    # item 1 is cold and recommended, but only u1 likes it -> u1 1/1 = 1 (u0 not counted).
    only_one = np.zeros(N_ITEMS, dtype=bool)
    only_one[1] = True
    assert m.cold_item_recall(recs, truth, only_one, 3) == 1.0


def test_cold_item_recall_rejects_a_mask_of_the_wrong_length(recs, truth) -> None:
    with pytest.raises(ValueError, match="cold_items_mask has 5 entries but there are 6 items"):
        m.cold_item_recall(recs, truth, np.zeros(5, dtype=bool), 3)
    with pytest.raises(ValueError, match="cold_items_mask must be a boolean array"):
        m.cold_item_recall(recs, truth, np.zeros(N_ITEMS, dtype=int), 3)


# --------------------------------------------------------------------------- catalogue metrics


def test_catalog_coverage(recs) -> None:
    # k=3: distinct {0, 1, 2} -> 3/6; k=1: {0, 2} -> 2/6; padding is not an item.
    assert m.catalog_coverage(recs, N_ITEMS, 3) == pytest.approx(0.5)
    assert m.catalog_coverage(recs, N_ITEMS, 1) == pytest.approx(1 / 3)
    assert m.catalog_coverage(np.full((2, 3), -1), N_ITEMS, 3) == 0.0


def test_catalog_coverage_rejects_items_outside_the_catalogue(recs) -> None:
    with pytest.raises(ValueError, match=r"item index 2 but the catalogue \(n_items\) has only 2 items"):
        m.catalog_coverage(recs, 2, 3)
    with pytest.raises(ValueError, match="n_items must be >= 1"):
        m.catalog_coverage(recs, 0, 3)


def test_novelty(recs) -> None:
    counts = np.array([8, 4, 2, 1, 0, 0])
    # -log2(max(c,1)/8): item0 0, item1 1, item2 2, item3 3, item4/5 3 (zero counts as one)
    # k=3 filled slots: u0 0+1+2, u1 2+1, u2 0+1+2, u3 0 -> 9 bits over 9 slots = 1.0
    assert m.novelty(recs, counts, 8, 3) == pytest.approx(1.0)
    # k=1: u0 item0 0, u1 item2 2, u2 item0 0, u3 item0 0 -> 2 / 4 = 0.5
    assert m.novelty(recs, counts, 8, 1) == pytest.approx(0.5)
    # Never-seen items: -log2(1/8) = 3 bits.
    assert m.novelty(np.array([[4, 5]]), counts, 8, 2) == pytest.approx(3.0)


def test_novelty_nan_and_validation(recs) -> None:
    counts = np.array([8, 4, 2, 1, 0, 0])
    assert math.isnan(m.novelty(np.full((2, 2), -1), counts, 8, 2))
    with pytest.raises(ValueError, match="item_counts holds 8 but n_users is 7"):
        m.novelty(recs, counts, 7, 3)
    with pytest.raises(ValueError, match="item_counts must be >= 0"):
        m.novelty(recs, -counts, 8, 3)
    with pytest.raises(ValueError, match="item index 2 but item_counts has only 2 items"):
        m.novelty(recs, counts[:2], 8, 3)


def test_intra_list_diversity(recs) -> None:
    category = np.array([0, 0, 1, 1, 2, 2])
    # k=3: u0 cats [0,0,1] -> pairs (0,1) same, (0,2) diff, (1,2) diff -> 2/3
    #      u1 cats [1,0] -> 1/1;  u2 like u0 -> 2/3;  u3 one filled slot -> left out
    # mean = (2/3 + 1 + 2/3) / 3 = 7/9
    assert m.intra_list_diversity(recs, category, 3) == pytest.approx(7 / 9)
    # k=1: nobody has two items -> NaN
    assert math.isnan(m.intra_list_diversity(recs, category, 1))


def test_intra_list_diversity_with_sparse_large_codes() -> None:
    # Codes need not be dense: [100, -7, 100, 5] on a list of 4 -> 6 pairs, 1 same -> 5/6.
    category = np.array([100, -7, 100, 5])
    assert m.intra_list_diversity(np.array([[0, 1, 2, 3]]), category, 4) == pytest.approx(5 / 6)
    with pytest.raises(ValueError, match="integer category codes"):
        m.intra_list_diversity(np.array([[0, 1]]), np.array(["a", "b"]), 2)


def test_slot_share_and_catalog_share(recs) -> None:
    mask = np.zeros(N_ITEMS, dtype=bool)
    mask[[2, 3]] = True
    # k=3: 9 filled slots, item 2 appears for u0, u1, u2 -> 3/9
    assert m.slot_share(recs, mask, 3) == pytest.approx(1 / 3)
    # k=1: slots [0, 2, 0, 0] -> 1/4
    assert m.slot_share(recs, mask, 1) == pytest.approx(0.25)
    assert math.isnan(m.slot_share(np.full((1, 2), -1), mask, 2))
    # 2 of 6 items flagged
    assert m.catalog_share(mask) == pytest.approx(1 / 3)
    assert math.isnan(m.catalog_share(np.zeros(0, dtype=bool)))
    with pytest.raises(ValueError, match="item_mask must be a boolean array"):
        m.slot_share(recs, np.array([2, 3, 0, 0, 0, 0]), 3)


# --------------------------------------------------------------------------- segments, ratio


def test_segment_means_and_counts() -> None:
    per_user = np.array([1.0, 0.5, np.nan, 0.0, 2.0, np.nan])
    labels = np.array(["urban", "rural", "urban", "rural", "x", "none"])
    # urban: mean(1.0) = 1.0 (NaN ignored), rural: (0.5 + 0.0)/2 = 0.25, x: 2.0, none: all NaN
    means = m.segment_means(per_user, labels)
    assert list(means) == ["none", "rural", "urban", "x"]
    assert means["urban"] == 1.0 and means["rural"] == 0.25 and means["x"] == 2.0
    assert math.isnan(means["none"])
    assert m.segment_counts(per_user, labels) == {"none": 0, "rural": 2, "urban": 1, "x": 1}


def test_segment_labels_become_strings() -> None:
    assert m.segment_means(np.array([1.0, 3.0, 5.0]), np.array([7, 7, 8])) == {"7": 2.0, "8": 5.0}


def test_segment_length_mismatch() -> None:
    with pytest.raises(ValueError, match="per_user has 2 values but labels has 3"):
        m.segment_means(np.array([1.0, 2.0]), np.array(["a", "b", "c"]))


@pytest.mark.parametrize(
    ("a", "b", "expected"), [(1.0, 2.0, 0.5), (0.0, 4.0, 0.0), (3.0, -1.5, -2.0)]
)
def test_ratio(a: float, b: float, expected: float) -> None:
    assert m.ratio(a, b) == expected


@pytest.mark.parametrize(("a", "b"), [(1.0, 0.0), (0.0, 0.0), (1.0, math.nan), (math.nan, 2.0)])
def test_ratio_nan(a: float, b: float) -> None:
    assert math.isnan(m.ratio(a, b))


# --------------------------------------------------------------------------- evaluate_ranking


def test_evaluate_ranking_core_keys_match_single_metrics(recs, truth) -> None:
    report = m.evaluate_ranking(recs, truth, (1, 3))
    names = ("precision", "recall", "ndcg", "map", "hit_rate", "mrr", "coverage")
    assert set(report) == {f"{n}@{k}" for n in names for k in (1, 3)}
    assert report["precision@3"] == pytest.approx(1 / 3)
    assert report["recall@1"] == pytest.approx(1 / 6)
    assert report["map@3"] == pytest.approx(4 / 9)
    assert report["mrr@3"] == pytest.approx(0.5)
    assert report["coverage@3"] == pytest.approx(0.5)
    assert report["ndcg@3"] == pytest.approx(m.ndcg_at_k(recs, truth, 3))
    assert report["hit_rate@1"] == pytest.approx(1 / 3)


def test_evaluate_ranking_with_every_extra(recs, truth) -> None:
    cold = np.zeros(N_ITEMS, dtype=bool)
    cold[[2, 3]] = True
    report = m.evaluate_ranking(
        recs, truth, (1, 3),
        item_counts=np.array([8, 4, 2, 1, 0, 0]), n_users_total=8,
        item_category=np.array([0, 0, 1, 1, 2, 2]), cold_items_mask=cold,
    )
    assert report["novelty@3"] == pytest.approx(1.0)
    assert report["novelty@1"] == pytest.approx(0.5)
    assert report["diversity@3"] == pytest.approx(7 / 9)
    assert math.isnan(report["diversity@1"])
    assert report["cold_recall@3"] == pytest.approx(0.5)
    assert report["cold_recall@1"] == 0.0
    # k beyond the lists is scored like padding
    assert m.evaluate_ranking(recs, truth, (5,))["precision@5"] == pytest.approx(1 / 5)


def test_evaluate_ranking_validation(recs, truth) -> None:
    with pytest.raises(ValueError, match="pass both or neither"):
        m.evaluate_ranking(recs, truth, (3,), item_counts=np.ones(N_ITEMS))
    with pytest.raises(ValueError, match="at least one cut-off"):
        m.evaluate_ranking(recs, truth, ())
    with pytest.raises(ValueError, match="every k in k_values must be >= 1"):
        m.evaluate_ranking(recs, truth, (3, 0))
    with pytest.raises(ValueError, match="item_counts has 5 entries but truth has 6 items"):
        m.evaluate_ranking(recs, truth, (3,), item_counts=np.ones(5), n_users_total=8)
    with pytest.raises(ValueError, match="item_category has 5 entries but there are 6 items"):
        m.evaluate_ranking(recs, truth, (3,), item_category=np.zeros(5, dtype=int))


# --------------------------------------------------------------------------- validation


def test_k_must_be_a_positive_integer(recs, truth) -> None:
    with pytest.raises(ValueError, match="k must be >= 1, got 0"):
        m.precision_at_k(recs, truth, 0)
    with pytest.raises(ValueError, match="k must be >= 1, got -2"):
        m.ndcg_at_k(recs, truth, -2)
    with pytest.raises(ValueError, match="k must be an integer"):
        m.recall_at_k(recs, truth, 2.0)
    with pytest.raises(ValueError, match="k must be an integer"):
        m.recall_at_k(recs, truth, True)
    assert m.precision_at_k(recs, truth, np.int64(3)) == pytest.approx(1 / 3)


def test_shape_mismatch(recs, truth) -> None:
    with pytest.raises(ValueError, match="recs has 3 user rows but truth has 4"):
        m.map_at_k(recs[:3], truth, 3)


def test_recs_must_be_2d_integers(truth) -> None:
    with pytest.raises(ValueError, match=r"recs must be a 2-D array .* got shape \(4,\)"):
        m.hits_matrix(np.arange(4), truth, 3)
    with pytest.raises(ValueError, match="recs must hold integer item indices, got dtype float64"):
        m.hits_matrix(np.zeros((4, 3)), truth, 3)


def test_recs_values_must_be_items_or_padding(recs, truth) -> None:
    bad = recs.copy()
    bad[1, 2] = -2
    with pytest.raises(ValueError, match="recs holds -2"):
        m.mrr_at_k(bad, truth, 3)
    bad[1, 2] = 6
    with pytest.raises(ValueError, match="recs holds item index 6 but truth has only 6 items"):
        m.hit_rate_at_k(bad, truth, 3)


def test_repeated_items_are_rejected_but_repeated_padding_is_not(recs, truth) -> None:
    bad = recs.copy()
    bad[2] = [1, 0, 1]
    with pytest.raises(ValueError, match="recs row 2 lists item 1 more than once in its top 3"):
        m.precision_at_k(bad, truth, 3)
    # Only the first k columns are read: the repeat at column 3 is outside top 2.
    assert m.precision_at_k(bad, truth, 2) == pytest.approx(m.precision_at_k(recs, truth, 2))


def test_truth_must_be_sparse(recs, truth) -> None:
    with pytest.raises(ValueError, match="truth must be a scipy.sparse matrix, got ndarray"):
        m.ndcg_at_k(recs, truth.toarray(), 3)
