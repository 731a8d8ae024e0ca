"""SIGKILL of a real server under traffic loses no acknowledged exposure record or impression."""

from __future__ import annotations

import threading
import time
from pathlib import Path

import httpx
import polars as pl
import pytest

from features import store
from features.ingest import ingest
from features.ingest.exposures import read_exposures
from recsys.home import EngineHome
from tests.serving_fixtures import KEY_HEADERS, Server, rules_data, write_bundle


@pytest.fixture(scope="module")
def bundle(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return write_bundle(rules_data(seed=0), tmp_path_factory.mktemp("bundle") / "bundle")


def test_sigkill_loses_no_acknowledged_record(bundle: Path, tmp_path: Path) -> None:
    server = Server({"RECSYS_HOME": str(tmp_path), "RECSYS_MODEL_DIR": str(bundle), "RECSYS_RELOAD_INTERVAL": "0"},
                    tmp_path / "server.log").start()
    lists: list[str] = []
    impressions: list[str] = []
    stop = threading.Event()

    def resident(user: str) -> None:
        with httpx.Client(base_url=server.base, headers=KEY_HEADERS, timeout=10) as client:
            while not stop.is_set():
                try:
                    answer = client.get(f"/v1/users/{user}/recommendations", params={"n": 3})
                    if answer.status_code != 200:
                        continue
                    body = answer.json()
                    lists.append(body["recommendation_id"])  # acknowledged: the answer arrived
                    shown = [{"user_id": user, "item_id": i["item_id"], "action": "impression", "ts": time.time(),
                              "recommendation_id": body["recommendation_id"], "position": p}
                             for p, i in enumerate(body["items"], start=1)]
                    if shown and client.post("/v1/interactions", json=shown).status_code == 202:
                        impressions.extend(body["recommendation_id"] for _ in shown)
                except httpx.HTTPError:  # the kill: requests in flight were never acknowledged
                    return

    threads = [threading.Thread(target=resident, args=(f"u{n}",)) for n in range(1, 7)]
    for thread in threads:
        thread.start()
    time.sleep(3)
    server.kill()
    stop.set()
    for thread in threads:
        thread.join(15)
    assert len(lists) > 20
    home = EngineHome.at(tmp_path)
    items = tmp_path / "items.csv"
    pl.DataFrame({"item_id": [f"i{n}" for n in range(200)]}).write_csv(items)  # rules_data's item ids
    ingest(home, items=items)
    stored = set(read_exposures(home)["recommendation_id"].to_list())
    assert set(lists) <= stored
    kept = store.scan_interactions(home).filter(pl.col("action") == "impression").collect()
    assert kept.height >= len(impressions)
    assert set(impressions) <= set(kept["recommendation_id"].to_list())
