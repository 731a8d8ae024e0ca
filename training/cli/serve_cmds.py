"""``recsys serve``: run the recommendation API with uvicorn.

Options travel to the app factory (``serving.app:create_app``) as ``RECSYS_*`` environment
variables, because with ``--workers N`` uvicorn starts fresh processes that build the app
themselves and see nothing but the environment (every other ``RECSYS_*`` variable of the
caller, such as ``RECSYS_ADMIN_KEY``, reaches them the same way). The workers keep each other
in step through the home: an interaction posted to one is folded into every other's live
state, and an admin reload reaches all of them, within ``--tail-interval`` seconds.
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Annotated

import typer

from training.cli.common import HomeOption, console, home_of

APP_FACTORY = "serving.app:create_app"


def serve_env(home: Path, reload_interval: float, model_dir: Path | None,
              tail_interval: float | None = None) -> dict[str, str]:
    """The environment the workers need (the admin key is read from the caller's own env)."""
    env = {"RECSYS_HOME": str(home), "RECSYS_RELOAD_INTERVAL": str(reload_interval),
           "MLFLOW_DISABLE_TELEMETRY": "true"}
    if model_dir is not None:
        env["RECSYS_MODEL_DIR"] = str(model_dir.expanduser().resolve())
    if tail_interval is not None:  # else the caller's RECSYS_TAIL_INTERVAL, or the default
        env["RECSYS_TAIL_INTERVAL"] = str(tail_interval)
    return env


def serve_cmd(
    host: Annotated[str, typer.Option(help="Interface to bind")] = "127.0.0.1",
    port: Annotated[int, typer.Option(min=1, max=65535, help="Port to listen on")] = 8000,
    workers: Annotated[int, typer.Option(min=1, help="Worker processes (each loads the model)")] = 1,
    reload_interval: Annotated[float, typer.Option(
        "--reload-interval", min=0,
        help="Seconds between registry polls; reload when the champion changes (0 = never)")] = 0.0,
    model_dir: Annotated[Path | None, typer.Option(
        "--model-dir", file_okay=False, help="Serve this bundle directory instead of the registry champion")] = None,
    tail_interval: Annotated[float | None, typer.Option(
        "--tail-interval", min=0,
        help="Seconds between looks at what the other workers were posted and asked to reload "
             "(default 0.5; 0 = workers do not follow each other)")] = None,
    log_level: Annotated[str, typer.Option(help="uvicorn log level")] = "info",
    home: HomeOption = None,
) -> None:
    """Serve recommendations over HTTP (docs at /docs, metrics at /metrics).

    The admin routes (POST /v1/admin/reload) need RECSYS_ADMIN_KEY in the environment;
    without it they are disabled.
    """
    import uvicorn

    engine_home = home_of(home)
    os.environ.update(serve_env(engine_home.root, reload_interval, model_dir, tail_interval))
    source = f"bundle {model_dir}" if model_dir else "the registry champion"
    console.print(f"serving {source} on http://{host}:{port} ({workers} worker{'s' if workers > 1 else ''})")
    uvicorn.run(APP_FACTORY, factory=True, host=host, port=port, workers=workers, log_level=log_level)


def register(app: typer.Typer) -> None:
    """Add this module's verbs to the app."""
    app.command("serve")(serve_cmd)
