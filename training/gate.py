"""The promotion gate: a new model replaces the champion only if it is not worse.

Promote when both hold:
- NDCG@10(candidate) >= NDCG@10(champion on the same new test window) x (1 - tolerance);
- rural/urban NDCG ratio(candidate) >= floor (skipped, with a note, when the window has no
  rural or no urban users to measure it).
With no champion yet, the first model is promoted if it passes the rural floor. With exposure
floors configured, a model whose re-ranked lists leave a group more than the tolerance below
its floor is refused too (:func:`require_floors`).
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field


@dataclass
class GateDecision:
    promote: bool
    reasons: list[str] = field(default_factory=list)

    def to_dict(self) -> dict[str, object]:
        return {"promote": self.promote, "reasons": self.reasons}


def decide(candidate_ndcg: float, candidate_ratio: float, champion_ndcg: float | None, *,
           tolerance: float = 0.02, rural_floor: float = 0.8) -> GateDecision:
    reasons: list[str] = []
    ok = True
    if not math.isfinite(candidate_ndcg):
        return GateDecision(False, ["candidate NDCG@10 is not a number"])
    if champion_ndcg is not None and math.isfinite(champion_ndcg):
        bar = champion_ndcg * (1.0 - tolerance)
        if candidate_ndcg < bar:
            ok = False
            reasons.append(f"NDCG@10 {candidate_ndcg:.4f} < champion {champion_ndcg:.4f} - {tolerance:.0%} = {bar:.4f}")
        else:
            reasons.append(f"NDCG@10 {candidate_ndcg:.4f} >= champion {champion_ndcg:.4f} - {tolerance:.0%}")
    else:
        reasons.append("no champion yet")
    if math.isfinite(candidate_ratio):
        if candidate_ratio < rural_floor:
            ok = False
            reasons.append(f"rural/urban NDCG ratio {candidate_ratio:.3f} < floor {rural_floor}")
        else:
            reasons.append(f"rural/urban NDCG ratio {candidate_ratio:.3f} >= floor {rural_floor}")
    else:
        reasons.append("rural/urban ratio not measurable on this window (gate skipped)")
    return GateDecision(ok, reasons)


def require_floors(decision: GateDecision, misses: list[str]) -> None:
    """Refuse the model when an exposure group misses its floor (``misses``: one sentence per group)."""
    if misses:
        decision.promote = False
        decision.reasons.extend(misses)


def log_decision(decision: GateDecision, promoted: bool, **figures: object) -> None:
    """Record the decision on the active MLflow run: ``gate.promote``, ``gate.promoted`` and one
    ``gate.reason.N`` tag per reason, plus ``gate.json`` with the reasons and the compared figures
    (the candidate's and champion's NDCG@10, the ratio, tolerance and floor, the versions)."""
    import mlflow

    mlflow.set_tags({"gate.promote": str(decision.promote).lower(), "gate.promoted": str(promoted).lower(),
                     "gate.decision": "promoted" if promoted else "refused" if not decision.promote
                     else "not promoted",
                     **{f"gate.reason.{n}": reason[:5000] for n, reason in enumerate(decision.reasons)}})
    mlflow.log_dict({**decision.to_dict(), "promoted": promoted, **_finite(figures)}, "gate.json")


def _finite(figures: dict[str, object]) -> dict[str, object]:
    """JSON has no NaN: an unmeasurable figure is null."""
    return {k: None if isinstance(v, float) and not math.isfinite(v) else v for k, v in figures.items()}
