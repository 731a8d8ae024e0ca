"""Residents' controls on the trained demo cloud, through ``recsys serve --workers 2``.

With personalisation off, a resident with a strong 戏曲 history gets the list of an anonymous
caller of no district from both workers, and still after a restart of the server; deleting
the tag 戏曲 takes the 戏曲 items out of their list at once, and engaging with a 戏曲 item
brings the tag back. ``recsys model-card`` names the champion version, its metrics and every
rule, checked against the MLflow run it describes.
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import polars as pl
import pytest

from recsys.home import EngineHome
from tests.demo_store import TrainedDemo, copy_home, run_cli
from tests.serving_fixtures import ROOT, free_port, keyed_env
from tests.test_workers import answers_from_each, get, ids, ready_workers
from training import registry

pytestmark = pytest.mark.slow
AT = "2026-10-31T10:00:00+08:00"
OPERA = "戏曲"


def start(home: Path, log: Path) -> tuple[subprocess.Popen, str]:
    port = free_port()
    env = {**os.environ, **keyed_env({"PYTHONUNBUFFERED": "1", "MLFLOW_DISABLE_TELEMETRY": "true"})}
    env.pop("MLFLOW_TRACKING_URI", None)
    process = subprocess.Popen(
        [sys.executable, "-c", "from training.cli import main; main()", "serve", "--workers", "2",
         "--port", str(port), "--home", str(home), "--log-level", "warning", "--reload-interval", "0"],
        cwd=ROOT, env=env, stdout=open(log, "ab"), stderr=subprocess.STDOUT,  # noqa: SIM115
        start_new_session=True)
    return process, f"http://127.0.0.1:{port}"


def stop(process: subprocess.Popen) -> None:
    os.killpg(process.pid, signal.SIGTERM)
    try:
        process.wait(15)
    except subprocess.TimeoutExpired:
        os.killpg(process.pid, signal.SIGKILL)
        process.wait(10)


@pytest.fixture(scope="module")
def served(trained_demo: TrainedDemo, tmp_path_factory: pytest.TempPathFactory) -> Iterator[dict]:
    root = copy_home(trained_demo.root, tmp_path_factory.mktemp("controls-workers") / "home")
    process, base = start(root, root.parent / "server.log")
    state = {"root": root, "base": base, "process": process}
    try:
        state["pids"] = ready_workers(base, 2, process, timeout=90)
        yield state
    finally:
        stop(state["process"])  # the one running now: a test restarts it


def opera_fan(root: Path) -> str:
    """The known resident with the largest share of 戏曲 in their history."""
    home = EngineHome.at(root)
    from features import store

    events = store.scan_interactions(home).join(store.scan_items(home).select("item_id", "category"), on="item_id")
    shares = (events.group_by("user_id").agg((pl.col("category") == OPERA).mean().alias("share"), pl.len())
              .filter(pl.col("len") >= 15).sort("share", "user_id", descending=[True, False]).collect())
    return str(shares["user_id"][0])


def test_personalisation_off_is_anonymous_on_both_workers_and_after_a_restart(served):
    base, pids, root = served["base"], served["pids"], served["root"]
    fan = opera_fan(root)
    path = f"/v1/users/{fan}/recommendations"
    anonymous = ids(get(base, "/v1/users/nobody-at-all/recommendations", n=20, at=AT).json())
    personal = ids(get(base, path, n=20, at=AT).json())
    assert personal != anonymous
    answer = get_put(base, f"/v1/users/{fan}/settings", {"personalized": False})
    assert answer == {"user_id": fan, "personalized": False, "senior_mode": False}
    lists = answers_from_each(base, path, pids, lambda body: body["fallback"] == "not_personalized",
                              timeout=10, n=20, at=AT)
    assert {tuple(ids(body)) for body in lists.values()} == {tuple(anonymous)}
    stop(served["process"])
    process, again = start(root, root.parent / "server-2.log")
    served["process"], served["base"] = process, again
    served["pids"] = ready_workers(again, 2, process, timeout=90)
    after = answers_from_each(again, path, served["pids"], lambda body: True, timeout=10, n=20, at=AT)
    assert {tuple(ids(body)) for body in after.values()} == {tuple(anonymous)}
    get_put(again, f"/v1/users/{fan}/settings", {"personalized": True})
    assert ids(get(again, path, n=20, at=AT).json()) == personal


def test_a_deleted_tag_leaves_the_list_at_once_and_comes_back_with_an_engagement(served):
    import httpx

    from tests.serving_fixtures import KEY_HEADERS

    base, root = served["base"], served["root"]
    fan = opera_fan(root)
    path = f"/v1/users/{fan}/recommendations"
    categories = [item["category"] for item in get(base, path, n=20, at=AT).json()["items"]]
    assert OPERA in categories
    profile = get(base, f"/v1/users/{fan}/profile").json()
    assert any(tag["label"] == f"{OPERA} · 常看" for tag in profile["tags"])
    deleted = httpx.delete(f"{base}/v1/users/{fan}/profile/tags/{OPERA}", headers=KEY_HEADERS, timeout=10)
    assert deleted.status_code == 200, deleted.text
    for _ in range(6):  # "at once": on whichever worker answers
        body = get(base, path, n=20, at=AT).json()
        assert OPERA not in [item["category"] for item in body["items"] if not item["editorial"]]
    item = next(i for i in get(base, "/v1/users/nobody-at-all/recommendations", n=100, category=OPERA,
                               at=AT).json()["items"])
    posted = httpx.post(f"{base}/v1/interactions", headers=KEY_HEADERS, timeout=10, json=[
        {"user_id": fan, "item_id": item["item_id"], "action": "attend", "ts": AT}])
    assert posted.json()["accepted"] == 1
    back = answers_from_each(base, path, served["pids"], lambda b: OPERA in [i["category"] for i in b["items"]],
                             timeout=10, n=20, at=AT)
    assert len(back) == 2


def test_the_model_card_names_the_version_its_metrics_and_every_rule(served, trained_demo: TrainedDemo):
    root = served["root"]
    result = run_cli("model-card", "--home", str(root), "--json")
    written = json.loads(result.stdout)
    client = registry.connect(EngineHome.at(root))
    champion = registry.champion(client)
    assert champion is not None and written["version"] == champion.version
    card = Path(written["markdown"]).read_text(encoding="utf-8")
    run = client.get_run(written["run_id"])
    assert f"版本 version {champion.version}" in card
    logged = run.data.metrics  # MLflow's spelling: @ as _at_
    for name in ("ndcg@10", "recall@20", "rural_urban_ndcg_ratio"):
        assert f"| {name} | {logged[name.replace('@', '_at_')]:.4f} |" in card
    assert f"| area_type.rural | {logged['ndcg_at_10.area_type.rural']:.4f} |" in card
    for rule in ("未成年人保护", "不感兴趣", "人工干预", "适老模式", "多样性", "已结束", "关闭个性化", "防数据投毒",
                 "隐私保护", "被遗忘权", "公平门槛"):
        assert rule in card, rule
    assert f"本版本的门槛结论 decision: {run.data.tags['gate.decision']}" in card
    html = Path(written["html"]).read_text(encoding="utf-8")
    assert html.startswith("<!doctype html>") and "未成年人保护" in html and str(root) not in html
    artifacts = {a.path for a in client.list_artifacts(written["run_id"], "model_card")}
    assert artifacts == {"model_card/model_card.md", "model_card/model_card.html"}
    served_card = get(served["base"], "/v1/model/card").text
    assert f"版本 version {champion.version}" in served_card and str(root) not in served_card


def get_put(base: str, path: str, body: dict) -> dict:
    import httpx

    from tests.serving_fixtures import KEY_HEADERS

    answer = httpx.put(base + path, json=body, headers=KEY_HEADERS, timeout=10)
    assert answer.status_code == 200, answer.text
    return answer.json()
