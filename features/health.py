"""Data health: the newest week of the store against the week before it.

A feed that silently stops (a provider's export job dies, an app stops posting) does not
fail anything: ingest accepts what arrives and training fits what is there, and the model
just drifts away from the city. So every ingest and every training run compares the newest
window (``window_days`` up to the newest stored event) with the window before it:

* active users and interactions, in total, per action and per provider of the items;
* new items (``starts_at`` in the window) and ended items (``ends_at`` in the window);
* the share of interaction rows quarantined (rows whose time can be read; the others cannot
  be placed in a week) and the share of rural users among the active ones.

A count that falls by more than ``max_drop`` or grows by more than ``max_rise`` (relative),
or a share that moves by more than ``max_share_change`` (absolute), is a warning; counts
below ``min_count`` in both windows are too small to judge. Thresholds are
:class:`recsys.settings.HealthSettings` (``RECSYS_HEALTH_*``).
"""

from __future__ import annotations

import logging
from dataclasses import dataclass, field
from datetime import datetime, timedelta
from typing import Any

import polars as pl

from features import store
from features.validate import TABLE, with_time
from recsys.home import EngineHome
from recsys.settings import EngineSettings, HealthSettings

log = logging.getLogger(__name__)

SHARES = ("quarantined_share", "rural_share")
"""Figures that are shares (compared in absolute points); every other figure is a count."""


@dataclass
class HealthReport:
    """Figures of the newest window and the one before it, and what changed too much."""

    window_end: datetime
    window_days: float
    newest: dict[str, float]
    previous: dict[str, float]
    warnings: list[str] = field(default_factory=list)

    def to_dict(self) -> dict[str, Any]:
        return {"window_end": self.window_end.isoformat(), "window_days": self.window_days,
                "newest": self.newest, "previous": self.previous, "warnings": self.warnings}

    def metrics(self) -> dict[str, float]:
        """Flat figures for a tracking store: ``health.newest.<name>`` and ``health.previous.<name>``."""
        flat = {f"health.newest.{name}": value for name, value in self.newest.items()}
        flat.update({f"health.previous.{name}": value for name, value in self.previous.items()})
        flat["health.warnings"] = float(len(self.warnings))
        return flat


def check_store(home: EngineHome, settings: HealthSettings | None = None,
                engine: EngineSettings | None = None) -> HealthReport | None:
    """:func:`check` over the home's store; None when it holds no interactions."""
    return check(store.scan_interactions(home), store.scan_users(home), store.scan_items(home),
                 store.scan_quarantine(home), settings or HealthSettings(), (engine or EngineSettings()).timezone)


def check_safely(home: EngineHome, settings: HealthSettings | None = None,
                 engine: EngineSettings | None = None) -> HealthReport | None:
    """:func:`check_store` for the end of an ingest or a training: a store the comparison cannot
    read is logged and skipped (None), never a failure of the run that already did its work."""
    try:
        return check_store(home, settings, engine)
    except Exception:
        log.exception("data health: cannot compare the newest week with the previous one")
        return None


def check(interactions: pl.LazyFrame, users: pl.LazyFrame, items: pl.LazyFrame, quarantine: pl.LazyFrame,
          settings: HealthSettings, time_zone: str = "Asia/Shanghai") -> HealthReport | None:
    """Compare the newest window with the previous one; None without interactions."""
    end = interactions.select(pl.col("ts").max()).collect().item()
    if end is None:
        return None
    span = timedelta(days=settings.window_days)
    quarantined = _quarantined_times(quarantine, time_zone)
    newest = window_figures(interactions, users, items, quarantined, end - span, end)
    previous = window_figures(interactions, users, items, quarantined, end - 2 * span, end - span)
    report = HealthReport(end, settings.window_days, newest, previous, compare(newest, previous, settings))
    for warning in report.warnings:
        log.warning("data health: %s", warning)
    return report


def window_figures(interactions: pl.LazyFrame, users: pl.LazyFrame, items: pl.LazyFrame,
                   quarantined: pl.LazyFrame, start: datetime, end: datetime) -> dict[str, float]:
    """The figures of one window ``(start, end]``."""
    inside = interactions.filter((pl.col("ts") > start) & (pl.col("ts") <= end))
    by_provider = inside.join(items.select("item_id", "provider"), on="item_id", how="left")
    active = inside.select("user_id").unique().join(users.select("user_id", "area_type"), on="user_id", how="left")
    totals, actions, providers, people, catalog, rejected = pl.collect_all([
        inside.select(pl.len().alias("interactions")),
        inside.group_by("action").len(),
        by_provider.drop_nulls("provider").group_by("provider").len(),
        active.select(pl.len().alias("users"), (pl.col("area_type") == "rural").sum().alias("rural")),
        items.select(_between("starts_at", start, end).alias("new_items"),
                     _between("ends_at", start, end).alias("ended_items")),
        quarantined.filter((pl.col("at") > start) & (pl.col("at") <= end)).select(pl.len().alias("rows")),
    ])
    accepted = int(totals["interactions"][0])
    users_n, rural = int(people["users"][0]), int(people["rural"][0] or 0)
    rows = int(rejected["rows"][0])
    figures: dict[str, float] = {
        "active_users": float(users_n), "interactions": float(accepted),
        "new_items": float(catalog["new_items"][0] or 0), "ended_items": float(catalog["ended_items"][0] or 0),
        "quarantined_share": rows / (rows + accepted) if rows + accepted else 0.0,
        "rural_share": rural / users_n if users_n else 0.0,
    }
    figures.update({f"action.{a}": float(n) for a, n in actions.iter_rows()})
    figures.update({f"provider.{p}": float(n) for p, n in providers.iter_rows()})
    return figures


def compare(newest: dict[str, float], previous: dict[str, float], settings: HealthSettings) -> list[str]:
    """One sentence per figure that changed beyond its threshold, in a stable order."""
    warnings = []
    for name in sorted(set(newest) | set(previous)):
        now, before = newest.get(name, 0.0), previous.get(name, 0.0)
        if name in SHARES:
            if abs(now - before) > settings.max_share_change:
                warnings.append(f"{name} moved from {before:.1%} to {now:.1%} (more than "
                                f"{settings.max_share_change:.0%} points)")
            continue
        if max(now, before) < settings.min_count:
            continue
        if now < before * (1 - settings.max_drop):
            warnings.append(f"{name} fell from {before:.0f} to {now:.0f} ({now / before - 1:+.0%}; "
                            f"a stopped feed?)")
        elif now > before * (1 + settings.max_rise):
            change = "new" if before == 0 else f"{now / before - 1:+.0%}"
            warnings.append(f"{name} rose from {before:.0f} to {now:.0f} ({change})")
    return warnings


def _between(column: str, start: datetime, end: datetime) -> pl.Expr:
    return ((pl.col(column) > start) & (pl.col(column) <= end)).sum()


def _quarantined_times(quarantine: pl.LazyFrame, time_zone: str) -> pl.LazyFrame:
    """The event times of quarantined interaction rows, where they can be read."""
    rows = quarantine.filter(pl.col(TABLE) == "interactions").select("ts")
    return with_time(rows, "ts", "at", time_zone).select("at").drop_nulls()
