"""``recsys online-report``: what served lists did in front of residents (:mod:`training.online_report`)."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated, Any

import typer

from training.cli.common import HomeOption, JsonOption, emit, home_of, stdout_console, user_errors


def register(app: typer.Typer) -> None:
    """Add this module's verbs to the app."""
    app.command("online-report")(online_report)


def online_report(
    days: Annotated[int, typer.Option("--days", min=1, max=366, help="Days of served lists, ending with the last")] = 7,
    out: Annotated[Path | None, typer.Option("--out", help="Output folder. Default <home>/online/latest")] = None,
    mlflow: Annotated[bool, typer.Option("--mlflow/--no-mlflow",
                                         help="Log a daily run per model version to MLflow")] = True,
    home: HomeOption = None,
    as_json: JsonOption = False,
) -> None:
    """Online metrics per model version x variant x segment x day, from the store (run `recsys ingest` first)."""
    from training.online_report import log_to_mlflow, write_online_report  # deferred: keeps --help fast

    engine_home = home_of(home)
    with user_errors():
        report = write_online_report(engine_home, days, out)
        summary: dict[str, Any] = {
            "window_start": report.summary["window_start"], "window_end": report.summary["window_end"],
            "days": days, "totals": report.summary["totals"], "cells": report.metrics.height,
            "files": {name: str(report.out_dir / name)
                      for name in ("summary.json", "metrics.parquet", "metrics.csv", "report.html")},
        }
        if mlflow and report.metrics.height:
            summary["mlflow_runs"] = log_to_mlflow(engine_home, report.metrics)
    emit(summary, as_json, _render)


def _render(summary: dict[str, Any]) -> None:
    out = stdout_console()
    out.print(f"online metrics {summary['window_start']} .. {summary['window_end']} ({summary['days']} days)",
              markup=False)
    for row in summary["totals"]:
        ctr = row.get("click_through")
        out.print(f"  version {row['model_version']} {row['variant']}: {row['lists']} lists, "
                  f"click-through {'-' if ctr is None else f'{ctr:.2%}'}, "
                  f"reservations/1000 {row.get('reservations_per_1000') or 0:.1f}, "
                  f"empty {row.get('empty_rate') or 0:.1%}", markup=False)
    if not summary["totals"]:
        out.print("no served lists in the store yet (run `recsys ingest` after serving)", markup=False)
    out.print(f"open: {summary['files']['report.html']}", markup=False)
