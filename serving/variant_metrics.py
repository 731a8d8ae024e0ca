"""Prometheus counters per experiment variant: what the online metrics and the guardrails watch live.

Lists, empty lists, fallbacks and failed list requests per variant (``champion``,
``challenger``) and endpoint, and the posted interactions that name a served list
(``recommendation_id``), per variant and action: click-through per variant is
``recsys_variant_interactions_total{action="click"} / recsys_variant_lists_total``. A variant
label stays ``champion`` while no A/B test runs. The same tallies, kept in memory per variant,
feed the server's own guardrail check (:mod:`serving.experiment`).
"""

from __future__ import annotations

import threading
from collections import Counter as Tally
from collections.abc import Iterable

from prometheus_client import CollectorRegistry, Counter


class VariantCounters:
    """The per-variant counters of one server process."""

    def __init__(self, registry: CollectorRegistry) -> None:
        r = registry
        self.lists = Counter("recsys_variant_lists", "Lists served, by experiment variant and endpoint",
                             ["variant", "endpoint"], registry=r)
        self.empty = Counter("recsys_variant_empty_lists", "Lists served with no item, by variant and endpoint",
                             ["variant", "endpoint"], registry=r)
        self.fallbacks = Counter("recsys_variant_fallbacks", "Lists served from a fallback, by variant and endpoint",
                                 ["variant", "endpoint"], registry=r)
        self.errors = Counter("recsys_variant_errors", "List requests that failed on the server (5xx), by variant",
                              ["variant"], registry=r)
        self.interactions = Counter("recsys_variant_interactions", "Posted interactions naming a served list, by "
                                    "variant and action", ["variant", "action"], registry=r)
        self._lock = threading.Lock()
        self.tally: dict[str, Tally[str]] = {}
        """Per variant: ``lists``, ``empty``, ``errors`` since this process started (for guardrails)."""

    def listed(self, endpoint: str, variant: str, fallback: str | None, size: int) -> None:
        self.lists.labels(variant, endpoint).inc()
        if size == 0:
            self.empty.labels(variant, endpoint).inc()
        if fallback:
            self.fallbacks.labels(variant, endpoint).inc()
        self._count(variant, lists=1, empty=int(size == 0))

    def failed(self, variant: str) -> None:
        self.errors.labels(variant).inc()
        self._count(variant, errors=1)

    def feedback(self, variant: str, actions: Iterable[str]) -> None:
        for action, count in Tally(actions).items():
            self.interactions.labels(variant, action).inc(count)

    def _count(self, variant: str, **counts: int) -> None:
        with self._lock:
            self.tally.setdefault(variant, Tally()).update(counts)

    def snapshot(self) -> dict[str, dict[str, int]]:
        with self._lock:
            return {variant: dict(tally) for variant, tally in self.tally.items()}
