"""Acceptance of the poisoning defences, end to end on the trained demo home.

The adversarial case: one POST (a real uvicorn server, one app's key) of 1,300 rows on a film
nobody had touched: 200 real residents of one district (view, click, favorite, reserve) and
500 made-up ids (reserve). After ``recsys train --no-tune`` (which ingests the post):

* the rows are kept and flagged (``recsys store-info``), none counts;
* the gate's test window (the split's truth) is exactly what it was before the post;
* the newly trained version, made champion and served, lists the film neither for the
  district nor for a new user;
* the planner report is what it was before the post and names the rows it left out.

A control home gets the very same lines with the defences off (``RECSYS_POISON_ENABLED=false``)
and shows the attack working: the film enters the district's top 10 and its report.
"""

from __future__ import annotations

import json
import shutil
import time
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import httpx
import polars as pl
import pytest

from features import store
from features.dataset import load_dataset
from features.poisoning import Flag
from recsys.delivery import DeliveryEngine
from recsys.home import EngineHome
from recsys.query import Filters
from recsys.settings import EngineSettings
from serving.auth import API_KEY_HEADER, hash_key
from tests.demo_store import TrainedDemo, cli_json, copy_home, run_cli, train_cli
from tests.serving_fixtures import Server
from training.batch import load_registered

pytestmark = [pytest.mark.slow, pytest.mark.usefixtures("own_mlflow_store")]

APP = "promo-app"
KEY = "promo-app-key-0123456789"
REAL_ACTIONS = ("view", "click", "favorite", "reserve")
N_REAL, N_FAKE = 200, 500


@dataclass(frozen=True)
class Target:
    """The attacked district, 200 of its residents, the film and the moments of the attack and of the lists."""

    district: str
    residents: list[str]
    film: str
    posted_at: datetime
    """When the rows say they happened: two days before the screening."""
    lists_at: datetime
    """The time the lists are asked for: an hour before the screening (the film is showing)."""


def choose_target(home: EngineHome, now: datetime) -> Target:
    """The district with most residents, and the first film nobody touched, screened after the demo
    data ends and before now, that the champion does not already list for the district."""
    users = store.scan_users(home).collect()
    district = users["region_code"].drop_nulls().mode().sort()[0]
    residents = users.filter(pl.col("region_code") == district)["user_id"].sort().head(N_REAL).to_list()
    touched = store.scan_interactions(home).select("item_id").unique().collect()
    films = store.scan_items(home).collect().filter(
        (pl.col("kind") == "film") & ~pl.col("hidden").fill_null(False)
        & (pl.col("starts_at") <= pl.lit(now - timedelta(days=1), dtype=pl.Datetime("us", "UTC")))
    ).join(touched, on="item_id", how="anti").sort("item_id")
    _, champion = load_registered(home)
    engine = DeliveryEngine(champion)
    for film, starts in films.select("item_id", "starts_at").iter_rows():
        lists_at = starts - timedelta(hours=1)
        if film not in [i.item_id for i in engine.for_region(district, 10, Filters(at=lists_at.timestamp())).items]:
            return Target(district, residents, film, starts - timedelta(days=2), lists_at)
    raise AssertionError("every untouched film is already in the district's top 10")


def attack_rows(target: Target) -> list[dict[str, Any]]:
    residents, film, at = target.residents, target.film, target.posted_at.isoformat()
    real = [{"user_id": u, "item_id": film, "action": a, "ts": at} for u in residents for a in REAL_ACTIONS]
    fake = [{"user_id": f"promo-{k:04d}", "item_id": film, "action": "reserve", "ts": at} for k in range(N_FAKE)]
    return real + fake


def keys_file(directory: Path) -> Path:
    path = directory / "keys.toml"
    path.write_text(f'[{APP}]\nsha256 = "{hash_key(KEY)}"\nscopes = ["read", "write:interactions"]\n',
                    encoding="utf-8")
    return path


def report(root: Path) -> dict[str, Any]:
    summary = cli_json(run_cli("report", "--home", str(root), "--json"))
    out = Path(summary["out_dir"])
    return {"summary": json.loads((out / "summary.json").read_text(encoding="utf-8")),
            "meta": json.loads((out / "meta.json").read_text(encoding="utf-8"))}


def region_block(document: dict[str, Any], district: str) -> dict[str, Any]:
    return document["summary"]["regions"][district]


def truth_pairs(root: Path) -> set[tuple[str, str]]:
    """The (user, item) pairs of the test window training judges on (the split's truth)."""
    data = load_dataset(EngineHome.at(root), EngineSettings(), test_days=7, protocol="auto")
    assert data.split is not None
    truth = data.split.truth.tocoo()
    users, items = data.full.users.users.ids, data.full.catalog.items.ids
    return {(users[u], items[i]) for u, i in zip(truth.row.tolist(), truth.col.tolist(), strict=True)}


def wait_for_version(server: Server, version: str, timeout: float = 120.0) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if httpx.get(server.base + "/v1/model", timeout=5).json()["version"] == version:
            return
        time.sleep(0.5)
    raise TimeoutError(f"the server did not load version {version}")


def served_ids(response: httpx.Response) -> list[str]:
    assert response.status_code == 200, response.text
    return [item["item_id"] for item in response.json()["items"]]


def test_a_poisoning_post_is_flagged_and_changes_nothing(trained_demo: TrainedDemo, tmp_path: Path,
                                                         monkeypatch: pytest.MonkeyPatch) -> None:
    root = copy_home(trained_demo.root, tmp_path / "home")
    home = EngineHome.at(root)
    target = choose_target(home, datetime.now(UTC))
    district, film, at = target.district, target.film, {"n": 10, "at": target.lists_at.isoformat()}
    truth_before = truth_pairs(root)
    report_before = report(root)
    assert film not in [i["item_id"] for i in region_block(report_before, district)["top_items"]]

    env = {"RECSYS_HOME": str(root), "RECSYS_API_KEYS_FILE": str(keys_file(tmp_path)),
           "RECSYS_RELOAD_INTERVAL": "0.5"}
    server = Server(env, tmp_path / "server.log").start(timeout=180)
    try:
        headers = {API_KEY_HEADER: KEY}
        posted = httpx.post(server.base + "/v1/interactions", json=attack_rows(target),
                            headers=headers, timeout=120)
        assert posted.status_code == 202 and posted.json() == {"accepted": 1300, "rejected": [], "pending": 0}
        control_root = copy_home(trained_demo.root, tmp_path / "control")
        shutil.copytree(home.incoming, EngineHome.at(control_root).incoming)  # the very same lines

        trained_now = train_cli(root, "--force")  # flagged lines are no new data to train on
        info = cli_json(run_cli("store-info", "--home", str(root), "--json"))
        assert info["flagged"] == {
            "rows": 1300,
            "by_reason": {Flag.SOURCE_DOMINANCE.value: 800, Flag.NEW_USER_BURST.value: 500},
            "by_source": {APP: {Flag.NEW_USER_BURST.value: 500, Flag.SOURCE_DOMINANCE.value: 800}},
        }
        assert info["left_out"] == {"rows": 1300, "by_reason": {Flag.SOURCE_DOMINANCE.value: 800,
                                                                Flag.NEW_USER_BURST.value: 500}}
        assert truth_pairs(root) == truth_before  # the gate's test window holds none of the rows

        promoted = run_cli("promote", "--home", str(root), "--version", trained_now["version"], "--json")
        assert promoted.exit_code == 0, promoted.stderr
        wait_for_version(server, trained_now["version"])
        region = httpx.get(f"{server.base}/v1/regions/{district}/recommendations", params=at, timeout=30)
        newcomer = httpx.get(f"{server.base}/v1/users/newcomer-1/recommendations", params=at, headers=headers,
                             timeout=30)
        assert film not in served_ids(region)
        assert film not in served_ids(newcomer)
    finally:
        server.stop()

    report_after = report(root)
    for key in ("top_items", "gaps", "top_lifts", "trends"):
        assert region_block(report_after, district)[key] == region_block(report_before, district)[key], key
    assert report_after["meta"]["left_out"] == info["left_out"]
    assert report_after["meta"]["window_end"] == report_before["meta"]["window_end"]

    # the control: the same lines with the defences off do what the adversarial test saw
    monkeypatch.setenv("RECSYS_POISON_ENABLED", "false")
    control = train_cli(control_root, "--force")
    assert cli_json(run_cli("store-info", "--home", str(control_root), "--json"))["flagged"]["rows"] == 0
    _, bundle = load_registered(EngineHome.at(control_root), control["version"])
    listed = DeliveryEngine(bundle).for_region(district, 10, Filters(at=target.lists_at.timestamp())).items
    assert film in [item.item_id for item in listed]
    assert film in [i["item_id"] for i in region_block(report(control_root), district)["top_items"]]
