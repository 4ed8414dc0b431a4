"""The platform's device API over HTTP (see ``docs/protocol.md``)."""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime
from typing import Any

import httpx

from .errors import (
    DeviceIdRefused,
    PlatformError,
    ProvisioningOperationCancelled,
    ProvisioningOperationExpired,
    ProvisioningTokenRefused,
    RegistrationTokenInvalid,
)

CANCELLED = "/problems/deviceProvisioning/provisioningOperationCancelled"
EXPIRED = "/problems/deviceProvisioning/provisioningOperationExpired"
RT_EXPIRED = "/problems/registrationTokenExpired"
RT_REVOKED = "/problems/registrationTokenRevoked"


@dataclass(frozen=True)
class ProvisioningOperation:
    """What a technician needs to approve the device."""

    id: str
    verification_code: str
    expires_at: datetime
    """The server's expiry time (for display; the SDK times its own waits by ``poll_interval``)."""
    poll_interval: float = 2.0
    device_id: str | None = None


@dataclass(frozen=True)
class IssuedToken:
    registration_token: str
    lifetime: float | None
    """seconds from issue; None = infinite"""
    device_id: str


@dataclass(frozen=True)
class Pending:
    """The operation is not approved yet: poll again after ``retry_after`` seconds."""

    retry_after: float


@dataclass(frozen=True)
class Registration:
    device_id: str
    mqtt_host: str
    mqtt_port: int
    mqtt_username: str
    mqtt_password: str
    refresh_after: float | None
    lifetime: float | None
    max_mqtt_message_size: int


def _problem(response: httpx.Response) -> PlatformError:
    try:
        body: dict[str, Any] = response.json()
    except ValueError:
        body = {}
    return PlatformError(
        response.status_code,
        str(body.get("type", "about:blank")),
        body.get("detail") or body.get("title") or response.reason_phrase,
        body.get("field"),
    )


class DeviceApi:
    """Blocking calls (with a timeout) to the platform's device API."""

    def __init__(self, server_url: str, *, timeout: float = 10.0) -> None:
        self.http = httpx.Client(base_url=server_url.rstrip("/"), timeout=timeout)

    def close(self) -> None:
        self.http.close()

    @staticmethod
    def _auth(token: str) -> dict[str, str]:
        return {"Authorization": f"DeviceToken {token}"}

    def init(
        self, pt: str, device_id: str | None, attributes: dict[str, str] | None
    ) -> ProvisioningOperation:
        body: dict[str, Any] = {}
        if device_id is not None:
            body["deviceId"] = device_id
        if attributes:
            body["attributes"] = attributes
        r = self.http.post("/provisioning-operations/init", json=body, headers=self._auth(pt))
        if r.status_code == 401:
            raise ProvisioningTokenRefused(
                f"the platform refused the Provisioning Token: {_problem(r).detail}"
            )
        if r.status_code == 400 and _problem(r).field == "deviceId":
            raise DeviceIdRefused(
                f"the platform refused Device ID {device_id!r}: {_problem(r).detail}"
            )
        if r.status_code != 200:
            raise _problem(r)
        b = r.json()
        return ProvisioningOperation(
            b["provisioningOperationId"],
            b["verificationCode"],
            datetime.fromisoformat(b["expirationTime"]),
            float(b.get("pollInterval") or 2.0),
            device_id,
        )

    def operation_state(self, pt: str, operation_id: str) -> str | None:
        """The operation's state (pending/approved/completed/cancelled), None if unknown."""
        r = self.http.get(f"/provisioning-operations/{operation_id}", headers=self._auth(pt))
        if r.status_code == 404:
            return None
        if r.status_code == 401:
            raise ProvisioningTokenRefused(
                f"the platform refused the Provisioning Token: {_problem(r).detail}"
            )
        if r.status_code != 200:
            raise _problem(r)
        return str(r.json()["state"])

    def complete(self, pt: str, operation_id: str) -> IssuedToken | Pending:
        r = self.http.put(
            "/provisioning-operations/complete",
            json={"provisioningOperationId": operation_id},
            headers=self._auth(pt),
        )
        if r.status_code == 202:
            try:
                retry = float(r.headers.get("Retry-After", "2"))
            except ValueError:
                retry = 2.0
            return Pending(retry)
        if r.status_code == 200:
            return self._issued(r.json())
        problem = _problem(r)
        if problem.type == CANCELLED:
            raise ProvisioningOperationCancelled(
                f"Provisioning Operation cancelled: {problem.detail}"
            )
        if problem.type == EXPIRED:
            raise ProvisioningOperationExpired(f"Provisioning Operation expired: {problem.detail}")
        if r.status_code == 401:
            raise ProvisioningTokenRefused(
                f"the platform refused the Provisioning Token: {problem.detail}"
            )
        raise problem

    @staticmethod
    def _issued(b: dict[str, Any]) -> IssuedToken:
        lifetime = b.get("lifetime")
        return IssuedToken(
            b["registrationToken"], None if lifetime is None else float(lifetime), b["deviceId"]
        )

    def register(self, rt: str) -> Registration:
        r = self.http.put("/devices/register", headers=self._auth(rt))
        if r.status_code in (401, 403):
            raise RegistrationTokenInvalid(f"Registration Token refused: {_problem(r).detail}")
        if r.status_code != 200:
            raise _problem(r)
        b = r.json()
        return Registration(
            b["deviceId"],
            b["mqttHost"],
            int(b["mqttPort"]),
            b["mqttUsername"],
            b["mqttPassword"],
            b.get("refreshAfter"),
            b.get("registrationTokenLifetime"),
            int(b.get("maxMqttMessageSize") or 262144),
        )

    def refresh(self, pt: str, rt: str) -> IssuedToken:
        r = self.http.put(
            "/devices/registration-tokens/refresh",
            json={"registrationToken": rt},
            headers=self._auth(pt),
        )
        if r.status_code == 201:
            return self._issued(r.json())
        problem = _problem(r)
        if problem.type in (RT_EXPIRED, RT_REVOKED):
            raise RegistrationTokenInvalid(
                f"Registration Token cannot be refreshed: {problem.detail}"
            )
        if r.status_code == 401:
            raise ProvisioningTokenRefused(
                f"the platform refused the Provisioning Token: {problem.detail}"
            )
        raise problem

    def upload(self, rt: str, stream: str, message_id: str, payload: bytes) -> bool:
        """Store a large message over HTTP; False if it was already stored."""
        r = self.http.post(
            "/devices/messages",
            params={"stream": stream, "messageId": message_id},
            content=payload,
            headers={**self._auth(rt), "Content-Type": "application/octet-stream"},
        )
        if r.status_code in (401, 403):
            raise RegistrationTokenInvalid(f"Registration Token refused: {_problem(r).detail}")
        if r.status_code not in (200, 201):
            raise _problem(r)
        return r.status_code == 201
