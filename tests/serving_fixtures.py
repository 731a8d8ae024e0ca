"""Model bundles and registries for the API tests.

``rules_data()`` extends the planted data set of :mod:`tests.model_fixtures` with what the
delivery rules act on: digital items without a place, offline items spread over ~50 km,
items ending on successive days around :data:`T0`, hidden items, and users who are in the
users table but have no history. ``demo_data()`` is the synthetic Beijing cultural cloud
(small), built the way training builds it. ``register_version`` logs and registers a bundle
through ``training.registry`` exactly as the training job does.

Every test app and server holds the test keys (:data:`TEST_API_KEYS`) and runs without rate
limits (a test's own pace is not what it tests) unless it says otherwise: clients send
:data:`APP_KEY`, which has every scope, through :data:`KEY_HEADERS`.
"""

from __future__ import annotations

import datetime as dt
import os
import socket
import subprocess
import sys
import time
from pathlib import Path
from typing import Any
from zoneinfo import ZoneInfo

import numpy as np
import scipy.sparse as sp

from recsys import models
from recsys.bundle import ModelBundle
from recsys.catalog import Catalog
from recsys.models.base import TrainingData
from recsys.settings import EngineSettings
from recsys.users import UserTable
from serving.auth import API_KEY_HEADER
from serving.config import ServingSettings, env_name
from serving.connections import PROTOCOL
from tests.model_fixtures import CATEGORIES, planted

ROOT = Path(__file__).resolve().parents[1]
T0 = dt.datetime(2026, 11, 20, 12, 0, tzinfo=ZoneInfo("Asia/Shanghai")).timestamp()
DAY = 86_400.0
HIDDEN = ("i1", "i2", "i6")
COLD_USERS = ("cold-60+", "cold-18-34")
"""In the users table (region 110119) without any history."""
CENTER = (39.90, 116.40)
FAST_HYBRID = {"als": {"factors": 16, "iterations": 8, "num_threads": 1}}

APP_KEY = "test-app-key-with-every-scope"
WRITER_KEY = "test-key-of-an-app-backend"
"""An app's usual key: reads personal lists and posts interactions, administers nothing."""
READ_KEY = "test-key-that-may-only-read"
TEST_API_KEYS = (f"{APP_KEY}=read+write:interactions+write:items+admin,{WRITER_KEY}=read+write:interactions,"
                 f"{READ_KEY}=read")
KEY_HEADERS = {API_KEY_HEADER: APP_KEY}
UNLIMITED = {"rate_per_key": 0.0, "rate_per_ip": 0.0}
"""Rate limits off: the tests of other things send requests as fast as they can."""


def keyed_settings(**settings: Any) -> ServingSettings:
    """Settings of a test app: the test keys and no rate limits, unless ``settings`` say otherwise."""
    return ServingSettings(**{"api_keys": TEST_API_KEYS, **UNLIMITED, **settings})


def keyed_env(env: dict[str, str] | None = None) -> dict[str, str]:
    """The same for a server process, as environment variables (``env`` wins)."""
    defaults = {env_name("api_keys"): TEST_API_KEYS, **{env_name(k): str(v) for k, v in UNLIMITED.items()}}
    return {**defaults, **(env or {})}


def iso(epoch: float) -> str:
    return dt.datetime.fromtimestamp(epoch, dt.UTC).isoformat()


def rules_data(seed: int = 0) -> TrainingData:
    """Planted preferences plus kinds, places, end times, hidden items and history-less users."""
    base = planted(n_users=300, n_items=80, seed=seed)
    n = len(base.catalog)
    category = np.arange(n) % len(CATEGORIES)
    digital = np.arange(n) % 5 == 0
    lat = [None if digital[i] else CENTER[0] + (i % 10) * 0.05 for i in range(n)]
    lon = [None if digital[i] else CENTER[1] + (i // 10) * 0.05 for i in range(n)]
    # every 7th item (from 3) ends on a successive day: items 3, 10, 17 ended before T0, 24 .. after
    ends_at = [T0 + (i // 7 - 3) * DAY + 3600 if i % 7 == 3 else None for i in range(n)]
    catalog = Catalog.from_columns(
        base.catalog.items.ids,
        title=[f"活动{i}" for i in range(n)],
        kind=["digital" if digital[i] else "event" for i in range(n)],
        category=[CATEGORIES[c] for c in category],
        region=["110101" if i % 2 else "110119" for i in range(n)],
        tags=[[CATEGORIES[c] + "标签"] for c in category],
        lat=lat, lon=lon, ends_at=ends_at,
        hidden=[base.catalog.items.id_of(i) in HIDDEN for i in range(n)],
    )
    n_users = len(base.users)
    users = UserTable.from_columns(
        [*base.users.users.ids, *COLD_USERS],
        region=[*base.users.labels("region_code").tolist(), "110119", "110119"],
        age_band=[*base.users.labels("age_band").tolist(), "60+", "18-34"],
        area_type=[*base.users.labels("area_type").tolist(), "rural", "rural"],
    )
    pad = sp.csr_matrix((len(COLD_USERS), n), dtype=np.float32)
    weights = sp.vstack([base.weights, pad], format="csr")
    matrix = sp.vstack([base.matrix, pad], format="csr")
    assert users.users.index_of("u0") == 0 and len(users) == n_users + len(COLD_USERS)
    return TrainingData(matrix, weights, catalog, users, seed=seed)


def write_bundle(data: TrainingData, directory: Path, *, model: str = "hybrid",
                 params: dict[str, Any] | None = None, trained_at: str = "2026-11-16T02:00:00+00:00",
                 metrics: dict[str, float] | None = None, data_end: str = iso(T0 - DAY)) -> Path:
    """Fit ``model`` on ``data`` and save it as a bundle directory."""
    fitted = models.create(model, FAST_HYBRID if params is None and model == "hybrid" else params).fit(data)
    manifest = {"trained_at": trained_at, "data_end": data_end,
                "metrics": metrics or {"ndcg@10": 0.25, "recall@20": 0.4}}
    return ModelBundle(fitted, data.catalog, data.users, data.weights, EngineSettings(), manifest).save(directory)


def demo_data(users: int = 3000, items: int = 400, days: int = 30, seed: int = 3,
              end_date: dt.date = dt.date(2026, 10, 31)) -> TrainingData:
    """The synthetic cultural cloud as training sees it (full data, no split)."""
    from democloud import DemoConfig, generate
    from features.dataset import StoreFrames, build_dataset

    demo = generate(DemoConfig(users=users, items=items, days=days, seed=seed, end_date=end_date))
    frames = StoreFrames(demo.interactions.lazy(), demo.users.lazy(), demo.items.lazy())
    return build_dataset(frames, EngineSettings(), test_days=None, seed=seed).full


def register_version(home_root: Path, bundle_dir: Path, *, champion: bool = True) -> str:
    """Log ``bundle_dir`` as a pyfunc model, register it, and (optionally) make it champion."""
    import mlflow

    from recsys.home import EngineHome
    from tests.demo_store import seed_registry
    from training import registry

    seed_registry(home_root)
    home = EngineHome.at(home_root)
    client = registry.connect(home)
    with mlflow.start_run():
        version = registry.register(client, registry.log_bundle(bundle_dir), tags={"test": "serving"})
    if champion:
        registry.promote(client, version)
    return version


# ---- a real server ----------------------------------------------------------------------
def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


class Server:
    """``python -m uvicorn serving.app:create_app --factory`` in a subprocess, with the protocol
    ``recsys serve`` runs (connection cap, read timeouts) and the test keys (:func:`keyed_env`)."""

    def __init__(self, env: dict[str, str], log_path: Path, app: str = "serving.app:create_app") -> None:
        self.port = free_port()
        self.base = f"http://127.0.0.1:{self.port}"
        self.env = {**os.environ, "MLFLOW_DISABLE_TELEMETRY": "true", "PYTHONUNBUFFERED": "1", **keyed_env(env)}
        self.log_path = log_path
        self.app = app
        self.process: subprocess.Popen[bytes] | None = None

    def start(self, timeout: float = 60.0, wait_ready: bool = True) -> Server:
        import httpx

        log = open(self.log_path, "ab")  # noqa: SIM115 - the child writes to it for its lifetime
        self.process = subprocess.Popen(
            [sys.executable, "-m", "uvicorn", self.app, "--factory", "--host", "127.0.0.1",
             "--port", str(self.port), "--log-level", "warning", "--http", PROTOCOL],
            cwd=ROOT, env=self.env, stdout=log, stderr=subprocess.STDOUT,
        )
        deadline = time.monotonic() + timeout
        path = "/readyz" if wait_ready else "/healthz"
        while time.monotonic() < deadline:
            if self.process.poll() is not None:
                raise RuntimeError(f"server exited with {self.process.returncode}: {self.log_path.read_text()}")
            try:
                if httpx.get(self.base + path, timeout=1.0).status_code == 200:
                    return self
            except httpx.HTTPError:
                pass
            time.sleep(0.1)
        self.stop()
        raise TimeoutError(f"server not ready after {timeout}s: {self.log_path.read_text()}")

    def kill(self) -> None:
        """SIGKILL: no shutdown handlers, no flushing; what is on disk is all that survives."""
        if self.process is not None:
            self.process.kill()
            self.process.wait(10)

    def stop(self) -> None:
        if self.process is not None and self.process.poll() is None:
            self.process.terminate()
            try:
                self.process.wait(10)
            except subprocess.TimeoutExpired:
                self.process.kill()
                self.process.wait(10)
