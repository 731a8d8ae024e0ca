"""The promotion gate: a new model replaces the champion only if it is not worse.

Promote when both hold:
- NDCG@10(candidate) >= NDCG@10(champion on the same new test window) x (1 - tolerance);
- rural/urban NDCG ratio(candidate) >= floor (skipped, with a note, when the window has no
  rural or no urban users to measure it).
With no champion yet, the first model is promoted if it passes the rural floor.
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
