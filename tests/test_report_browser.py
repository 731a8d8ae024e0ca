"""report.html in a real headless Chromium: charts render, no console errors, a real screenshot.

Skipped when ``chromium`` is not on PATH (CI installs it). The page is opened from a
``file://`` URL with networking features off, as a planner would open it offline. The store
holds the demo's requests and menu, and the report ran in two ISO weeks, so the page opened
(``reports/latest/report.html``) has the requests section, two-week trends and the glossary.
"""

from __future__ import annotations

import json
import re
import shutil
import subprocess
from datetime import date
from pathlib import Path

import polars as pl
import pytest

from democloud import DemoConfig, generate
from features.ingest import ingest
from recsys.home import EngineHome
from training.report import write_report

CHROMIUM_FLAGS = (
    "--headless", "--no-sandbox", "--disable-gpu", "--no-first-run", "--disable-background-networking",
    "--disable-component-update", "--disable-sync",
)
TIMEOUT_S = 60


def chromium() -> str:
    path = shutil.which("chromium")
    if path is None:
        pytest.skip("chromium is not on PATH (install it: apt-get update && apt-get install -y chromium)")
    return path


def run_chromium(tmp: Path, page: Path, *extra: str, profile: str) -> subprocess.CompletedProcess[str]:
    args = [chromium(), *CHROMIUM_FLAGS, f"--user-data-dir={tmp / profile}", "--enable-logging=stderr", "--v=0",
            *extra, page.resolve().as_uri()]
    return subprocess.run(args, capture_output=True, text=True, timeout=TIMEOUT_S, check=False)


@pytest.fixture(scope="module")
def report(tmp_path_factory: pytest.TempPathFactory) -> dict:
    chromium()
    root = tmp_path_factory.mktemp("browser")
    data = generate(DemoConfig(users=6000, items=800, days=60, seed=3, end_date=date(2026, 10, 31)))
    home = EngineHome(root / "home")
    home.store.mkdir(parents=True)
    data.users.write_parquet(home.users)
    pl.concat([data.items, data.programmes]).write_parquet(home.items)
    (home.interactions / "date=2026-10-31").mkdir(parents=True)
    data.interactions.write_parquet(home.interactions / "date=2026-10-31" / "demo.parquet")
    home.ingest_log.write_text(json.dumps({"ingest_id": "demo"}) + "\n", encoding="utf-8")
    data.requests.write_csv(root / "requests.csv")
    ingest(home, requests=root / "requests.csv")
    write_report(home, None, min_users=10, lang="zh", at="2026-10-24T12:00:00+08:00")  # the week before
    result = write_report(home, None, min_users=10, lang="zh")
    summary = json.loads(result.files["summary"].read_text(encoding="utf-8"))
    visible = sum(1 for block in summary["regions"].values() if not block["suppressed"])
    return {"page": home.reports / "latest" / "report.html", "tmp": root, "visible_regions": visible}


def test_charts_render_in_the_dom(report: dict) -> None:
    done = run_chromium(report["tmp"], report["page"], "--dump-dom", profile="dom")
    assert done.returncode == 0, done.stderr[-2000:]
    dom = done.stdout
    assert "<main>" in dom and "群众点菜" in dom
    charts = re.findall(r"<svg\b.*?</svg>", dom, re.S)
    drawn = [c for c in charts if re.search(r"<(rect|path)\b", c)]
    # Two heatmaps, then supply-vs-demand and trend for every district that is not suppressed.
    expected = 2 + 2 * report["visible_regions"]
    assert report["visible_regions"] >= 10
    assert len(drawn) >= expected, (len(drawn), expected)
    assert len(drawn) == len(charts)


def test_no_console_errors_and_a_real_screenshot(report: dict) -> None:
    shot = report["tmp"] / "report.png"
    done = run_chromium(report["tmp"], report["page"], f"--screenshot={shot}", "--window-size=1280,2000",
                        profile="shot")
    assert done.returncode == 0, done.stderr[-2000:]
    page_errors = [line for line in done.stderr.splitlines()
                   if ("Uncaught" in line or "ERROR:CONSOLE" in line) and report["page"].name in line]
    assert page_errors == []
    assert shot.is_file() and shot.stat().st_size > 10_000


NEW_SECTIONS = ("requests", "trends", "glossary")


def test_new_sections_render_and_are_screenshotted(report: dict) -> None:
    done = run_chromium(report["tmp"], report["page"], "--dump-dom", profile="sections")
    assert done.returncode == 0, done.stderr[-2000:]
    dom = done.stdout
    for name in NEW_SECTIONS:
        assert f'id="{name}"' in dom, name
    requests = re.search(r'<h2 id="requests">.*?(?=<h2 )', dom, re.S)
    assert requests is not None and "点了却没有" in requests.group(0) and "<td" in requests.group(0)
    trends = re.search(r'<h2 id="trends">.*?(?=<h2 )', dom, re.S)
    assert trends is not None
    series = re.findall(r'<g class="series".*?</g>', trends.group(0), re.S)
    assert series and all(s.count("<circle") == 2 and "<polyline" in s for s in series[:5])
    glossary = re.search(r'<h2 id="glossary">.*?</table>', dom, re.S)
    assert glossary is not None and glossary.group(0).count("<tr>") >= 10 and "lift(s, c)" in glossary.group(0)
    shots = {}
    html = report["page"].read_text(encoding="utf-8")
    head, tail = html.split("<main>", 1)
    for name in NEW_SECTIONS:  # each section alone on a page with the report's own styles, then shot
        part = re.search(rf'<h2 id="{name}">.*?(?=<h2 |</main>)', tail, re.S)
        assert part is not None, name
        page = report["tmp"] / f"section-{name}.html"
        page.write_text(f"{head}<main>{part.group(0)}</main></body></html>", encoding="utf-8")
        shot = report["tmp"] / f"section-{name}.png"
        taken = run_chromium(report["tmp"], page, f"--screenshot={shot}", "--window-size=1280,1200",
                             profile=f"shot-{name}")
        assert taken.returncode == 0, taken.stderr[-2000:]
        assert shot.is_file() and shot.stat().st_size > 10_000, (name, shot.stat().st_size)
        shots[name] = shot.read_bytes()
    assert len(set(shots.values())) == len(NEW_SECTIONS)  # each screenshot shows its own section
