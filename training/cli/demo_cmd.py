"""``recsys demo-data``: write a synthetic Beijing cultural-cloud data set to try the engine on.

Writes ``users.parquet``, ``items.parquet``, ``interactions.parquet`` (the stored schemas,
ready for ingest), ``programmes.parquet`` (the menu, items of kind ``programme``),
``requests.csv`` (residents' requests, for ``recsys ingest --requests``) and
``ground_truth.json`` (the planted segment effects and request patterns a demand report
should find). Large runs show progress on stderr; the summary goes to stdout.
"""

from __future__ import annotations

import datetime as dt
import time
from pathlib import Path
from typing import Annotated, Any
from zoneinfo import ZoneInfo

import polars as pl
import typer
from rich.progress import BarColumn, Progress, TextColumn, TimeElapsedColumn
from rich.table import Table

from democloud import STAGES, TIMEZONE, DemoConfig, DemoData, generate, write_demo
from training.cli.common import HomeOption, JsonOption, console, emit, home_of, stdout_console, user_errors

_PROGRESS_FROM_USERS = 100_000
"""Show a progress bar from this many users on (smaller runs finish in a second or two)."""


def register(app: typer.Typer) -> None:
    """Add ``demo-data`` to the app."""
    app.command("demo-data")(demo_data)


def demo_data(
    out: Annotated[Path | None, typer.Option("--out", help="Output directory (default: <home>/demo)")] = None,
    users: Annotated[int, typer.Option("--users", min=1, help="Number of users")] = 20_000,
    items: Annotated[int, typer.Option("--items", min=5, help="Number of catalog items")] = 2_000,
    days: Annotated[int, typer.Option("--days", min=1, help="Days of activity")] = 60,
    seed: Annotated[int, typer.Option("--seed", help="Random seed (same seed + end date = same data)")] = 0,
    end_date: Annotated[str | None, typer.Option(
        "--end-date", help="Last day of activity, YYYY-MM-DD (default: today in Asia/Shanghai)")] = None,
    home: HomeOption = None,
    as_json: JsonOption = False,
) -> None:
    """Generate synthetic users, items and interactions (with planted regional effects)."""
    with user_errors():
        config = DemoConfig(users=users, items=items, days=days, seed=seed, end_date=_parse_date(end_date))
        out_dir = out if out is not None else home_of(home).root / "demo"
        started = time.perf_counter()
        data, paths = _generate_and_write(config, out_dir, show_progress=not as_json and users >= _PROGRESS_FROM_USERS)
        seconds = time.perf_counter() - started
    emit(_summary(data, paths, seconds), as_json, _render)


def _parse_date(text: str | None) -> dt.date | None:
    if text is None:
        return None
    try:
        return dt.date.fromisoformat(text)
    except ValueError as exc:
        raise ValueError(f"--end-date must be YYYY-MM-DD, got {text!r}") from exc


def _generate_and_write(config: DemoConfig, out_dir: Path, show_progress: bool) -> tuple[DemoData, dict[str, Path]]:
    steps = (*STAGES, "write")
    with Progress(TextColumn("[bold]{task.description}"), BarColumn(), TimeElapsedColumn(),
                  console=console, transient=True, disable=not show_progress) as progress:
        task = progress.add_task("demo data", total=len(steps))

        def advance(stage: str) -> None:
            progress.update(task, completed=steps.index(stage), description=f"demo data: {stage}")

        data = generate(config, progress=advance)
        advance("write")
        paths = write_demo(data, out_dir)
        progress.update(task, completed=len(steps))
    return data, paths


def _summary(data: DemoData, paths: dict[str, Path], seconds: float) -> dict[str, Any]:
    interactions = data.interactions
    end = dt.date.fromisoformat(data.ground_truth["end_date"])
    next_local_midnight = dt.datetime.combine(end + dt.timedelta(days=1), dt.time(), tzinfo=ZoneInfo(TIMEZONE))
    upcoming_after = next_local_midnight.astimezone(dt.UTC)
    upcoming = data.items.filter(pl.col("starts_at") >= upcoming_after).height
    return {
        "users": data.users.height,
        "items": data.items.height,
        "upcoming_items": upcoming,
        "interactions": interactions.height,
        "actions": dict(sorted(interactions["action"].value_counts().iter_rows())),
        "first_ts": interactions["ts"].min() if interactions.height else None,
        "last_ts": interactions["ts"].max() if interactions.height else None,
        "end_date": data.ground_truth["end_date"],
        "seed": data.ground_truth["seed"],
        "effects": len(data.ground_truth["effects"]),
        "seconds": round(seconds, 2),
        "files": {name: str(path) for name, path in paths.items()},
    }


def _render(summary: dict[str, Any]) -> None:
    out = stdout_console()
    table = Table(title="demo data", show_header=False, box=None)
    for key in ("users", "items", "upcoming_items", "interactions"):
        table.add_row(key, f"{summary[key]:,}")
    for key in ("first_ts", "last_ts", "end_date", "seed", "effects", "seconds"):
        table.add_row(key, str(summary[key]))
    table.add_row("actions", ", ".join(f"{a} {n:,}" for a, n in summary["actions"].items()))
    out.print(table)
    out.print(f"written to [bold]{Path(summary['files']['users']).parent}[/bold]")
