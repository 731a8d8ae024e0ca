"""``recsys train``, ``promote``, ``rollback``, ``models`` and ``recommend``.

``recsys train`` is what a scheduler runs unattended, so its exit code says what happened
(:mod:`training.cli.common`): 0 promoted or nothing to do (no new data since the champion's
``data_end``, unless ``--force``), 3 trained but refused by the gate, 2 bad input or
configuration (a training already running counts: ``--wait`` to queue behind it), 1 failure.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from datetime import UTC, datetime
from enum import StrEnum
from pathlib import Path
from typing import Annotated, Any

import typer
from rich.console import Console
from rich.markup import escape
from rich.table import Table

from recsys.candidates import DEFAULT_MAX_USERS
from recsys.contract import parse_timestamp
from recsys.models import MODELS
from training.cli.common import (
    EXIT_REFUSED,
    HomeOption,
    JsonOption,
    emit,
    fail,
    home_of,
    stderr_console,
    stdout_console,
    user_errors,
)

out = stdout_console()
TABLE_WIDTH = 200
"""Width the versions table may take whatever the console says: it keeps its natural width (about
100 columns) instead of being squeezed on a narrow or absent terminal."""


ModelName = StrEnum("ModelName", {name: name for name in MODELS})  # type: ignore[misc]
"""The ``--model`` choices: exactly the models :mod:`recsys.models` registers."""


class Engine(StrEnum):
    implicit = "implicit"
    spark = "spark"


def train_cmd(
    model: Annotated[ModelName | None, typer.Option("--model", help="Model (default: config, else hybrid)")] = None,
    config: Annotated[Path | None, typer.Option("--config", help="TOML config (experiments/configs/*.toml)")] = None,
    test_days: Annotated[float, typer.Option("--test-days", min=0.5, help="Days after the cutoff used as test")] = 7,
    seed: Annotated[int, typer.Option("--seed")] = 0,
    no_promote: Annotated[bool, typer.Option("--no-promote", help="Register only; never move champion")] = False,
    tolerance: Annotated[float, typer.Option("--tolerance", min=0, max=1, help="Allowed NDCG@10 drop")] = 0.02,
    rural_floor: Annotated[float, typer.Option("--rural-floor", min=0, help="Min rural/urban NDCG ratio")] = 0.8,
    report: Annotated[bool, typer.Option("--report", help="Also write the planner report and log it")] = False,
    engine: Annotated[Engine, typer.Option("--engine", help="Fit in-process (implicit) or on Spark (MLlib ALS; "
                                                            "models als and hybrid)")] = Engine.implicit,
    spark_master: Annotated[str | None, typer.Option("--spark-master", help="Spark master URL for --engine spark "
                                                                            "(default local[*])")] = None,
    candidate_users: Annotated[int, typer.Option(
        "--candidate-users", min=0, help="Users given precomputed serving lists, the most active first; the "
                                         "others are scored per request")] = DEFAULT_MAX_USERS,
    no_tune: Annotated[bool, typer.Option("--no-tune", help="Train the configured recipe as given (no search)")
                       ] = False,
    tune_budget: Annotated[float | None, typer.Option(
        "--tune-budget", min=1, help="Seconds the recipe search may take (default: sized to the store, "
                                     "60 s + 0.4 ms per interaction, at most 40 min)")] = None,
    trials: Annotated[int | None, typer.Option("--trials", min=1, help="At most this many search trials")] = None,
    force: Annotated[bool, typer.Option("--force", help="Train even when no data arrived since the champion's "
                                                        "data_end")] = False,
    wait: Annotated[float, typer.Option("--wait", min=0, help="Seconds to wait for a training of the same home "
                                                              "that is still running (default: stop at once, "
                                                              "exit 2)")] = 0,
    home: HomeOption = None,
    as_json: JsonOption = False,
) -> None:
    """Search for the best recipe on a validation cut (unless --no-tune), fit it, evaluate it once on the
    test part, refit on all data, register, and gate promotion.

    Exit 0: promoted, registered with --no-promote, or nothing to do (no new data; --force trains
    anyway); 3: trained but the gate kept the champion; 2: bad input or another training running; 1: failure."""
    from training.config import load_config
    from training.search_space import FAMILIES
    from training.train import NoNewData, TrainOptions, train, training_lock

    if spark_master is not None and engine is not Engine.spark:
        raise fail("--spark-master needs --engine spark")
    tune = not no_tune and engine is Engine.implicit  # the search fits with implicit; Spark trains as configured
    with user_errors():
        cfg = load_config(config, model.value if model else None)
        options = TrainOptions(config=cfg, test_days=test_days, seed=seed, promote=not no_promote,
                               tolerance=tolerance, rural_floor=rural_floor, report=report,
                               candidate_users=candidate_users, tune=tune, tune_budget=tune_budget,
                               tune_trials=trials, families=(model.value,) if model else FAMILIES,
                               only_new_data=not force and not no_promote)
        run = train if engine is Engine.implicit else _spark_trainer(spark_master)
        engine_home = home_of(home)
        try:
            with training_lock(engine_home, wait), stderr_console().status("training") as status:
                result = run(engine_home, options, progress=lambda step: status.update(f"[bold]{step}"))
        except NoNewData as nothing:
            emit(nothing.to_dict(), as_json, lambda summary: out.print(summary["message"], markup=False))
            return
    emit(result.to_dict(), as_json, _render_train)
    if result.refused:
        raise typer.Exit(EXIT_REFUSED)


def _spark_trainer(master: str | None) -> Callable[..., Any]:
    """``train_spark`` bound to ``master``; a clear error when the ``spark`` extra is missing."""
    try:
        from training.spark_train import SparkOptions, train_spark
    except ImportError as exc:
        raise fail(f"--engine spark needs pyspark ({exc}); install it with: pip install 'cultural-recsys[spark]'") \
            from exc
    options = SparkOptions(master=master) if master else SparkOptions()
    return lambda home, train_options, progress: train_spark(home, train_options, options, progress=progress)


def _render_train(summary: dict[str, Any]) -> None:
    _render_tuning(summary.get("tuning"))
    table = Table(title=f"recsys train: {summary['model']} -> version {summary['version']}")
    table.add_column("metric")
    table.add_column("value", justify="right")
    for key, value in summary["key_metrics"].items():
        table.add_row(key, "-" if value is None else f"{value:.4f}")
    table.add_row("popularity ndcg@10", f"{summary['baseline_ndcg@10']:.4f}")
    lift = summary.get("lift_over_popularity")
    table.add_row("lift over popularity", "-" if lift is None else f"{lift:.2f}x")
    out.print(table)
    render_exposure(summary.get("exposure"))
    out.print(f"split: {summary['split']}", markup=False)
    for note in summary.get("notes", []):
        out.print(f"[yellow]note:[/yellow] {escape(note)}")
    render_health(summary.get("health"))
    verdict = "[green]promoted to champion[/green]" if summary["promoted"] else "[yellow]not promoted[/yellow]"
    out.print(f"{verdict} (champion: {summary['champion']}); " + "; ".join(summary["gate"]["reasons"]))
    out.print(f"run {summary['run_id']} in {summary['seconds']} s")


def _render_tuning(tuning: dict[str, Any] | None) -> None:
    if not tuning:
        out.print("tuning: off (--no-tune or --engine spark): the configured recipe as given")
        return
    configured = tuning["configured_validation_ndcg@10"]
    versus = "" if configured is None else (f" vs configured {configured:.4f}"
                                            f" ({tuning['gain_over_configured'] or 0:.2f}x)")
    out.print(f"tuning: {tuning['completed']}/{tuning['trials']} trials in {tuning['seconds']:.0f} s "
              f"(budget {tuning['budget_seconds']:.0f} s, {tuning['validation_users']} validation users); best "
              f"{tuning['best_model']} ({tuning['best_origin']}) validation NDCG@10 "
              f"{tuning['best_validation_ndcg@10'] or 0:.4f}{versus}", markup=False)


def render_exposure(figures: dict[str, float] | None) -> None:
    """Each exposure group's share of the top-10 slots against its floor, and what meeting them cost."""
    if not figures:
        return
    groups = sorted({key.split(".")[1] for key in figures if key.endswith(".floor")})
    for group in groups:
        out.print(f"exposure {group}: share {figures[f'exposure.{group}.share@10']:.1%} "
                  f"(before {figures[f'exposure.{group}.share_before@10']:.1%}) vs floor "
                  f"{figures[f'exposure.{group}.floor']:.1%}", markup=False)
    out.print(f"exposure NDCG@10 {figures['exposure.ndcg@10.before']:.4f} -> {figures['exposure.ndcg@10.after']:.4f} "
              f"(cost {figures['exposure.ndcg_cost']:.2%})", markup=False)


def render_health(report: dict[str, Any] | None) -> None:
    """The data-health warnings of a run (newest week against the one before), or one line saying none."""
    if report is None:
        return
    warnings = report["warnings"]
    if not warnings:
        out.print(f"data health: newest {report['window_days']:g} days in line with the {report['window_days']:g} "
                  "before", markup=False)
    for warning in warnings:
        out.print(f"[yellow]data health warning:[/yellow] {escape(warning)}")


def promote_cmd(version: Annotated[str, typer.Option("--version", help="Version to make champion")],
                home: HomeOption = None, as_json: JsonOption = False) -> None:
    """Make a registered version the champion (bypasses the gate; recorded for rollback).

    The version's bundle is downloaded and loaded first, as a server would; a version whose
    artifacts are missing or broken is refused (exit 2) and champion stays where it is."""
    from training import registry

    with user_errors():
        client = registry.connect(home_of(home))
        registry.check_version(client, version)
        previous = registry.promote(client, version)
    emit({"champion": version, "previous": previous}, as_json)


def rollback_cmd(to: Annotated[str | None, typer.Option(
                    "--to", help="Previous champion to return to (default: the one before the current)")] = None,
                home: HomeOption = None, as_json: JsonOption = False) -> None:
    """Move champion back to the previous champion, or --to an older one (refused, exit 2, if that
    version's bundle is missing or broken, or there is nothing to roll back to)."""
    from training import registry

    with user_errors():
        client = registry.connect(home_of(home))
        was, now = registry.rollback(client, check=True, to=to)
    emit({"champion": now, "previous": was}, as_json)


def models_cmd(history: Annotated[bool, typer.Option("--history", help="Also list every move of champion")] = False,
               home: HomeOption = None, as_json: JsonOption = False) -> None:
    """List registered versions, their aliases and key metrics (--history: and the champion's moves)."""
    from training import registry

    with user_errors():
        client = registry.connect(home_of(home))
        rows = [v.to_dict() for v in registry.versions(client)]
        moves = registry.champion_log(client) if history else None
    if as_json:
        emit({"versions": rows, **({"history": moves} if moves is not None else {})}, True)
        return
    _render_versions(rows)
    if moves is not None:
        _render_history(moves)


def _render_history(moves: list[dict[str, Any]]) -> None:
    table = Table(title="champion history (oldest first)")
    for column in ("when", "champion", "previous", "by"):
        table.add_column(column, no_wrap=True)
    for move in moves:
        table.add_row(str(move.get("at", "")), str(move.get("version", "")), str(move.get("previous") or "-"),
                      str(move.get("by", "")))
    out.print(table)
    if not moves:
        out.print("no champion moves recorded yet", markup=False)


def _render_versions(rows: list[dict[str, Any]]) -> None:
    table = Table(title="cultural-recsys versions")
    for column in ("version", "aliases", "model", "ndcg@10", "rural/urban", "online ctr", "created"):
        # aliases in full: a cut "champ…" is no use to an operator deciding a rollback
        table.add_column(column, no_wrap=column != "aliases", overflow="fold", min_width=len("candidate,champion")
                         if column == "aliases" else None)
    for row in rows:
        tags = row["tags"]
        created = datetime.fromtimestamp(row["created"] / 1000, UTC).strftime("%Y-%m-%d %H:%M")
        table.add_row(row["version"], ",".join(row["aliases"]), tags.get("model", ""),
                      tags.get("ndcg_at_10", "")[:6], tags.get("rural_urban_ndcg_ratio", "")[:5],
                      tags.get("online_click_through", "")[:6], created)
    # measured, not squeezed: on a narrow console (or none) rich would shrink the aliases to nothing;
    # a wide table the terminal wraps still shows every alias whole
    Console(soft_wrap=True, width=max(out.width, TABLE_WIDTH)).print(table)  # print(width=) is capped at the console's


def recommend_cmd(
    out_file: Annotated[Path, typer.Option("--out", help="Output .csv or .parquet")],
    users: Annotated[Path | None, typer.Option("--users", help="CSV/Parquet with a user_id column")] = None,
    all_users: Annotated[bool, typer.Option("--all", help="Every user the model knows")] = False,
    n: Annotated[int, typer.Option("-n", "--n", min=1, max=1000)] = 10,
    at: Annotated[str | None, typer.Option("--at", help="ISO-8601 time the list is for (default now)")] = None,
    version: Annotated[str | None, typer.Option("--version", help="Registered version (default champion)")] = None,
    home: HomeOption = None,
    as_json: JsonOption = False,
) -> None:
    """Batch recommendations with the API's rules: columns user_id, rank, item_id, score."""
    from training.batch import home_controls, load_registered, read_user_ids, recommend_batch, write_output

    if users is None and not all_users:
        raise fail("give --users FILE or --all")
    moment = parse_timestamp(at) if at else datetime.now(UTC)
    if moment is None:
        raise fail(f"--at: cannot read {at!r} as a time")
    started = time.perf_counter()
    with user_errors():
        ids = read_user_ids(users) if users else None
        used, bundle = load_registered(home_of(home), version)
        frame = recommend_batch(bundle, ids, n, moment.timestamp(), controls=home_controls(home_of(home)))
        write_output(frame, out_file)
    emit({"version": used, "users": frame["user_id"].n_unique(), "rows": frame.height, "out": str(out_file),
          "at": moment.isoformat(), "seconds": round(time.perf_counter() - started, 2)}, as_json)


def register(app: typer.Typer) -> None:
    app.command("train")(train_cmd)
    app.command("promote")(promote_cmd)
    app.command("rollback")(rollback_cmd)
    app.command("models")(models_cmd)
    app.command("recommend")(recommend_cmd)
