"""The API as deployed: a real uvicorn process over a real MLflow registry on disk.

Two versions of a hybrid model trained on the synthetic cultural cloud are registered
through ``training.registry``; the server loads the champion at startup. Checks: the
delivery rules on many random requests, durability of a 202 across SIGKILL, an atomic
swap under load with zero failed requests, polling reloads, and the last-known-good start
when the registry is unreachable.
"""

from __future__ import annotations

import datetime as dt
import json
import threading
import time
from collections.abc import Iterator
from pathlib import Path
from urllib.parse import quote

import httpx
import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from recsys.bundle import ModelBundle
from recsys.home import EngineHome
from tests.demo_store import prepare_mlflow_env
from tests.serving_fixtures import KEY_HEADERS, Server, demo_data, free_port, iso, register_version, write_bundle

pytestmark = pytest.mark.slow

ADMIN_KEY = "e2e-admin-key-0001"
END = dt.datetime(2026, 10, 31, 23, 0, tzinfo=dt.UTC).timestamp()
"""Last day of the synthetic data; request times are drawn around it."""


@pytest.fixture(scope="module")
def registry_home(tmp_path_factory) -> dict:
    """An engine home whose registry holds versions 1 (champion) and 2 of a demo model."""
    prepare_mlflow_env()
    root = tmp_path_factory.mktemp("e2e")
    data = demo_data(users=3000, items=400, days=30, seed=3)
    first = write_bundle(data, root / "bundle-1", trained_at="2026-11-01T02:00:00+00:00")
    second = write_bundle(data, root / "bundle-2", trained_at="2026-11-08T02:00:00+00:00",
                          params={"als": {"factors": 24, "iterations": 6, "num_threads": 1},
                                  "content_weight": 0.5})
    home = root / "home"
    versions = (register_version(home, first), register_version(home, second, champion=False))
    return {"home": home, "bundle": ModelBundle.load(first), "versions": versions, "root": root}


def promote(home: Path, version: str) -> None:
    from training import registry

    registry.promote(registry.connect(EngineHome.at(home)), version)


def server_env(home: Path, **extra: str) -> dict[str, str]:
    env = {"RECSYS_HOME": str(home), "RECSYS_ADMIN_KEY": ADMIN_KEY, "MLFLOW_ENABLE_ARTIFACTS_PROGRESS_BAR": "false"}
    env.update(extra)
    return env


@pytest.fixture(scope="module")
def server(registry_home) -> Iterator[Server]:
    promote(registry_home["home"], registry_home["versions"][0])
    prepare_mlflow_env()
    running = Server(server_env(registry_home["home"]), registry_home["root"] / "server.log").start()
    yield running
    running.stop()


# ---- the rules, on many random requests -------------------------------------------------
def expected_minimum(bundle: ModelBundle, user: str, at: float, kind: str | None,
                     place: tuple[float, float, float] | None, n: int) -> int:
    """How many items the list must hold: n, unless fewer items are allowed."""
    catalog = bundle.catalog
    allowed = catalog.available_at(at + 60)  # the engine may drop items ending within the minute
    if kind:
        allowed &= catalog.kind_is(kind)
    if place:
        allowed &= catalog.within_radius(*place)
    index = bundle.users.users.index_of(user)
    if index >= 0:
        allowed[bundle.weights[index].indices] = False
    return min(n, int(allowed.sum()))


@settings(max_examples=150, deadline=None)
@given(
    who=st.one_of(st.integers(0, 2999).map(lambda u: f"u{u:06d}"), st.text(min_size=1, max_size=12).map(
        lambda s: "stranger-" + s)),
    offset_hours=st.floats(-5 * 24, 35 * 24),
    n=st.integers(1, 40),
    kind=st.sampled_from([None, "event", "exhibition", "opera", "film", "digital"]),
    place=st.one_of(st.none(), st.tuples(st.floats(39.6, 40.4), st.floats(115.9, 117.0), st.floats(0, 30))),
    diversity=st.floats(0, 1),
)
def test_every_list_obeys_the_rules(server, registry_home, who, offset_hours, n, kind, place, diversity):
    bundle: ModelBundle = registry_home["bundle"]
    catalog = bundle.catalog
    at = END + offset_hours * 3600
    params: dict = {"n": n, "at": iso(at), "diversity": diversity}
    if kind:
        params["kind"] = kind
    if place:
        params.update(lat=place[0], lon=place[1], radius_km=place[2])
    response = httpx.get(f"{server.base}/v1/users/{quote(who, safe='')}/recommendations", params=params, timeout=10,
                         headers=KEY_HEADERS)
    assert response.status_code == 200, response.text
    body = response.json()
    assert body["user_id"] == who and body["model_version"] == registry_home["versions"][0]
    got = [item["item_id"] for item in body["items"]]
    index = bundle.users.users.index_of(who)
    seen = set(catalog.items.ids_of(bundle.weights[index].indices)) if index >= 0 else set()
    assert len(set(got)) == len(got) and not set(got) & seen
    assert len(got) >= expected_minimum(bundle, who, at, kind, place, n) and len(got) <= n
    assert (body["fallback"] is None) == (index >= 0 and bundle.weights[index].nnz > 0)
    distance = catalog.distance_km(place[0], place[1]) if place else None
    for item in body["items"]:
        i = catalog.items.index_of(item["item_id"])
        assert not catalog.hidden[i] and not catalog.ends_at[i] < at
        assert kind is None or item["kind"] == kind
        assert distance is None or np.isnan(distance[i]) or distance[i] <= place[2] + 1e-9


# ---- durability -------------------------------------------------------------------------
def incoming_lines(home: Path) -> dict[str, list[dict]]:
    return {path.name: [json.loads(line) for line in path.read_text(encoding="utf-8").splitlines()]
            for path in sorted(EngineHome.at(home).incoming.glob("*.jsonl"))}


def test_accepted_interactions_survive_sigkill(registry_home):
    home = registry_home["home"]
    promote(home, registry_home["versions"][0])
    log = registry_home["root"] / "killed.log"
    victim = Server(server_env(home), log).start()
    posted = [{"user_id": "被杀前的用户", "item_id": registry_home["bundle"].catalog.items.id_of(i),
               "action": "reserve", "ts": iso(END)} for i in (5, 6)]
    response = httpx.post(f"{victim.base}/v1/interactions", json=posted, timeout=10, headers=KEY_HEADERS)
    victim.kill()  # right after the 202: no shutdown hook runs
    assert response.status_code == 202 and response.json()["accepted"] == 2
    lines = [line for rows in incoming_lines(home).values() for line in rows if line["user_id"] == "被杀前的用户"]
    assert [line["item_id"] for line in lines] == [p["item_id"] for p in posted]

    # the restarted server works, follows the registry on its own, and writes a new segment
    revived = Server(server_env(home, RECSYS_RELOAD_INTERVAL="0.5"), log).start()
    try:
        before = set(incoming_lines(home))
        again = httpx.post(f"{revived.base}/v1/interactions", json=posted[:1], timeout=10, headers=KEY_HEADERS)
        assert again.status_code == 202 and len(set(incoming_lines(home)) - before) == 1
        promote(home, registry_home["versions"][1])
        deadline = time.monotonic() + 20
        while httpx.get(f"{revived.base}/v1/model", timeout=5).json()["version"] != registry_home["versions"][1]:
            assert time.monotonic() < deadline, "the poller did not pick up the new champion"
            time.sleep(0.2)
    finally:
        revived.stop()
        promote(home, registry_home["versions"][0])


# ---- reload under load ------------------------------------------------------------------
def test_reload_under_load_fails_no_request(server, registry_home):
    first, second = registry_home["versions"]
    users = [f"u{u:06d}" for u in range(0, 3000, 37)]
    stop = threading.Event()
    seen: list[list[str]] = [[] for _ in range(4)]
    failures: list[str] = []

    def hammer(slot: int) -> None:
        with httpx.Client(base_url=server.base, timeout=10, headers=KEY_HEADERS) as client:
            k = slot
            while not stop.is_set():
                k += 1
                try:
                    response = client.get(f"/v1/users/{users[k % len(users)]}/recommendations", params={"n": 10})
                    if response.status_code != 200:
                        failures.append(f"{response.status_code} {response.text[:200]}")
                    else:
                        seen[slot].append(response.json()["model_version"])
                except httpx.HTTPError as exc:
                    failures.append(repr(exc))

    threads = [threading.Thread(target=hammer, args=(slot,)) for slot in range(4)]
    for thread in threads:
        thread.start()
    try:
        time.sleep(1.0)
        promote(registry_home["home"], second)
        reload = httpx.post(f"{server.base}/v1/admin/reload", headers={"X-API-Key": ADMIN_KEY}, timeout=60)
        time.sleep(1.0)
    finally:
        stop.set()
        for thread in threads:
            thread.join(10)
    assert reload.status_code == 200 and reload.json() == {"status": "reloaded", "version": second,
                                                             "previous_version": first}
    assert failures == []
    for versions in seen:  # each client sees the old model, then only the new one
        assert len(versions) > 20 and versions[0] == first and versions[-1] == second
        switched = versions.index(second)
        assert set(versions[:switched]) == {first} and set(versions[switched:]) == {second}
    info = httpx.get(f"{server.base}/v1/model").json()
    assert info["version"] == second and info["trained_at"] == "2026-11-08T02:00:00+00:00"
    assert 'recsys_model_version 2.0' in httpx.get(f"{server.base}/metrics").text


# ---- the registry away ------------------------------------------------------------------
def test_unreachable_registry_serves_the_last_known_good_copy(registry_home):
    nowhere = f"http://127.0.0.1:{free_port()}"  # nothing listens there
    env = server_env(registry_home["home"], MLFLOW_TRACKING_URI=nowhere, MLFLOW_HTTP_REQUEST_MAX_RETRIES="0",
                     MLFLOW_HTTP_REQUEST_TIMEOUT="2")
    cached = Server(env, registry_home["root"] / "degraded.log").start()
    try:
        ready = httpx.get(f"{cached.base}/readyz").json()
        assert ready["status"] == "degraded" and ready["version"] in registry_home["versions"]
        assert "last-known-good" in ready["reason"]
        response = httpx.get(f"{cached.base}/v1/users/u000001/recommendations", headers=KEY_HEADERS)
        assert response.status_code == 200 and response.json()["model_version"] == ready["version"]
        failed = httpx.post(f"{cached.base}/v1/admin/reload", headers={"X-API-Key": ADMIN_KEY}, timeout=60)
        assert failed.status_code == 409 and failed.json()["serving_version"] == ready["version"]
    finally:
        cached.stop()
