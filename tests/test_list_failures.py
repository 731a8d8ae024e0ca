"""The error-rate guardrail has its input on record: a server counts its failed list requests per variant
(5xx answers and handler exceptions, not refusals or 4xx), durably, and ``recsys experiment report`` stops a
failing challenger by itself."""

from __future__ import annotations

import json
import time
import warnings
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest

with warnings.catch_warnings():  # starlette's TestClient warns about its httpx dependency
    warnings.simplefilter("ignore")
    from fastapi.testclient import TestClient

from features.ingest import ingest
from recsys.experiment import CHALLENGER, CHAMPION, Guardrails, assign, read_state
from recsys.home import EngineHome
from recsys.list_failures import count_failures, failure_record, read_failures
from serving.app import create_app
from tests.robustness_fixtures import store_for_bundle
from tests.serving_fixtures import KEY_HEADERS, keyed_settings, rules_data, write_bundle
from training.experiments_ab import report, start

USERS = [f"u{i}" for i in range(40)]


@pytest.fixture(scope="module")
def bundle(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return write_bundle(rules_data(seed=0), tmp_path_factory.mktemp("bundle") / "bundle")


@pytest.fixture
def failing_challenger(bundle: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Iterator[dict]:
    """An app whose challenger (the same bundle, served under the experiment) raises on every list."""
    home = store_for_bundle(tmp_path / "home", bundle)
    state = start(home, str(bundle), 0.5, Guardrails(min_lists=10, max_error_rate=0.05))
    app = create_app(keyed_settings(home=home.root, model_dir=bundle, reload_interval=0))
    with TestClient(app, raise_server_exceptions=False, headers=KEY_HEADERS) as client:
        follower = app.state.services.experiment
        deadline = time.monotonic() + 30
        while follower.challenger is None:  # loaded in the background
            assert time.monotonic() < deadline, "challenger not loaded"
            time.sleep(0.05)
        monkeypatch.setattr(follower.challenger.engine, "for_user", lambda *a, **k: 1 / 0)
        yield {"client": client, "home": home, "state": state, "app": app}


def test_failed_challenger_lists_are_counted_and_trip_the_guardrail(failing_challenger: dict) -> None:
    client, home, state = failing_challenger["client"], failing_challenger["home"], failing_challenger["state"]
    arms = {user: assign(state, user) for user in USERS}
    assert 10 <= list(arms.values()).count(CHALLENGER) <= 30
    for user, arm in arms.items():
        response = client.get(f"/v1/users/{user}/recommendations", params={"n": 3})
        assert response.status_code == (500 if arm == CHALLENGER else 200), response.text
        if arm == CHAMPION:
            assert response.json()["variant"] == CHAMPION
    # neither a 4xx nor an anonymous list is a failure
    assert client.get("/v1/users/u1/recommendations", params={"n": 0}).status_code == 422
    assert client.get("/v1/regions/110119/recommendations", params={"n": 3}).status_code == 200
    failed = list(arms.values()).count(CHALLENGER)

    metrics = client.get("/metrics").text
    assert f'recsys_variant_errors_total{{variant="challenger"}} {float(failed)}' in metrics
    counted = count_failures(home.list_failures, datetime.fromisoformat(state.started_at))
    assert counted == {CHALLENGER: failed}  # on disk, for any process to read

    ingest(home)  # the champion's lists
    summary = report(home)
    assert summary["failed_lists"] == {CHAMPION: 0, CHALLENGER: failed}
    assert summary["guardrail"] is not None and summary["guardrail"].startswith("error rate 100.00%")
    stopped = read_state(home.experiment)
    assert stopped is not None and not stopped.running and stopped.stop_reason.startswith("guardrail: error rate")


def test_a_server_error_answer_counts_for_the_variant_of_the_list(failing_challenger: dict,
                                                                  monkeypatch: pytest.MonkeyPatch) -> None:
    """A 5xx the handler answers itself (the exposure record could not be written) counts too."""
    client, home, app = failing_challenger["client"], failing_challenger["home"], failing_challenger["app"]
    services = app.state.services

    async def unwritable(record: object) -> None:
        raise OSError("disk full")

    monkeypatch.setattr(services.exposures, "record", unwritable)
    user = next(u for u in USERS if assign(failing_challenger["state"], u) == CHAMPION)
    assert client.get(f"/v1/users/{user}/recommendations", params={"n": 3}).status_code == 503
    assert client.get("/v1/items/i4/similar", params={"n": 3}).status_code == 503
    rows = read_failures(home.list_failures)
    assert [(r["variant"], r["endpoint"], r["status"]) for r in rows] == [(CHAMPION, "users", 503),
                                                                          (CHAMPION, "similar", 503)]


def test_failures_are_counted_within_the_experiment_span_only(tmp_path: Path) -> None:
    start_at = datetime(2026, 11, 1, tzinfo=UTC)
    lines = [failure_record(CHALLENGER, "users", 500, start_at - timedelta(seconds=1)),
             failure_record(CHALLENGER, "users", 500, start_at),
             failure_record(CHAMPION, "users", 503, start_at + timedelta(hours=1)),
             failure_record(CHALLENGER, "users", 500, start_at + timedelta(days=2))]
    directory = tmp_path / "failures"
    directory.mkdir()
    (directory / "a.jsonl").write_text("".join(json.dumps(line) + "\n" for line in lines) + '{"ts": "torn')
    counted = count_failures(directory, start_at, start_at + timedelta(days=1))
    assert counted == {CHALLENGER: 1, CHAMPION: 1}
    assert EngineHome.at(tmp_path).list_failures.parts[-2:] == ("serving", "list_failures")
