"""Shared pieces of the crash-safety and concurrency tests.

A small synthetic home trained once per session (hybrid, version 1 = champion; the
``trained_small_home`` fixture of tests/conftest.py), ``recsys``
as a real subprocess (so it can be SIGKILLed), a large interactions file for ingests that
take long enough to be interrupted, a cheap fingerprint of what a store reader sees, and a
server over a bundle directory whose store catalog matches the bundle's.
"""

from __future__ import annotations

import subprocess
import sys
import time
from datetime import date
from pathlib import Path

import numpy as np
import polars as pl
import pytest

from democloud import DemoConfig
from features import store
from features.ingest import ingest
from recsys.bundle import ModelBundle
from recsys.home import EngineHome
from tests.demo_store import MLFLOW_QUIET, MLFLOW_URI_VARIABLES, build_demo_home, prepare_mlflow_env, train_cli
from tests.serving_fixtures import ROOT

SMALL_DEMO = DemoConfig(users=2000, items=300, days=30, seed=5, end_date=date(2026, 10, 31))
_CACHE: dict[str, Path] = {}


def trained_small_home(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A small demo home with a trained hybrid as version 1 (champion); treat it as read-only."""
    if "home" not in _CACHE:
        root = tmp_path_factory.mktemp("small-trained") / "home"
        build_demo_home(root, SMALL_DEMO)
        summary = train_cli(root, "--model", "hybrid", "--seed", "1")
        assert summary["version"] == "1" and summary["promoted"], summary
        _CACHE["home"] = root
    return _CACHE["home"]


def recsys(*args: str, **popen) -> subprocess.Popen:
    """``recsys ARGS`` as a subprocess (stdout and stderr piped unless given)."""
    prepare_mlflow_env()
    popen.setdefault("stdout", subprocess.PIPE)
    popen.setdefault("stderr", subprocess.PIPE)
    return subprocess.Popen([sys.executable, "-c", "from training.cli import main; main()", *args],
                            cwd=ROOT, env=popen.pop("env", None) or _env(), **popen)


def _env() -> dict[str, str]:
    import os

    env = {**os.environ, **MLFLOW_QUIET, "PYTHONUNBUFFERED": "1"}
    for name in MLFLOW_URI_VARIABLES:
        env.pop(name, None)
    return env


def run_recsys(*args: str, timeout: float = 300) -> subprocess.CompletedProcess:
    process = recsys(*args, text=True)
    out, err = process.communicate(timeout=timeout)
    return subprocess.CompletedProcess(process.args, process.returncode, out, err)


def big_interactions(path: Path, home: EngineHome, rows: int, seed: int = 0) -> Path:
    """``rows`` valid views of the store's items by many new users, as a CSV file."""
    items = store.scan_items(home).collect()["item_id"].to_list()
    rng = np.random.default_rng(seed)
    frame = pl.DataFrame({
        "user_id": [f"bulk{u}" for u in rng.integers(0, 50_000, rows)],
        "item_id": [items[i] for i in rng.integers(0, len(items), rows)],
        "action": "view",
        "ts": (1_793_000_000 + rng.integers(0, 30 * 86_400, rows)).astype(str),
    })
    frame.write_csv(path)
    return path


def fingerprint(home: EngineHome) -> dict[str, int]:
    """What a reader of the store sees, in a few numbers (row counts and order-free hashes)."""
    interactions = store.scan_interactions(home).collect()
    users = store.scan_users(home).collect()
    return {
        "interactions": interactions.height,
        "interactions_hash": int(interactions.hash_rows(seed=7).sum()) if interactions.height else 0,
        "users": users.height,
        "items": store.scan_items(home).collect().height,
        "quarantine": store.scan_quarantine(home).collect().height,
    }


def store_for_bundle(root: Path, bundle: Path) -> EngineHome:
    """A home whose store catalog holds the bundle's items (so posted interactions ingest)."""
    home = EngineHome.at(root)
    catalog = ModelBundle.load(bundle).catalog
    items = root.parent / f"{root.name}-items.csv"
    pl.DataFrame({"item_id": catalog.items.ids, "title": list(catalog.title), "kind": "event"}).write_csv(items)
    assert ingest(home, items=items).committed
    return home


def wait_for(condition, timeout: float, interval: float = 0.02, what: str = "condition") -> None:
    deadline = time.monotonic() + timeout
    while not condition():
        if time.monotonic() > deadline:
            raise TimeoutError(f"{what} not reached after {timeout}s")
        time.sleep(interval)
