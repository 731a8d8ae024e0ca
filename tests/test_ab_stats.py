"""The A/B test's statistics and assignment, offline: A/A false positives near the nominal 5%, a real
difference found, stable and proportional assignment, the experiment file replaced whole."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

from recsys.ab_stats import compare
from recsys.experiment import (
    CHALLENGER,
    CHAMPION,
    ExperimentFileError,
    assign,
    new_experiment,
    read_state,
    stopped,
    write_state,
)


def _arm(rng: np.random.Generator, users: int, rate: float) -> tuple[np.ndarray, np.ndarray]:
    """Per user: slots shown and clicks, users differing in appetite (beta-distributed click rates)."""
    shown = rng.poisson(12, users) + 1
    appetite = rng.beta(2, 2 / rate - 2, users)  # mean ``rate``
    return rng.binomial(shown, appetite), shown


@pytest.mark.parametrize("method", ["bootstrap", "delta"])
def test_an_aa_test_is_not_different_at_about_the_nominal_rate(method: str) -> None:
    seeds = 200
    positives = 0
    for seed in range(seeds):
        rng = np.random.default_rng(seed)
        result = compare(_arm(rng, 300, 0.1), _arm(rng, 300, 0.1), method=method, resamples=400, seed=seed)
        positives += result.verdict != "not yet known"
    assert 0.01 <= positives / seeds <= 0.1, positives


def test_a_better_challenger_is_reported_better_and_a_small_sample_is_not_yet_known() -> None:
    rng = np.random.default_rng(7)
    result = compare(_arm(rng, 2000, 0.10), _arm(rng, 2000, 0.13), seed=1)
    assert result.verdict == "better" and result.difference.low > 0 and result.users_needed is None
    assert result.challenger.low < result.challenger.value < result.challenger.high
    small = compare(_arm(rng, 20, 0.10), _arm(rng, 20, 0.11), seed=1)
    assert small.verdict == "not yet known" and small.users_needed is not None and small.users_needed > 100
    worse = compare(_arm(rng, 2000, 0.13), _arm(rng, 2000, 0.10), method="delta")
    assert worse.verdict == "worse"


def test_assignment_is_deterministic_proportional_and_reshuffled_by_the_salt() -> None:
    state = new_experiment("7", 0.2)
    users = [f"u{i}" for i in range(20_000)]
    arms = [assign(state, u) for u in users]
    assert arms == [assign(state.model_copy(), u) for u in users]
    assert abs(arms.count(CHALLENGER) / len(users) - 0.2) < 0.015
    assert assign(state, None) == CHAMPION
    other = new_experiment("7", 0.2)
    assert sum(a != assign(other, u) for a, u in zip(arms, users, strict=True)) > 2000
    assert {assign(stopped(state, "done"), u) for u in users[:200]} == {CHAMPION}


def test_the_experiment_file_is_replaced_whole(tmp_path: Path) -> None:
    path = tmp_path / "serving" / "experiment.json"
    assert read_state(path) is None
    state = new_experiment("3", 0.5, champion="2")
    write_state(path, state)
    assert read_state(path) == state
    write_state(path, stopped(state, "operator"))
    again = read_state(path)
    assert again is not None and not again.running and again.stop_reason == "operator"
    assert [p.name for p in path.parent.iterdir()] == ["experiment.json"]
    path.write_text("{not json")
    with pytest.raises(ExperimentFileError):
        read_state(path)
