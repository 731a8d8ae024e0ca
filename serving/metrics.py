"""Prometheus metrics: requests and latency per route template, lists, the served model.

Each app owns its :class:`CollectorRegistry`, so several apps in one process (tests) never
collide. Routes are labelled by their template (``/v1/users/{user_id}/recommendations``),
never by the raw path, to keep the label set bounded. With several workers every process
exposes its own numbers (scrape each, or aggregate at the collector).

What an operator alerts on (``serving/monitoring/alerts.yml``): the model's age and its data's
age (seconds since the manifest's ``trained_at`` and ``data_end``, computed at scrape time),
empty and fallback lists per endpoint, the live catalogue's size, reloads by outcome, posted
interactions per action, and whether the server runs on its last-known-good copy.
"""

from __future__ import annotations

import math
import re
import time
from collections import Counter as Tally
from collections.abc import Callable, Iterable
from typing import Any

from prometheus_client import CONTENT_TYPE_LATEST, CollectorRegistry, Counter, Gauge, Histogram, Info, generate_latest
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from serving.variant_metrics import VariantCounters

LATENCY_BUCKETS = (0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0)
UNMATCHED = "unmatched"


class Metrics:
    content_type = CONTENT_TYPE_LATEST

    def __init__(self) -> None:
        self.registry = CollectorRegistry(auto_describe=True)
        r = self.registry
        self.requests = Counter("recsys_http_requests", "HTTP requests by route template and status",
                                ["method", "route", "status"], registry=r)
        self.latency = Histogram("recsys_http_request_duration_seconds", "Request latency by route template",
                                 ["method", "route"], buckets=LATENCY_BUCKETS, registry=r)
        self.fallbacks = Counter("recsys_fallbacks", "Recommendation lists served from a fallback, by kind",
                                 ["endpoint", "kind"], registry=r)
        self.interactions = Counter("recsys_interactions", "Posted interactions by outcome", ["outcome"], registry=r)
        self.reloads = Counter("recsys_model_reloads", "Model (re)loads by outcome", ["outcome"], registry=r)
        self.refusals = Counter("recsys_refusals", "Requests refused before routing (429/503), by reason",
                                ["reason"], registry=r)
        self.model_version = Gauge("recsys_model_version", "Served model version (numeric registry versions)",
                                   registry=r)
        self.model_degraded = Gauge("recsys_model_degraded", "1 while serving the last-known-good copy", registry=r)
        self.model_info = Info("recsys_model", "The served model", registry=r)
        self.control_changes = Counter("recsys_user_control_changes", "Residents' recorded choices, by control "
                                       "(settings, remove_tag, declare_tag, engaged_tag)", ["control"], registry=r)
        self.lists = Counter("recsys_lists", "Recommendation lists served, by endpoint", ["endpoint"], registry=r)
        self.empty_lists = Counter("recsys_empty_lists", "Recommendation lists served with no item, by endpoint",
                                   ["endpoint"], registry=r)
        self.posted = Counter("recsys_interactions_posted", "Accepted posted interactions by action", ["action"],
                              registry=r)
        self.variants = VariantCounters(r)
        self._trained_at = math.nan
        self._data_end = math.nan
        self._live_items: Callable[[], float] = lambda: math.nan
        Gauge("recsys_model_age_seconds", "Seconds since the served model was trained (its trained_at)",
              registry=r).set_function(lambda: _age(self._trained_at))
        Gauge("recsys_data_age_seconds", "Seconds since the newest event the served model was trained on "
              "(its data_end)", registry=r).set_function(lambda: _age(self._data_end))
        Gauge("recsys_catalog_live_items", "Items of the served catalogue that can be shown now (not hidden, "
              "not ended)", registry=r).set_function(lambda: self._live_items())

    def count_controls(self, counts: Callable[[], dict[str, int]]) -> None:
        """Export the residents' active choices (:meth:`recsys.controls.ControlsLog.counts`)."""
        gauge = Gauge("recsys_user_controls", "Residents with an active choice (not_personalized, senior_mode, "
                      "removed_tags, declared_tags), as this process has read the controls log", ["control"],
                      registry=self.registry)
        for name in ("not_personalized", "senior_mode", "removed_tags", "declared_tags"):
            gauge.labels(name).set_function(lambda name=name: float(counts().get(name, 0)))

    def served(self, version: str | None, info: dict[str, str], degraded: bool, *,
               trained_at: float | None = None, data_end: float | None = None,
               live_items: Callable[[], float] | None = None) -> None:
        """A model now serves: its version, facts, and the times and catalogue the gauges read."""
        self.model_version.set(float(version) if version and version.isdigit() else -1)
        self.model_degraded.set(1 if degraded else 0)
        self.model_info.info(info)
        self._trained_at = math.nan if trained_at is None else trained_at
        self._data_end = math.nan if data_end is None else data_end
        if live_items is not None:
            self._live_items = live_items

    def fallback(self, endpoint: str, kind: str | None) -> None:
        if kind:
            self.fallbacks.labels(endpoint, kind).inc()

    def listed(self, endpoint: str, fallback: str | None, size: int) -> None:
        """One list served by ``endpoint``: counted, and counted again if empty or a fallback."""
        self.lists.labels(endpoint).inc()
        if size == 0:
            self.empty_lists.labels(endpoint).inc()
        self.fallback(endpoint, fallback)

    def interactions_posted(self, actions: Iterable[str]) -> None:
        """Accepted posted interactions, counted per action."""
        for action, count in Tally(actions).items():
            self.posted.labels(action).inc(count)

    def render(self) -> bytes:
        return generate_latest(self.registry)


class MetricsMiddleware:
    """Pure ASGI middleware (no per-request task or body buffering) timing each request."""

    def __init__(self, app: ASGIApp, metrics: Metrics) -> None:
        self.app = app
        self.metrics = metrics

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        started = time.perf_counter()
        status = {"code": 500}

        async def send_with_status(message: Message) -> None:
            if message["type"] == "http.response.start":
                status["code"] = message["status"]
            await send(message)

        try:
            await self.app(scope, receive, send_with_status)
        finally:
            route = _template(scope, status["code"])
            method = scope.get("method", "")
            self.metrics.requests.labels(method, route, str(status["code"])).inc()
            self.metrics.latency.labels(method, route).observe(time.perf_counter() - started)


def _age(moment: float) -> float:
    """Seconds since ``moment`` (epoch seconds); NaN while no model (or no such time) is known."""
    return time.time() - moment if math.isfinite(moment) else math.nan


def _template(scope: dict[str, Any], status: int) -> str:
    """The matched route's path template (API routes leave themselves in the shared scope).

    Plain routes (the docs) leave nothing; only they can answer 2xx without it, and their paths
    are fixed, so a 2xx is labelled by its path. Anything else (404s, slash redirects) is
    ``unmatched``: a label must never be a path the caller chose.
    """
    route = scope.get("route")
    path = getattr(route, "path", None)
    if isinstance(path, str):
        return re.sub(r":\w+}", "}", path)
    return str(scope.get("path", UNMATCHED)) if 200 <= status < 300 else UNMATCHED
