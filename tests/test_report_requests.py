"""The planners' report hears requests: asked for, not offered; menu programmes; answers; k-anonymity.

A hand-made store: district 110116 (rural) where 12 seniors ask for 戏曲 that no venue there
offers and 4 ask for 舞蹈 (too few to show), district 110105 where 11 young residents ask for a
menu programme, and 12 ask for 音乐, answered by an item that started a week later.
"""

from __future__ import annotations

import json
from datetime import UTC, datetime, timedelta
from pathlib import Path

import polars as pl
import pytest

from features import schemas
from features.ingest import ingest
from recsys.home import EngineHome
from tests.demo_store import TrainedDemo
from training.report import write_report

END = datetime(2026, 10, 31, 12, tzinfo=UTC)
MIN_USERS = 10


def frame(rows: list[dict], table: str) -> pl.DataFrame:
    schema = schemas.SCHEMAS[table]
    return pl.DataFrame([{c: r.get(c) for c in schema} for r in rows], schema=schema)


def build(root: Path) -> EngineHome:
    home = EngineHome(root)
    users = [{"user_id": f"r{i}", "region_code": "110116", "age_band": "60+", "area_type": "rural"} for i in range(30)]
    users += [{"user_id": f"y{i}", "region_code": "110105", "age_band": "18-34", "area_type": "urban"}
              for i in range(30)]
    items = [
        {"item_id": "music-116", "title": "乡村音乐会", "kind": "event", "category": "音乐", "region_code": "110116",
         "lat": 40.3, "lon": 116.6, "starts_at": END - timedelta(days=3)},
        {"item_id": "dance-105", "title": "街舞", "kind": "event", "category": "舞蹈", "region_code": "110105",
         "lat": 39.9, "lon": 116.5},
        {"item_id": "pg-hiphop", "title": "嘻哈工作坊巡演", "kind": "programme", "category": "舞蹈"},
    ]
    interactions = [{"user_id": u["user_id"], "item_id": "music-116" if u["region_code"] == "110116" else "dance-105",
                     "action": "click", "ts": END - timedelta(days=1)} for u in users]
    home.store.mkdir(parents=True)
    frame(users, "users").write_parquet(home.users)
    frame(items, "items").write_parquet(home.items)
    part = home.interactions / "date=2026-10-31"
    part.mkdir(parents=True)
    frame(interactions, "interactions").write_parquet(part / "t.parquet")
    home.ingest_log.write_text(json.dumps({"ingest_id": "t"}) + "\n", encoding="utf-8")
    asked = END - timedelta(days=10)
    requests = [{"user_id": f"r{i}", "region_code": "110116", "category": "戏曲", "ts": asked.isoformat()}
                for i in range(12)]
    requests += [{"user_id": f"r{i}", "region_code": "110116", "category": "舞蹈", "ts": asked.isoformat()}
                 for i in range(4)]
    requests += [{"user_id": f"r{i}", "region_code": "110116", "category": "音乐", "ts": asked.isoformat()}
                 for i in range(12, 24)]
    requests += [{"user_id": f"y{i}", "region_code": "110105", "item_id": "pg-hiphop", "ts": asked.isoformat()}
                 for i in range(11)]
    path = root / "requests.csv"
    pl.DataFrame(requests).write_csv(path)
    ingest(home, requests=path)
    return home


@pytest.fixture(scope="module")
def report(tmp_path_factory: pytest.TempPathFactory) -> Path:
    home = build(tmp_path_factory.mktemp("req") / "home")
    return write_report(home, None, min_users=MIN_USERS, at=END).out_dir


def test_asked_for_not_offered_tops_the_district(report: Path) -> None:
    demand = pl.read_parquet(report / "request_demand.parquet")
    rural = demand.filter(pl.col("region_code") == "110116").sort("rank")
    top = rural.row(0, named=True)
    assert top["category"] == "戏曲" and top["asked_not_offered"] and top["requesters"] == 12
    assert top["supply_items"] == 0
    music = rural.filter(pl.col("category") == "音乐").row(0, named=True)
    assert not music["asked_not_offered"] and music["supply_items"] == 1
    summary = json.loads((report / "summary.json").read_text(encoding="utf-8"))
    assert summary["regions"]["110116"]["requests"]["asked_not_offered"][0]["category"] == "戏曲"


def test_requests_are_k_anonymous_in_every_output(report: Path) -> None:
    demand = pl.read_parquet(report / "request_demand.parquet")
    dance = demand.filter((pl.col("region_code") == "110116") & (pl.col("category") == "舞蹈")).row(0, named=True)
    assert dance["suppressed"] and dance["requesters"] is None and not dance["asked_not_offered"]
    text = "".join(p.read_text(encoding="utf-8") for p in report.iterdir() if p.suffix in (".csv", ".json", ".html"))
    summary = json.loads((report / "summary.json").read_text(encoding="utf-8"))
    shown = summary["regions"]["110116"]["requests"]["demand"]
    assert all(row["category"] != "舞蹈" for row in shown)
    assert "嘻哈工作坊巡演" in text


def test_programmes_and_answers(report: Path) -> None:
    programmes = pl.read_parquet(report / "requested_programmes.parquet")
    assert programmes.filter(pl.col("region_code") == "110105").row(0, named=True)["item_id"] == "pg-hiphop"
    answers = pl.read_parquet(report / "request_answers.parquet").filter(pl.col("region_code") == "110116")
    row = answers.row(0, named=True)
    assert row["requests"] == 28 and row["answered"] == 12
    assert row["median_days_to_answer"] == 7.0  # the 音乐 item started a week after the requests
    html = (report / "report.html").read_text(encoding="utf-8")
    assert 'id="requests"' in html and "点了却没有" in html


def test_planted_requests_top_their_districts_asked_for_not_offered(trained_demo: TrainedDemo, tmp_path: Path) -> None:
    """On the demo cloud (ingested with its requests file and menu), each planted pattern is the first
    "asked for, not offered" cell of its district in the report's files, and the menu programme leads
    its district's requested programmes."""
    out = write_report(trained_demo.home, tmp_path / "report", min_users=MIN_USERS).out_dir
    demand = pl.read_parquet(out / "request_demand.parquet")
    programmes = pl.read_parquet(out / "requested_programmes.parquet")
    summary = json.loads((out / "summary.json").read_text(encoding="utf-8"))
    patterns = trained_demo.demo.data.ground_truth["requests"]
    assert {p["pattern"] for p in patterns} == {"asked_not_offered", "menu_programme"}
    for pattern in patterns:
        code = pattern["region_code"]
        listed = demand.filter((pl.col("region_code") == code) & pl.col("asked_not_offered")).sort("rank")
        top = listed.row(0, named=True)
        assert top["category"] == pattern["category"] and top["supply_items"] == 0, (pattern, listed)
        assert top["requesters"] >= pattern["requesters"]  # the background's few may ask for it too
        assert summary["regions"][code]["requests"]["asked_not_offered"][0]["category"] == pattern["category"]
        if pattern["item_id"] is not None:
            own = programmes.filter(pl.col("region_code") == code).sort("rank")
            assert own.row(0, named=True)["item_id"] == pattern["item_id"]
