"""Input limits and admin security of the API.

Limits: request body size (declared or streamed), batch size, list length, absurdly long
ids and query values, unicode ids end to end, numeric edge cases (NaN, infinities,
negative radius, latitudes off the globe) -> a JSON 4xx, never a 500.
Admin: every admin route needs a key with the admin scope, and the server keeps only its
digest; without a configured admin key the routes are disabled (404), not open; the key never
reaches a log line, also in a real uvicorn process logging at DEBUG with its access log on
(which names no user either).
"""

from __future__ import annotations

import json
import logging
import os
import subprocess
import sys
import time
import warnings
from collections.abc import Iterator
from pathlib import Path
from urllib.parse import quote

import httpx
import pytest

with warnings.catch_warnings():  # starlette's TestClient warns about its httpx dependency
    warnings.simplefilter("ignore")
    from fastapi.testclient import TestClient

from recsys.bundle import ModelBundle
from recsys.home import EngineHome
from serving.app import create_app
from serving.connections import PROTOCOL
from tests.serving_fixtures import KEY_HEADERS, ROOT, free_port, keyed_env, keyed_settings, rules_data, write_bundle

ADMIN_KEY = "k3y-Sup3r-s3cret-立"
WRONG_KEY = "k3y-Sup3r-s3cret-X"
MAX_BODY = 32 * 1024
MAX_BATCH = 100


@pytest.fixture(scope="module")
def bundle(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return write_bundle(rules_data(seed=0), tmp_path_factory.mktemp("limits") / "bundle")


@pytest.fixture(scope="module")
def items(bundle: Path) -> list[str]:
    catalog = ModelBundle.load(bundle).catalog
    return [catalog.items.id_of(i) for i in range(len(catalog)) if not catalog.hidden[i]]


def make_client(home: Path, bundle: Path, admin_key: str | None = ADMIN_KEY, *, keyed: bool = True) -> TestClient:
    """``keyed``: the test keys are configured and the client sends the one with every scope;
    else only ``admin_key`` (if any) exists and the client sends nothing of its own."""
    settings = keyed_settings(home=home, model_dir=bundle, admin_key=admin_key, max_body_bytes=MAX_BODY,
                              max_batch=MAX_BATCH, **({} if keyed else {"api_keys": None}))
    return TestClient(create_app(settings), headers=KEY_HEADERS if keyed else None)


@pytest.fixture
def client(bundle: Path, tmp_path: Path) -> Iterator[TestClient]:
    with make_client(tmp_path / "home", bundle) as c:
        yield c


@pytest.fixture
def admin_only(bundle: Path, tmp_path: Path) -> Iterator[TestClient]:
    """An app whose only key is the admin key, and a client sending no key by itself."""
    with make_client(tmp_path / "home", bundle, keyed=False) as c:
        yield c


def interaction(user: str, item: str, **extra) -> dict:
    return {"user_id": user, "item_id": item, "action": "view", "ts": "2026-11-20T10:00:00+08:00", **extra}


def assert_json_error(response: httpx.Response, status: int) -> dict:
    assert response.status_code == status, response.text
    assert response.headers["content-type"].startswith("application/json")
    body = response.json()
    assert isinstance(body["detail"], str) and body["detail"]
    return body


# ---- body and batch size ----------------------------------------------------------------
def test_a_declared_body_over_the_cap_is_refused_before_reading(client: TestClient, items: list[str]) -> None:
    payload = json.dumps([interaction("u1", items[0], note="x" * 200)] * 200).encode()
    assert len(payload) > MAX_BODY
    body = assert_json_error(client.post("/v1/interactions", content=payload,
                                         headers={"content-type": "application/json"}), 413)
    assert str(MAX_BODY) in body["detail"]
    assert not list(EngineHome.at(client.app.state.services.settings.home).incoming.glob("*.jsonl"))


def test_a_streamed_body_is_counted_and_cut_at_the_cap(client: TestClient, items: list[str]) -> None:
    def chunks() -> Iterator[bytes]:  # no Content-Length: chunked transfer
        yield b"["
        for _ in range(1000):
            yield json.dumps(interaction("u1", items[0])).encode() + b","
        yield b"{}]"

    body = assert_json_error(client.post("/v1/interactions", content=chunks(),
                                         headers={"content-type": "application/json"}), 413)
    assert "limit" in body["detail"]
    small = client.post("/v1/interactions", content=iter([b"[", json.dumps(interaction("u1", items[0])).encode(),
                                                          b"]"]), headers={"content-type": "application/json"})
    assert small.status_code == 202 and small.json()["accepted"] == 1


def test_batch_cap_is_a_json_413_and_nothing_is_stored(client: TestClient, items: list[str]) -> None:
    batch = [interaction(f"u{n}", items[n % len(items)]) for n in range(MAX_BATCH + 1)]
    body = assert_json_error(client.post("/v1/interactions", json=batch), 413)
    assert f"at most {MAX_BATCH}" in body["detail"]
    assert client.app.state.services.live.of("u0") == {}
    assert client.post("/v1/interactions", json=batch[:MAX_BATCH]).json()["accepted"] == MAX_BATCH


@pytest.mark.parametrize("payload", [
    b"[" * 50_000 + b"]" * 50_000,  # nested far past the parser's recursion limit
    b"{\"user_id\": ",  # not JSON
    b"\xff\xfe\x00",  # not UTF-8
    b"{\"a\": 1}",  # not a list
    b"null",
])
def test_unreadable_bodies_are_json_4xx(client: TestClient, payload: bytes) -> None:
    response = client.post("/v1/interactions", content=payload, headers={"content-type": "application/json"})
    assert 400 <= response.status_code < 500 and isinstance(response.json()["detail"], str)


# ---- list length and long strings -------------------------------------------------------
@pytest.mark.parametrize("n", ["0", "101", "-1", "1e3", "999999999999999999999", "ten"])
def test_n_is_capped(client: TestClient, n: str) -> None:
    for path in ("/v1/users/u1/recommendations", "/v1/items/i5/similar", "/v1/regions/110101/recommendations"):
        body = assert_json_error(client.get(path, params={"n": n}), 422)
        assert body["detail"].startswith("n:")


@pytest.mark.parametrize("path", [
    "/v1/users/{long}/recommendations", "/v1/items/{long}/similar", "/v1/regions/{long}/recommendations",
    "/v1/reports/regions/{long}",
])
def test_absurdly_long_path_ids_are_422(client: TestClient, path: str) -> None:
    assert_json_error(client.get(path.format(long="长" * 5_000)), 422)


@pytest.mark.parametrize("name", ["kind", "category", "region", "at"])
def test_absurdly_long_query_values_are_422(client: TestClient, name: str) -> None:
    body = assert_json_error(client.get("/v1/users/u1/recommendations", params={name: "x" * 30_000}), 422)
    assert body["detail"].startswith(f"{name}:") and len(body["detail"]) < 300


def test_long_ids_in_posted_interactions_are_rejected_one_by_one(client: TestClient, items: list[str]) -> None:
    answer = client.post("/v1/interactions", json=[interaction("u" * 5000, items[0]),
                                                   interaction("u1", "i" * 5000), interaction("u1", items[0])])
    assert answer.status_code == 202 and answer.json()["accepted"] == 1
    assert [(r["index"], r["reason"]) for r in answer.json()["rejected"]] == [(0, "id_too_long"), (1, "id_too_long")]


# ---- unicode ------------------------------------------------------------------------------
@pytest.mark.parametrize("user", ["张三", "戏迷/老王", "ユーザー 🎭", "Ωmega\u200b"])
def test_unicode_ids_work_end_to_end(client: TestClient, items: list[str], user: str) -> None:
    posted = [items[3], items[4], items[5]]
    answer = client.post("/v1/interactions", json=[interaction(user, item, action="attend") for item in posted])
    assert answer.json() == {"accepted": 3, "rejected": [], "pending": 0}
    response = client.get(f"/v1/users/{quote(user, safe='')}/recommendations", params={"n": 20})
    assert response.status_code == 200
    body = response.json()
    assert body["user_id"] == user and body["fallback"] is None  # personal from the posted history
    assert not set(posted) & {item["item_id"] for item in body["items"]} and len(body["items"]) == 20
    home = EngineHome.at(client.app.state.services.settings.home)
    lines = [json.loads(line) for seg in home.incoming.glob("*.jsonl") for line in seg.read_text("utf-8").splitlines()]
    assert [line["item_id"] for line in lines if line["user_id"] == user] == posted
    assert json.dumps(user, ensure_ascii=False) in next(home.incoming.glob("*.jsonl")).read_text("utf-8")


# ---- numbers ------------------------------------------------------------------------------
@pytest.mark.parametrize("query", [
    {"lat": "nan", "lon": "116.4"}, {"lat": "39.9", "lon": "inf"}, {"lat": "-inf", "lon": "116.4"},
    {"lat": "1e400", "lon": "116.4"}, {"lat": "91", "lon": "116.4"}, {"lat": "-90.0001", "lon": "0"},
    {"lat": "39.9", "lon": "180.5"}, {"lat": "39.9", "lon": "116.4", "radius_km": "-1"},
    {"lat": "39.9", "lon": "116.4", "radius_km": "nan"}, {"lat": "39.9", "lon": "116.4", "radius_km": "inf"},
    {"lat": "39.9"}, {"radius_km": "5"}, {"diversity": "nan"}, {"diversity": "-0.1"}, {"diversity": "1e308"},
    {"at": "nan"}, {"at": "inf"}, {"at": "1e300"}, {"at": "-1e20"}, {"at": "0001-01-01T00:00:00"},
    {"at": "2026-13-45T25:61:00"},
])
def test_numeric_edge_cases_are_422_json(client: TestClient, query: dict) -> None:
    assert_json_error(client.get("/v1/users/u1/recommendations", params=query), 422)


@pytest.mark.parametrize("query", [
    {"lat": "90", "lon": "-180", "radius_km": "0"}, {"lat": "-90", "lon": "180", "radius_km": "1e308"},
    {"at": "9999-12-31T23:59:59"}, {"at": "1795136000"}, {"diversity": "1"},
])
def test_numeric_extremes_inside_the_range_are_answered(client: TestClient, query: dict) -> None:
    response = client.get("/v1/users/u1/recommendations", params=query)
    assert response.status_code == 200, response.text


def test_numeric_edge_cases_in_posted_interactions_are_rejected_not_500(client: TestClient,
                                                                        items: list[str]) -> None:
    raw = ("[" + ",".join([
        '{"user_id":"u1","item_id":"%s","action":"rate","ts":1795136000,"value":NaN}',
        '{"user_id":"u1","item_id":"%s","action":"rate","ts":1795136000,"value":Infinity}',
        '{"user_id":"u1","item_id":"%s","action":"view","ts":1e300}',
        '{"user_id":"u1","item_id":"%s","action":"view","ts":-Infinity}',
        '{"user_id":"u1","item_id":"%s","action":"rate","ts":1795136000,"value":1e308}',
        '{"user_id":"u1","item_id":"%s","action":"rate","ts":1795136000,"value":10}',
    ]) + "]") % tuple(items[:6])
    answer = client.post("/v1/interactions", content=raw, headers={"content-type": "application/json"})
    assert answer.status_code == 202
    assert [(r["index"], r["reason"]) for r in answer.json()["rejected"]] == [
        (0, "unparseable_value"), (1, "unparseable_value"), (2, "unparseable_time"), (3, "unparseable_time"),
        (4, "rating_out_of_range")]
    assert answer.json()["accepted"] == 1  # the top of the rating scale
    recommended = client.get("/v1/users/u1/recommendations")  # the folded-in weight stays finite
    assert recommended.status_code == 200 and all(isinstance(i["score"], float) for i in recommended.json()["items"])


# ---- admin --------------------------------------------------------------------------------
ADMIN_CALLS = [("post", "/v1/admin/reload"), ("delete", "/v1/users/someone")]


@pytest.mark.parametrize(("method", "path"), ADMIN_CALLS)
def test_admin_routes_need_the_key(admin_only: TestClient, method: str, path: str) -> None:
    assert_json_error(admin_only.request(method, path), 401)
    for wrong in (WRONG_KEY, "", ADMIN_KEY + "x", ADMIN_KEY[:-1], ADMIN_KEY.upper()):
        body = assert_json_error(admin_only.request(method, path, headers={"X-API-Key": wrong.encode()}), 401)
        assert body["detail"] == ("missing X-API-Key header" if wrong == "" else "unknown API key")
    assert admin_only.request(method, path, headers={"X-API-Key": ADMIN_KEY.encode()}).status_code == 200


@pytest.mark.parametrize(("method", "path"), ADMIN_CALLS)
def test_admin_routes_are_disabled_without_a_configured_key(bundle: Path, tmp_path: Path,
                                                            method: str, path: str) -> None:
    for configured in (None, ""):
        with make_client(tmp_path / "home", bundle, admin_key=configured, keyed=False) as disabled:
            for headers in ({}, {"X-API-Key": ""}, {"X-API-Key": "anything-anything"}):
                body = assert_json_error(disabled.request(method, path, headers=headers), 404)
                assert "disabled" in body["detail"]
    assert not EngineHome.at(tmp_path / "home").tombstones.exists()  # nothing was erased


def test_the_server_keeps_digests_not_keys(admin_only: TestClient) -> None:
    """A memory dump or a debugger shows no key: the ring maps SHA-256 digests to apps."""
    ring = admin_only.app.state.services.keys
    held = repr(vars(ring)) + repr(ring.fixed) + repr(admin_only.app.state.services.settings)
    assert ADMIN_KEY not in held and ADMIN_KEY.encode() not in held.encode()
    assert all(len(digest) == 32 for digest in ring.fixed)
    assert ring.lookup(ADMIN_KEY.encode()) is not None and ring.lookup(WRONG_KEY.encode()) is None


def test_the_key_never_reaches_the_logs(admin_only: TestClient, caplog: pytest.LogCaptureFixture) -> None:
    with caplog.at_level(logging.DEBUG):
        for key in (ADMIN_KEY, WRONG_KEY):
            headers = {"X-API-Key": key.encode()}
            for method, path in ADMIN_CALLS:
                response = admin_only.request(method, path, headers=headers)
                assert ADMIN_KEY not in response.text and WRONG_KEY not in response.text
    text = "\n".join(record.getMessage() + repr(record.args) for record in caplog.records)
    assert caplog.records  # the requests did log (reloads, the erasure, the wrong key)
    assert ADMIN_KEY not in text and WRONG_KEY not in text and "Sup3r" not in text
    assert ADMIN_KEY not in admin_only.get("/metrics").text


LOG_CONFIG = {
    "version": 1, "disable_existing_loggers": False,
    "formatters": {"plain": {"format": "%(levelname)s %(name)s %(message)s"}},
    "handlers": {"out": {"class": "logging.StreamHandler", "formatter": "plain", "stream": "ext://sys.stderr"}},
    "root": {"level": "DEBUG", "handlers": ["out"]},
    "loggers": {"uvicorn": {"level": "DEBUG"}, "uvicorn.access": {"level": "DEBUG"}},
}


def test_a_real_server_logging_at_debug_never_writes_the_key(bundle: Path, tmp_path: Path) -> None:
    config = tmp_path / "logging.json"
    config.write_text(json.dumps(LOG_CONFIG))
    log_file = tmp_path / "server.log"
    port = free_port()
    env = {**os.environ, **keyed_env({"RECSYS_HOME": str(tmp_path / "home"), "RECSYS_MODEL_DIR": str(bundle),
                                      "RECSYS_ADMIN_KEY": ADMIN_KEY, "PYTHONUNBUFFERED": "1"})}
    with open(log_file, "wb") as out:
        process = subprocess.Popen(
            [sys.executable, "-m", "uvicorn", "serving.app:create_app", "--factory", "--port", str(port),
             "--log-config", str(config), "--access-log", "--http", PROTOCOL], cwd=ROOT, env=env, stdout=out,
            stderr=subprocess.STDOUT)
    base = f"http://127.0.0.1:{port}"
    try:
        deadline = time.monotonic() + 60
        while True:
            assert process.poll() is None and time.monotonic() < deadline, log_file.read_text()
            try:
                if httpx.get(base + "/readyz", timeout=1).status_code == 200:
                    break
            except httpx.HTTPError:
                time.sleep(0.1)
        # the body cap over a real socket too: a chunked upload without Content-Length
        streamed = httpx.post(base + "/v1/interactions", content=(b" " * 4096 for _ in range(2000)),
                              headers={"content-type": "application/json", **KEY_HEADERS}, timeout=30)
        assert streamed.status_code == 413 and "limit" in streamed.json()["detail"]
        for key in (ADMIN_KEY, WRONG_KEY, None):
            headers = {"X-API-Key": key.encode()} if key else {}
            assert httpx.post(base + "/v1/admin/reload", headers=headers, timeout=30).status_code in (200, 401)
            assert httpx.delete(base + "/v1/users/logged-user", headers=headers, timeout=30).status_code in (
                200, 401)
        listed = httpx.get(base + "/v1/users/logged-user/recommendations?lat=39.9&lon=116.4", headers=KEY_HEADERS)
        assert listed.status_code == 200
    finally:
        process.terminate()
        process.wait(15)
    text = log_file.read_text(encoding="utf-8")
    assert "POST /v1/admin/reload" in text and "now serving version" in text  # it did log, at DEBUG
    assert ADMIN_KEY not in text and WRONG_KEY not in text and "Sup3r" not in text
    # the access log names routes, not residents (nor where they stand)
    assert 'GET /v1/users/{user_id}/recommendations HTTP' in text and 'DELETE /v1/users/{user_id} HTTP' in text
    assert "logged-user" not in text and "116.4" not in text
