"""Every route in the app's route table is protected unless it opts out, today's and any
added later: the table is walked, not listed by hand."""

from __future__ import annotations

import re
from collections.abc import Iterator
from dataclasses import dataclass

import httpx
import pytest
from iiot_server.api.auth import Access, access_of, authorize
from iiot_server.app import create_app
from iiot_server.settings import Settings
from litestar.routes import HTTPRoute

from iiotsim.platform import Platform

# The only routes anyone may call without a credential.
PUBLIC_PATHS = re.compile(r"^/health$|^/schema(/.*)?$")
BOGUS = {
    Access.PROVISIONING_TOKEN: "DeviceToken pt_bogus",
    Access.REGISTRATION_TOKEN: "DeviceToken rt_bogus",
    Access.TECHNICIAN: "Bearer ak_bogus",
    Access.ADMIN: "Bearer ak_bogus",
}


@dataclass(frozen=True)
class Route:
    method: str
    path: str
    access: Access

    def url(self) -> str:
        return re.sub(r"\{[^}:]+:int\}", "1", re.sub(r"\{[^}:]+:(str|path)\}", "x", self.path))


def routes() -> Iterator[Route]:
    app = create_app(Settings(database_url="sqlite:///:memory:", mqtt_enabled=False))
    for route in app.routes:
        if not isinstance(route, HTTPRoute):
            continue
        for handler in route.route_handlers:
            for method in handler.http_methods:
                if method not in ("HEAD", "OPTIONS"):
                    yield Route(method, route.path, access_of(handler))


ROUTES = sorted(set(routes()), key=lambda r: (r.path, r.method))


def test_the_route_table_is_walked() -> None:
    paths = {r.path for r in ROUTES}
    assert "/api/v1/devices/{device_id:str}" in paths
    assert "/provisioning-operations/init" in paths
    assert len(ROUTES) > 25


def test_only_health_and_the_openapi_document_are_public() -> None:
    public = {r.path for r in ROUTES if r.access is Access.PUBLIC}
    assert public, "health and the OpenAPI document are public"
    assert all(PUBLIC_PATHS.match(p) for p in public), sorted(public)
    protected = {r.path for r in ROUTES if r.access is not Access.PUBLIC}
    assert not any(PUBLIC_PATHS.match(p) for p in protected)


def test_api_routes_take_api_keys_and_device_routes_device_tokens() -> None:
    for r in ROUTES:
        if r.path.startswith("/api/"):
            assert r.access in (Access.TECHNICIAN, Access.ADMIN), r
        elif not PUBLIC_PATHS.match(r.path):
            assert r.access in (Access.PROVISIONING_TOKEN, Access.REGISTRATION_TOKEN), r


def test_a_route_that_says_nothing_needs_an_admin_key() -> None:
    """Fail closed: a handler added without any access declaration is not public."""
    from iiot_server.api.problems import EXCEPTION_HANDLERS
    from litestar import get
    from litestar.testing import create_test_client

    @get("/forgotten")
    async def forgotten() -> str:
        return "the crown jewels"

    assert access_of(forgotten) is Access.ADMIN
    with create_test_client(
        [forgotten],
        guards=[authorize],
        exception_handlers=EXCEPTION_HANDLERS,  # type: ignore[arg-type]
    ) as client:
        response = client.get("/forgotten")
    assert response.status_code == 401
    assert "crown jewels" not in response.text


@pytest.fixture(scope="module")
def running(tmp_path_factory: pytest.TempPathFactory) -> Iterator[tuple[Platform, str]]:
    with Platform(data_dir=tmp_path_factory.mktemp("data")) as platform:
        technician = platform.admin.create_api_key("tech", role="technician").api_key
        yield platform, technician


def _call(platform: Platform, route: Route, authorization: str | None) -> httpx.Response:
    headers = {"Authorization": authorization} if authorization else {}
    with httpx.Client(base_url=platform.http_url, timeout=30) as http:
        return http.request(route.method, route.url(), headers=headers)


def _is_problem(response: httpx.Response, status: int) -> bool:
    body = response.json()
    return (
        response.status_code == status
        and response.headers["content-type"].startswith("application/problem+json")
        and body["status"] == status
    )


@pytest.mark.parametrize("route", [r for r in ROUTES if r.access is not Access.PUBLIC], ids=str)
def test_without_or_with_a_forged_credential_every_route_answers_401(
    running: tuple[Platform, str], route: Route
) -> None:
    platform, _ = running
    missing = _call(platform, route, None)
    assert _is_problem(missing, 401), (missing.status_code, missing.text)
    assert missing.json()["field"] == "Authorization"
    forged = _call(platform, route, BOGUS[route.access])
    assert _is_problem(forged, 401), (forged.status_code, forged.text)


@pytest.mark.parametrize("route", [r for r in ROUTES if r.access is Access.ADMIN], ids=str)
def test_a_technician_key_gets_403_on_admin_routes(
    running: tuple[Platform, str], route: Route
) -> None:
    platform, technician = running
    response = _call(platform, route, f"Bearer {technician}")
    assert _is_problem(response, 403), (response.status_code, response.text)


def test_a_technician_key_is_enough_for_technician_routes(running: tuple[Platform, str]) -> None:
    platform, technician = running
    technician_routes = [r for r in ROUTES if r.access is Access.TECHNICIAN]
    assert technician_routes
    for route in technician_routes:
        response = _call(platform, route, f"Bearer {technician}")
        assert response.status_code not in (401, 403), (route, response.text)


def test_the_public_routes_answer_without_a_credential(running: tuple[Platform, str]) -> None:
    platform, _ = running
    with httpx.Client(base_url=platform.http_url, timeout=30) as http:
        assert http.get("/health").status_code == 200
        assert http.get("/schema/openapi.json").status_code == 200


def test_an_api_key_cannot_revoke_itself(running: tuple[Platform, str]) -> None:
    """Found by the OpenAPI fuzz: listing the keys and revoking the one in use locked the
    admin out. Rotation still works: a new admin key revokes the old one."""
    platform, _ = running
    me = next(k for k in platform.admin.list_api_keys() if k.role == "admin" and not k.revoked_at)
    with httpx.Client(base_url=platform.http_url, timeout=30) as http:
        auth = {"Authorization": f"Bearer {platform.admin_key}"}
        refused = http.post(f"/api/v1/api-keys/{me.id}/revoke", headers=auth)
        assert _is_problem(refused, 409)
        assert refused.json()["field"] == "keyId"
        assert http.get("/api/v1/api-keys", headers=auth).status_code == 200
        other = platform.admin.create_api_key("rotation", role="admin")
        rotated = http.post(f"/api/v1/api-keys/{other.id}/revoke", headers=auth)
        assert rotated.status_code == 200
        assert rotated.json()["revokedAt"] is not None
