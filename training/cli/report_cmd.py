"""``recsys report``: the planners' demand report (群众点菜) from the store."""

from __future__ import annotations

from enum import StrEnum
from pathlib import Path
from typing import Annotated, Any

import typer

from training.cli.common import HomeOption, JsonOption, emit, home_of, stdout_console, user_errors


class Lang(StrEnum):
    zh = "zh"
    en = "en"


def register(app: typer.Typer) -> None:
    """Add this module's verbs to the app."""
    app.command("report")(report)


def report(
    home: HomeOption = None,
    out: Annotated[Path | None, typer.Option("--out", help="Output folder. Default <home>/reports/latest")] = None,
    window_days: Annotated[int, typer.Option("--window-days", min=1, help="Length of the window in days")] = 28,
    min_users: Annotated[int, typer.Option("--min-users", min=1,
                                           help="Suppress every cell resting on fewer distinct users")] = 10,
    lang: Annotated[Lang, typer.Option("--lang", help="Language of report.html")] = Lang.zh,
    at: Annotated[str | None, typer.Option("--at", help="Window end (ISO-8601). Default: latest interaction")] = None,
    mlflow: Annotated[bool, typer.Option("--mlflow", help="Log the files as artifacts of an MLflow run")] = False,
    as_json: JsonOption = False,
) -> None:
    """Write the demand report: who engages with what, where supply misses demand, what moves."""
    from training.report import log_report_to_mlflow, write_report  # deferred: keeps `recsys --help` fast

    engine_home = home_of(home)
    with user_errors():
        result = write_report(engine_home, out, window_days=window_days, min_users=min_users,
                              lang=lang.value, at=at)
        summary = result.to_dict()
        if mlflow:
            summary["mlflow_run_id"] = log_report_to_mlflow(result.out_dir, home=engine_home)
    emit(summary, as_json, _render)


def _render(summary: dict[str, Any]) -> None:
    out = stdout_console()
    out.print(f"[bold]report[/bold] {summary['window_start']} .. {summary['window_end']} "
              f"in {summary['seconds']}s")
    out.print(f"districts: {summary['regions']} ({summary['regions_suppressed']} suppressed); "
              f"cells: {summary['cells']} ({summary['cells_suppressed']} suppressed)")
    out.print(f"open: {summary['files']['html']}")
    if summary.get("mlflow_run_id"):
        out.print(f"mlflow run: {summary['mlflow_run_id']}")
