"""The written report: planted effects are found, nothing suppressed leaks, the CLI writes it all.

The store is the synthetic demo (20,000 users, 60 days) plus a tiny district of six users
(code 120101, outside Beijing's table) whose every number must stay hidden.
"""

from __future__ import annotations

import csv
import json
import re
from datetime import UTC, date, datetime
from html import unescape
from pathlib import Path

import polars as pl
import pytest
from typer.testing import CliRunner

from democloud import DemoConfig, generate
from features import schemas
from features.aggregates import plan_report
from features.store import scan_interactions, scan_items, scan_users
from recsys.home import EngineHome
from training.cli import app
from training.report import log_report_to_mlflow, write_report
from training.report_html import category_label, percent, region_name, section_id

TINY = "120101"
MIN_USERS = 10
NUMBER_COLUMNS = {
    "preferences": ("active_users", "engaged_users", "share", "city_share", "lift"),
    "supply_demand": ("demand_share", "gap", "status", "demand_users"),
    "trends": ("share_now", "share_prev", "change_pp"),
    "age_gaps": ("demand_share", "gap", "status"),
    "weekly_trends": ("share", "engaged_users"),
}
TABLES = (*NUMBER_COLUMNS, "supply")
"""Every table the report writes as Parquet and CSV (supply counts the catalogue: nothing to suppress)."""


def write_store(root: Path, users: pl.DataFrame, items: pl.DataFrame, interactions: pl.DataFrame) -> EngineHome:
    """A committed store written directly: tables, one partition file, its ingest-log line."""
    home = EngineHome(root)
    home.store.mkdir(parents=True, exist_ok=True)
    users.write_parquet(home.users)
    items.write_parquet(home.items)
    partition = home.interactions / "date=2026-10-31"
    partition.mkdir(parents=True, exist_ok=True)
    interactions.write_parquet(partition / "test-ingest.parquet")
    home.ingest_log.write_text(json.dumps({"ingest_id": "test-ingest"}) + "\n", encoding="utf-8")
    return home


def with_tiny_district(users: pl.DataFrame, interactions: pl.DataFrame) -> tuple[pl.DataFrame, pl.DataFrame]:
    """Six new users in district 120101 who copy the behaviour of six busy demo users."""
    busy = interactions.group_by("user_id").len().sort(["len", "user_id"], descending=[True, False])["user_id"]
    mapping = {busy[i]: f"tiny{i}" for i in range(6)}
    copied = interactions.filter(pl.col("user_id").is_in(list(mapping))).with_columns(
        pl.col("user_id").replace_strict(mapping)
    )
    extra = pl.DataFrame(
        [dict(user_id=new, region_code=TINY, age_band="60+", area_type="urban", registered_at=None)
         for new in mapping.values()], schema=schemas.USERS)
    return pl.concat([users, extra]), pl.concat([interactions, copied])


@pytest.fixture(scope="module")
def demo(tmp_path_factory: pytest.TempPathFactory) -> dict:
    data = generate(DemoConfig(users=20000, items=2000, days=60, seed=7, end_date=date(2026, 10, 31)))
    users, interactions = with_tiny_district(data.users, data.interactions)
    home = write_store(tmp_path_factory.mktemp("home"), users, data.items, interactions)
    summary = write_report(home, None, window_days=28, min_users=MIN_USERS, lang="zh")
    return {"home": home, "summary": summary, "out": summary.out_dir, "truth": data.ground_truth}


def test_files_are_written_into_the_default_folder(demo: dict) -> None:
    out: Path = demo["out"]
    assert out == demo["home"].reports / "2026-W44"  # the ISO week of the window's end
    assert (demo["home"].reports / "latest").resolve() == out.resolve()
    names = {p.name for p in out.iterdir()}
    assert names == {"report.html", "summary.json", "meta.json", *(f"{t}.{ext}" for t in TABLES
                                                                   for ext in ("parquet", "csv"))}
    meta = json.loads((out / "meta.json").read_text(encoding="utf-8"))
    assert meta["min_users"] == MIN_USERS and meta["lang"] == "zh" and meta["window_days"] == 28
    assert meta["window_end_source"] == "latest_interaction"
    # The demo's last day is 2026-10-31 (Shanghai), so the latest interaction is on that day.
    end = datetime.fromisoformat(meta["window_end"])
    assert end.astimezone(UTC).date() in (date(2026, 10, 30), date(2026, 10, 31))
    assert (end - datetime.fromisoformat(meta["window_start"])).days == 28
    assert not [p for p in out.parent.iterdir() if p.name.startswith(".")]  # no staging left behind


def test_planted_effects_show_in_preferences(demo: dict) -> None:
    prefs = pl.read_parquet(demo["out"] / "preferences.parquet").filter(pl.col("segment_type") == "region_age")
    effects = demo["truth"]["effects"]
    assert len(effects) >= 5
    for effect in effects:
        segment = prefs.filter((pl.col("region_code") == effect["region_code"])
                               & (pl.col("age_band") == effect["age_band"]))
        row = segment.filter(pl.col("category") == effect["category"]).to_dicts()[0]
        assert not row["suppressed"], effect
        assert row["lift"] >= 1.5, (effect, row["lift"])
        top3 = segment.sort("lift", descending=True, nulls_last=True)["category"].head(3).to_list()
        assert effect["category"] in top3, (effect, top3)


def test_csv_matches_parquet(demo: dict) -> None:
    for table in NUMBER_COLUMNS:
        from_csv = pl.read_csv(demo["out"] / f"{table}.csv", schema_overrides={"region_code": pl.String})
        from_parquet = pl.read_parquet(demo["out"] / f"{table}.parquet")
        assert from_csv.height == from_parquet.height and from_csv.columns == from_parquet.columns
        assert from_csv["suppressed"].to_list() == from_parquet["suppressed"].to_list()


def test_suppressed_rows_have_null_numbers_in_every_file(demo: dict) -> None:
    for table, columns in NUMBER_COLUMNS.items():
        frame = pl.read_parquet(demo["out"] / f"{table}.parquet")
        hidden = frame.filter(pl.col("suppressed"))
        assert hidden.height > 0, table
        for column in columns:
            assert hidden[column].null_count() == hidden.height, (table, column)
        with open(demo["out"] / f"{table}.csv", encoding="utf-8") as fh:
            for row in csv.DictReader(fh):
                if row["suppressed"] == "true":
                    assert all(row[c] == "" for c in columns), (table, row)


def _true_numbers(home: EngineHome) -> pl.DataFrame:
    """The unsuppressed preferences (min_users = 1) of the tiny district: what must never show."""
    tables = plan_report(scan_interactions(home), scan_users(home), scan_items(home),
                         window_days=28, min_users=1).collect()
    return tables.preferences.filter((pl.col("region_code") == TINY) & pl.col("share").is_not_null())


def test_tiny_district_leaks_nothing(demo: dict) -> None:
    out: Path = demo["out"]
    truth = _true_numbers(demo["home"])
    assert truth.height > 0 and truth["active_users"].max() == 6  # the numbers exist before suppression

    summary = json.loads((out / "summary.json").read_text(encoding="utf-8"))
    block = summary["regions"][TINY]
    assert block["suppressed"] is True and block["name"] == TINY
    assert block["active_users"] is None
    assert block["top_lifts"] == block["gaps"] == block["trends"] == block["top_items"] == []

    for table in NUMBER_COLUMNS:
        rows = pl.read_parquet(out / f"{table}.parquet").filter(pl.col("region_code") == TINY)
        assert rows.height > 0 and rows["suppressed"].all(), table

    html = (out / "report.html").read_text(encoding="utf-8")
    section = re.search(rf'<section[^>]*id="{section_id(TINY)}".*?</section>', html, re.S)
    assert section is not None
    visible = unescape(re.sub(r"<[^>]+>", " ", section.group(0)))
    # Only the district code and the threshold may appear as numbers in its section.
    leftover = visible.replace(TINY, "").replace(str(MIN_USERS), "")
    assert not re.search(r"\d", leftover), leftover
    for share in truth["share"].to_list():
        assert percent(share) not in visible
    # Its row of the overview heatmap is all grey dashes.
    row_cells = re.findall(rf"<title>{TINY} · [^<]*</title>.*?</g>", html)
    assert row_cells and all("—" in c and "×" not in c for c in row_cells)


def test_suppressed_heatmap_cell_shows_no_number(demo: dict) -> None:
    prefs = pl.read_parquet(demo["out"] / "preferences.parquet")
    hidden = prefs.filter((pl.col("segment_type") == "region") & pl.col("suppressed")
                          & (pl.col("region_code") != TINY))
    assert hidden.height > 0  # small outer districts have thin categories
    html = (demo["out"] / "report.html").read_text(encoding="utf-8")
    for code, category in hidden.select("region_code", "category").rows():
        where = f"{region_name(code)} · {category_label(category)}"
        cells = re.findall(rf"<g><title>{re.escape(where)}: [^<]*</title>.*?</g>", html)
        assert len(cells) == 1 and "—" in cells[0] and "lift" not in cells[0] and "×" not in cells[0]


def test_summary_json_numbers_are_consistent_with_files(demo: dict) -> None:
    summary = json.loads((demo["out"] / "summary.json").read_text(encoding="utf-8"))
    prefs = pl.read_parquet(demo["out"] / "preferences.parquet")
    yanqing = summary["regions"]["110119"]
    assert yanqing["name"] == "延庆区" and not yanqing["suppressed"]
    top = yanqing["top_lifts"][0]
    row = prefs.filter((pl.col("segment_type") == top["segment_type"]) & (pl.col("region_code") == "110119")
                       & (pl.col("category") == top["category"])
                       & (pl.col("age_band").is_null() if top["age_band"] is None
                          else pl.col("age_band") == top["age_band"])).to_dicts()[0]
    assert (row["lift"], row["share"], row["engaged_users"]) == (top["lift"], top["share"], top["users"])
    lifts = [entry["lift"] for entry in yanqing["top_lifts"]]
    assert lifts == sorted(lifts, reverse=True) and min(lifts) > 1.0
    assert all(entry["users"] >= MIN_USERS for entry in yanqing["top_lifts"])
    assert all(item["users"] >= MIN_USERS for item in yanqing["top_items"])
    assert {g["status"] for g in yanqing["gaps"]} <= {"undersupplied", "oversupplied", "balanced"}


def test_html_is_self_contained_and_in_chinese(demo: dict) -> None:
    html = (demo["out"] / "report.html").read_text(encoding="utf-8")
    assert html.startswith("<!DOCTYPE html>") and '<html lang="zh-CN">' in html
    # The only URL is the SVG namespace: no script, stylesheet, font or image from elsewhere.
    urls = set(re.findall(r"https?://[^\s\"')]+", html))
    assert urls == {"http://www.w3.org/2000/svg"}
    assert "<script" not in html and "<link" not in html and "@import" not in html and "url(" not in html
    assert "延庆区" in html and "指标定义" in html and "隐私保护" in html
    assert "延庆区 60+ 用户中有" in html and "是全市平均的" in html
    assert html.count("<svg") >= 2 + 2 * 16


def test_data_strings_are_escaped(tmp_path: Path) -> None:
    users = pl.DataFrame([dict(user_id=f"u{i}", region_code="110101", age_band="60+", area_type="urban",
                               registered_at=None) for i in range(3)], schema=schemas.USERS)
    evil = '<img src=x onerror="alert(1)">'
    items = pl.DataFrame([dict(item_id="x1", title=evil, kind="event", category="<script>bad()</script>",
                               tags=[], region_code="110101", venue_id=None, lat=None, lon=None, starts_at=None,
                               ends_at=None, capacity=None, provider="p", is_free=True, hidden=False)],
                         schema=schemas.ITEMS)
    interactions = pl.DataFrame([dict(user_id=f"u{i}", item_id="x1", action="view",
                                      ts=datetime(2026, 10, 30, tzinfo=UTC), value=None) for i in range(3)],
                                schema=schemas.INTERACTIONS)
    home = write_store(tmp_path, users, items, interactions)
    result = write_report(home, tmp_path / "out", min_users=1, lang="en")
    html = result.files["html"].read_text(encoding="utf-8")
    assert "<script" not in html and "<img" not in html
    assert "&lt;script&gt;bad()&lt;/script&gt;" in html and "&lt;img src=x onerror=" in html


def test_rewrite_swaps_the_whole_folder(demo: dict, tmp_path: Path) -> None:
    out = tmp_path / "report"
    first = write_report(demo["home"], out, window_days=28, min_users=MIN_USERS, lang="zh")
    (out / "stale.txt").write_text("from an older report")
    second = write_report(demo["home"], out, window_days=14, min_users=MIN_USERS, lang="en")
    assert first.out_dir == second.out_dir == out
    assert not (out / "stale.txt").exists()
    assert json.loads((out / "meta.json").read_text())["window_days"] == 14
    assert sorted(p.name for p in tmp_path.iterdir()) == ["report"]


def test_empty_store_is_a_clear_error(tmp_path: Path) -> None:
    with pytest.raises(ValueError, match="no interactions"):
        write_report(tmp_path, None)
    result = CliRunner().invoke(app, ["report", "--home", str(tmp_path)])
    assert result.exit_code == 2


def test_cli_writes_all_files_and_prints_paths(demo: dict, tmp_path: Path) -> None:
    out = tmp_path / "cli-report"
    result = CliRunner().invoke(app, [
        "report", "--home", str(demo["home"].root), "--out", str(out), "--window-days", "21",
        "--min-users", "15", "--lang", "en", "--at", "2026-10-25T00:00:00+08:00", "--json",
    ])
    assert result.exit_code == 0, result.output
    printed = json.loads(result.stdout)
    assert printed["out_dir"] == str(out)
    assert set(printed["files"]) == {"html", "summary", "meta", *(f"{t}_{ext}" for t in TABLES
                                                                   for ext in ("parquet", "csv"))}
    for path in printed["files"].values():
        assert Path(path).is_file() and Path(path).parent == out
    meta = json.loads((out / "meta.json").read_text())
    assert meta["window_end"] == "2026-10-24T16:00:00+00:00" and meta["window_end_source"] == "given"
    assert meta["min_users"] == 15 and meta["lang"] == "en" and meta["window_days"] == 21
    assert '<html lang="en">' in (out / "report.html").read_text(encoding="utf-8")
    bad = CliRunner().invoke(app, ["report", "--home", str(demo["home"].root), "--at", "yesterday-ish"])
    assert bad.exit_code == 2


def test_mlflow_logging(demo: dict, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    import mlflow
    from mlflow.tracking import MlflowClient

    monkeypatch.delenv("MLFLOW_TRACKING_URI", raising=False)
    home = EngineHome(tmp_path / "mlhome")
    run_id = log_report_to_mlflow(demo["out"], home=home)
    client = MlflowClient(home.tracking_uri())
    logged = {a.path for a in client.list_artifacts(run_id, "report")}
    assert {"report/report.html", "report/summary.json", "report/preferences.parquet"} <= logged
    assert client.get_run(run_id).data.params["min_users"] == str(MIN_USERS)
    assert client.get_experiment(client.get_run(run_id).info.experiment_id).name == "cultural-recsys"
    # Into an existing run (as `recsys train --report` does): the caller's tracking URI is kept.
    mlflow.set_tracking_uri(home.tracking_uri())
    with mlflow.start_run() as run:
        assert log_report_to_mlflow(demo["out"], run.info.run_id) == run.info.run_id
    assert "report/meta.json" in {a.path for a in client.list_artifacts(run.info.run_id, "report")}


def test_two_weeks_leave_two_archives_and_a_two_point_trend(demo: dict, tmp_path: Path) -> None:
    """A run per ISO week is archived under reports/<year>-W<week>/; latest points at the newest,
    whose trend charts draw both weeks, and whose supply counts listings, sessions and seats with the
    digital channel apart."""
    from tests.demo_store import copy_home

    home = EngineHome(copy_home(demo["home"].root, tmp_path / "home"))
    earlier = write_report(home, None, min_users=MIN_USERS, at="2026-10-24T12:00:00+08:00")
    later = write_report(home, None, min_users=MIN_USERS)
    weeks = sorted(p.name for p in home.reports.iterdir() if not p.name.startswith("."))
    assert weeks == ["2026-W43", "2026-W44", "latest"]
    assert (earlier.out_dir.name, later.out_dir.name) == ("2026-W43", "2026-W44")
    latest = home.reports / "latest"
    assert latest.resolve() == later.out_dir.resolve() and (latest / "report.html").is_file()
    history = pl.read_parquet(latest / "weekly_trends.parquet")
    assert sorted(history["week"].unique().to_list()) == ["2026-W43", "2026-W44"]
    html = (latest / "report.html").read_text(encoding="utf-8")
    chart = re.search(rf'<div class="trend" id="trend-{section_id("110119")}">.*?</svg>', html, re.S)
    assert chart is not None
    series = re.findall(r'<g class="series".*?</g>', chart.group(0), re.S)
    # a point per shown week: the leading category has both; a thinner one may miss a hidden week
    assert series and series[0].count("<circle") == 2 and all(s.count("<circle") <= 2 for s in series)
    supply = pl.read_parquet(latest / "supply.parquet")
    offline = supply.filter(pl.col("channel") == "offline")
    assert (offline["sessions"] >= offline["listings"]).all() and offline["seats"].sum() > offline["sessions"].sum()
    digital = supply.filter(pl.col("channel") == "digital")
    assert digital.height > 0 and digital["region_code"].is_null().all() and digital["seats"].is_null().all()
    gaps = pl.read_parquet(latest / "age_gaps.parquet").filter(~pl.col("suppressed"))
    seniors = gaps.filter((pl.col("region_code") == "110119") & (pl.col("age_band") == "60+")
                          & (pl.col("category") == "戏曲")).row(0, named=True)
    assert seniors["status"] == "undersupplied", seniors  # the planted effect: Yanqing's seniors and opera
    assert 'id="glossary"' in html and "lift(s, c) = share(s, c) ÷ share(全市, c)" in html
