"""The planners' report job (群众点菜): aggregate the store, write files, optionally log to MLflow.

``write_report`` runs the lazy pipelines of :mod:`features.aggregates` in one
``collect_all``, then writes into a staging directory next to the destination and swaps it
in, so a reader (the API, a browser) never sees half a report:

* ``report.html``: one self-contained page (inline SVG charts, no network);
* ``preferences``, ``supply_demand``, ``trends`` as Parquet and CSV: the numbers behind
  every chart;
* ``summary.json``: what the API serves, per region; ``meta.json``: window and settings.

Interactions flagged at ingest as likely poisoning (:mod:`features.poisoning`) are left
out of every number and do not move the window; ``meta.json``, ``summary.json`` and the
page say how many were left out and why (``left_out``).

Residents' requests (点单, :mod:`features.request_aggregates`), when the store holds any,
add ``request_demand`` (requested, engaged and supplied per district x category, "asked
for, not offered" flagged), ``requested_programmes`` and ``request_answers`` (answered
requests and median days to an answer per district) as Parquet and CSV, a ``requests``
block per district in ``summary.json`` and a section of the page.

Depth (:mod:`features.report_depth`, :mod:`features.report_history`): ``supply`` counts what
was live in listings, sessions and seats per channel (offline per district, digital on its
own), ``age_gaps`` sets each district's age bands' demand against its supply, and
``weekly_trends`` holds each district x category share over up to 12 archived weeks; the page
draws them (:mod:`training.report_sections`) with a glossary of every figure's formula.

Written into the engine home (no ``out_dir``, or ``reports/latest``), a run is archived by the
ISO week of its window's end, ``reports/<year>-W<week>/``, and ``reports/latest`` is pointed at
the newest week (:mod:`training.report_archive`).

Every number in every output is already suppressed where it rests on fewer than
``min_users`` people.
"""

from __future__ import annotations

import json
import logging
import os
import shutil
import time
import uuid
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import polars as pl

from features.aggregates import ReportTables, plan_report, window_events
from features.ingest.requests import stored_requests
from features.poisoning import left_out, without_flagged
from features.report_depth import age_gaps, supply
from features.report_history import iso_week, weekly_shares
from features.request_aggregates import RequestTables, request_tables
from features.store import scan_interactions, scan_items, scan_users
from recsys.appendlog import read_tombstones
from recsys.contract import parse_timestamp
from recsys.home import EngineHome
from recsys.settings import EngineSettings
from training.report_archive import LATEST, discard, point_latest, set_aside
from training.report_html import LANGS, region_name, render_report
from training.report_sections import depth_sections

log = logging.getLogger(__name__)

TABLES: tuple[str, ...] = ("preferences", "supply_demand", "trends")
REQUEST_TABLES: tuple[str, ...] = ("request_demand", "requested_programmes", "request_answers")
DEPTH_TABLES: tuple[str, ...] = ("supply", "age_gaps", "weekly_trends")
TOP_LIFTS = 10
TOP_TRENDS = 10
ARTIFACT_PATH = "report"


@dataclass(frozen=True)
class ReportSummary:
    """What a report run produced: where the files are and a few headline counts."""

    out_dir: Path
    files: dict[str, Path]
    window_start: datetime
    window_end: datetime
    regions: int
    regions_suppressed: int
    cells: int
    cells_suppressed: int
    seconds: float
    mlflow_run_id: str | None = None

    def to_dict(self) -> dict[str, Any]:
        return {
            "out_dir": str(self.out_dir),
            "files": {name: str(path) for name, path in self.files.items()},
            "window_start": self.window_start.isoformat(),
            "window_end": self.window_end.isoformat(),
            "regions": self.regions,
            "regions_suppressed": self.regions_suppressed,
            "cells": self.cells,
            "cells_suppressed": self.cells_suppressed,
            "seconds": round(self.seconds, 3),
            "mlflow_run_id": self.mlflow_run_id,
        }


def write_report(
    home: EngineHome | str | os.PathLike[str] | None,
    out_dir: str | os.PathLike[str] | None = None,
    *,
    window_days: int = 28,
    min_users: int = 10,
    lang: str = "zh",
    at: datetime | str | None = None,
    settings: EngineSettings | None = None,
) -> ReportSummary:
    """Aggregate the store of ``home`` and write the report into ``out_dir``.

    Without ``out_dir`` (or with ``<home>/reports/latest``) the report is archived as
    ``<home>/reports/<year>-W<week>/`` and ``reports/latest`` points at the newest week; ``at``
    (a datetime or ISO string, naive meaning the configured time zone) defaults to the latest
    interaction in the store.
    Raises ``ValueError`` when the store holds no interactions or an argument is invalid.
    """
    started = time.perf_counter()
    engine_home = home if isinstance(home, EngineHome) else EngineHome.at(home)
    settings = settings or EngineSettings()
    if lang not in LANGS:
        raise ValueError(f"unknown language {lang!r}; expected one of {', '.join(LANGS)}")
    now = datetime.now(UTC)  # the window never runs past this machine's clock
    moment = _parse_at(at, settings.timezone, now)
    archive = out_dir is None or Path(out_dir) == engine_home.reports / LATEST

    interactions = scan_interactions(engine_home)
    plan = plan_report(  # flagged rows neither count nor move the window (features.poisoning)
        without_flagged(interactions), scan_users(engine_home), scan_items(engine_home),
        window_days=window_days, min_users=min_users, at=moment, settings=settings, now=now,
    )
    tables = plan.collect()
    bounds = tables.bounds.row(0, named=True) if tables.bounds.height else {}
    if bounds.get("window_end") is None:
        raise ValueError(f"the store at {engine_home.store} holds no interactions up to now "
                         f"({now.isoformat(timespec='seconds')}); ingest data first")
    requested = _request_tables(engine_home, tables, bounds, min_users)
    week = iso_week(bounds["window_end"], settings.timezone)
    destination = engine_home.reports / week if archive else Path(str(out_dir))
    depth = depth_tables(engine_home, tables, week, min_users=min_users, settings=settings)

    meta = _meta(bounds, window_days=window_days, min_users=min_users, lang=lang,
                 at_given=moment is not None, settings=settings)
    meta["week"] = week
    meta["left_out"] = left_out_since(interactions, bounds["prev_start"], now)
    summary = build_summary(tables, meta)
    if requested is not None:
        add_requests(summary, requested)
    staging = _write_staging(destination, tables, summary, meta, lang, requested, depth)
    _publish(staging, destination)
    if archive:
        point_latest(engine_home.reports)
    files = {name: destination / filename for name, filename in _file_names(requested is not None).items()}
    result = _summarise(destination, files, bounds, tables, summary, time.perf_counter() - started)
    log.info("report for %s .. %s written to %s in %.2fs", result.window_start, result.window_end,
             destination, result.seconds)
    return result


def left_out_since(interactions: pl.LazyFrame, start: datetime, now: datetime) -> dict[str, Any]:
    """Flagged rows (likely poisoning) dated after ``start`` and not after ``now``: the ones
    that would otherwise have entered this report or moved its window. ``rows`` and ``by_reason``."""
    recent = interactions.filter((pl.col("ts") > start) & (pl.col("ts") <= now))
    counts = left_out(recent).collect()
    return {"rows": int(counts["rows"].sum()), "by_reason": dict(counts.iter_rows())}


def _parse_at(at: datetime | str | None, timezone: str, now: datetime) -> datetime | None:
    if at is None:
        return None
    moment = parse_timestamp(at, timezone)
    if moment is None:
        raise ValueError(f"cannot read --at {at!r} as a time (use ISO-8601, e.g. 2026-10-31T00:00:00+08:00)")
    if moment > now:
        raise ValueError(f"--at {at!r} is in the future (this machine's clock reads "
                         f"{now.isoformat(timespec='seconds')}); a report describes what already happened")
    return moment


def _meta(bounds: dict[str, Any], *, window_days: int, min_users: int, lang: str, at_given: bool,
          settings: EngineSettings) -> dict[str, Any]:
    return {
        "window_start": bounds["window_start"].isoformat(),
        "window_end": bounds["window_end"].isoformat(),
        "previous_window_start": bounds["prev_start"].isoformat(),
        "window_days": window_days,
        "window_end_source": "given" if at_given else "latest_interaction",
        "generated_at": datetime.now(UTC).isoformat(timespec="seconds"),
        "min_users": min_users,
        "lang": lang,
        "timezone": settings.timezone,
        "action_weights": dict(settings.action_weights),
        "rate_weight_per_star": settings.rate_weight_per_star,
    }


def _request_tables(home: EngineHome, tables: ReportTables, bounds: dict[str, Any],
                    min_users: int) -> RequestTables | None:
    """The request tables when the store holds requests (None otherwise: the report has no such section)."""
    if not home.requests.exists():
        return None
    erased = frozenset(t.user_id for t in read_tombstones(home.tombstones)[0])
    return request_tables(stored_requests(home, erased), scan_items(home).collect(), tables.preferences, bounds,
                          min_users=min_users)


def add_requests(summary: dict[str, Any], requested: RequestTables) -> None:
    """Each district's block gets ``requests``: asked-for-not-offered, top programmes, answers."""
    for code, block in summary["regions"].items():
        demand = requested.demand.filter((pl.col("region_code") == code) & ~pl.col("suppressed"))
        answers = requested.answers.filter(pl.col("region_code") == code)
        block["requests"] = {
            "asked_not_offered": _records(demand.filter(pl.col("asked_not_offered")).select(
                "rank", "category", "requesters", "engaged_users", "supply_items")),
            "demand": _records(demand.select("category", "requesters", "engaged_users", "supply_items",
                                             "asked_not_offered")),
            "programmes": _records(requested.programmes.filter(pl.col("region_code") == code).select(
                "rank", "item_id", "title", "category", "requesters")),
            "answers": _records(answers.drop("region_code"))[0] if answers.height else None,
        }


def depth_tables(home: EngineHome, tables: ReportTables, week: str, *, min_users: int,
                 settings: EngineSettings) -> dict[str, pl.DataFrame]:
    """``supply``, ``age_gaps`` and ``weekly_trends`` (module docstring) for the report's window."""
    bounds = tables.bounds.lazy()
    users = scan_users(home).unique(subset="user_id", keep="any")
    items = scan_items(home)
    events = window_events(without_flagged(scan_interactions(home)), users, items, bounds, settings)
    hidden = tables.preferences.filter(pl.col("segment_type") == "region_age").lazy()
    offered, gaps = pl.collect_all([supply(items, bounds),
                                    age_gaps(events, users, items, bounds, min_users=min_users, hidden_cells=hidden)])
    history = weekly_shares(home.reports, week, tables.preferences)
    return {"supply": offered, "age_gaps": gaps, "weekly_trends": history}


def _file_names(with_requests: bool = False) -> dict[str, str]:
    names = {"html": "report.html", "summary": "summary.json", "meta": "meta.json"}
    for table in (*TABLES, *DEPTH_TABLES, *(REQUEST_TABLES if with_requests else ())):
        names[f"{table}_parquet"] = f"{table}.parquet"
        names[f"{table}_csv"] = f"{table}.csv"
    return names


def _records(frame: pl.DataFrame) -> list[dict[str, Any]]:
    return frame.to_dicts()


def _region_block(code: str, tables: ReportTables, lang: str) -> dict[str, Any]:
    """One region of ``summary.json``: empty lists and no numbers when it is suppressed."""
    prefs = tables.preferences.filter(pl.col("region_code") == code)
    overall = prefs.filter(pl.col("segment_type") == "region")
    active = overall.filter(~pl.col("suppressed"))["active_users"]
    block: dict[str, Any] = {
        "name": region_name(code, lang),
        "suppressed": active.len() == 0,
        "active_users": int(active[0]) if active.len() else None,
        "top_lifts": [], "gaps": [], "trends": [], "top_items": [],
    }
    if block["suppressed"]:
        return block
    lifts = (
        prefs.filter(~pl.col("suppressed") & (pl.col("lift") > 1.0) & (pl.col("segment_type") != "area_age"))
        .sort(["lift", "category"], descending=[True, False]).head(TOP_LIFTS)
    )
    block["top_lifts"] = _records(lifts.select(
        "segment_type", "age_band", "category", "share", "lift", pl.col("engaged_users").alias("users"),
    ))
    gaps = tables.supply_demand.filter((pl.col("region_code") == code) & ~pl.col("suppressed"))
    block["gaps"] = _records(gaps.sort(["gap", "category"], descending=[True, False]).select(
        "category", "demand_share", "supply_share", "gap", "status", "supply_items",
    ))
    moves = tables.trends.filter(
        (pl.col("region_code") == code) & ~pl.col("suppressed") & (pl.col("segment_type") != "area_age")
    )
    block["trends"] = _records(
        moves.with_columns(pl.col("change_pp").abs().alias("_size"))
        .sort(["_size", "category"], descending=[True, False]).head(TOP_TRENDS)
        .select("segment_type", "age_band", "category", "share_now", "share_prev", "change_pp")
    )
    block["top_items"] = _records(tables.top_items.filter(pl.col("region_code") == code).select(
        "rank", "item_id", "title", "category", "users",
    ))
    return block


def _areas(tables: ReportTables) -> list[dict[str, Any]]:
    """Area type x age band segments with their categories above the city average."""
    cells = tables.preferences.filter((pl.col("segment_type") == "area_age") & ~pl.col("suppressed"))
    out = []
    for (area, age), group in cells.group_by(["area_type", "age_band"], maintain_order=True):
        top = group.filter(pl.col("lift") > 1.0).sort(["lift", "category"], descending=[True, False]).head(5)
        out.append({
            "area_type": area, "age_band": age, "active_users": int(group["active_users"][0]),
            "top_lifts": _records(top.select("category", "share", "lift", pl.col("engaged_users").alias("users"))),
        })
    return sorted(out, key=lambda a: (a["area_type"], a["age_band"]))


def _city(tables: ReportTables) -> dict[str, Any]:
    now = tables.city.filter(pl.col("period") == "now")
    active = now["active_users"].max() if now.height else None
    shares = now.filter(~pl.col("suppressed")).select("category", "share", pl.col("engaged_users").alias("users"))
    return {"active_users": active, "categories": _records(shares.sort("category"))}


def build_summary(tables: ReportTables, meta: dict[str, Any]) -> dict[str, Any]:
    """The ``summary.json`` document: city figures, then one block per region (suppressed)."""
    lang = meta["lang"]
    codes = sorted(
        set(tables.preferences.filter(pl.col("segment_type") == "region")["region_code"].to_list())
        | set(tables.supply_demand["region_code"].to_list())
    )
    return {
        "window": {"start": meta["window_start"], "end": meta["window_end"], "days": meta["window_days"]},
        "left_out": meta.get("left_out", {"rows": 0, "by_reason": {}}),
        "generated_at": meta["generated_at"],
        "min_users": meta["min_users"],
        "lang": lang,
        "city": _city(tables),
        "regions": {code: _region_block(code, tables, lang) for code in codes},
        "areas": _areas(tables),
    }


def _write_staging(destination: Path, tables: ReportTables, summary: dict[str, Any], meta: dict[str, Any],
                   lang: str, requested: RequestTables | None = None,
                   depth: dict[str, pl.DataFrame] | None = None) -> Path:
    """Write every file into a fresh sibling directory of ``destination``."""
    destination.parent.mkdir(parents=True, exist_ok=True)
    staging = destination.parent / f".{destination.name}.staging-{uuid.uuid4().hex[:8]}"
    staging.mkdir()
    try:
        for table in TABLES:
            frame: pl.DataFrame = getattr(tables, table)
            frame.write_parquet(staging / f"{table}.parquet")
            frame.write_csv(staging / f"{table}.csv")
        if requested is not None:
            for table, frame in zip(REQUEST_TABLES, (requested.demand, requested.programmes, requested.answers),
                                    strict=True):
                frame.write_parquet(staging / f"{table}.parquet")
                frame.write_csv(staging / f"{table}.csv")
        for table, frame in (depth or {}).items():
            frame.write_parquet(staging / f"{table}.parquet")
            frame.write_csv(staging / f"{table}.csv")
        _write_json(staging / "summary.json", summary)
        _write_json(staging / "meta.json", meta)
        sections = depth_sections(depth, summary, lang) if depth else None
        html = render_report(tables, summary, meta, lang=lang, sections=sections)
        (staging / "report.html").write_text(html, encoding="utf-8")
    except BaseException:
        shutil.rmtree(staging, ignore_errors=True)
        raise
    return staging


def _write_json(path: Path, document: dict[str, Any]) -> None:
    path.write_text(json.dumps(document, ensure_ascii=False, indent=2, default=str) + "\n", encoding="utf-8")


def _publish(staging: Path, destination: Path) -> None:
    """Swap the staging directory in with two renames.

    A reader sees the old report or the new one (or, for the instant between the renames,
    none), never a mixture.
    """
    retired = set_aside(destination) if destination.exists() or destination.is_symlink() else None
    staging.rename(destination)
    if retired is not None:
        discard(retired)


def _summarise(destination: Path, files: dict[str, Path], bounds: dict[str, Any], tables: ReportTables,
               summary: dict[str, Any], seconds: float) -> ReportSummary:
    regions = summary["regions"]
    return ReportSummary(
        out_dir=destination,
        files=files,
        window_start=bounds["window_start"],
        window_end=bounds["window_end"],
        regions=len(regions),
        regions_suppressed=sum(1 for r in regions.values() if r["suppressed"]),
        cells=tables.preferences.height,
        cells_suppressed=int(tables.preferences["suppressed"].sum()),
        seconds=seconds,
    )


def log_report_to_mlflow(
    out_dir: str | os.PathLike[str],
    run_id: str | None = None,
    *,
    home: EngineHome | None = None,
) -> str:
    """Log a written report as artifacts (under ``report/``) of an MLflow run; return its id.

    With ``run_id`` the files join that existing run (training logs its report this way)
    and the caller's tracking URI is kept unless ``home`` is given. Without it a new run
    is started in the ``cultural-recsys`` experiment of ``home`` (default: the engine home).
    """
    os.environ.setdefault("MLFLOW_DISABLE_TELEMETRY", "true")
    import mlflow  # deferred: importing MLflow takes seconds and most reports do not log
    from mlflow.tracking import MlflowClient

    folder = Path(out_dir)
    if not (folder / "meta.json").exists():
        raise FileNotFoundError(f"no report in {folder} (meta.json missing)")
    if home is not None or run_id is None:
        from training import registry  # one place sets up the store and its experiment

        registry.connect(home or EngineHome.at())
    if run_id is not None:
        MlflowClient().log_artifacts(run_id, str(folder), artifact_path=ARTIFACT_PATH)
        return run_id
    meta = json.loads((folder / "meta.json").read_text(encoding="utf-8"))
    from training.abandoned_runs import owner_tags

    with mlflow.start_run(run_name="report", tags=owner_tags()) as run:
        mlflow.set_tag("job", "report")
        mlflow.log_params({k: meta[k] for k in ("window_start", "window_end", "window_days", "min_users", "lang")})
        mlflow.log_artifacts(str(folder), artifact_path=ARTIFACT_PATH)
        return run.info.run_id
