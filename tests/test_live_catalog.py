"""The live catalogue: items written through the API, interactions that arrive before their item,
and events that fill up.

In process first: the writes are checked by the catalogue's own rules (the reasons ingest
quarantines with), applied to every list at once, and a new item is scored by its facets with
no retraining; ``recsys ingest`` folds the written lines into ``items.parquet`` and quarantines
only the interactions whose item never came. Then the real thing, ``recsys serve --workers 2``:
a hidden item leaves every list of both workers within a second, a created one shows in a
matching user's list and has similar items, an interaction posted before its item survives a
SIGKILL and counts once the item exists, and a full event gives its place to its digital
version with the reason.
"""

from __future__ import annotations

import json
import math
import os
import signal
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path
from urllib.parse import quote

import httpx
import polars as pl
import pytest
from fastapi.testclient import TestClient

from features import store
from features.ingest import ingest
from recsys.home import EngineHome
from recsys.live_catalog import ItemChange, change_record
from serving.app import create_app
from serving.auth import API_KEY_HEADER
from serving.segments import SegmentWriter
from tests.demo_store import prepare_mlflow_env
from tests.serving_fixtures import (
    KEY_HEADERS,
    READ_KEY,
    ROOT,
    T0,
    demo_data,
    free_port,
    iso,
    keyed_env,
    keyed_settings,
    register_version,
    rules_data,
    write_bundle,
)
from tests.test_ingest import write_csv
from tests.test_workers import ready_workers, served_by

AT = iso(T0)


def ids(body: dict) -> list[str]:
    return [item["item_id"] for item in body["items"]]


# ---- in process -------------------------------------------------------------------------------
@pytest.fixture(scope="module")
def rules_bundle(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return write_bundle(rules_data(seed=0), tmp_path_factory.mktemp("live-catalog") / "bundle")


@pytest.fixture
def client(rules_bundle: Path, tmp_path: Path) -> Iterator[TestClient]:
    app = create_app(keyed_settings(home=tmp_path / "home", model_dir=rules_bundle, tail_interval=0))
    with TestClient(app, headers=KEY_HEADERS) as test_client:
        yield test_client


def test_a_write_is_checked_like_an_ingested_row(client: TestClient) -> None:
    refusals = {
        "coordinates_out_of_range": {"lat": 100, "lon": 116.4},
        "ends_at_before_starts_at": {"starts_at": "2026-12-02", "ends_at": "2026-12-01"},
        "unparseable_time": {"starts_at": "next friday"},
        "invalid_region_code": {"region_code": "1101"},
        "unparseable_number": {"capacity": -3},
        "unparseable_value": {"hidden": "maybe"},
        "id_too_long": {"series_id": "s" * 300},
        "unknown_field": {"hiden": True},
        "item_id_mismatch": {"item_id": "another"},
    }
    for reason, body in refusals.items():
        answer = client.put("/v1/items/e-new", json=body)
        assert answer.status_code == 422 and answer.json()["detail"].startswith(reason + ":"), (reason, answer.text)
    assert client.patch("/v1/items/no-such-item", json={"hidden": True}).status_code == 404
    refused = client.put("/v1/items/e-new", json={"title": "x"}, headers={API_KEY_HEADER: READ_KEY})
    assert refused.status_code == 403
    batch = client.post("/v1/items/batch", json=[{"item_id": "b1", "kind": "digital"}, {"ends_at": "x"}, 7]).json()
    assert batch["accepted"] == 1
    assert [(r["index"], r["reason"]) for r in batch["rejected"]] == [
        (1, "missing_required_field"), (2, "missing_required_field")]


def test_writes_apply_to_every_list_at_once(client: TestClient) -> None:
    listed = client.get("/v1/users/u0/recommendations", params={"at": AT}).json()["items"]
    top = listed[0]
    assert client.patch(f"/v1/items/{top['item_id']}", json={"hidden": True}).status_code == 200
    assert top["item_id"] not in ids(client.get("/v1/users/u0/recommendations", params={"at": AT, "n": 50}).json())
    for other in listed[1:4]:
        similar = client.get(f"/v1/items/{other['item_id']}/similar", params={"at": AT, "n": 50}).json()
        assert top["item_id"] not in ids(similar)

    created = client.put("/v1/items/新活动-1", json={
        "title": "新排《牡丹亭》", "kind": "event", "category": top["category"], "tags": [top["category"] + "标签"],
        "region_code": "110101", "lat": 39.95, "lon": 116.45, "starts_at": AT, "capacity": 2})
    assert created.status_code == 200 and created.json()["created"] is True
    assert created.json()["item"]["tags"] == [top["category"] + "标签"]
    similar = client.get(f"/v1/items/{quote('新活动-1')}/similar", params={"at": AT}).json()
    assert len(similar["items"]) == 10
    same_kind = client.get("/v1/users/u0/recommendations",
                           params={"at": AT, "category": top["category"], "n": 40}).json()
    assert "新活动-1" in ids(same_kind)
    # an amendment keeps the other columns
    amended = client.patch(f"/v1/items/{quote('新活动-1')}", json={"ends_at": "2026-11-20T23:00:00+08:00"})
    assert amended.status_code == 200 and amended.json()["item"]["capacity"] == 2
    assert client.patch(f"/v1/items/{quote('新活动-1')}", json={"ends_at": "2026-11-19"}).status_code == 422


def test_an_interaction_before_its_item_is_kept_and_counts_once_the_item_exists(client: TestClient) -> None:
    posted = client.post("/v1/interactions", json=[
        {"user_id": "早到的人", "item_id": "later-1", "action": "reserve", "ts": time.time()}]).json()
    assert posted == {"accepted": 1, "rejected": [], "pending": 1}
    path = f"/v1/users/{quote('早到的人')}/recommendations"
    assert client.get(path, params={"at": AT}).json()["fallback"] is not None  # nothing known yet
    created = client.put("/v1/items/later-1", json={"kind": "event", "category": "戏曲", "tags": "戏曲标签"})
    assert created.status_code == 200
    body = client.get(path, params={"at": AT, "n": 20}).json()
    assert body["fallback"] is None and "later-1" not in ids(body)


def wait_for(check, timeout: float = 5.0) -> None:
    deadline = time.monotonic() + timeout
    while not check():
        assert time.monotonic() < deadline, "not within the time"
        time.sleep(0.05)


@pytest.fixture
def following_client(rules_bundle: Path, tmp_path: Path) -> Iterator[TestClient]:
    """An app that follows the segments (and so counts reservations) every 0.1 s."""
    app = create_app(keyed_settings(home=tmp_path / "home", model_dir=rules_bundle, tail_interval=0.1))
    with TestClient(app, headers=KEY_HEADERS) as test_client:
        yield test_client


def test_a_full_event_gives_its_place_to_its_digital_version(following_client: TestClient) -> None:
    client = following_client
    path = "/v1/users/u0/recommendations"
    listed = ids(client.get(path, params={"at": AT}).json())
    event = next(item for item in listed if client.get(f"/v1/items/{item}/similar").status_code == 200
                 and rules_data_kind(item) == "event")
    place = listed.index(event)
    assert client.patch(f"/v1/items/{event}", json={"capacity": 2, "series_id": "s-live"}).status_code == 200
    assert client.put("/v1/items/live-stream", json={"title": "线上直播", "kind": "digital",
                                                     "series_id": "s-live"}).status_code == 200
    assert ids(client.get(path, params={"at": AT}).json())[place] == event  # not full yet
    client.post("/v1/interactions", json=[{"user_id": f"booker-{i}", "item_id": event, "action": "reserve",
                                           "ts": AT} for i in range(2)])

    def substituted() -> bool:
        return "live-stream" in ids(client.get(path, params={"at": AT}).json())

    wait_for(substituted)
    body = client.get(path, params={"at": AT}).json()
    assert event not in ids(body) and ids(body)[place] == "live-stream"
    assert body["items"][place]["reason"] == "现场已满，可看线上直播"
    for other in ids(body)[:3]:
        assert event not in ids(client.get(f"/v1/items/{other}/similar", params={"at": AT, "n": 50}).json())
    # out of reach: with a place far from the event, its digital version stands in as well
    far = client.get(path, params={"at": AT, "lat": 22.5, "lon": 114.0, "radius_km": 5}).json()
    assert "live-stream" in ids(far)


def rules_data_kind(item_id: str) -> str:
    return "digital" if int(item_id.removeprefix("i")) % 5 == 0 else "event"


# ---- ingest folds the lines in -------------------------------------------------------------------
def test_ingest_folds_item_lines_and_quarantines_interactions_whose_item_never_came(tmp_path: Path) -> None:
    home = EngineHome.at(tmp_path / "home")
    items = write_csv(tmp_path / "items.csv", "item_id,title,kind,capacity,hidden",
                      "e1,昆曲,event,300,", "e2,讲座,lecture,,")
    assert ingest(home, items=items).committed
    now = time.time()
    lines = SegmentWriter(home.item_lines)
    lines.append([
        change_record(ItemChange("e1", {"hidden": "true"}, False, now), "feed"),
        change_record(ItemChange("e3", {"item_id": "e3", "title": "线上直播", "kind": "digital",
                                        "series_id": "s1"}, True, now + 1), "feed"),
        change_record(ItemChange("e3", {"capacity": "-1"}, False, now + 2), "feed"),  # refused by ingest too
    ])
    with open(lines.path, "ab") as fh:
        fh.write(b'{"op": "put", "item_id": \n')  # a torn line
    posted = SegmentWriter(home.incoming)
    posted.append([{"user_id": "u1", "item_id": "e3", "action": "view", "ts": iso(now - 60), "value": None},
                   {"user_id": "u1", "item_id": "never", "action": "reserve", "ts": iso(now - 60), "value": None}])
    summary = ingest(home)
    stored = store.scan_items(home).collect().sort("item_id")
    assert stored["item_id"].to_list() == ["e1", "e2", "e3"]
    e1, e3 = stored.row(0, named=True), stored.row(2, named=True)
    assert e1["hidden"] is True and e1["capacity"] == 300 and e1["title"] == "昆曲"  # amended, not replaced
    assert e3["kind"] == "digital" and e3["series_id"] == "s1" and e3["capacity"] is None
    assert summary.tables["items"].reasons == {"unparseable_number": 1, "torn_or_invalid_json_line": 1}
    quarantined = pl.read_parquet(summary.quarantine_file)
    assert quarantined.filter(pl.col("reason") == "item_not_in_catalog")["item_id"].to_list() == ["never"]
    assert summary.tables["incoming"].accepted == 1  # the view of e3, created in the same run
    again = ingest(home)
    assert not again.committed  # every line was consumed
    lines.close()
    posted.close()


# ---- the real thing: recsys serve --workers 2 -------------------------------------------------------
POSTED_TS = "2026-11-20T19:30:00+08:00"
"""After the demo data's end (2026-10-31): not in the model, so a restarted server replays it."""


@pytest.fixture(scope="module")
def served_home(tmp_path_factory: pytest.TempPathFactory) -> dict:
    prepare_mlflow_env()
    root = tmp_path_factory.mktemp("live-workers")
    data = demo_data(users=800, items=150, days=30, seed=4)
    bundle = write_bundle(data, root / "bundle", trained_at="2026-11-01T02:00:00+00:00")
    home = root / "home"
    register_version(home, bundle)
    return {"home": home, "root": root, "data": data}


class Workers:
    """``recsys serve --workers 2`` on a home, in its own session (so a SIGKILL takes every process)."""

    def __init__(self, home: Path, log: Path) -> None:
        self.home = home
        self.log = log
        self.port = free_port()
        self.base = f"http://127.0.0.1:{self.port}"
        self.process: subprocess.Popen[bytes] | None = None
        self.pids: set[int] = set()

    def start(self) -> Workers:
        env = {**os.environ, **keyed_env({"PYTHONUNBUFFERED": "1", "MLFLOW_DISABLE_TELEMETRY": "true",
                                          "MLFLOW_ENABLE_ARTIFACTS_PROGRESS_BAR": "false"})}
        env.pop("MLFLOW_TRACKING_URI", None)
        with open(self.log, "ab") as log:
            self.process = subprocess.Popen(
                [sys.executable, "-c", "from training.cli import main; main()", "serve", "--workers", "2",
                 "--port", str(self.port), "--home", str(self.home), "--log-level", "warning"],
                cwd=ROOT, env=env, stdout=log, stderr=subprocess.STDOUT, start_new_session=True,
            )
        self.pids = ready_workers(self.base, 2, self.process, timeout=90)
        return self

    def kill(self) -> None:
        if self.process is not None and self.process.poll() is None:
            os.killpg(self.process.pid, signal.SIGKILL)
            self.process.wait(10)

    def stop(self) -> None:
        if self.process is not None and self.process.poll() is None:
            os.killpg(self.process.pid, signal.SIGTERM)
            try:
                self.process.wait(15)
            except subprocess.TimeoutExpired:
                self.kill()

    def get(self, path: str, **params: object) -> httpx.Response:
        return httpx.get(self.base + path, params=params, timeout=10, headers=KEY_HEADERS)

    def send(self, method: str, path: str, body: object) -> httpx.Response:
        return httpx.request(method, self.base + path, json=body, timeout=10, headers=KEY_HEADERS)

    def from_each(self, path: str, check, timeout: float, **params: object) -> dict[int, dict]:
        """Ask until both workers answered passing ``check``; their last such answers."""
        deadline = time.monotonic() + timeout
        good: dict[int, dict] = {}
        last: dict[int, str] = {}
        while set(good) != self.pids:
            assert time.monotonic() < deadline, f"after {timeout}s only {sorted(good)} agree: {last}"
            response = self.get(path, **params)
            assert response.status_code == 200, response.text
            pid, body = served_by(response), response.json()
            last[pid] = str(body)[:300]
            if check(body):
                good[pid] = body
        return good


@pytest.fixture
def workers(served_home: dict) -> Iterator[Workers]:
    running = Workers(served_home["home"], served_home["root"] / "workers.log").start()
    try:
        yield running
    finally:
        running.stop()


def user_with_history(data, rank: int = 0) -> str:
    active = (data.weights.indptr[1:] - data.weights.indptr[:-1]).argsort()[::-1]
    return data.users.users.id_of(int(active[rank]))


@pytest.mark.slow
def test_hidden_and_created_items_reach_both_workers_within_a_second(workers: Workers, served_home: dict) -> None:
    data = served_home["data"]
    user = user_with_history(data)
    region = data.users.regions[int(data.users.region[data.users.users.index_of(user)])]
    lists = {"user": f"/v1/users/{quote(user, safe='')}/recommendations",
             "region": f"/v1/regions/{region}/recommendations"}
    first = ids(workers.get(lists["user"], at=POSTED_TS, n=20).json())
    victim = first[0]
    anchor = ids(workers.get(f"/v1/items/{quote(victim, safe='')}/similar", at=POSTED_TS).json())[0]
    lists["similar"] = f"/v1/items/{quote(anchor, safe='')}/similar"
    assert victim in ids(workers.get(lists["similar"], at=POSTED_TS, n=100).json())

    assert workers.send("PATCH", f"/v1/items/{quote(victim, safe='')}", {"hidden": True}).status_code == 200
    # the worker that took the write at once, the other at its next look (tail_interval 0.5 s);
    # the bound leaves room for a busy test machine
    workers.from_each(lists["user"], lambda body: victim not in ids(body), timeout=2, at=POSTED_TS, n=100)
    for path in lists.values():  # one overlay serves every list: the others are clean by now
        workers.from_each(path, lambda body: victim not in ids(body), timeout=1, at=POSTED_TS, n=100)

    catalog = served_home["data"].catalog
    liked = catalog.items.index_of(first[1])
    category, kind = catalog.category_name(liked), catalog.kind_name(liked)
    tags = [catalog.tag_names[t] for t in catalog.tags[liked].indices.tolist()]
    new_id = "新建-戏曲-001"
    created = workers.send("PUT", f"/v1/items/{quote(new_id, safe='')}", {
        "title": "新排《锁麟囊》", "kind": kind, "category": category, "tags": tags,
        "region_code": catalog.regions[int(catalog.region[liked])]})
    assert created.status_code == 200 and created.json()["created"] is True, created.text
    workers.from_each(lists["user"], lambda body: new_id in ids(body), timeout=3, at=POSTED_TS, n=40,
                      category=category)
    similar = workers.from_each(f"/v1/items/{quote(new_id, safe='')}/similar", lambda body: len(body["items"]) > 0,
                                timeout=3, at=POSTED_TS)
    assert all(catalog.category_name(catalog.items.index_of(i)) == category
               for body in similar.values() for i in ids(body)[:3])


@pytest.mark.slow
def test_an_interaction_before_its_item_survives_a_sigkill(served_home: dict) -> None:
    home = served_home["home"]
    user = "先预约后上架的居民"
    path = f"/v1/users/{quote(user, safe='')}/recommendations"
    running = Workers(home, served_home["root"] / "sigkill.log").start()
    try:
        posted = running.send("POST", "/v1/interactions", [
            {"user_id": user, "item_id": "尚未上架-1", "action": "reserve", "ts": POSTED_TS}])
        assert posted.status_code == 202 and posted.json()["pending"] == 1, posted.text
        assert running.get(path, at=POSTED_TS).json()["fallback"] is not None
    finally:
        running.kill()
    running = Workers(home, served_home["root"] / "sigkill.log").start()
    try:
        catalog = served_home["data"].catalog
        created = running.send("PUT", f"/v1/items/{quote('尚未上架-1', safe='')}", {
            "title": "冬季音乐会", "kind": catalog.kinds[0], "category": catalog.categories[0]})
        assert created.status_code == 200, created.text
        running.from_each(path, lambda body: body["fallback"] is None and "尚未上架-1" not in ids(body),
                          timeout=5, at=POSTED_TS)
    finally:
        running.stop()
    lines = [json.loads(line) for segment in sorted(EngineHome.at(home).item_lines.glob("*.jsonl"))
             for line in segment.read_text(encoding="utf-8").splitlines()]
    assert any(line["item_id"] == "尚未上架-1" and line["op"] == "put" for line in lines)


@pytest.mark.slow
def test_a_full_event_leaves_every_list_of_both_workers_for_its_digital_version(workers: Workers,
                                                                                 served_home: dict) -> None:
    data = served_home["data"]
    catalog = data.catalog
    user = user_with_history(data, rank=3)
    path = f"/v1/users/{quote(user, safe='')}/recommendations"
    listed = ids(workers.get(path, at=POSTED_TS).json())
    event = next(item for item in listed if catalog.kind_name(catalog.items.index_of(item)) != "digital"
                 and not math.isnan(catalog.lat[catalog.items.index_of(item)]))
    place = listed.index(event)
    assert workers.send("PATCH", f"/v1/items/{quote(event, safe='')}",
                        {"capacity": 3, "series_id": "series-1"}).status_code == 200
    assert workers.send("PUT", "/v1/items/series-1-online", {
        "title": "线上直播", "kind": "digital", "series_id": "series-1"}).status_code == 200
    booked = workers.send("POST", "/v1/interactions", [
        {"user_id": f"订票人-{i}", "item_id": event, "action": "reserve", "ts": POSTED_TS} for i in range(3)])
    assert booked.status_code == 202 and booked.json()["accepted"] == 3

    def replaced(body: dict) -> bool:
        return event not in ids(body) and ids(body)[place] == "series-1-online"

    answers = workers.from_each(path, replaced, timeout=5, at=POSTED_TS)
    assert all(body["items"][place]["reason"] == "现场已满，可看线上直播" for body in answers.values())
    region = data.users.regions[int(data.users.region[data.users.users.index_of(user)])]
    for other in (f"/v1/regions/{region}/recommendations", f"/v1/items/{quote(listed[0], safe='')}/similar"):
        workers.from_each(other, lambda body: event not in ids(body), timeout=2, at=POSTED_TS, n=100)


def test_full_events_may_be_listed_and_marked_instead(rules_bundle: Path, tmp_path: Path) -> None:
    app = create_app(keyed_settings(home=tmp_path / "home", model_dir=rules_bundle, tail_interval=0.1,
                                    full_events="flag"))
    with TestClient(app, headers=KEY_HEADERS) as client:
        path = "/v1/users/u0/recommendations"
        event = ids(client.get(path, params={"at": AT}).json())[0]
        assert client.patch(f"/v1/items/{event}", json={"capacity": 0}).status_code == 200
        wait_for(lambda: client.get(path, params={"at": AT}).json()["items"][0]["full"] is True)
        assert ids(client.get(path, params={"at": AT}).json())[0] == event
