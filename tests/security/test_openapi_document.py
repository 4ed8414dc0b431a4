"""What the OpenAPI document publishes: who may call each operation and every problem it
can answer, as the server really sends them (RFC 9457, ``application/problem+json``)."""

from __future__ import annotations

from typing import Any

import httpx
import pytest
from iiot_server.app import create_app
from iiot_server.settings import Settings

from iiotsim.platform import Platform

PROBLEM_JSON = "application/problem+json"


@pytest.fixture(scope="module")
def document() -> dict[str, Any]:
    app = create_app(Settings(database_url="sqlite:///:memory:", mqtt_enabled=False))
    return app.openapi_schema.to_schema()


def _operations(document: dict[str, Any]) -> list[tuple[str, str, dict[str, Any]]]:
    return [
        (method.upper(), path, op)
        for path, item in document["paths"].items()
        for method, op in item.items()
        if method in ("get", "post", "put", "patch", "delete")
    ]


def test_security_schemes_are_published(document: dict[str, Any]) -> None:
    schemes = document["components"]["securitySchemes"]
    assert schemes["apiKey"] == {**schemes["apiKey"], "type": "http", "scheme": "bearer"}
    assert schemes["deviceToken"]["in"] == "header"
    assert schemes["deviceToken"]["name"] == "Authorization"


def test_every_protected_operation_says_who_may_call_it(document: dict[str, Any]) -> None:
    for method, path, op in _operations(document):
        if path == "/health":
            assert not op.get("security"), (method, path)
            continue
        expected = "apiKey" if path.startswith("/api/") else "deviceToken"
        assert op.get("security") == [{expected: []}], (method, path)


def test_every_problem_response_is_a_published_problem(document: dict[str, Any]) -> None:
    problem = document["components"]["schemas"]["Problem"]
    assert set(problem["required"]) == {"type", "title", "status"}
    for method, path, op in _operations(document):
        responses = op["responses"]
        errors = {code: r for code, r in responses.items() if code.startswith(("4", "5"))}
        if path != "/health":
            assert {"400", "401"} <= errors.keys(), (method, path)
        if path.startswith("/api/"):
            assert "403" in errors, (method, path)
        if "{" in path:
            assert "404" in errors, (method, path)
        for code, response in errors.items():
            assert list(response["content"]) == [PROBLEM_JSON], (method, path, code)
            schema = response["content"][PROBLEM_JSON]["schema"]
            assert schema == {"$ref": "#/components/schemas/Problem"}, (method, path, code)


def test_a_missing_body_is_named(platform: Platform) -> None:
    auth = {"Authorization": f"Bearer {platform.admin_key}"}
    with httpx.Client(base_url=platform.http_url, timeout=30) as http:
        missing = http.post("/api/v1/api-keys", headers=auth)
        wrong = http.post("/api/v1/api-keys", headers=auth, json=[1])
    assert missing.status_code == 400
    assert missing.headers["content-type"].startswith(PROBLEM_JSON)
    assert missing.json()["field"] == "body"
    assert missing.json()["detail"] == "a JSON request body is required"
    assert wrong.status_code == 400
    assert wrong.json()["field"] == "body"


def test_the_served_document_names_every_media_type_an_answer_takes(platform: Platform) -> None:
    """Found by the fuzz run: ``?format=csv`` answered text/csv where only JSON was
    documented."""
    with httpx.Client(base_url=platform.http_url, timeout=30) as http:
        served = http.get("/schema/openapi.json").json()
    created = served["paths"]["/api/v1/provisioning-tokens/bulk"]["post"]["responses"]["201"]
    assert set(created["content"]) == {"application/json", "text/csv"}
