"""Crash safety under SIGKILL, and a server that outlives its registry.

(a) A server killed while a client posts interactions nonstop: every interaction answered
    with 202 is in the store after a restart and ``recsys ingest``; the dead server's torn
    last line goes to quarantine and never breaks the ingest.
(b) ``recsys train`` killed during the fit, during MLflow logging and right after
    registration: every registered version's artifacts load, the champion has not moved,
    and the next run succeeds.
(c) ``recsys ingest`` of a large file killed after several delays: the store reads exactly
    as before or as after, and rerunning the ingest succeeds with reconciled counts.
(d) Registry outage at startup (the MLflow store replaced by garbage, by a directory, or a
    bogus ``MLFLOW_TRACKING_URI``): the server starts at once on its last-known-good copy
    and says ``degraded``. (A store locked by another process degrades the same way, after
    SQLite's busy timeouts, ~20 s; not run here for time.) A reload of a registered version
    with a corrupt artifact is refused and the old model keeps serving (the directory-source
    variant is in test_serving_unit).
"""

from __future__ import annotations

import shutil
import sqlite3
import threading
import time
import warnings
from collections.abc import Callable
from pathlib import Path

import httpx
import polars as pl
import pytest

with warnings.catch_warnings():  # starlette's TestClient warns about its httpx dependency
    warnings.simplefilter("ignore")
    from fastapi.testclient import TestClient

from features import store
from features.ingest import ingest, store_info
from recsys.bundle import ModelBundle
from recsys.contract import Reason
from recsys.home import EngineHome
from serving.app import create_app
from tests.demo_store import cli_json, copy_home, run_cli, train_cli
from tests.robustness_fixtures import (
    big_interactions,
    fingerprint,
    recsys,
    run_recsys,
    store_for_bundle,
    wait_for,
)
from tests.serving_fixtures import KEY_HEADERS, Server, keyed_settings, rules_data, write_bundle

pytestmark = pytest.mark.slow


@pytest.fixture(scope="module")
def bundle(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return write_bundle(rules_data(seed=0), tmp_path_factory.mktemp("crash-model") / "bundle")


# ---- (a) the server ---------------------------------------------------------------------
def test_sigkill_while_posting_keeps_every_acknowledged_interaction(bundle: Path, tmp_path: Path) -> None:
    home = store_for_bundle(tmp_path / "home", bundle)
    items = ModelBundle.load(bundle).catalog.items.ids
    env = {"RECSYS_HOME": str(home.root), "RECSYS_MODEL_DIR": str(bundle)}
    server = Server(env, tmp_path / "server.log").start()
    acknowledged: list[tuple[str, str, int]] = []
    stop = threading.Event()

    def post_nonstop() -> None:
        with httpx.Client(base_url=server.base, timeout=5, headers=KEY_HEADERS) as client:
            k = 0
            while not stop.is_set():
                rows = [(f"kill-{k}", items[(k * 5 + j) % len(items)], 1_795_000_000 + k * 10 + j) for j in range(5)]
                k += 1
                try:
                    response = client.post("/v1/interactions", json=[
                        {"user_id": u, "item_id": i, "action": "click", "ts": ts} for u, i, ts in rows])
                except httpx.HTTPError:
                    continue  # the server is gone: nothing was acknowledged
                if response.status_code == 202:
                    assert response.json()["accepted"] == 5
                    acknowledged.extend(rows)

    poster = threading.Thread(target=post_nonstop)
    poster.start()
    try:
        wait_for(lambda: len(acknowledged) >= 300, timeout=60, what="300 acknowledged interactions")
        server.kill()  # SIGKILL while the client keeps posting
    finally:
        stop.set()
        poster.join(30)
    killed_segment = next(home.incoming.glob("*.jsonl"))
    with open(killed_segment, "ab") as fh:  # what a death in the middle of a write leaves behind
        fh.write(b'{"user_id":"kill-torn","item_id":"' + items[0].encode() + b'","act')

    revived = Server(env, tmp_path / "server.log").start()
    try:
        after_restart = [{"user_id": "after-restart", "item_id": items[1], "action": "attend", "ts": 1_795_100_000}]
        posted = httpx.post(f"{revived.base}/v1/interactions", json=after_restart, timeout=10, headers=KEY_HEADERS)
        assert posted.status_code == 202
        summary = cli_json(run_cli("ingest", "--home", str(home.root), "--json"))
    finally:
        revived.stop()

    counts = summary["tables"]["incoming"]
    assert counts["reconciles"] and counts["reasons"].get(Reason.TORN_LINE.value) == 1
    stored = store.scan_interactions(home).collect().select(
        "user_id", "item_id", pl.col("ts").dt.epoch("s")).rows()
    assert set(acknowledged) <= set(stored)
    assert len(stored) == len(set(stored)) == counts["accepted"]
    assert ("after-restart", items[1], 1_795_100_000) in set(stored)
    torn = store.scan_quarantine(home).collect().filter(pl.col("reason") == Reason.TORN_LINE.value)
    assert torn["raw_line"].to_list() == [f'{{"user_id":"kill-torn","item_id":"{items[0]}","act']
    assert store_info(home)["incoming_pending_bytes"] == 0  # the dead writer's tail is not waited for
    assert ingest(home).tables == {}


# ---- (b) training -----------------------------------------------------------------------
def _count(db: Path, sql: str) -> int:
    try:
        with sqlite3.connect(f"file:{db}?mode=ro", uri=True, timeout=1) as connection:
            return int(connection.execute(sql).fetchone()[0])
    except sqlite3.Error:  # busy or mid-migration: ask again
        return -1


def _kill_train_when(root: Path, ready: Callable[[], bool], timeout: float = 120) -> int:
    process = recsys("train", "--home", str(root), "--model", "als", "--json", "--no-tune", "--force")
    try:
        wait_for(lambda: ready() or process.poll() is not None, timeout=timeout, interval=0.01, what="kill point")
    finally:
        process.kill()
        process.communicate(timeout=30)
    return process.returncode


def test_sigkill_during_training_leaves_no_half_made_version(trained_small_home: Path, tmp_path: Path) -> None:
    from training import registry

    root = copy_home(trained_small_home, tmp_path / "home")
    db = EngineHome.at(root).mlflow_db
    runs = _count(db, "select count(*) from runs")
    versions = _count(db, "select count(*) from model_versions")
    started = time.monotonic()
    codes = {
        "fit": _kill_train_when(root, lambda: time.monotonic() - started > 3.0),
        "logging": _kill_train_when(root, lambda: _count(db, "select count(*) from runs where status='RUNNING'") > 0),
        "registered": _kill_train_when(root, lambda: _count(db, "select count(*) from model_versions") > versions),
    }
    assert list(codes.values()).count(-9) >= 2, codes  # the kills landed while the runs were going
    assert _count(db, "select count(*) from runs") > runs

    client = registry.connect(EngineHome.at(root))
    assert registry.champion(client).version == "1"
    for version in registry.versions(client):  # every registered version is whole
        bundle = ModelBundle.load(registry.download_bundle(client, version.version, tmp_path / f"v{version.version}"))
        assert len(bundle.catalog) > 0 and bundle.weights.shape[0] == len(bundle.users)

    summary = train_cli(root, "--model", "als", "--no-promote")
    assert summary["version"] is not None and summary["champion"] == "1"
    ModelBundle.load(registry.download_bundle(client, summary["version"], tmp_path / "next"))


# ---- (c) ingest -------------------------------------------------------------------------
def test_sigkill_during_ingest_reads_before_or_after_and_the_rerun_reconciles(trained_small_home: Path,
                                                                              tmp_path: Path) -> None:
    home = EngineHome.at(copy_home(trained_small_home / "store", tmp_path / "home" / "store").parent)
    big = big_interactions(tmp_path / "big.csv", home, rows=600_000)
    reference = EngineHome.at(copy_home(home.root, tmp_path / "reference"))
    assert ingest(reference, interactions=big).committed
    before, after = fingerprint(home), fingerprint(reference)
    assert after["interactions"] == before["interactions"] + 600_000

    outcomes = []
    for delay in (0.9, 1.5, 2.0, 2.5):
        process = recsys("ingest", "--interactions", str(big), "--home", str(home.root), "--json")
        time.sleep(delay)
        process.kill()
        process.communicate(timeout=30)
        seen = fingerprint(home)
        assert seen in (before, after), (delay, seen)
        outcomes.append((delay, process.returncode, seen == after))
        if seen == after:
            break
    assert any(code == -9 for _, code, _ in outcomes), outcomes

    rerun = run_recsys("ingest", "--interactions", str(big), "--home", str(home.root), "--json")
    assert rerun.returncode == 0, rerun.stderr
    counts = cli_json_text(rerun.stdout)["tables"]["interactions"]
    assert counts["reconciles"]
    assert counts["skipped_same_file"] or counts["accepted"] == 600_000
    assert fingerprint(home) == after
    leftovers = [p.name for p in home.store.rglob("*") if p.name.endswith((".staged", ".prev", ".absent"))]
    assert leftovers == []
    committed = {f.stem for f in store.interaction_files(home)}
    assert {f.stem for f in home.interactions.glob("date=*/*.parquet")} == committed  # nothing half-written left


def cli_json_text(stdout: str) -> dict:
    import json

    return json.loads(stdout[stdout.find("{"):])


# ---- (d) the registry away ----------------------------------------------------------------
OUTAGE_KEY = "outage-admin-key-0001"


def registry_client(root: Path) -> TestClient:
    return TestClient(create_app(keyed_settings(home=root, admin_key=OUTAGE_KEY)), headers=KEY_HEADERS)


@pytest.fixture(scope="module")
def cached_home(trained_small_home: Path, tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A home whose server already saved the champion as its last-known-good copy."""
    root = copy_home(trained_small_home, tmp_path_factory.mktemp("outage") / "home")
    with registry_client(root) as client:
        assert client.get("/readyz").json() == {"status": "ready", "version": "1", "reason": None}
    return root


def _break_with_garbage(db: Path) -> None:
    db.write_bytes(b"this is not a database\x00" * 512)


def _break_with_directory(db: Path) -> None:
    db.unlink()
    db.mkdir()


@pytest.mark.parametrize("breakage", [_break_with_garbage, _break_with_directory, "bogus-uri"])
def test_registry_outage_at_startup_serves_the_last_known_good_copy(
        cached_home: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch, breakage) -> None:
    root = copy_home(cached_home, tmp_path / "home")
    if breakage == "bogus-uri":
        monkeypatch.setenv("MLFLOW_TRACKING_URI", "nosuchscheme://nowhere/at/all")
    else:
        breakage(EngineHome.at(root).mlflow_db)
    started = time.monotonic()
    with registry_client(root) as client:
        # at once: MLflow alone retries an unopenable SQLite file for minutes before giving up
        assert time.monotonic() - started < 15
        ready = client.get("/readyz")
        assert ready.status_code == 200, ready.text
        assert ready.json()["status"] == "degraded" and ready.json()["version"] == "1"
        assert "last-known-good" in ready.json()["reason"]
        assert client.get("/v1/model").json()["source"] == "last_known_good"
        listed = client.get("/v1/users/u000001/recommendations")
        assert listed.status_code == 200 and listed.json()["model_version"] == "1"
        refused = client.post("/v1/admin/reload", headers={"X-API-Key": OUTAGE_KEY})
        assert refused.status_code == 409 and refused.json()["serving_version"] == "1"
        assert client.get("/readyz").json()["status"] == "degraded"


def test_reload_of_a_corrupt_registered_version_is_refused(cached_home: Path, tmp_path: Path) -> None:
    from training import registry

    root = copy_home(cached_home, tmp_path / "home")
    home = EngineHome.at(root)
    client = registry.connect(home)
    good = registry.download_bundle(client, "1", tmp_path / "good")
    broken = tmp_path / "broken"
    shutil.copytree(good, broken)
    weights = next(broken.rglob("*.npz"))
    weights.write_bytes(weights.read_bytes()[: weights.stat().st_size // 3])
    from tests.serving_fixtures import register_version

    version = register_version(root, broken, champion=True)
    assert registry.champion(client).version == version != "1"
    with registry_client(root) as api:  # starts on the broken champion: falls back to the saved copy
        assert api.get("/readyz").json()["status"] == "degraded"
    registry.promote(client, "1")
    with registry_client(root) as api:
        assert api.get("/readyz").json() == {"status": "ready", "version": "1", "reason": None}
        registry.promote(client, version)
        failed = api.post("/v1/admin/reload", headers={"X-API-Key": OUTAGE_KEY})
        assert failed.status_code == 409 and failed.json()["serving_version"] == "1"
        assert api.get("/v1/model").json()["version"] == "1"
        assert api.get("/v1/users/u000001/recommendations").json()["model_version"] == "1"
