"""``build_dataset`` on a hand-made store: weights, decay, cleaning, truth, cold items, axes.

Every expected number below is computed by hand from the rows in :func:`frames`, with
non-default action weights so that a silently ignored setting shows up.
"""

from __future__ import annotations

import math
from datetime import UTC, datetime, timedelta

import numpy as np
import polars as pl
import pytest

from features import schemas
from features.dataset import Dataset, StoreFrames, build_dataset
from features.events import decayed_weight
from recsys.settings import EngineSettings

END = datetime(2026, 10, 31, 12, 0, tzinfo=UTC)
"""The last interaction: the reference time of the full data."""
TEST_DAYS = 5.0
CUTOFF = END - timedelta(days=TEST_DAYS)
HALF_LIFE = 10.0

SETTINGS = EngineSettings(
    action_weights={"view": 2.0, "click": 0.5, "favorite": 4.0, "share": 0.0, "reserve": 7.0, "attend": 10.0},
    rate_weight_per_star=2.0, half_life_days=HALF_LIFE, confidence="log", alpha=3.0,
)

ITEMS = ["i1", "i2", "i3", "i4", "i5", "i6", "i7", "i_cold", "i_hidden"]
USERS = ["u1", "u2", "u3", "u4"]  # u4 never interacts; u5 appears only in interactions


def _event(user: str, item: str, action: str, ts: datetime, value: float | None = None) -> dict:
    return {"user_id": user, "item_id": item, "action": action, "ts": ts, "value": value}


EVENTS = [
    # training window (before the cutoff)
    _event("u1", "i1", "view", END - timedelta(days=HALF_LIFE)),
    _event("u1", "i1", "view", END - timedelta(days=HALF_LIFE)),  # exact duplicate: dropped
    _event("u1", "i2", "reserve", END - timedelta(days=2 * HALF_LIFE)),
    _event("u1", "i_hidden", "reserve", END - timedelta(days=8)),  # hidden item: dropped
    _event("u2", "i1", "share", CUTOFF - timedelta(days=2)),  # weight 0 in SETTINGS: no pair
    _event("u2", "i3", "click", CUTOFF - timedelta(days=1)),
    _event("u3", "i6", "favorite", CUTOFF - timedelta(days=3)),
    # test window (at or after the cutoff)
    _event("u2", "i2", "rate", END, 4.5),  # positive, new to u2: truth
    _event("u2", "i3", "attend", CUTOFF + timedelta(days=1)),  # positive but u2 had i3 in training
    _event("u2", "i4", "view", CUTOFF + timedelta(days=2)),  # not a positive action
    _event("u3", "i7", "attend", CUTOFF),  # exactly at the cutoff: test side; i7 is cold: truth
    _event("u3", "i6", "rate", CUTOFF + timedelta(days=2), 3.0),  # rating below 4: not positive
    _event("u3", "i_hidden", "attend", CUTOFF + timedelta(days=1)),  # hidden: dropped
    _event("u5", "i5", "reserve", CUTOFF + timedelta(days=1)),  # u5 unseen in training: not truth
]


def frames() -> StoreFrames:
    items = pl.DataFrame({
        "item_id": ITEMS,
        "title": [f"活动 {i}" for i in ITEMS],
        "kind": ["event"] * len(ITEMS),
        "category": ["音乐"] * len(ITEMS),
        "tags": [["民乐"]] * len(ITEMS),
        "region_code": ["110101"] * len(ITEMS),
        "hidden": [item == "i_hidden" for item in ITEMS],
    }, schema_overrides={"tags": pl.List(pl.String)})
    items = items.select([
        (pl.col(c) if c in items.columns else pl.lit(None)).cast(t).alias(c) for c, t in schemas.ITEMS.items()
    ])
    users = pl.DataFrame({
        "user_id": USERS, "region_code": ["110101", "110119", "110119", "110105"],
        "age_band": ["18-34", "60+", "35-59", "0-17"], "area_type": ["urban", "rural", "rural", "urban"],
    }).select([(pl.col(c) if c != "registered_at" else pl.lit(None)).cast(t).alias(c)
               for c, t in schemas.USERS.items()])
    interactions = pl.DataFrame(EVENTS, schema=schemas.INTERACTIONS)
    return StoreFrames(interactions.lazy(), users.lazy(), items.lazy())


@pytest.fixture(scope="module")
def dataset() -> Dataset:
    return build_dataset(frames(), SETTINGS, test_days=TEST_DAYS, seed=3)


def _weight(data, user: str, item: str) -> float:
    row = data.users.users.index_of(user)
    column = data.catalog.items.index_of(item)
    return float(data.weights[row, column])


def test_axes_hold_every_catalog_item_and_every_known_user(dataset: Dataset) -> None:
    full = dataset.full
    assert list(full.catalog.items.ids) == sorted(ITEMS)
    assert list(full.users.users.ids) == ["u1", "u2", "u3", "u4", "u5"]
    assert full.matrix.shape == (5, len(ITEMS))


def test_train_and_full_share_axes(dataset: Dataset) -> None:
    train = dataset.split.train
    assert train.matrix.shape == dataset.full.matrix.shape == dataset.split.truth.shape
    assert list(train.catalog.items.ids) == list(dataset.full.catalog.items.ids)
    assert list(train.users.users.ids) == list(dataset.full.users.users.ids)
    assert train.seed == dataset.full.seed == 3


def test_decay_halves_the_weight_at_one_half_life(dataset: Dataset) -> None:
    # view weight 2.0 (from SETTINGS, default is 1.0), 10 days = one half-life before END
    assert _weight(dataset.full, "u1", "i1") == pytest.approx(1.0, rel=1e-6)


def test_duplicate_rows_count_once(dataset: Dataset) -> None:
    # had the duplicate been kept the pair would weigh 2.0 · 0.5 · 2 = 2.0
    assert _weight(dataset.full, "u1", "i1") != pytest.approx(2.0)
    assert dataset.n_events == 11  # 14 rows - 1 duplicate - 2 on the hidden item


def test_configured_action_weights_and_two_half_lives(dataset: Dataset) -> None:
    assert _weight(dataset.full, "u1", "i2") == pytest.approx(7.0 * 0.25, rel=1e-6)  # reserve, 20 days
    assert _weight(dataset.full, "u2", "i2") == pytest.approx(4.5 * 2.0, rel=1e-6)  # rate x per star, age 0
    assert _weight(dataset.full, "u3", "i7") == pytest.approx(10.0 * 0.5 ** (TEST_DAYS / HALF_LIFE), rel=1e-6)


def test_summed_weights_per_pair(dataset: Dataset) -> None:
    # u2/i3: click 6 days before END (0.5 · 0.5^0.6) + attend 4 days before END (10 · 0.5^0.4)
    expected = 0.5 * 0.5 ** (6 / HALF_LIFE) + 10.0 * 0.5 ** (4 / HALF_LIFE)
    assert _weight(dataset.full, "u2", "i3") == pytest.approx(expected, rel=1e-6)
    # u3/i6: favorite 8 days before END (4 · 0.5^0.8) + rating 3 stars 3 days before END (3 · 2 · 0.5^0.3)
    expected = 4.0 * 0.5 ** (8 / HALF_LIFE) + 6.0 * 0.5 ** (3 / HALF_LIFE)
    assert _weight(dataset.full, "u3", "i6") == pytest.approx(expected, rel=1e-6)


def test_train_weights_decay_from_the_cutoff(dataset: Dataset) -> None:
    train = dataset.split.train
    # the u1/i1 view is 5 days before the cutoff
    assert _weight(train, "u1", "i1") == pytest.approx(2.0 * 0.5 ** (5 / HALF_LIFE), rel=1e-6)
    assert _weight(train, "u2", "i3") == pytest.approx(0.5 * 0.5 ** (1 / HALF_LIFE), rel=1e-6)
    # nothing at or after the cutoff leaks into training
    assert _weight(train, "u2", "i2") == 0.0
    assert _weight(train, "u3", "i7") == 0.0
    assert train.weights.nnz == 4


def test_zero_weight_actions_leave_no_pair(dataset: Dataset) -> None:
    assert _weight(dataset.full, "u2", "i1") == 0.0
    assert _weight(dataset.split.train, "u2", "i1") == 0.0
    assert _weight(dataset.full, "u2", "i4") == pytest.approx(2.0 * 0.5 ** (3 / HALF_LIFE), rel=1e-6)


def test_hidden_items_interactions_are_dropped(dataset: Dataset) -> None:
    hidden = dataset.full.catalog.items.index_of("i_hidden")
    assert dataset.full.weights[:, hidden].nnz == 0
    assert dataset.split.train.weights[:, hidden].nnz == 0
    assert dataset.split.truth[:, hidden].nnz == 0
    assert dataset.full.catalog.hidden[hidden]


def test_confidence_is_the_configured_transform_of_the_weights(dataset: Dataset) -> None:
    full = dataset.full
    assert (full.matrix != 0).sum() == full.weights.nnz
    np.testing.assert_allclose(full.matrix.data, 1.0 + 3.0 * np.log1p(full.weights.data), rtol=1e-6)


def test_truth_is_new_positive_items_of_users_seen_in_training(dataset: Dataset) -> None:
    truth = dataset.split.truth
    coo = truth.tocoo()
    users, items = dataset.full.users.users.ids, dataset.full.catalog.items.ids
    pairs = {(users[u], items[i]) for u, i in zip(coo.row, coo.col, strict=True)}
    assert pairs == {("u2", "i2"), ("u3", "i7")}
    assert set(truth.data.tolist()) == {1.0}


def test_cold_items_are_those_without_training_interactions(dataset: Dataset) -> None:
    ids = dataset.full.catalog.items.ids
    cold = {ids[i] for i in np.flatnonzero(dataset.split.cold_items)}
    assert cold == {"i4", "i5", "i7", "i_cold", "i_hidden"}
    assert dataset.split.cold_items.dtype == bool


def test_split_bounds(dataset: Dataset) -> None:
    assert dataset.split.cutoff == CUTOFF
    assert dataset.data_end == END
    assert dataset.data_start == END - timedelta(days=2 * HALF_LIFE)


def test_without_test_days_there_is_no_split() -> None:
    data = build_dataset(frames(), SETTINGS, test_days=None)
    assert data.split is None
    assert math.isclose(_weight(data.full, "u1", "i1"), 1.0, rel_tol=1e-6)


def test_a_store_without_visible_interactions_is_refused() -> None:
    empty = frames()
    only_hidden = pl.DataFrame([EVENTS[3]], schema=schemas.INTERACTIONS).lazy()
    with pytest.raises(ValueError, match="no interactions"):
        build_dataset(StoreFrames(only_hidden, empty.users, empty.items), SETTINGS)


def test_an_ancient_event_stays_in_the_history_structure() -> None:
    """A 40-year-old view decays below float32's range; it must still count as engaged."""
    frame = pl.DataFrame({
        "ts": [datetime(1986, 1, 1, tzinfo=UTC), datetime(2026, 1, 1, tzinfo=UTC)],
        "weight": [1.0, 0.0],
    })
    out = frame.with_columns(decayed_weight(datetime(2026, 1, 2, tzinfo=UTC), 30.0))["weight"]
    assert out[0] > 0 and float(np.float32(out[0])) > 0  # floored, survives the float32 cast
    assert out[1] == 0.0  # a zero-weight action stays zero (it is dropped, not floored)
