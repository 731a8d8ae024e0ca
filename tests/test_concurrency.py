"""Concurrent jobs on one engine home, and the API while a training run works.

Writers are serialized by the store's writer lock: a second ``recsys ingest`` started while
another holds it exits 2 naming the holder's pid and command, or with ``--wait`` waits and
then commits after it; ``recsys train`` (which ingests the API's pending lines first) waits
for the holder, touching nothing meanwhile, then runs. Readers never wait: the
API, over a real registry, answers every request while ``recsys train`` runs in another
process, and afterwards reloads the new champion.
"""

from __future__ import annotations

import json
import re
import sqlite3
import threading
import time
from pathlib import Path

import httpx
import pytest

from features import store
from features.lock import lock_holder, writer_lock
from recsys.home import EngineHome
from tests.demo_store import copy_home
from tests.robustness_fixtures import (
    big_interactions,
    fingerprint,
    recsys,
    run_recsys,
    wait_for,
)
from tests.serving_fixtures import KEY_HEADERS, Server

pytestmark = pytest.mark.slow

ADMIN_KEY = "concurrency-admin-key"


def flat(text: str) -> str:
    return re.sub(r"\s+", " ", text)


def start_long_ingest(home: EngineHome, big: Path):
    """``recsys ingest`` of a large file, returned once it holds the writer lock."""
    process = recsys("ingest", "--interactions", str(big), "--home", str(home.root), "--json", text=True)
    wait_for(lambda: (lock_holder(home) or {}).get("pid") == process.pid or process.poll() is not None,
             timeout=60, interval=0.005, what="the first ingest holding the lock")
    assert process.poll() is None, "the first ingest finished before the test could race it"
    return process


def test_a_second_ingest_exits_2_naming_the_holder_or_waits_with_wait(trained_small_home: Path, tmp_path: Path) -> None:
    home = EngineHome.at(copy_home(trained_small_home / "store", tmp_path / "home" / "store").parent)
    big = big_interactions(tmp_path / "big.csv", home, rows=1_500_000)
    items = tmp_path / "items.csv"
    items.write_text("item_id,title,kind\nlate-item,Late show,event\n", encoding="utf-8")
    users = tmp_path / "users.csv"
    users.write_text("user_id,area_type\nlate-user,rural\n", encoding="utf-8")
    before = fingerprint(home)

    first = start_long_ingest(home, big)
    refused = run_recsys("ingest", "--items", str(items), "--home", str(home.root))
    waiting = recsys("ingest", "--users", str(users), "--wait", "300", "--home", str(home.root), "--json", text=True)
    time.sleep(0.3)
    assert waiting.poll() is None  # still waiting while the first one holds the store
    first_out, first_err = first.communicate(timeout=300)
    waiting_out, waiting_err = waiting.communicate(timeout=300)

    assert refused.returncode == 2
    assert f"store is locked by pid {first.pid} (recsys ingest)" in flat(refused.stderr), refused.stderr
    assert first.returncode == 0 and waiting.returncode == 0, (first_err, waiting_err)
    log = store.ingest_log(home)
    ids = [json.loads(out[out.find("{"):])["ingest_id"] for out in (first_out, waiting_out)]
    assert [entry["ingest_id"] for entry in log[-2:]] == ids  # the waiter committed after the holder
    after = fingerprint(home)
    assert after["interactions"] == before["interactions"] + 1_500_000
    assert after["users"] == before["users"] + 1 and after["items"] == before["items"]


def test_train_waits_for_an_ingest_holding_the_store_then_runs(trained_small_home: Path, tmp_path: Path) -> None:
    home = EngineHome.at(copy_home(trained_small_home, tmp_path / "home"))
    item = store.scan_items(home).collect()["item_id"][0]
    home.incoming.mkdir(parents=True, exist_ok=True)  # an API line waiting: train must ingest first
    (home.incoming / "pending.jsonl").write_text(json.dumps(
        {"user_id": "api-user", "item_id": item, "action": "attend", "ts": 1_793_000_000}) + "\n", encoding="utf-8")
    runs = "select count(*) from runs"
    runs_before = count_rows(home, runs)
    entries_before = len(store.ingest_log(home))

    # The holder is this process, for as long as the train needs to reach the lock (a
    # subprocess ingest might finish before the train has even imported its libraries).
    with writer_lock(home, command="recsys ingest --interactions big.csv"):
        train = recsys("train", "--home", str(home.root), "--model", "als", "--no-promote", "--json", "--no-tune",
                       text=True)
        time.sleep(8)
        assert train.poll() is None  # waiting: nothing read, logged or written meanwhile
        assert count_rows(home, runs) == runs_before and len(store.ingest_log(home)) == entries_before
    out, err = train.communicate(timeout=300)

    assert train.returncode == 0, err
    summary = json.loads(out[out.find("{"):])
    assert summary["version"] is not None and count_rows(home, runs) == runs_before + 1
    assert summary["timings"]["ingest pending API interactions"] > 1.0  # it did wait for the lock
    entry = store.ingest_log(home)[-1]
    assert len(store.ingest_log(home)) == entries_before + 1 and entry["incoming"]["pending.jsonl"]["lines"] == 1
    assert "api-user" in store.scan_interactions(home).collect()["user_id"].to_list()


def count_rows(home: EngineHome, sql: str) -> int:
    with sqlite3.connect(f"file:{home.mlflow_db}?mode=ro", uri=True, timeout=5) as connection:
        return int(connection.execute(sql).fetchone()[0])


def test_the_api_answers_every_request_while_a_train_runs(trained_small_home: Path, tmp_path: Path) -> None:
    root = copy_home(trained_small_home, tmp_path / "home")
    home = EngineHome.at(root)
    users = store.scan_users(home).select("user_id").head(200).collect()["user_id"].to_list()
    items = store.scan_items(home).select("item_id").head(200).collect()["item_id"].to_list()
    server = Server({"RECSYS_HOME": str(root), "RECSYS_ADMIN_KEY": ADMIN_KEY}, tmp_path / "server.log").start()
    answered: list[int] = []
    failures: list[str] = []
    stop = threading.Event()

    def client_loop(slot: int) -> None:
        with httpx.Client(base_url=server.base, timeout=30, headers=KEY_HEADERS) as client:
            k = slot
            while not stop.is_set():
                k += 3
                user, item = users[k % len(users)], items[k % len(items)]
                try:
                    if k % 3 == 0:
                        response = client.post("/v1/interactions", json=[
                            {"user_id": user, "item_id": item, "action": "click", "ts": 1_793_000_000 + k}])
                    elif k % 3 == 1:
                        response = client.get(f"/v1/users/{user}/recommendations", params={"n": 10})
                    else:
                        response = client.get(f"/v1/items/{item}/similar", params={"n": 10})
                except httpx.HTTPError as exc:
                    failures.append(repr(exc))
                    continue
                if response.status_code not in (200, 202):
                    failures.append(f"{response.status_code} {response.text[:200]}")
                answered.append(response.status_code)

    threads = [threading.Thread(target=client_loop, args=(slot,)) for slot in range(3)]
    for thread in threads:
        thread.start()
    try:
        train = run_recsys("train", "--home", str(root), "--model", "hybrid", "--seed", "3", "--json", "--no-tune",
                           "--force", timeout=300)
        during = len(answered)
        time.sleep(0.3)
    finally:
        stop.set()
        for thread in threads:
            thread.join(30)
    try:
        assert train.returncode == 0, train.stderr
        summary = json.loads(train.stdout[train.stdout.find("{"):])
        assert failures == [] and during > 100, (failures[:5], during)
        reload = httpx.post(f"{server.base}/v1/admin/reload", headers={"X-API-Key": ADMIN_KEY}, timeout=60)
        assert reload.status_code == 200 and reload.json()["version"] == summary["champion"]
        listed = httpx.get(f"{server.base}/v1/users/{users[0]}/recommendations", timeout=10, headers=KEY_HEADERS)
        assert listed.status_code == 200 and listed.json()["model_version"] == summary["champion"]
    finally:
        server.stop()
