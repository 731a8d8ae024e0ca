"""The ``recsys`` command line: one Typer app, each verb group in its own module."""

from __future__ import annotations

import importlib
import logging
import os
import warnings

import typer

from training.cli.common import reset_json_errors

app = typer.Typer(
    name="recsys",
    help="Public cultural-resource recommendation engine: ingest, train, serve, report.",
    no_args_is_help=True,
    add_completion=False,
    pretty_exceptions_enable=False,
)

# Each module adds its verbs to ``app`` through ``register(app)``.
_VERB_MODULES = ("store_cmds", "demo_cmd", "train_cmds", "report_cmd", "serve_cmds", "quickstart_cmd", "card_cmd",
                "online_cmds", "experiment_cmds")


def _register_all() -> None:
    for name in _VERB_MODULES:
        module = importlib.import_module(f"{__name__}.{name}")
        module.register(app)


@app.callback()
def _configure(verbose: bool = typer.Option(False, "--verbose", "-v", help="Debug logging, third parties included")
               ) -> None:
    reset_json_errors()
    # Without --verbose only warnings reach the terminal, plus the server's own operational lines:
    # faiss's loader, MLflow's migrations and every library's INFO narration stay quiet.
    logging.basicConfig(
        level=logging.DEBUG if verbose else logging.WARNING,
        format="%(asctime)s %(levelname)s %(name)s: %(message)s",
    )
    if not verbose:
        logging.getLogger("serving").setLevel(logging.INFO)
    # MLflow phones home unless told not to; the engine must work offline.
    os.environ.setdefault("MLFLOW_DISABLE_TELEMETRY", "true")
    os.environ.setdefault("DO_NOT_TRACK", "true")
    os.environ.setdefault("MLFLOW_ENABLE_ARTIFACTS_PROGRESS_BAR", "false")
    if not verbose:  # MLflow narrates every registration and migration at INFO
        os.environ.setdefault("MLFLOW_LOGGING_LEVEL", "WARNING")  # read when mlflow is imported
        for noisy in ("mlflow", "alembic", "faiss", "optuna", "py4j"):
            logging.getLogger(noisy).setLevel(logging.WARNING)
        # MLflow's model-signature hints address notebook users, not an operator's retrain
        warnings.filterwarnings("ignore", category=UserWarning, module=r"mlflow(\.|$)")


_register_all()


def main() -> None:
    app()
