"""report.html in a real headless Chromium: charts render, no console errors, a real screenshot.

Skipped when ``chromium`` is not on PATH (CI installs it). The page is opened from a
``file://`` URL with networking features off, as a planner would open it offline.
"""

from __future__ import annotations

import json
import re
import shutil
import subprocess
from datetime import date
from pathlib import Path

import pytest

from democloud import DemoConfig, generate
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
    data.items.write_parquet(home.items)
    (home.interactions / "date=2026-10-31").mkdir(parents=True)
    data.interactions.write_parquet(home.interactions / "date=2026-10-31" / "demo.parquet")
    home.ingest_log.write_text(json.dumps({"ingest_id": "demo"}) + "\n", encoding="utf-8")
    result = write_report(home, root / "out", min_users=10, lang="zh")
    summary = json.loads(result.files["summary"].read_text(encoding="utf-8"))
    visible = sum(1 for block in summary["regions"].values() if not block["suppressed"])
    return {"page": result.files["html"], "tmp": root, "visible_regions": visible}


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
