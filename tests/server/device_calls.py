"""The device side of the protocol over plain HTTP (the SDK is tested on its own)."""

from __future__ import annotations

from typing import Any

import httpx


def dt(token: str) -> dict[str, str]:
    return {"Authorization": f"DeviceToken {token}"}


def init(http: httpx.Client, pt: str, **body: Any) -> httpx.Response:
    return http.post("/provisioning-operations/init", json=body, headers=dt(pt))


def complete(http: httpx.Client, pt: str, operation_id: str) -> httpx.Response:
    return http.put(
        "/provisioning-operations/complete",
        json={"provisioningOperationId": operation_id},
        headers=dt(pt),
    )


def register(http: httpx.Client, rt: str) -> httpx.Response:
    return http.put("/devices/register", headers=dt(rt))


def refresh(http: httpx.Client, pt: str, rt: str) -> httpx.Response:
    return http.put(
        "/devices/registration-tokens/refresh", json={"registrationToken": rt}, headers=dt(pt)
    )
