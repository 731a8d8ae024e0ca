"""Acceptance of the unattended weekly retrain, the way a scheduler runs it.

One small demo home whose last week arrives late. The shipped crontab entry's ``recsys train``
command (``training/ops/recsys-retrain.cron``, plus ``--no-tune`` to keep the test fast) runs
as a real process, judged by its exit code and JSON: the first run promotes, a second run on
unchanged data has nothing to do (0), a forced worse model is refused by the gate (3, champion
unchanged, the gate's reasons on the MLflow run), and after the late week is ingested the run
promotes again (0), which a server started with default settings (a short poll interval) serves
within its poll interval. ``recsys rollback --to`` returns to the first champion, a second
rollback has nothing to go back to (a JSON error with exit code 2), and ``recsys models
--history`` lists every move.
"""

from __future__ import annotations

import json
import subprocess
import time
from dataclasses import dataclass
from datetime import timedelta
from pathlib import Path
from typing import Any

import httpx
import polars as pl
import pytest

from recsys.home import EngineHome
from tests.demo_store import cli_json, run_cli
from tests.robustness_fixtures import SMALL_DEMO, run_recsys, wait_for
from tests.serving_fixtures import Server
from tests.test_ops_recipes import cron_entries, train_arguments

try:  # the demo generator's home
    from democloud import generate, write_demo  # type: ignore[attr-defined,unused-ignore]
except ImportError:
    from democloud import generate, write_demo

LATE_DAYS = 7
POLL_SECONDS = 1.0


@dataclass(frozen=True)
class LateWeekHome:
    """A home ingested up to a week before the demo's end; ``late`` holds the missing week."""

    root: Path
    late: Path


def cron_train(root: Path) -> subprocess.CompletedProcess:
    """The crontab entry's ``recsys train`` on ``root`` (``--no-tune`` for speed), as a real process."""
    (_, command), = cron_entries()
    return run_recsys("train", *train_arguments(command), "--home", str(root), "--no-tune")


def summary_of(result: subprocess.CompletedProcess) -> dict[str, Any]:
    return json.loads(result.stdout[result.stdout.index("{"):])


def champion_of(root: Path) -> str | None:
    versions = cli_json(run_cli("models", "--home", str(root), "--json"))["versions"]
    return next((v["version"] for v in versions if "champion" in v["aliases"]), None)


@pytest.fixture(scope="module")
def late_week_home(tmp_path_factory: pytest.TempPathFactory) -> LateWeekHome:
    base = tmp_path_factory.mktemp("unattended")
    paths = write_demo(generate(SMALL_DEMO), base / "demo")
    interactions = pl.read_parquet(paths["interactions"])
    cutoff = interactions["ts"].max() - timedelta(days=LATE_DAYS)
    early, late = base / "early.parquet", base / "late.parquet"
    interactions.filter(pl.col("ts") <= cutoff).write_parquet(early)
    interactions.filter(pl.col("ts") > cutoff).write_parquet(late)
    root = base / "home"
    cli_json(run_cli("ingest", "--home", str(root), "--users", str(paths["users"]), "--items", str(paths["items"]),
                     "--interactions", str(early), "--json"))
    return LateWeekHome(root, late)


def test_the_weekly_retrain_runs_unattended(late_week_home: LateWeekHome, tmp_path: Path) -> None:
    root = late_week_home.root
    first = cron_train(root)
    assert first.returncode == 0, first.stderr
    assert summary_of(first)["promoted"] is True and champion_of(root) == "1"

    again = cron_train(root)
    assert again.returncode == 0, again.stderr
    nothing = summary_of(again)
    assert nothing["status"] == "nothing_to_do" and nothing["champion"] == "1", nothing
    assert champion_of(root) == "1"

    worse = run_recsys("train", "--home", str(root), "--json", "--no-tune", "--force", "--model", "popularity")
    assert worse.returncode == 3, worse.stdout + worse.stderr
    refused = summary_of(worse)
    assert refused["status"] == "refused" and refused["version"] == "2" and champion_of(root) == "1"
    _assert_gate_logged(root, refused)

    server = Server({"RECSYS_HOME": str(root), "RECSYS_RELOAD_INTERVAL": str(POLL_SECONDS)},
                    tmp_path / "server.log").start()
    try:
        assert _served_version(server) == "1"
        cli_json(run_cli("ingest", "--home", str(root), "--interactions", str(late_week_home.late), "--json"))
        newer = cron_train(root)
        assert newer.returncode == 0, newer.stderr
        promoted = summary_of(newer)
        assert promoted["promoted"] is True and promoted["version"] == "3" and champion_of(root) == "3"
        started = time.monotonic()
        wait_for(lambda: _served_version(server) == "3", timeout=POLL_SECONDS + 30, interval=0.1,
                 what="the server serving version 3")
        assert time.monotonic() - started < POLL_SECONDS + 30
        metrics = httpx.get(server.base + "/metrics", timeout=5).text
        assert 'recsys_model_reloads_total{outcome="ok"} 1.0' in metrics
    finally:
        server.stop()

    back = cli_json(run_cli("rollback", "--home", str(root), "--to", "1", "--json"))
    assert back == {"champion": "1", "previous": "3"} and champion_of(root) == "1"
    again_back = run_cli("rollback", "--home", str(root), "--json")
    assert again_back.exit_code == 2
    error = json.loads(again_back.stdout)
    assert error["exit_code"] == 2 and "nothing to roll back to" in error["error"]

    history = cli_json(run_cli("models", "--home", str(root), "--history", "--json"))["history"]
    assert [(move["version"], move["previous"], move["by"]) for move in history] == [
        ("1", None, "train"), ("3", "1", "train"), ("1", "3", "rollback")]
    shown = run_cli("models", "--home", str(root), "--history")
    assert shown.exit_code == 0 and "rollback" in shown.stdout and "candidate" in shown.stdout


def _served_version(server: Server) -> str | None:
    try:
        return str(httpx.get(server.base + "/v1/model", timeout=5).json().get("version"))
    except (httpx.HTTPError, ValueError):
        return None


def _assert_gate_logged(root: Path, refused: dict[str, Any]) -> None:
    import mlflow

    from training import registry

    client = registry.connect(EngineHome.at(root))
    tags = client.get_run(refused["run_id"]).data.tags
    assert tags["gate.decision"] == "refused" and tags["gate.promote"] == "false"
    reasons = [tags[key] for key in sorted(tags) if key.startswith("gate.reason.")]
    assert reasons == refused["gate"]["reasons"] and any("< champion" in reason for reason in reasons)
    gate = mlflow.artifacts.load_dict(f"runs:/{refused['run_id']}/gate.json")
    assert gate["reasons"] == reasons and gate["champion"] == "1" and gate["promoted"] is False
    # the data-health comparison rides along with every run
    assert tags["health.status"] in ("ok", "warning") and refused["health"]["newest"]["interactions"] > 0
    assert mlflow.artifacts.load_dict(f"runs:/{refused['run_id']}/health.json") == refused["health"]
