"""``recsys quickstart``: the main job on the embedded default, from nothing to a running API.

demo data (residents' requests and the menu included) -> validated ingest -> train +
register + promote -> planner report -> API on 127.0.0.1:8000. Everything lives in the engine
home (local files + a SQLite MLflow store): no server to install.
"""

from __future__ import annotations

import os
import time
from datetime import date
from pathlib import Path
from typing import Annotated, Any

import typer

from serving.config import DEFAULT_RELOAD_INTERVAL
from training.cli.common import HomeOption, JsonOption, emit, home_of, stderr_console, stdout_console, user_errors

err = stderr_console()

QUICKSTART_TUNE_SECONDS = 30.0
"""The quickstart's recipe search budget: the whole quickstart stays under two minutes."""


def quickstart_cmd(
    users: Annotated[int, typer.Option("--users", min=100)] = 20_000,
    items: Annotated[int, typer.Option("--items", min=50)] = 2_000,
    days: Annotated[int, typer.Option("--days", min=14)] = 60,
    seed: Annotated[int, typer.Option("--seed")] = 0,
    end_date: Annotated[str | None, typer.Option("--end-date", help="Last demo day (default today)")] = None,
    serve: Annotated[bool, typer.Option("--serve/--no-serve", help="End by running the API")] = True,
    host: Annotated[str, typer.Option("--host")] = "127.0.0.1",
    port: Annotated[int, typer.Option("--port")] = 8000,
    reload_interval: Annotated[float, typer.Option(
        "--reload-interval", min=0, help="Seconds between registry polls of the API; a newly promoted champion "
                                         "is served without a restart (0 = never)")] = DEFAULT_RELOAD_INTERVAL,
    home: HomeOption = None,
    as_json: JsonOption = False,
) -> None:
    """Generate a demo cultural cloud, ingest it, train and promote a model, write the
    planner report, then serve the API."""
    from democloud import DemoConfig, generate, write_demo
    from features.ingest import ingest
    from training import report
    from training.config import load_config
    from training.train import TrainOptions, train

    engine_home = home_of(home)
    os.environ["RECSYS_HOME"] = str(engine_home.root)
    summary: dict[str, Any] = {"home": str(engine_home.root)}
    started = time.perf_counter()
    with user_errors(), err.status("quickstart") as status:
        status.update("[bold]generating demo data")
        config = DemoConfig(users=users, items=items, days=days, seed=seed,
                            end_date=date.fromisoformat(end_date) if end_date else None)
        demo_dir = engine_home.root / "demo"
        paths = write_demo(generate(config), demo_dir)
        status.update("[bold]ingesting")
        ingested = ingest(engine_home, interactions=paths["interactions"], users=paths["users"],
                          items=paths["items"], requests=paths["requests"])
        ingest(engine_home, items=paths["programmes"])  # the bureau's menu (菜单), its own provider file
        summary["ingest"] = ingested.to_dict()
        status.update("[bold]training")
        # a quickstart run again on the same home retrains on purpose: no "nothing to do" check
        result = train(engine_home, TrainOptions(config=load_config(model="hybrid"), seed=seed,
                                                 tune_budget=QUICKSTART_TUNE_SECONDS),
                       progress=lambda step: status.update(f"[bold]training: {step}"))
        summary["train"] = result.to_dict()
        status.update("[bold]writing the planner report")
        written = report.write_report(engine_home, engine_home.reports / "latest", window_days=28, min_users=10,
                                      lang="zh")
        summary["report"] = str(Path(written.out_dir) / "report.html")
    summary["seconds"] = round(time.perf_counter() - started, 1)
    emit(summary, as_json, _render)
    if serve:
        _serve(host, port, reload_interval)


def _render(summary: dict[str, Any]) -> None:
    out = stdout_console()
    train = summary["train"]
    metrics = train["key_metrics"]
    out.print(f"[bold]engine home[/bold]: {summary['home']}")
    counts = summary["ingest"].get("tables", {}).get("interactions", {})
    out.print(f"[bold]ingested[/bold]: {counts.get('accepted', '?')} interactions")
    out.print(f"[bold]model[/bold]: {train['model']} version {train['version']} "
              f"({'champion' if train['promoted'] else 'not promoted'}), NDCG@10 {metrics['ndcg@10']:.4f}, "
              f"{train['lift_over_popularity'] or 0:.2f}x popularity")
    out.print(f"[bold]planner report[/bold]: {summary['report']}")
    out.print(f"done in {summary['seconds']} s")


QUICKSTART_SCOPES = "read+write:interactions"
"""What the session key may do: what an app's backend does, nothing of the admin's."""


def _serve(host: str, port: int, reload_interval: float) -> None:
    """Run the API with a fresh key for this session (personal lists and posts need one); it
    follows the registry, so a champion promoted by a later ``recsys train`` is served."""
    import uvicorn

    from serving.auth import API_KEY_HEADER
    from serving.config import env_name
    from training.cli.serve_cmds import APP_FACTORY, checked_uvicorn_options, new_key

    key = new_key()
    os.environ[env_name("reload_interval")] = str(reload_interval)
    inline = env_name("api_keys")
    os.environ[inline] = ",".join(filter(None, (os.environ.get(inline), f"{key}={QUICKSTART_SCOPES}")))
    options = checked_uvicorn_options()
    base = f"http://{host}:{port}"
    out = stdout_console()  # soft-wrapped: a long curl line stays one line to copy
    out.print("\n[bold]API starting[/bold]; this session's API key (read + write:interactions) is in KEY:")
    keyed = f'curl -H "{API_KEY_HEADER}: $KEY"'
    for line in (
        f"export KEY={key}",
        f"{keyed} '{base}/v1/users/u000001/recommendations?n=5'",
        f"{keyed} '{base}/v1/users/new-visitor/recommendations?n=5&region=110119'",
        f"curl '{base}/v1/regions/110119/recommendations?n=5&age_band=60%2B'",
        f"curl '{base}/v1/model'",
        f"open {base}/docs  ·  {base}/reports",
    ):
        out.print(f"  {line}", markup=False, highlight=False)
    uvicorn.run(APP_FACTORY, factory=True, host=host, port=port, log_level="info", **options)


def register(app: typer.Typer) -> None:
    app.command("quickstart")(quickstart_cmd)
