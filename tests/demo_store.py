"""A demo engine home for acceptance tests: a synthetic store plus helpers to train on it.

``build_demo_home(root)`` generates the synthetic Beijing data set and puts it in
``root/store`` the way production does: ``features.ingest.ingest`` over the files
``recsys demo-data`` writes (residents' requests and the menu of programmes included).
``via_ingest=False`` instead writes the stored tables directly
under the store's commit rule (data file named after an ingest id, committed by its line in
``ingest_log.jsonl``), for tests that must not depend on ingest. Either way the store reads
back through ``features.store`` exactly as training sees it.

:func:`trained_demo` builds and trains one home per test session (generation ~1 s, ingest
a few seconds, a hybrid train ~5-10 s); tests ask for it as the ``trained_demo`` fixture
(tests/conftest.py) and copy it (``trained_demo_copy``, :func:`copy_home`) before changing
it. :func:`run_cli` runs ``recsys`` in-process with stdout (the JSON summary) and stderr
(progress, errors) captured apart.
"""

from __future__ import annotations

import json
import os
import shutil
import traceback
from dataclasses import dataclass
from datetime import date
from pathlib import Path
from typing import Any

import polars as pl
import pytest
from click.testing import Result
from typer.testing import CliRunner

from democloud import TIMEZONE, DemoConfig, DemoData, generate, write_demo
from features import store
from recsys.home import EngineHome
from training.cli import app

DEMO = DemoConfig(users=20_000, items=2_000, days=60, seed=11, end_date=date(2026, 10, 31))
"""The data set every training acceptance test uses (same seed + end date = same frames)."""

DIRECT_INGEST_ID = "demo-direct-0001"
"""The ingest id used when the store is written directly (no ``features.ingest``)."""

MLFLOW_QUIET = {"MLFLOW_ENABLE_ARTIFACTS_PROGRESS_BAR": "false", "MLFLOW_DISABLE_TELEMETRY": "true",
                "DO_NOT_TRACK": "true"}
MLFLOW_URI_VARIABLES = ("MLFLOW_TRACKING_URI", "MLFLOW_REGISTRY_URI")


@dataclass(frozen=True)
class DemoHome:
    """A built demo home: where it is, what was generated, and how the store was filled."""

    root: Path
    data: DemoData
    via_ingest: bool

    @property
    def home(self) -> EngineHome:
        return EngineHome.at(self.root)


def prepare_mlflow_env() -> None:
    """Silence MLflow's progress bars and telemetry, and let each home use its own store.

    A set ``MLFLOW_TRACKING_URI`` overrides every home's SQLite store (and MLflow itself
    exports it whenever something calls ``mlflow.set_tracking_uri``), so it is cleared:
    a test home must never write to a store outside its directory.
    """
    for key, value in MLFLOW_QUIET.items():
        os.environ.setdefault(key, value)
    for key in MLFLOW_URI_VARIABLES:
        os.environ.pop(key, None)


_EMPTY_REGISTRY: list[Path] = []


def seed_registry(root: Path) -> None:
    """Give a new home ``root`` an empty, already migrated MLflow store (``root/mlflow.db``).

    A store MLflow creates runs its ~50 schema migrations, each committed (fsynced) apart:
    seconds per home on a busy disk. The copy is made once per test process, the way MLflow
    makes a store (tables, migrations, the Default experiment); everything the engine puts in
    it (its experiment, the registry marker) is still made by the code under test. A home that
    already has a store is left alone.
    """
    target = EngineHome.at(root).mlflow_db
    if target.exists():
        return
    if not _EMPTY_REGISTRY:
        import atexit
        import tempfile

        from mlflow import MlflowClient

        directory = Path(tempfile.mkdtemp(prefix="recsys-test-registry-"))
        atexit.register(shutil.rmtree, directory, True)
        uri = f"sqlite:///{directory / 'mlflow.db'}"
        client = MlflowClient(tracking_uri=uri, registry_uri=uri)
        client.search_experiments()
        client.search_registered_models()
        _EMPTY_REGISTRY.append(directory / "mlflow.db")
    target.parent.mkdir(parents=True, exist_ok=True)
    shutil.copyfile(_EMPTY_REGISTRY[0], target)


def build_demo_home(root: Path, config: DemoConfig = DEMO, *, via_ingest: bool = True) -> DemoHome:
    """Generate ``config`` and fill ``root/store`` with it; returns the built home.

    ``via_ingest`` (default) writes the files ``recsys demo-data`` writes and ingests them,
    the production path; ``False`` writes the stored tables directly (commit rule only),
    for tests that must not depend on ingest.
    """
    prepare_mlflow_env()
    root.mkdir(parents=True, exist_ok=True)
    seed_registry(root)
    data = generate(config)
    home = EngineHome.at(root)
    if via_ingest:
        from features.ingest import ingest

        paths = write_demo(data, root / "demo")
        summary = ingest(home, interactions=paths["interactions"], users=paths["users"], items=paths["items"],
                         requests=paths["requests"])
        menu = ingest(home, items=paths["programmes"])  # the bureau's menu: a provider file of its own
        if not (summary.committed and menu.committed):
            raise RuntimeError(f"demo ingest did not commit: {summary.to_dict()} {menu.to_dict()}")
    else:
        write_store_directly(home, data)
    return DemoHome(root=root, data=data, via_ingest=via_ingest)


def write_store_directly(home: EngineHome, data: DemoData, ingest_id: str = DIRECT_INGEST_ID) -> None:
    """Write the stored tables of ``data`` into ``home`` and commit them under ``ingest_id``.

    Interactions go to day partitions (local calendar day), each file named after the
    ingest id; the log line written last is what makes them visible to readers.
    """
    home.store.mkdir(parents=True, exist_ok=True)
    data.items.write_parquet(home.items)
    data.users.write_parquet(home.users)
    days = data.interactions.with_columns(
        pl.col("ts").dt.convert_time_zone(TIMEZONE).dt.strftime("%Y-%m-%d").alias("__date")
    )
    for (day,), part in days.group_by("__date"):
        directory = home.interactions / f"date={day}"
        directory.mkdir(parents=True, exist_ok=True)
        part.drop("__date").write_parquet(directory / f"{ingest_id}.parquet")
    with open(home.ingest_log, "a", encoding="utf-8") as fh:
        fh.write(json.dumps({"ingest_id": ingest_id}) + "\n")


def stored_interactions(home: EngineHome) -> pl.DataFrame:
    """Every committed interaction of the store, as training reads them."""
    return store.scan_interactions(home).collect()


def stored_items(home: EngineHome) -> pl.DataFrame:
    """The store's catalog, hidden and ended items included."""
    return store.scan_items(home).collect()


def copy_home(source: Path, target: Path) -> Path:
    """A full copy of a home (store and MLflow data) for a test that mutates the registry.

    The copy's registry, runs and aliases are its own. MLflow records the experiment's
    artifact root as an absolute URI, so runs made in the copy store their artifacts under
    the source's ``mlartifacts`` (in new run directories): the source's registry never
    refers to them, so the source is unaffected, but it must outlive its copies.
    """
    shutil.copytree(source, target)
    return target


# --------------------------------------------------------------------------- the CLI


def run_cli(*args: str) -> Result:
    """Invoke ``recsys`` in-process; stdout and stderr are captured separately."""
    prepare_mlflow_env()
    return CliRunner().invoke(app, list(args))


def describe(result: Result) -> str:
    """Everything a failing assertion needs to show about a CLI run."""
    text = f"exit code {result.exit_code}\nstdout:\n{result.stdout}\nstderr:\n{result.stderr}"
    if result.exc_info is not None and not isinstance(result.exception, SystemExit):
        text += "\n" + "".join(traceback.format_exception(*result.exc_info))
    return text


def cli_json(result: Result) -> dict[str, Any]:
    """The JSON summary a successful ``--json`` run printed on stdout."""
    assert result.exit_code == 0, describe(result)
    text = result.stdout
    start = text.find("{")
    assert start >= 0, describe(result)
    return json.loads(text[start:])


def train_cli(root: Path, *options: str) -> dict[str, Any]:
    """``recsys train --home ROOT --json --no-tune OPTIONS...`` (the configured recipe as given) and its summary."""
    return cli_json(run_cli("train", "--home", str(root), "--json", "--no-tune", *options))


# --------------------------------------------------------------------------- a trained home


@dataclass(frozen=True)
class TrainedDemo:
    """The demo home after ``train --model hybrid`` (version 1, champion) and
    ``train --model als --no-promote`` (version 2, candidate). Treat it as read-only."""

    demo: DemoHome
    hybrid: dict[str, Any]
    als: dict[str, Any]

    @property
    def root(self) -> Path:
        return self.demo.root

    @property
    def home(self) -> EngineHome:
        return self.demo.home


_TRAINED: dict[str, TrainedDemo] = {}


def trained_demo(tmp_path_factory: pytest.TempPathFactory) -> TrainedDemo:
    """The session's trained demo home, built on first use and shared by every test module
    (what the ``trained_demo`` fixture of tests/conftest.py returns)."""
    if "demo" not in _TRAINED:
        root = tmp_path_factory.mktemp("trained-demo") / "home"
        demo = build_demo_home(root)
        hybrid = train_cli(root, "--model", "hybrid")
        als = train_cli(root, "--model", "als", "--no-promote")
        _TRAINED["demo"] = TrainedDemo(demo=demo, hybrid=hybrid, als=als)
    return _TRAINED["demo"]
