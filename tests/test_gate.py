"""The promotion gate: tolerance boundary, rural floor, unmeasurable ratio, first model."""

from __future__ import annotations

import math

import pytest
from hypothesis import given
from hypothesis import strategies as st

from training.gate import decide


def test_candidate_exactly_at_the_tolerance_bar_is_promoted() -> None:
    champion, tolerance = 0.5, 0.02
    bar = champion * (1.0 - tolerance)
    decision = decide(bar, 1.0, champion, tolerance=tolerance, rural_floor=0.8)
    assert decision.promote is True
    assert any(">= champion" in reason for reason in decision.reasons)


def test_candidate_just_below_the_tolerance_bar_is_refused() -> None:
    champion, tolerance = 0.5, 0.02
    bar = champion * (1.0 - tolerance)
    decision = decide(math.nextafter(bar, 0.0), 1.0, champion, tolerance=tolerance, rural_floor=0.8)
    assert decision.promote is False
    assert any("< champion" in reason for reason in decision.reasons)


def test_better_candidate_is_promoted_and_much_worse_is_refused() -> None:
    assert decide(0.30, 1.0, 0.25).promote is True
    assert decide(0.20, 1.0, 0.25).promote is False


def test_zero_tolerance_requires_at_least_the_champion_score() -> None:
    assert decide(0.25, 1.0, 0.25, tolerance=0.0).promote is True
    assert decide(math.nextafter(0.25, 0.0), 1.0, 0.25, tolerance=0.0).promote is False


def test_rural_floor_refuses_even_a_better_candidate() -> None:
    decision = decide(0.40, 0.79, 0.25, rural_floor=0.8)
    assert decision.promote is False
    assert any("rural/urban" in reason and "< floor" in reason for reason in decision.reasons)


def test_ratio_exactly_at_the_floor_passes() -> None:
    decision = decide(0.40, 0.8, 0.25, rural_floor=0.8)
    assert decision.promote is True
    assert any(">= floor" in reason for reason in decision.reasons)


def test_nan_ratio_skips_the_rural_check_with_a_note() -> None:
    decision = decide(0.30, float("nan"), 0.25, rural_floor=0.8)
    assert decision.promote is True
    assert any("not measurable" in reason for reason in decision.reasons)


def test_nan_ratio_does_not_rescue_a_worse_candidate() -> None:
    assert decide(0.10, float("nan"), 0.25).promote is False


def test_first_model_is_promoted_when_it_passes_the_floor() -> None:
    decision = decide(0.01, 0.9, None)
    assert decision.promote is True
    assert "no champion yet" in decision.reasons


def test_first_model_still_needs_the_rural_floor() -> None:
    decision = decide(0.50, 0.5, None, rural_floor=0.8)
    assert decision.promote is False
    assert "no champion yet" in decision.reasons


def test_non_finite_candidate_is_never_promoted() -> None:
    assert decide(float("nan"), 1.0, None).promote is False
    assert decide(float("nan"), 1.0, 0.1).promote is False


def test_nan_champion_score_counts_as_no_champion() -> None:
    decision = decide(0.05, 1.0, float("nan"))
    assert decision.promote is True
    assert "no champion yet" in decision.reasons


def test_decision_serialises_to_a_plain_dict() -> None:
    decision = decide(0.3, 0.9, 0.25)
    assert decision.to_dict() == {"promote": True, "reasons": decision.reasons}
    assert len(decision.reasons) == 2


unit = st.floats(min_value=0.0, max_value=1.0, allow_nan=False)


@given(candidate=unit, champion=st.one_of(st.none(), unit), ratio=st.one_of(st.just(float("nan")), unit),
       tolerance=st.floats(min_value=0.0, max_value=0.5), floor=st.floats(min_value=0.0, max_value=1.0))
def test_promotes_exactly_when_both_rules_hold(candidate: float, champion: float | None, ratio: float,
                                              tolerance: float, floor: float) -> None:
    accurate = champion is None or candidate >= champion * (1.0 - tolerance)
    fair = math.isnan(ratio) or ratio >= floor
    decision = decide(candidate, ratio, champion, tolerance=tolerance, rural_floor=floor)
    assert decision.promote is (accurate and fair)
    assert len(decision.reasons) == 2


@pytest.mark.parametrize("tolerance", [0.0, 0.02, 0.1])
def test_tolerance_bar_is_the_documented_product(tolerance: float) -> None:
    champion = 0.0793
    bar = champion * (1.0 - tolerance)
    assert decide(bar, 1.0, champion, tolerance=tolerance).promote is True
    assert decide(math.nextafter(bar, 0.0), 1.0, champion, tolerance=tolerance).promote is False
