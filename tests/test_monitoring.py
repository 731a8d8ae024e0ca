"""Monitoring: what /metrics exports for an operator, and the shipped Grafana dashboard and
Prometheus alert rules (``serving/monitoring/``) name only metrics the server exports.

The exported names come from scraping a running app's /metrics; the names an expression uses
come from reading its PromQL (strings, label matchers, ranges and grouping lists removed; what
is left that is not a function, keyword or number is a metric). A doctored rule naming a
metric the server does not export must fail the check.
"""

from __future__ import annotations

import json
import re
import time
import warnings
from collections.abc import Iterator
from datetime import datetime
from importlib import resources
from pathlib import Path
from typing import Any

import pytest
import yaml

with warnings.catch_warnings():  # starlette's TestClient warns about its httpx dependency
    warnings.simplefilter("ignore")
    from fastapi.testclient import TestClient

from serving.app import create_app
from tests.serving_fixtures import KEY_HEADERS, T0, iso, keyed_settings, rules_data, write_bundle

TRAINED_AT = "2026-11-16T02:00:00+00:00"
SUFFIXES = {"counter": ("_total", "_created"), "gauge": ("",), "histogram": ("_bucket", "_count", "_sum", "_created"),
            "info": ("_info",), "summary": ("", "_count", "_sum", "_created"), "untyped": ("",)}
"""Sample names each Prometheus family type exposes (``# TYPE name type`` gives the family)."""
PROMQL_WORDS = {"and", "or", "unless", "by", "without", "on", "ignoring", "group_left", "group_right", "bool",
                "offset", "inf", "nan"}


@pytest.fixture(scope="module")
def client(tmp_path_factory: pytest.TempPathFactory) -> Iterator[TestClient]:
    bundle = write_bundle(rules_data(seed=0), tmp_path_factory.mktemp("bundle") / "bundle", trained_at=TRAINED_AT,
                          data_end=iso(T0 - 86_400))
    app = create_app(keyed_settings(home=tmp_path_factory.mktemp("home"), model_dir=bundle, reload_interval=0))
    with TestClient(app, headers=KEY_HEADERS) as c:
        yield c


@pytest.fixture(scope="module")
def scraped(client: TestClient) -> str:
    """/metrics after one request of each kind (lists, an empty list, a post)."""
    assert client.get("/v1/users/u1/recommendations?n=5").status_code == 200
    assert client.get("/v1/users/someone-new/recommendations?n=5").status_code == 200
    assert client.get("/v1/items/i4/similar?n=5").status_code == 200
    empty = client.get("/v1/users/u1/recommendations", params={"n": 5, "starts_after": "2099-01-01T00:00:00+00:00"})
    assert empty.status_code == 200 and empty.json()["items"] == []  # nothing starts that late
    posted = client.post("/v1/interactions", json=[{"user_id": "u1", "item_id": "i4", "action": "favorite",
                                                    "ts": iso(time.time() - 60)},
                                                   {"user_id": "u2", "item_id": "i5", "action": "view",
                                                    "ts": iso(time.time() - 60)}])
    assert posted.status_code == 202, posted.text
    return client.get("/metrics").text


def exported_names(text: str) -> set[str]:
    """Every sample name a Prometheus text exposition can hold, labelled children or not yet."""
    names = set()
    for line in text.splitlines():
        if line.startswith("# TYPE "):
            _, _, family, kind = line.split(maxsplit=3)
            kind = kind.strip()
            if kind == "counter":  # newer clients name a counter's family with its _total
                family = family.removesuffix("_total")
            names.update(family + suffix for suffix in SUFFIXES.get(kind, ("",)))
        elif line and not line.startswith("#"):
            names.add(re.split(r"[{\s]", line, maxsplit=1)[0])
    return names


def metric_names(expr: str) -> set[str]:
    """The metric names a PromQL expression reads."""
    text = re.sub(r'"(?:[^"\\]|\\.)*"', '""', expr)  # string literals (label values, regexes)
    text = re.sub(r"\{[^}]*\}", "", text)  # label matchers
    text = re.sub(r"\[[^\]]*\]", "", text)  # range and subquery selectors
    text = re.sub(r"\b(by|without|on|ignoring|group_left|group_right)\s*\([^)]*\)", " ", text)  # label lists
    names = set()
    for match in re.finditer(r"(?<![\w.$])[A-Za-z_:][A-Za-z0-9_:]*", text):
        followed = text[match.end():].lstrip()
        if followed.startswith("(") or match.group().lower() in PROMQL_WORDS:
            continue  # a function or aggregation, or a keyword
        names.add(match.group())
    return names


def shipped(name: str) -> str:
    return resources.files("serving").joinpath("monitoring", name).read_text(encoding="utf-8")


def alert_expressions(rules: dict[str, Any]) -> dict[str, str]:
    return {rule["alert"]: rule["expr"] for group in rules["groups"] for rule in group["rules"]}


def dashboard_expressions(dashboard: dict[str, Any]) -> dict[str, str]:
    return {f"{panel['title']} {target['refId']}": target["expr"]
            for panel in dashboard["panels"] for target in panel.get("targets", [])}


def unexported(expressions: dict[str, str], exported: set[str]) -> dict[str, set[str]]:
    """Per expression, the metrics it names that the server does not export (empty: all good)."""
    problems = {name: metric_names(expr) - exported for name, expr in expressions.items()}
    return {name: missing for name, missing in problems.items() if missing}


# --------------------------------------------------------------------------- the parser


def test_metric_names_are_read_from_promql() -> None:
    expr = ('sum by (endpoint) (rate(recsys_empty_lists_total{endpoint=~"users|x"}[15m])) / '
            'clamp_min(sum by (endpoint) (rate(recsys_lists_total[$__rate_interval])), 1e-9) > 0.05 and on() '
            'max(recsys_model_degraded offset 5m) == bool 1')
    assert metric_names(expr) == {"recsys_empty_lists_total", "recsys_lists_total", "recsys_model_degraded"}
    assert metric_names("histogram_quantile(0.95, sum by (le) (rate(x_bucket[5m])))") == {"x_bucket"}


# --------------------------------------------------------------------------- what /metrics exports


def test_metrics_export_ages_lists_catalogue_and_posts(scraped: str) -> None:
    values = {line.rsplit(" ", 1)[0]: float(line.rsplit(" ", 1)[1]) for line in scraped.splitlines()
              if line and not line.startswith("#")}
    trained = datetime.fromisoformat(TRAINED_AT).timestamp()
    assert values["recsys_model_age_seconds"] == pytest.approx(time.time() - trained, abs=60)
    assert values["recsys_data_age_seconds"] == pytest.approx(time.time() - (T0 - 86_400), abs=60)
    assert 0 < values["recsys_catalog_live_items"] <= 80
    assert values['recsys_lists_total{endpoint="users"}'] == 3
    assert values['recsys_lists_total{endpoint="similar"}'] == 1
    assert values['recsys_empty_lists_total{endpoint="users"}'] == 1
    assert any(key.startswith('recsys_fallbacks_total{endpoint="users"') for key in values)  # the new user
    assert values['recsys_interactions_posted_total{action="favorite"}'] == 1
    assert values['recsys_interactions_posted_total{action="view"}'] == 1


# --------------------------------------------------------------------------- dashboard and alert rules


def test_alert_rules_cover_what_an_operator_needs_and_name_exported_metrics(scraped: str) -> None:
    rules = yaml.safe_load(shipped("alerts.yml"))
    expressions = alert_expressions(rules)
    assert {"RecsysModelStale", "RecsysDataStale", "RecsysHighErrorRate", "RecsysEmptyLists",
            "RecsysDegraded"} <= set(expressions)
    for group in rules["groups"]:
        for rule in group["rules"]:
            assert {"alert", "expr", "labels", "annotations"} <= set(rule), rule
    assert unexported(expressions, exported_names(scraped)) == {}


def test_dashboard_panels_name_exported_metrics(scraped: str) -> None:
    dashboard = json.loads(shipped("grafana-dashboard.json"))
    expressions = dashboard_expressions(dashboard)
    assert len(expressions) >= 10 and dashboard["uid"] and dashboard["title"]
    used = set().union(*(metric_names(expr) for expr in expressions.values()))
    assert {"recsys_model_age_seconds", "recsys_data_age_seconds", "recsys_empty_lists_total",
            "recsys_catalog_live_items", "recsys_model_reloads_total", "recsys_interactions_posted_total"} <= used
    assert unexported(expressions, exported_names(scraped)) == {}


def test_a_rule_naming_an_unexported_metric_fails_the_check(scraped: str, tmp_path: Path) -> None:
    rules = yaml.safe_load(shipped("alerts.yml"))
    rules["groups"][0]["rules"].append({"alert": "Doctored", "expr": "rate(recsys_no_such_metric_total[5m]) > 0",
                                        "labels": {}, "annotations": {}})
    doctored = tmp_path / "alerts.yml"
    doctored.write_text(yaml.safe_dump(rules), encoding="utf-8")
    problems = unexported(alert_expressions(yaml.safe_load(doctored.read_text(encoding="utf-8"))),
                          exported_names(scraped))
    assert problems == {"Doctored": {"recsys_no_such_metric_total"}}
