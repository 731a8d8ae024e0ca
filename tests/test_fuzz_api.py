"""The whole API fuzzed against its own OpenAPI schema (schemathesis, positive and negative data).

An app with a small real model (the hybrid of :func:`tests.serving_fixtures.rules_data`) and
a real engine home answers every operation of ``/openapi.json``. For every generated
request: never a 5xx, and the answer conforms to the schema (status code documented,
content type, body schema, headers). Examples are bounded and derandomized, so a run is
reproducible and fast.

Schema-valid requests may still be refused for rules a schema cannot state across
parameters (``lat`` without ``lon``, ``radius_km`` without a place, an ``at`` that is not a
time); the check ``positive_data_acceptance`` is replaced by one that allows exactly those.
User and item ids may hold ``/`` (``DELETE /v1/users/a/recommendations`` erases the user
``a/recommendations``, and ``PUT /v1/items/a/similar`` writes the item ``a/similar``), so under
``/v1/users/`` and ``/v1/items/`` an undeclared method on a declared path is not expected to be
a 405 (check ``unsupported_method``), and the ``Allow`` of an ``OPTIONS`` there rightly lists
``DELETE`` or ``PUT`` (check ``allow_header_conformance``). Every request carries the test key
with every scope, so the handlers are reached (the refusals without one are tested in
``tests/test_serving_keys.py``); the schema must still document 401/403/429.
``POST /v1/interactions`` (and ``POST /v1/items/batch``) judges each
element on its own (a bad one is listed in ``rejected``, the batch still answers 202), so
there the check ``negative_data_rejection`` is replaced by: every element is either
accepted or rejected, and every element that breaks the contract is rejected.
"""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import schemathesis
from hypothesis import HealthCheck, settings
from pydantic import ValidationError
from schemathesis.checks import negative_data_rejection, positive_data_acceptance, unsupported_method
from schemathesis.core.parameters import ParameterLocation
from schemathesis.specs.openapi.checks import allow_header_conformance

from recsys.contract import InteractionIn, Reason
from serving.app import create_app
from tests.serving_fixtures import KEY_HEADERS, keyed_settings, rules_data, write_bundle

EXAMPLES = 80
CROSS_PARAMETER_RULES = ("lat and lon must be given together", "radius_km needs lat and lon", "at: cannot read",
                         "starts_after:", "starts_before:", "cursor:", "kind: unknown kind",
                         "category: unknown category", "age_band: unknown age_band", "wanted_from:",
                         "wanted_until:", "target:")
"""The 422 details a schema-valid request may get (rules across parameters, a time that is not one or
a wanted period that ended before the request, a cursor this server did not make, a value the served
catalogue does not hold)."""
ITEM_RULES = (*(f"{reason.value}:" for reason in Reason), "item_id_mismatch:")
"""The 422 details a schema-valid item write may get: the data contract's value rules (a time that is
none, a region code that is not 6 digits, an end before the start), which a JSON schema does not state."""


@pytest.fixture(scope="module")
def fuzzed_app(tmp_path_factory: pytest.TempPathFactory):
    root = tmp_path_factory.mktemp("fuzz")
    bundle = write_bundle(rules_data(seed=0), root / "bundle")
    reports = root / "home" / "reports" / "latest"  # a report to serve, so its routes answer 200 too
    reports.mkdir(parents=True)
    (reports / "summary.json").write_text(json.dumps({
        "generated_at": "2026-11-20T03:00:00+00:00", "window": {"days": 28}, "min_users": 10,
        "regions": {"110119": {"name": "延庆区", "suppressed": False, "active_users": 80,
                               "top_lifts": [], "gaps": [], "trends": [], "top_items": []}},
    }, ensure_ascii=False), encoding="utf-8")
    (reports / "report.html").write_text("<html><body>群众点菜</body></html>", encoding="utf-8")
    # schemathesis also sends wrong keys on purpose: throttling them is tested elsewhere
    return create_app(keyed_settings(home=root / "home", model_dir=bundle, max_batch=200, max_body_bytes=64 * 1024,
                                     wrong_keys_per_minute=1_000_000))


@pytest.fixture(scope="module")
def api_schema(fuzzed_app):
    return schemathesis.openapi.from_asgi("/openapi.json", fuzzed_app)


schema = schemathesis.pytest.from_fixture("api_schema")


@schema.parametrize()
@settings(max_examples=EXAMPLES, derandomize=True, deadline=None, database=None,
          suppress_health_check=list(HealthCheck))
def test_no_server_error_and_every_answer_matches_the_schema(case) -> None:
    excluded = [positive_data_acceptance]
    if case.operation.path.startswith(("/v1/users/", "/v1/items/")):
        excluded.extend((unsupported_method, allow_header_conformance))
    if case.operation.path in ("/v1/interactions", "/v1/items/batch"):  # each element judged on its own
        excluded.append(negative_data_rejection)
    # The key as explicit auth: schemathesis sends it, and also probes without it and with a wrong one.
    # A case generated with a broken header (the key missing or random) is sent as generated.
    broken_key = case.meta is not None and case.meta.is_negative_at(ParameterLocation.HEADER)
    response = case.call_and_validate(excluded_checks=excluded, headers=None if broken_key else KEY_HEADERS)
    assert response.status_code < 500, response.text
    if case.meta is not None and case.meta.generation.mode.is_positive and response.status_code == 422:
        writes_item = case.operation.path == "/v1/items/{item_id}"
        assert response.json()["detail"].startswith(CROSS_PARAMETER_RULES + (ITEM_RULES if writes_item else ())), \
            response.text
    if case.operation.path == "/v1/interactions" and response.status_code == 202:
        assert_each_element_judged(case.body, response.json())
    if case.operation.path == "/v1/items/batch" and response.status_code == 200:
        answer = response.json()
        assert answer["accepted"] + len(answer["rejected"]) == len(case.body)


def assert_each_element_judged(batch: list, answer: dict) -> None:
    """Every element is accepted or rejected once, and every contract-breaking one is rejected."""
    rejected = {r["index"]: r["reason"] for r in answer["rejected"]}
    assert len(rejected) == len(answer["rejected"]) and set(rejected) <= set(range(len(batch)))
    assert answer["accepted"] + len(rejected) == len(batch)
    for index, element in enumerate(batch):
        try:
            InteractionIn.model_validate(element)
        except ValidationError:
            assert index in rejected, (index, element, answer)


def test_the_schema_documents_the_error_bodies_the_app_sends(fuzzed_app) -> None:
    from fastapi.testclient import TestClient

    with TestClient(fuzzed_app, headers=KEY_HEADERS) as client:
        document = client.get("/openapi.json").json()
        refused = client.get("/v1/users/u1/recommendations", params={"lat": 1})
    components = document["components"]["schemas"]
    assert "HTTPValidationError" not in components and components["ErrorBody"]["required"] == ["detail"]
    users = document["paths"]["/v1/users/{user_id}/recommendations"]["get"]["responses"]
    assert users["422"]["content"]["application/json"]["schema"] == {"$ref": "#/components/schemas/ErrorBody"}
    assert "503" in users  # no model yet
    posted = document["paths"]["/v1/interactions"]["post"]["responses"]
    assert {"400", "413", "422", "503"} <= set(posted)
    assert "503" not in document["paths"]["/healthz"]["get"]["responses"]
    assert {"401", "403", "429"} <= set(users) and {"401", "403", "429"} <= set(posted)
    assert document["paths"]["/v1/users/{user_id}/recommendations"]["get"]["x-required-scope"] == "read"
    assert document["paths"]["/v1/interactions"]["post"]["x-required-scope"] == "write:interactions"
    assert document["paths"]["/v1/users/{user_id}"]["delete"]["x-required-scope"] == "admin"
    assert "security" not in document["paths"]["/v1/regions/{region_code}/recommendations"]["get"]
    assert document["components"]["securitySchemes"]["ApiKey"]["name"] == "X-API-Key"
    assert "Retry-After" in users["429"]["headers"]
    assert refused.status_code == 422 and refused.json() == {"detail": "lat and lon must be given together"}


def test_the_fuzzed_app_is_still_healthy_afterwards(fuzzed_app) -> None:
    """Fuzzing erased users, reloaded the model and posted interactions: it still serves."""
    from fastapi.testclient import TestClient

    with TestClient(fuzzed_app, headers=KEY_HEADERS) as client:
        assert client.get("/readyz").json()["status"] == "ready"
        answer = client.get("/v1/users/u1/recommendations")
        assert answer.status_code == 200, answer.text
    tombstones = Path(fuzzed_app.state.services.erased.path)
    lines = tombstones.read_text(encoding="utf-8").splitlines() if tombstones.exists() else []
    assert all(json.loads(line)["user_id"] for line in lines)
