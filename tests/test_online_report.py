"""Online metrics on a small hand-made store: every number of a few cells computed by hand."""

from __future__ import annotations

import json
from pathlib import Path

import polars as pl
import pytest

from features.ingest import ingest
from recsys.home import EngineHome
from training.online_report import write_online_report

DAY = "2026-03-01"


def _exposure(rec: str, ts: str, items: list[str], *, user: str | None = None, variant: str = "champion",
              fallback: str | None = None, region: str | None = None) -> dict[str, object]:
    return {"recommendation_id": rec, "ts": ts, "endpoint": "users" if user else "regions", "user_id": user,
            "region_code": region, "target_item": None, "model_version": "1", "variant": variant,
            "items": items, "positions": list(range(1, len(items) + 1)), "filters": {}, "fallback": fallback}


@pytest.fixture
def home(tmp_path: Path) -> EngineHome:
    home = EngineHome.at(tmp_path / "home")
    users, items, events = tmp_path / "users.csv", tmp_path / "items.csv", tmp_path / "events.csv"
    pl.DataFrame({"user_id": ["u1", "u2", "u3"], "region_code": ["110116", "110105", "110116"],
                  "age_band": ["60+", "18-34", "60+"], "area_type": ["rural", "urban", "rural"]}).write_csv(users)
    pl.DataFrame({"item_id": list("abcde"), "title": list("ABCDE"), "kind": ["event"] * 5,
                  "category": ["music"] * 5,
                  "region_code": ["110116", "110105", "110105", "110116", "110105"]}).write_csv(items)
    pl.DataFrame([
        ("u1", "a", "click", f"{DAY}T10:30:00Z", None),          # L1
        ("u1", "b", "click", "2026-03-02T10:00:01Z", None),       # 24 h + 1 s after L1: no list
        ("u1", "a", "reserve", "2026-03-02T09:00:00Z", None),     # L1 (14 days)
        ("u2", "b", "impression", f"{DAY}T10:00:01Z", "L2"),
        ("u2", "c", "impression", f"{DAY}T10:00:01Z", "L2"),
        ("u2", "c", "click", f"{DAY}T10:05:00Z", None),           # L2
        ("u2", "b", "attend", "2026-03-05T18:00:00Z", None),      # L2
    ], schema=["user_id", "item_id", "action", "ts", "recommendation_id"], orient="row").write_csv(events)
    lines = [_exposure("L1", f"{DAY}T10:00:00.000+00:00", ["a", "b", "c"], user="u1"),
             _exposure("L2", f"{DAY}T10:00:00.000+00:00", ["b", "c"], user="u2", variant="challenger",
                       fallback="popular"),
             _exposure("L3", f"{DAY}T12:00:00.000+00:00", [], user="u1"),
             _exposure("L4", f"{DAY}T13:00:00.000+00:00", ["a", "d"], region="110116")]
    home.exposure_lines.mkdir(parents=True)
    (home.exposure_lines / "s1.jsonl").write_text("".join(json.dumps(x) + "\n" for x in lines))
    ingest(home, users=users, items=items)
    ingest(home, interactions=events)
    return home


def _cell(cells: pl.DataFrame, variant: str, segment_type: str = "all", segment: str = "all") -> dict[str, object]:
    rows = cells.filter((pl.col("variant") == variant) & (pl.col("segment_type") == segment_type)
                        & (pl.col("segment") == segment))
    assert rows.height == 1
    return rows.row(0, named=True)


def test_online_metrics_match_a_hand_computed_store(home: EngineHome) -> None:
    report = write_online_report(home, days=7)
    cells = report.metrics
    champion = _cell(cells, "champion")
    assert (champion["lists"], champion["shown"], champion["slots"], champion["clicks"]) == (3, 5, 5, 1)
    assert champion["click_through"] == pytest.approx(1 / 5)
    assert champion["reservations_per_1000"] == pytest.approx(1000 / 3)
    assert champion["attendance_per_1000"] == 0
    assert champion["catalogue_share"] == pytest.approx(4 / 5)
    assert champion["rural_slot_share"] == pytest.approx(3 / 5)
    assert champion["fallback_rate"] == 0 and champion["empty_rate"] == pytest.approx(1 / 3)
    challenger = _cell(cells, "challenger")
    assert (challenger["lists"], challenger["impressions"], challenger["shown"]) == (1, 2, 2)
    assert challenger["click_through"] == pytest.approx(0.5)
    assert challenger["attendance_per_1000"] == pytest.approx(1000)
    assert challenger["rural_slot_share"] == 0 and challenger["fallback_rate"] == 1
    rural = _cell(cells, "champion", "area_type", "rural")
    assert (rural["lists"], rural["shown"], rural["clicks"]) == (2, 3, 1)
    assert _cell(cells, "champion", "district", "110116")["lists"] == 3  # the district's own list too
    assert _cell(cells, "champion", "area_type", "unknown")["lists"] == 1
    assert _cell(cells, "champion", "age_band", "60+")["reservations_per_1000"] == pytest.approx(500)
    out = report.out_dir
    assert {p.name for p in out.iterdir()} >= {"metrics.parquet", "metrics.csv", "summary.json", "report.html"}
    summary = json.loads((out / "summary.json").read_text())
    assert {(t["variant"], t["lists"]) for t in summary["totals"]} == {("champion", 3), ("challenger", 1)}


def test_online_report_cli_endpoint_and_mlflow(home: EngineHome, own_mlflow_store: None) -> None:
    from fastapi.testclient import TestClient

    from serving.app import create_app
    from serving.auth import API_KEY_HEADER
    from tests.demo_store import cli_json, run_cli
    from tests.serving_fixtures import KEY_HEADERS, READ_KEY, keyed_settings, rules_data, write_bundle

    result = run_cli("online-report", "--home", str(home.root), "--days", "3", "--json")
    assert result.exit_code == 0, result.output
    summary = cli_json(result)
    assert summary["cells"] > 0 and len(summary["mlflow_runs"]) == 1  # one version x one day
    assert run_cli("online-report", "--home", str(home.root), "--days", "0", "--json").exit_code == 2
    bundle = write_bundle(rules_data(seed=0), home.root / "bundle")
    with TestClient(create_app(keyed_settings(home=home.root, model_dir=bundle)), headers=KEY_HEADERS) as client:
        answer = client.get("/v1/online/metrics", params={"segment_type": "area_type"})
        assert answer.status_code == 200, answer.text
        assert {c["segment"] for c in answer.json()["cells"]} == {"rural", "urban", "unknown"}
        assert client.get("/v1/online/metrics", params={"segment_type": "nope"}).status_code == 422
        assert client.get("/v1/online/metrics", headers={API_KEY_HEADER: READ_KEY}).status_code == 403
