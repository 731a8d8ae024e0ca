"""Served lists on record: ids in every list answer, one exposure line per list, fsyncs shared."""

from __future__ import annotations

import json
import threading
from pathlib import Path

import pytest
from fastapi.testclient import TestClient

from serving.app import create_app
from serving.exposures import ExposureLog, exposure_record
from tests.serving_fixtures import KEY_HEADERS, keyed_settings, rules_data, write_bundle


@pytest.fixture(scope="module")
def bundle(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return write_bundle(rules_data(seed=0), tmp_path_factory.mktemp("bundle") / "bundle")


def exposure_lines(home: Path) -> list[dict]:
    return [json.loads(line) for seg in sorted((home / "store" / "exposures_incoming").glob("*.jsonl"))
            for line in seg.read_text().splitlines() if line.strip()]


def test_every_list_is_named_and_recorded(bundle: Path, tmp_path: Path) -> None:
    with TestClient(create_app(keyed_settings(home=tmp_path, model_dir=bundle)), headers=KEY_HEADERS) as client:
        user = client.get("/v1/users/u1/recommendations", params={"n": 5, "kind": "event"})
        region = client.get("/v1/regions/110119/recommendations", params={"n": 3})
        item = user.json()["items"][0]["item_id"]
        similar = client.get(f"/v1/items/{item}/similar", params={"n": 4})
    answers = [user.json(), region.json(), similar.json()]
    assert all(a["variant"] == "champion" and len(a["recommendation_id"]) == 32 for a in answers)
    assert len({a["recommendation_id"] for a in answers}) == 3
    records = {r["recommendation_id"]: r for r in exposure_lines(tmp_path)}
    assert set(records) == {a["recommendation_id"] for a in answers}
    mine = records[answers[0]["recommendation_id"]]
    assert mine["user_id"] == "u1" and mine["endpoint"] == "users" and mine["filters"] == {"n": 5, "kind": "event"}
    assert mine["items"] == [i["item_id"] for i in answers[0]["items"]]
    assert mine["positions"] == list(range(1, len(mine["items"]) + 1))
    assert mine["model_version"] == answers[0]["model_version"]
    assert records[answers[1]["recommendation_id"]]["region_code"] == "110119"
    assert records[answers[2]["recommendation_id"]]["target_item"] == item


def test_logging_off_still_names_lists(bundle: Path, tmp_path: Path) -> None:
    settings = keyed_settings(home=tmp_path, model_dir=bundle, exposure_log=False)
    with TestClient(create_app(settings), headers=KEY_HEADERS) as client:
        answer = client.get("/v1/users/u1/recommendations").json()
    assert answer["recommendation_id"] and exposure_lines(tmp_path) == []


def test_group_commit_shares_fsyncs(tmp_path: Path) -> None:
    log = ExposureLog(tmp_path / "exposures")
    records = [exposure_record(recommendation_id=f"r{i}", endpoint="users", model_version="1", variant="champion",
                               item_ids=["a", "b"], user_id=f"u{i}") for i in range(400)]
    threads = [threading.Thread(target=log.record_blocking, args=(r,)) for r in records]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    log.close()
    lines = (tmp_path / "exposures").glob("*.jsonl")
    assert sorted(json.loads(x)["recommendation_id"] for f in lines for x in f.read_text().splitlines()) == sorted(
        r["recommendation_id"] for r in records)
    assert log.records == 400 and log.batches < 400


def test_a_failed_write_is_a_503(bundle: Path, tmp_path: Path) -> None:
    (tmp_path / "store").mkdir()
    (tmp_path / "store" / "exposures_incoming").write_text("not a directory")
    settings = keyed_settings(home=tmp_path, model_dir=bundle)
    with TestClient(create_app(settings), headers=KEY_HEADERS, raise_server_exceptions=False) as client:
        answer = client.get("/v1/users/u1/recommendations")
    assert answer.status_code == 503 and "record" in answer.json()["detail"]


def test_ingest_folds_exposures_into_day_partitions_and_erasure_removes_them(bundle: Path, tmp_path: Path) -> None:
    from features.ingest import ingest
    from features.ingest.exposures import read_exposures
    from recsys.home import EngineHome

    home = EngineHome.at(tmp_path)
    with TestClient(create_app(keyed_settings(home=tmp_path, model_dir=bundle)), headers=KEY_HEADERS) as client:
        ids = [client.get(f"/v1/users/{u}/recommendations").json()["recommendation_id"] for u in ("u1", "u2", "u1")]
        ingest(home)
        stored = read_exposures(home)
        assert sorted(stored["recommendation_id"].to_list()) == sorted(ids)
        assert list(home.exposures.glob("date=*/*.parquet"))
        ingest(home)  # nothing new: nothing stored twice
        assert read_exposures(home).height == 3
        assert client.delete("/v1/users/u1").status_code in (200, 202)
        client.get("/v1/users/u1/recommendations")  # an erased user's list names no user
    ingest(home)
    assert read_exposures(home)["user_id"].to_list().count("u1") == 0
    lines = [line for seg in home.exposure_lines.glob("*.jsonl") for line in seg.read_text().splitlines()]
    assert not any('"u1"' in line for line in lines)
