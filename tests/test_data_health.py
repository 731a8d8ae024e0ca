"""Data health (``features.health``): the newest week against the one before.

A stopped provider feed (the demo's last week ingested without one provider's interactions)
raises the warning on the terminal of ``recsys ingest`` (a real process); steady weeks raise none; each figure
(counts per action and provider, new and ended items, quarantined and rural shares) is
compared with its own rule.
"""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from pathlib import Path

import polars as pl
import pytest

from features import health
from features.validate import QUARANTINE
from recsys.home import EngineHome
from recsys.settings import HealthSettings
from tests.robustness_fixtures import SMALL_DEMO, run_recsys

try:  # the demo generator's home
    from democloud import generate, write_demo  # type: ignore[attr-defined,unused-ignore]
except ImportError:
    from features.synthetic import generate, write_demo

STOPPED = "区文化馆联盟"
"""The demo provider whose feed stops (the largest: its items draw a third of the interactions)."""


@pytest.fixture(scope="module")
def demo_files(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    return write_demo(generate(SMALL_DEMO), tmp_path_factory.mktemp("health") / "demo")


def _figures(settings: HealthSettings, newest: dict[str, float], previous: dict[str, float]) -> list[str]:
    return health.compare(newest, previous, settings)


def test_each_figure_is_judged_by_its_own_rule() -> None:
    settings = HealthSettings()
    assert _figures(settings, {"interactions": 400}, {"interactions": 1000}) == [
        "interactions fell from 1000 to 400 (-60%; a stopped feed?)"]
    assert _figures(settings, {"interactions": 600}, {"interactions": 1000}) == []
    assert _figures(settings, {"action.view": 3100}, {"action.view": 1000}) == ["action.view rose from 1000 to 3100 "
                                                                                 "(+210%)"]
    assert _figures(settings, {"provider.new": 0}, {"provider.new": 10}) == []  # too few to judge
    assert _figures(settings, {"rural_share": 0.20}, {"rural_share": 0.32}) == [
        "rural_share moved from 32.0% to 20.0% (more than 5% points)"]
    assert _figures(HealthSettings(max_drop=0.7), {"interactions": 400}, {"interactions": 1000}) == []


def test_quarantined_rows_count_in_the_week_of_their_time() -> None:
    end = datetime(2026, 10, 31, tzinfo=UTC)
    interactions = pl.DataFrame({"user_id": ["u"] * 100, "item_id": ["i"] * 100, "action": ["view"] * 100,
                                 "ts": [end - timedelta(days=d % 14, hours=1) for d in range(100)]})
    quarantine = pl.DataFrame({**{c: [None] * 30 for c in QUARANTINE}, "table": ["interactions"] * 30,
                               "ts": [(end - timedelta(days=1)).isoformat()] * 25 + ["not a time"] * 5},
                              schema=QUARANTINE)
    report = health.check(interactions.lazy(), pl.DataFrame({"user_id": ["u"], "area_type": ["urban"]}).lazy(),
                          pl.DataFrame({"item_id": ["i"], "provider": ["p"], "starts_at": [end - timedelta(days=2)],
                                        "ends_at": [None]},
                                       schema_overrides={"ends_at": pl.Datetime("us", "UTC")}).lazy(),
                          quarantine.lazy(), HealthSettings())
    assert report is not None
    assert report.newest["quarantined_share"] == pytest.approx(25 / (25 + report.newest["interactions"]))
    assert report.previous["quarantined_share"] == 0
    assert any(w.startswith("quarantined_share moved") for w in report.warnings)
    assert report.newest["new_items"] == 1 and report.previous["new_items"] == 0


def test_a_stopped_provider_feed_raises_the_data_health_warning(demo_files: dict[str, Path], tmp_path: Path) -> None:
    interactions = pl.read_parquet(demo_files["interactions"])
    items = pl.read_parquet(demo_files["items"])
    cutoff = interactions["ts"].max() - timedelta(days=7)
    stopped = items.filter(pl.col("provider") == STOPPED)["item_id"].implode()
    early, late = tmp_path / "early.parquet", tmp_path / "late-without-one-feed.parquet"
    interactions.filter(pl.col("ts") <= cutoff).write_parquet(early)
    interactions.filter((pl.col("ts") > cutoff) & ~pl.col("item_id").is_in(stopped)).write_parquet(late)
    root = tmp_path / "home"

    # real processes: the warning is what an operator's terminal (or cron mail) shows
    first = run_recsys("ingest", "--home", str(root), "--users", str(demo_files["users"]), "--items",
                       str(demo_files["items"]), "--interactions", str(early), "--json")
    assert first.returncode == 0, first.stderr
    assert "data health" not in first.stderr, first.stderr  # the weeks before the stop are steady

    second = run_recsys("ingest", "--home", str(root), "--interactions", str(late), "--json")
    assert second.returncode == 0, second.stderr
    assert f"data health: provider.{STOPPED} fell from" in second.stderr, second.stderr
    assert "(-100%; a stopped feed?)" in second.stderr

    report = health.check_store(EngineHome.at(root))
    assert report is not None and report.newest.get(f"provider.{STOPPED}", 0) == 0
    assert any(w.startswith(f"provider.{STOPPED} fell") for w in report.warnings)
