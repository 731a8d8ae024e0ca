"""``recsys online-report``: the online metrics of the last days, written where the server serves them.

The job reads the store (exposures, interactions, users, items: posted lines count once
``recsys ingest`` folded them), computes :func:`features.online_metrics.online_metrics` over
the last ``days`` UTC days and writes ``<home>/online/latest/``: ``metrics.parquet`` and
``metrics.csv`` (every cell), ``per_user.parquet`` (the A/B test's units), ``summary.json``
(totals per model version x variant, and every cell: what ``GET /v1/online/metrics``
serves) and ``report.html``. The folder is written aside and renamed into place, so a
reader sees the old report or the new one.

The server does not compute these numbers itself: it cannot read the store's Parquet
without the feature pipelines, and a per-process counter sees one worker's traffic only.
"""

from __future__ import annotations

import json
import logging
import os
import shutil
import time
import uuid
from dataclasses import dataclass
from datetime import UTC, date, datetime
from pathlib import Path
from typing import Any

import polars as pl

from features.ingest.exposures import read_exposures
from features.online_metrics import list_outcomes, online_metrics, per_user, window, with_rates
from features.store import erased_users, scan_interactions, scan_items, scan_users
from recsys.attribution import AttributionSettings
from recsys.durable import fsync_dir
from recsys.home import EXPERIMENT, REGISTERED_MODEL, EngineHome

log = logging.getLogger(__name__)

TOTAL_KEY = ["model_version", "variant"]


@dataclass(frozen=True)
class OnlineReport:
    """What one run wrote."""

    out_dir: Path
    summary: dict[str, Any]
    metrics: pl.DataFrame
    users: pl.DataFrame


def online_dir(home: EngineHome) -> Path:
    """Where the latest online report lives (the server reads ``summary.json`` there)."""
    return home.online_report


def compute(home: EngineHome, days: int = 7, end: date | None = None,
            settings: AttributionSettings | None = None) -> tuple[pl.DataFrame, pl.DataFrame, pl.DataFrame]:
    """The metrics cells, per-version totals and per-user units of the window."""
    if days < 1:
        raise ValueError("--days must be at least 1")
    erased = frozenset(erased_users(home))
    exposures = window(read_exposures(home, erased), days, end)
    interactions = store_frame(home, "interactions")
    users = store_frame(home, "users")
    items = store_frame(home, "items")
    visible = items.filter(~pl.col("hidden").fill_null(False)) if "hidden" in items.columns else items
    outcomes = list_outcomes(exposures, interactions, users, items, settings)
    cells = online_metrics(outcomes, visible.height)
    totals = online_metrics(outcomes.with_columns(pl.lit("all").alias("day")), visible.height) \
        if not outcomes.is_empty() else cells
    totals = totals.filter(pl.col("segment_type") == "all").drop("segment_type", "segment", "day")
    return cells, totals, per_user(outcomes)


def store_frame(home: EngineHome, table: str) -> pl.DataFrame:
    scan = {"interactions": scan_interactions, "users": scan_users, "items": scan_items}[table]
    try:
        return scan(home).collect()
    except FileNotFoundError:
        return scan_empty(table)


def scan_empty(table: str) -> pl.DataFrame:
    from features import schemas

    schema: dict[str, Any] = {"interactions": schemas.STORED_INTERACTIONS, "users": schemas.USERS,
                              "items": schemas.ITEMS}[table]
    return pl.DataFrame(schema=schema)


def write_online_report(home: EngineHome, days: int = 7, out_dir: Path | None = None,
                        settings: AttributionSettings | None = None) -> OnlineReport:
    """Compute and write the report (see the module docstring); returns what it wrote."""
    from training.online_html import render_online

    started = time.perf_counter()
    cells, totals, users = compute(home, days, settings=settings)
    target = Path(out_dir) if out_dir is not None else online_dir(home)
    summary = {
        "generated_at": datetime.now(UTC).isoformat(timespec="seconds"), "days": days,
        "window_start": str(cells["day"].min()) if cells.height else None,
        "window_end": str(cells["day"].max()) if cells.height else None,
        "totals": _records(totals), "cells": _records(cells),
        "seconds": round(time.perf_counter() - started, 3),
    }
    staging = target.parent / f".{target.name}-{uuid.uuid4().hex[:8]}"
    staging.mkdir(parents=True)
    cells.write_parquet(staging / "metrics.parquet")
    cells.with_columns(pl.col("day").cast(pl.String)).write_csv(staging / "metrics.csv")
    users.write_parquet(staging / "per_user.parquet")
    (staging / "report.html").write_text(render_online(summary), encoding="utf-8")
    (staging / "summary.json").write_text(json.dumps(summary, ensure_ascii=False, indent=1), encoding="utf-8")
    _publish(staging, target)
    log.info("online report: %d cells over %d days in %s", cells.height, days, target)
    return OnlineReport(target, summary, cells, users)


def _records(frame: pl.DataFrame) -> list[dict[str, Any]]:
    records: list[dict[str, Any]] = json.loads(frame.with_columns(pl.col(c).cast(pl.String) for c in frame.columns
                                         if frame.schema[c] == pl.Date).write_json())
    return records


def _publish(staging: Path, target: Path) -> None:
    """Replace ``target`` by ``staging`` (the old folder moved aside first, then removed)."""
    old = None
    if target.exists():
        old = target.parent / f".{target.name}-old-{uuid.uuid4().hex[:8]}"
        os.replace(target, old)
    os.replace(staging, target)
    fsync_dir(target.parent)
    if old is not None:
        shutil.rmtree(old, ignore_errors=True)


def daily_totals(cells: pl.DataFrame) -> pl.DataFrame:
    """Per model version x day: the ``all`` segment summed over variants (what MLflow gets)."""
    sums = (cells.filter(pl.col("segment_type") == "all")
            .group_by("model_version", "day")
            .agg(pl.col("lists", "impressions", "shown", "slots", "clicks", "reservations", "attendances",
                        "rural_slots", "distinct_items", "fallbacks", "empty_lists").sum()))
    return with_rates(sums.with_columns(pl.col("distinct_items").cast(pl.Int64)), 0).drop("catalogue_share")


LOGGED = ("lists", "impressions", "click_through", "reservations_per_1000", "attendance_per_1000",
          "rural_slot_share", "fallback_rate", "empty_rate")


def log_to_mlflow(home: EngineHome, cells: pl.DataFrame) -> list[str]:
    """One run per model version x day (tag ``model_version``, ``job=online``), replaced on a re-run; the
    version's registry entry gets ``online_click_through`` (its latest day) for ``recsys models``."""
    from mlflow.exceptions import MlflowException

    from training import registry

    client = registry.connect(home)
    experiment = client.get_experiment_by_name(EXPERIMENT)
    assert experiment is not None  # connect() creates it
    run_ids = []
    latest: dict[str, tuple[str, float | None]] = {}
    for row in daily_totals(cells).sort("model_version", "day").iter_rows(named=True):
        version, day = str(row["model_version"]), str(row["day"])
        run_ids.append(_daily_run(client, experiment.experiment_id, version, day, row))
        latest[version] = (day, row["click_through"])
    for version, (day, ctr) in latest.items():
        if ctr is None:
            continue
        try:
            client.set_model_version_tag(REGISTERED_MODEL, version, "online_click_through", f"{ctr:.4f}")
            client.set_model_version_tag(REGISTERED_MODEL, version, "online_day", day)
        except MlflowException:  # a directory-served model has no registry entry
            log.info("version %s is not in the registry; its online runs are logged all the same", version)
    return run_ids


def _daily_run(client: Any, experiment_id: str, version: str, day: str, row: dict[str, Any]) -> str:
    name = f"online {day} v{version}"
    found = client.search_runs([experiment_id], filter_string=f"tags.job = 'online' and tags.model_version = "
                                                              f"'{version}' and tags.online_day = '{day}'")
    run_id = found[0].info.run_id if found else client.create_run(
        experiment_id, run_name=name, tags={"job": "online", "model_version": version, "online_day": day}).info.run_id
    stamp = int(time.time() * 1000)
    for key in LOGGED:
        if row.get(key) is not None:
            client.log_metric(run_id, f"online.{key}", float(row[key]), timestamp=stamp)
    client.set_terminated(run_id)
    return str(run_id)
