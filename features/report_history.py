"""The planners' report over the weeks: each run archived by ISO week, shares read back as a history.

A report written into the engine home lands in ``reports/<year>-W<week>/`` (the ISO week of its
window's end, in the engine time zone); :func:`weekly_shares` reads the district rows of the
archived weeks' ``preferences.parquet`` (up to :data:`MAX_WEEKS`, the newest first kept) and
adds the current run's, which replaces an archive of its own week. The shares were suppressed
when each week was written, so a hidden cell stays hidden in the history.
"""

from __future__ import annotations

import logging
import re
from datetime import datetime
from pathlib import Path
from zoneinfo import ZoneInfo

import polars as pl

log = logging.getLogger(__name__)

MAX_WEEKS = 12
WEEK_PATTERN = re.compile(r"^\d{4}-W\d{2}$")
HISTORY_COLUMNS: tuple[str, ...] = ("week", "region_code", "category", "share", "engaged_users", "suppressed")


def iso_week(moment: datetime, timezone: str) -> str:
    """``<year>-W<week>`` of ``moment`` in ``timezone`` (ISO 8601 weeks: Monday first, week 1 holds a Thursday)."""
    year, week, _ = moment.astimezone(ZoneInfo(timezone)).isocalendar()
    return f"{year}-W{week:02d}"


def archived_weeks(reports: Path) -> list[Path]:
    """The archive folders under ``reports``, oldest first (ISO week names sort in time order)."""
    if not reports.is_dir():
        return []
    return sorted(p for p in reports.iterdir() if p.is_dir() and not p.is_symlink() and WEEK_PATTERN.match(p.name))


def weekly_shares(reports: Path, week: str, preferences: pl.DataFrame, max_weeks: int = MAX_WEEKS) -> pl.DataFrame:
    """Each district x category share per week (columns :data:`HISTORY_COLUMNS`): the archives before
    ``week`` and this run's ``preferences`` as ``week``, the last ``max_weeks`` weeks."""
    frames = [_district_rows(preferences, week)]
    for folder in archived_weeks(reports):
        if folder.name >= week:  # this run replaces its own week; a later week is not history for it
            continue
        try:
            frames.append(_district_rows(pl.read_parquet(folder / "preferences.parquet"), folder.name))
        except (OSError, pl.exceptions.PolarsError) as exc:  # a damaged archive costs its week, not the report
            log.warning("report archive %s unreadable (%s); its week is left out of the trends", folder, exc)
    history = pl.concat(frames, how="vertical")
    kept = sorted(history["week"].unique().to_list())[-max_weeks:]
    return history.filter(pl.col("week").is_in(kept)).sort("region_code", "category", "week")


def _district_rows(preferences: pl.DataFrame, week: str) -> pl.DataFrame:
    return preferences.filter(pl.col("segment_type") == "region").select(
        pl.lit(week).alias("week"), "region_code", "category", pl.col("share").cast(pl.Float64),
        pl.col("engaged_users").cast(pl.Int64), "suppressed",
    )
