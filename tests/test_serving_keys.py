"""Trust boundaries of the API: keys and scopes, rate limits, quotas, shedding, clean edges.

The engine serves apps, not residents: an app's backend holds a key and vouches for its
signed-in resident. So without a key nobody reads a personal list or writes anything (401),
a key without the scope is refused (403), and nothing refused leaves a trace in the store.
Limits answer 429/503 with ``Retry-After``; ``HEAD`` and ``OPTIONS`` work; public answers
name no filesystem path; the access log names no resident.
"""

from __future__ import annotations

import asyncio
import json
import logging
import warnings
from collections.abc import Iterator
from pathlib import Path
from urllib.parse import quote

import pytest
from pydantic import ValidationError

with warnings.catch_warnings():  # starlette's TestClient warns about its httpx dependency
    warnings.simplefilter("ignore")
    from fastapi.testclient import TestClient

from recsys.bundle import ModelBundle
from recsys.home import EngineHome
from serving.app import create_app
from serving.auth import API_KEY_HEADER, KeyConfigError, KeyRing, Scope, hash_key, parse_inline_keys
from serving.config import ServingSettings, env_name
from serving.guard import Guard
from serving.metrics import Metrics
from serving.quota import DailyQuota, QuotaExceeded
from serving.ratelimit import TokenBuckets
from serving.redact import AccessLogRedaction, public_text
from tests.serving_fixtures import (
    APP_KEY,
    READ_KEY,
    WRITER_KEY,
    keyed_settings,
    rules_data,
    write_bundle,
)

ADMIN_KEY = "keys-test-admin-key-01"
PERSONAL = "/v1/users/u1/recommendations"


@pytest.fixture(scope="module")
def bundle(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return write_bundle(rules_data(seed=0), tmp_path_factory.mktemp("keys") / "bundle")


@pytest.fixture(scope="module")
def items(bundle: Path) -> list[str]:
    catalog = ModelBundle.load(bundle).catalog
    return [catalog.items.id_of(i) for i in range(len(catalog)) if not catalog.hidden[i]]


def make_client(home: Path, bundle: Path, **settings) -> TestClient:
    """A client sending no key of its own (each request says which, if any)."""
    return TestClient(create_app(keyed_settings(home=home, model_dir=bundle, admin_key=ADMIN_KEY, **settings)))


@pytest.fixture
def client(bundle: Path, tmp_path: Path) -> Iterator[TestClient]:
    with make_client(tmp_path / "home", bundle) as c:
        yield c


def key(value: str) -> dict[str, str]:
    return {API_KEY_HEADER: value}


def posted(items: list[str], user: str = "resident-1", n: int = 1) -> list[dict]:
    return [{"user_id": user, "item_id": items[k], "action": "view", "ts": "2026-11-20T10:00:00+08:00"}
            for k in range(n)]


def stored_lines(client: TestClient) -> list[dict]:
    home = EngineHome.at(client.app.state.services.settings.home)
    return [json.loads(line) for path in home.incoming.glob("*.jsonl")
            for line in path.read_text(encoding="utf-8").splitlines() if line.strip()]


def assert_refused(response, status: int, detail: str | None = None) -> dict:
    assert response.status_code == status, response.text
    assert response.headers["content-type"].startswith("application/json")
    body = response.json()
    assert isinstance(body["detail"], str) and body["detail"]
    if detail is not None:
        assert body["detail"] == detail
    return body


# ---- keys and scopes ----------------------------------------------------------------------
def test_without_a_key_personal_lists_and_every_write_are_refused(client: TestClient, items: list[str]) -> None:
    missing = f"missing {API_KEY_HEADER} header"
    assert_refused(client.get(PERSONAL), 401, missing)
    assert_refused(client.post("/v1/interactions", json=posted(items)), 401, missing)
    assert_refused(client.post("/v1/interactions", content=b""), 401, missing)
    assert_refused(client.delete("/v1/users/u1"), 401, missing)
    assert_refused(client.post("/v1/admin/reload"), 401, missing)
    assert client.get(PERSONAL).headers["www-authenticate"] == "APIKey"
    for wrong in ("not-a-key-not-a-key", APP_KEY + "x", APP_KEY.upper()):
        assert_refused(client.get(PERSONAL, headers=key(wrong)), 401, "unknown API key")
        assert_refused(client.post("/v1/interactions", json=posted(items), headers=key(wrong)), 401)
    assert stored_lines(client) == [] and client.app.state.services.live.of("resident-1") == {}
    assert not EngineHome.at(client.app.state.services.settings.home).tombstones.exists()


def test_a_read_key_reads_and_cannot_write(client: TestClient, items: list[str]) -> None:
    assert client.get(PERSONAL, headers=key(READ_KEY)).status_code == 200
    body = assert_refused(client.post("/v1/interactions", json=posted(items), headers=key(READ_KEY)), 403)
    assert body["detail"] == "this API key lacks the write:interactions scope"
    assert_refused(client.delete("/v1/users/u1", headers=key(READ_KEY)), 403)
    assert_refused(client.post("/v1/admin/reload", headers=key(READ_KEY)), 403)
    assert stored_lines(client) == []


def test_an_app_key_posts_and_reads_and_cannot_erase_or_reload(client: TestClient, items: list[str]) -> None:
    answer = client.post("/v1/interactions", json=posted(items, n=3), headers=key(WRITER_KEY))
    assert answer.status_code == 202 and answer.json()["accepted"] == 3
    assert [line["item_id"] for line in stored_lines(client)] == items[:3]
    listed = client.get(PERSONAL.replace("u1", "resident-1"), headers=key(WRITER_KEY)).json()
    assert listed["items"] and not set(items[:3]) & {i["item_id"] for i in listed["items"]}  # posted = seen
    assert_refused(client.delete("/v1/users/resident-1", headers=key(WRITER_KEY)), 403,
                   "this API key lacks the admin scope")
    assert_refused(client.post("/v1/admin/reload", headers=key(WRITER_KEY)), 403)
    assert client.delete("/v1/users/resident-1", headers=key(ADMIN_KEY)).status_code == 200


def test_public_routes_need_no_key(client: TestClient, items: list[str]) -> None:
    for path in ("/healthz", "/readyz", "/v1/model", f"/v1/items/{items[0]}/similar",
                 "/v1/regions/110119/recommendations", "/openapi.json", "/metrics"):
        assert client.get(path).status_code == 200, path


def test_open_personal_reads_open_reads_only(bundle: Path, tmp_path: Path, items: list[str]) -> None:
    with make_client(tmp_path / "home", bundle, open_personal_reads=True) as open_reads:
        assert open_reads.get(PERSONAL).status_code == 200
        assert_refused(open_reads.post("/v1/interactions", json=posted(items)), 401)
        assert_refused(open_reads.delete("/v1/users/u1"), 401)
        schema = open_reads.get("/openapi.json").json()
    assert "security" not in schema["paths"]["/v1/users/{user_id}/recommendations"]["get"]
    assert schema["paths"]["/v1/interactions"]["post"]["security"] == [{"ApiKey": []}]


def test_keys_file_holds_hashes_and_rotates_without_a_restart(bundle: Path, tmp_path: Path) -> None:
    old, new = "old-key-of-the-culture-app", "new-key-of-the-culture-app"
    keys_file = tmp_path / "keys.toml"
    keys_file.write_text(f'[culture-app]\nsha256 = "{hash_key(old)}"\nscopes = ["read"]\n', encoding="utf-8")
    with make_client(tmp_path / "home", bundle, api_keys=None, api_keys_file=keys_file) as c:
        ring = c.app.state.services.keys
        ring.refresh_seconds = 0.0  # look at the file on every request (the default: once a second)
        assert c.get(PERSONAL, headers=key(old)).status_code == 200
        rotating = f'[culture-app]\nsha256 = ["{hash_key(new)}", "{hash_key(old)}"]\nscopes = ["read"]\n'
        keys_file.write_text(rotating, encoding="utf-8")
        assert c.get(PERSONAL, headers=key(old)).status_code == 200
        assert c.get(PERSONAL, headers=key(new)).status_code == 200
        keys_file.write_text(f'[culture-app]\nsha256 = "{hash_key(new)}"\nscopes = ["read"]\n', encoding="utf-8")
        assert_refused(c.get(PERSONAL, headers=key(old)), 401)  # revoked, no restart
        assert c.get(PERSONAL, headers=key(new)).status_code == 200
        keys_file.write_text("[culture-app\nbroken", encoding="utf-8")  # an edit in progress keeps the keys
        assert c.get(PERSONAL, headers=key(new)).status_code == 200
        keys_file.unlink()  # a deleted file revokes its keys
        assert_refused(c.get(PERSONAL, headers=key(new)), 401)
        assert c.get(PERSONAL, headers=key(ADMIN_KEY)).status_code == 403  # the admin key stays, with its scope


@pytest.mark.parametrize(("text", "problem"), [
    ("[app]\nscopes = ['read']\n", "needs sha256"),
    ("[app]\nsha256 = 'abc'\nscopes = ['read']\n", "64 hex digits"),
    (f"[app]\nsha256 = '{'0' * 64}'\nscopes = ['reed']\n", "unknown scope 'reed'"),
    (f"[app]\nsha256 = '{'0' * 64}'\nscopes = []\n", "no scopes"),
    (f"[a]\nsha256 = '{'0' * 64}'\nscopes = ['read']\n[b]\nsha256 = '{'0' * 64}'\nscopes = ['read']\n",
     "repeats a key"),
    ("not toml at all [", "not valid TOML"),
])
def test_a_malformed_keys_file_is_refused_at_start_up(tmp_path: Path, text: str, problem: str) -> None:
    keys_file = tmp_path / "keys.toml"
    keys_file.write_text(text, encoding="utf-8")
    with pytest.raises(KeyConfigError, match=problem):
        KeyRing.from_settings(None, None, keys_file)


@pytest.mark.parametrize(("settings", "problem"), [
    ({"admin_key": "too-short"}, "at least 16 characters"),
    ({"api_keys": "short=read"}, "entry 1: an API key must be at least 16"),
    ({"api_keys": "a-long-enough-key-0001=read+root"}, "unknown scope 'root'"),
    ({"api_keys": "a-long-enough-key-0001"}, "expected KEY=scope"),
    ({"api_keys": "a-long-enough-key-0001=read,a-long-enough-key-0001=admin"}, "listed twice"),
])
def test_bad_keys_stop_the_server_from_starting(tmp_path: Path, settings: dict, problem: str) -> None:
    with pytest.raises(ValidationError, match=problem) as raised:
        ServingSettings(home=tmp_path, **settings)
    assert "a-long-enough-key-0001" not in str(raised.value) and "too-short" not in str(raised.value)


def test_recsys_serve_refuses_a_short_admin_key_with_a_clear_message(monkeypatch: pytest.MonkeyPatch,
                                                                     tmp_path: Path) -> None:
    from typer.testing import CliRunner

    from training.cli import app

    started = []
    monkeypatch.setattr("uvicorn.run", lambda *args, **kwargs: started.append(args))
    monkeypatch.setenv("RECSYS_ADMIN_KEY", "secret")
    for name in ("RECSYS_HOME", "RECSYS_RELOAD_INTERVAL"):
        monkeypatch.setenv(name, "")  # recorded, so what the command sets is undone afterwards
    result = CliRunner().invoke(app, ["serve", "--home", str(tmp_path)])
    assert result.exit_code == 2 and started == []
    assert "RECSYS_ADMIN_KEY: an API key must be at least 16 characters long (this one has 6)" in result.output
    assert "secret" not in result.output


def test_inline_keys_are_parsed_into_digests_and_scopes() -> None:
    keys = parse_inline_keys("first-key-0123456789=read+write:interactions, second-key-0123456789=admin")
    assert sorted((k.app, sorted(k.scopes)) for k in keys.values()) == [
        ("inline-1", [Scope.READ, Scope.WRITE_INTERACTIONS]), ("inline-2", [Scope.ADMIN])]
    assert all(len(digest) == 32 for digest in keys)
    assert env_name("api_keys") == "RECSYS_API_KEYS" and env_name("open_personal_reads") == "RECSYS_OPEN_PERSONAL_READS"


# ---- rate limits ----------------------------------------------------------------------------
def test_a_key_over_its_rate_gets_429_with_retry_after(bundle: Path, tmp_path: Path) -> None:
    with make_client(tmp_path / "home", bundle, rate_per_key=0.5, burst_per_key=3) as c:
        statuses = [c.get(PERSONAL, headers=key(READ_KEY)).status_code for _ in range(3)]
        refused = c.get(PERSONAL, headers=key(READ_KEY))
        other = c.get(PERSONAL, headers=key(WRITER_KEY))  # another app: its own bucket
        metrics = c.get("/metrics").text
    assert statuses == [200, 200, 200]
    assert_refused(refused, 429)
    assert int(refused.headers["retry-after"]) == 2  # one token at 0.5 per second
    assert other.status_code == 200
    assert 'recsys_refusals_total{reason="key_rate"} 1.0' in metrics


def test_an_address_without_a_key_over_its_rate_gets_429(bundle: Path, tmp_path: Path, items: list[str]) -> None:
    with make_client(tmp_path / "home", bundle, rate_per_ip=1, burst_per_ip=2) as c:
        similar = f"/v1/items/{items[0]}/similar"
        statuses = [c.get(similar).status_code for _ in range(3)]
        refused = c.get(similar)
        keyed = c.get(similar, headers=key(READ_KEY))  # a valid key spends its app's tokens instead
    assert statuses[:2] == [200, 200] and statuses[2] == 429
    assert_refused(refused, 429)
    assert int(refused.headers["retry-after"]) >= 1 and keyed.status_code == 200


def test_wrong_keys_are_throttled_per_address(bundle: Path, tmp_path: Path) -> None:
    with make_client(tmp_path / "home", bundle, wrong_keys_per_minute=3) as c:
        guesses = [c.get(PERSONAL, headers=key(f"guess-number-{n:08d}")).status_code for n in range(3)]
        throttled = c.get(PERSONAL, headers=key(f"guess-number-{3:08d}"))
        right = c.get(PERSONAL, headers=key(READ_KEY))  # not even a right key is looked at now
        public = c.get("/healthz")
    assert guesses == [401, 401, 401]
    assert_refused(throttled, 429) and int(throttled.headers["retry-after"]) == 20  # 3 a minute: one per 20 s
    assert_refused(right, 429)
    assert public.status_code == 200


def test_token_buckets_refill_at_their_rate_and_stay_bounded() -> None:
    now = [0.0]
    buckets = TokenBuckets(rate=2, burst=4, max_names=3, clock=lambda: now[0])
    assert [buckets.take("a") for _ in range(4)] == [0.0] * 4
    assert buckets.take("a") == pytest.approx(0.5)
    now[0] += 0.5
    assert buckets.take("a") == 0.0 and buckets.take("a") == pytest.approx(0.5)
    for name in "bcd":
        buckets.take(name)
    assert len(buckets) == 3 and buckets.wait("a") == 0.0  # "a" was forgotten: a full bucket again
    assert TokenBuckets(rate=0, burst=1).take("x", cost=1e9) == 0.0  # 0 = no limit


# ---- the daily quota ---------------------------------------------------------------------------
def test_the_daily_row_quota_refuses_a_batch_past_it(bundle: Path, tmp_path: Path, items: list[str]) -> None:
    with make_client(tmp_path / "home", bundle, daily_rows_per_key=5) as c:
        first = c.post("/v1/interactions", json=posted(items, n=3), headers=key(WRITER_KEY))
        refused = c.post("/v1/interactions", json=posted(items, user="resident-2", n=3), headers=key(WRITER_KEY))
        rest = c.post("/v1/interactions", json=posted(items, user="resident-3", n=2), headers=key(WRITER_KEY))
        other_app = c.post("/v1/interactions", json=posted(items, user="resident-4", n=5), headers=key(APP_KEY))
        lines = stored_lines(c)
    assert first.status_code == 202 and rest.status_code == 202 and other_app.status_code == 202
    body = assert_refused(refused, 429)
    assert "2 left today" in body["detail"] and 1 <= int(refused.headers["retry-after"]) <= 86_400
    assert "resident-2" not in {line["user_id"] for line in lines}  # the refused batch left nothing


def test_the_quota_is_shared_by_the_processes_of_a_home(tmp_path: Path) -> None:
    day = 1_795_000_000.0  # 2026-11-18 (UTC)
    one, two = (DailyQuota(tmp_path, rows_per_day=10, clock=lambda: day) for _ in range(2))
    one.reserve("app", 6)
    with pytest.raises(QuotaExceeded) as refused:
        two.reserve("app", 5)  # the other process's 6 rows count
    assert refused.value.remaining == 4
    two.reserve("app", 4)
    two.reserve("other-app", 10)
    with pytest.raises(QuotaExceeded):
        one.reserve("app", 1)
    with open(tmp_path / "2026-11-18.jsonl", "ab") as ledger:  # a crash in the middle of a line
        ledger.write(b'{"app": "app", "ro')
    one.reserve("late-app", 3)  # written on a line of its own after the torn one
    with pytest.raises(QuotaExceeded) as late:
        DailyQuota(tmp_path, rows_per_day=10, clock=lambda: day).reserve("late-app", 8)
    assert late.value.remaining == 7
    tomorrow = DailyQuota(tmp_path, rows_per_day=10, clock=lambda: day + 86_400)
    tomorrow.reserve("app", 10)  # a new day: a new count, and the old ledger is gone
    assert sorted(p.name for p in tmp_path.iterdir()) == ["2026-11-19.jsonl"]


# ---- load shedding --------------------------------------------------------------------------------
def test_requests_past_the_in_flight_bound_get_503_and_probes_still_answer() -> None:
    release = asyncio.Event()

    async def slow_app(scope, receive, send) -> None:
        await release.wait()
        await send({"type": "http.response.start", "status": 200, "headers": []})
        await send({"type": "http.response.body", "body": b"done"})

    guard = Guard(slow_app, keys=KeyRing({}), metrics=Metrics(), max_in_flight=2,
                  per_key=TokenBuckets(0, 1), per_ip=TokenBuckets(0, 1), wrong_keys=TokenBuckets(1, 10))

    async def call(path: str) -> list[dict]:
        sent: list[dict] = []

        async def receive() -> dict:
            return {"type": "http.request", "body": b"", "more_body": False}

        async def send(message: dict) -> None:
            sent.append(message)

        scope = {"type": "http", "method": "GET", "path": path, "headers": [], "client": ("10.0.0.1", 1)}
        await guard(scope, receive, send)
        return sent

    async def scenario() -> tuple[list[list[dict]], list[dict], list[dict]]:
        busy = [asyncio.create_task(call("/v1/model")) for _ in range(2)]
        await asyncio.sleep(0.01)
        shed = await call("/v1/model")
        probe = asyncio.create_task(call("/healthz"))
        await asyncio.sleep(0.01)
        release.set()
        return [await task for task in busy], shed, await probe

    busy, shed, probe = asyncio.run(scenario())
    assert shed[0]["status"] == 503 and dict(shed[0]["headers"])[b"retry-after"] == b"1"
    assert json.loads(shed[1]["body"])["detail"].startswith("the server is at capacity")
    assert [answer[0]["status"] for answer in busy] == [200, 200] and probe[0]["status"] == 200
    assert guard.in_flight == 0


# ---- HEAD and OPTIONS ---------------------------------------------------------------------------
def test_head_is_get_without_the_body(client: TestClient, items: list[str]) -> None:
    for path in ("/healthz", "/v1/model", f"/v1/items/{items[0]}/similar"):
        got, head = client.get(path), client.head(path)
        assert head.status_code == 200 and head.content == b"", path
        assert head.headers["content-type"] == got.headers["content-type"]
        assert int(head.headers["content-length"]) > 0
    assert client.head(PERSONAL).status_code == 401  # the same checks as its GET
    assert client.head(PERSONAL, headers=key(READ_KEY)).status_code == 200
    assert client.head("/v1/no-such-route").status_code == 404


def test_options_lists_the_methods_of_a_path(client: TestClient) -> None:
    answer = client.options("/v1/interactions")
    assert answer.status_code == 204 and answer.headers["allow"] == "OPTIONS, POST" and answer.content == b""
    assert client.options("/healthz").headers["allow"] == "GET, HEAD, OPTIONS"
    assert client.options(f"/v1/users/{quote('a/b', safe='')}").headers["allow"] == "DELETE, OPTIONS"
    assert_refused(client.options("/v1/no-such-route"), 404)


# ---- clean edges ----------------------------------------------------------------------------------
def test_public_answers_carry_no_filesystem_path(bundle: Path, tmp_path: Path) -> None:
    home = tmp_path / "engine-home-root"
    with make_client(home, bundle) as c:
        answers = [c.get("/readyz"), c.get("/v1/model")]
    missing = tmp_path / "no-such-bundle"
    with make_client(home, missing) as c:  # the same home: its last-known-good copy serves, degraded
        answers += [c.get("/readyz"), c.get("/v1/model"), c.post("/v1/admin/reload", headers=key(ADMIN_KEY))]
    with make_client(tmp_path / "empty-home", missing) as c:  # nothing to serve at all
        answers += [c.get("/readyz"), c.get("/v1/model"), c.get(PERSONAL, headers=key(READ_KEY)),
                    c.post("/v1/admin/reload", headers=key(ADMIN_KEY))]
    assert [a.status_code for a in answers] == [200, 200, 200, 200, 409, 503, 503, 503, 503]
    name = answers[1].json()["name"]  # which bundle, not where it lives
    assert name.startswith("…/") and name.endswith("/bundle")
    assert answers[2].json()["status"] == "degraded" and "no-such-bundle/manifest.json" in answers[2].json()["reason"]
    assert "no-such-bundle" in answers[5].json()["reason"]  # still says what is wrong
    for answer in answers:
        for path in (str(home), str(bundle), str(missing), str(tmp_path)):
            assert path not in answer.text, (answer.request.url, answer.text)


def test_paths_are_cut_to_their_last_components() -> None:
    assert public_text("cannot read /srv/recsys/home/serving/lkg/manifest.json: gone") == \
        "cannot read …/lkg/manifest.json: gone"
    assert public_text("store sqlite:////srv/h/mlflow.db is not a file.") == "store …/h/mlflow.db is not a file."
    assert public_text("at http://mlflow.internal:5000/api 3/4 done") == "at http://mlflow.internal:5000/api 3/4 done"
    assert public_text(None) is None


def test_the_access_log_names_no_resident() -> None:
    record = logging.LogRecord("uvicorn.access", logging.INFO, __file__, 1, '%s - "%s %s HTTP/%s" %d',
                               ("10.0.0.9:5000", "GET", "/v1/users/张三/recommendations?lat=39.9&lon=116.4", "1.1",
                                200), None)
    AccessLogRedaction().filter(record)
    assert record.getMessage() == '10.0.0.9:5000 - "GET /v1/users/{user_id}/recommendations HTTP/1.1" 200'
    record.args = ("x", "DELETE", "/v1/users/a/b", "1.1", 200)
    AccessLogRedaction().filter(record)
    assert record.getMessage() == 'x - "DELETE /v1/users/{user_id} HTTP/1.1" 200'
