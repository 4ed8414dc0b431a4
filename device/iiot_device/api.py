"""The platform's device API over HTTP (see ``docs/protocol.md``).

Every refusal becomes an SDK exception through one table, :data:`REFUSALS`: first the
problem's ``type`` (the platform's most specific word), then the HTTP status read with the
credential the call presented (a 401 to a Provisioning Token call is a refused PT, to a
Registration Token call an invalid RT), then the field a 400 names. Anything else is a
:class:`PlatformError` carrying the problem.
"""

from __future__ import annotations

import functools
import ssl
from collections.abc import Mapping
from dataclasses import dataclass
from datetime import datetime
from enum import Enum
from pathlib import Path
from typing import Any, Final

import httpx

from .errors import (
    DeviceError,
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
RT_UNKNOWN = "/problems/registrationTokenUnknown"
PT_PAUSED = "/problems/provisioningTokenPaused"


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
    """The id the device's MQTT client id, username and topics carry: the platform's
    ``mqttClientId`` (``<workspace>:<device>`` outside workspace ``default``), or the Device
    ID from a platform that does not send one."""
    mqtt_host: str
    mqtt_port: int
    mqtt_username: str
    mqtt_password: str
    refresh_after: float | None
    lifetime: float | None
    max_mqtt_message_size: int
    mqtt_tls: bool = False
    """MQTT over TLS (the platform says so at registration)."""


class Credential(Enum):
    """The secret a call presents: it decides what a 401 or 403 means."""

    PROVISIONING_TOKEN = "Provisioning Token"
    REGISTRATION_TOKEN = "Registration Token"


@dataclass(frozen=True)
class Refusal:
    """An SDK exception for one kind of platform refusal, and what its message says
    (``{detail}`` is the problem's detail, ``{device_id}`` the Device ID asked for)."""

    exception: type[DeviceError]
    message: str


@dataclass(frozen=True)
class RefusalTable:
    """Problem → exception, most specific key first (see the module docstring)."""

    by_problem_type: Mapping[str, Refusal]
    by_status: Mapping[tuple[Credential, int], Refusal]
    by_field: Mapping[tuple[int, str], Refusal]

    def exception_for(
        self, problem: PlatformError, credential: Credential, *, device_id: str | None = None
    ) -> DeviceError:
        """The exception to raise for ``problem`` (the problem itself if no rule fits).

        >>> REFUSALS.exception_for(
        ...     PlatformError(401, "/problems/unauthorized", "unknown token"),
        ...     Credential.PROVISIONING_TOKEN,
        ... )
        ProvisioningTokenRefused('the platform refused the Provisioning Token: unknown token')
        >>> REFUSALS.exception_for(
        ...     PlatformError(401, "/problems/unauthorized", "unknown token"),
        ...     Credential.REGISTRATION_TOKEN,
        ... )
        RegistrationTokenInvalid('Registration Token refused: unknown token')
        >>> REFUSALS.exception_for(
        ...     PlatformError(409, "/problems/conflict", "busy"), Credential.PROVISIONING_TOKEN
        ... )
        PlatformError('platform refused the request: 409 /problems/conflict: busy')
        """
        refusal = (
            self.by_problem_type.get(problem.problem_type)
            or self.by_status.get((credential, problem.status))
            or (self.by_field.get((problem.status, problem.field)) if problem.field else None)
        )
        if refusal is None:
            return problem
        return refusal.exception(refusal.message.format(detail=problem.detail, device_id=device_id))


_RT_REFUSED = Refusal(RegistrationTokenInvalid, "Registration Token refused: {detail}")

REFUSALS: Final = RefusalTable(
    by_problem_type={
        CANCELLED: Refusal(
            ProvisioningOperationCancelled, "Provisioning Operation cancelled: {detail}"
        ),
        EXPIRED: Refusal(ProvisioningOperationExpired, "Provisioning Operation expired: {detail}"),
        RT_EXPIRED: Refusal(
            RegistrationTokenInvalid,
            "Registration Token expired (cannot be used or refreshed): {detail}",
        ),
        RT_REVOKED: Refusal(
            RegistrationTokenInvalid,
            "Registration Token revoked (cannot be used or refreshed): {detail}",
        ),
        # a 401 at refresh, where the PT authenticates: the type says it is the RT
        RT_UNKNOWN: Refusal(RegistrationTokenInvalid, "Registration Token refused: {detail}"),
        # a 403 at init: the PT is valid but paused; the client backs off and retries, so
        # the device provisions once an administrator resumes the token
        PT_PAUSED: Refusal(
            ProvisioningTokenRefused,
            "the Provisioning Token is paused (retry once it is resumed): {detail}",
        ),
    },
    by_status={
        (Credential.PROVISIONING_TOKEN, 401): Refusal(
            ProvisioningTokenRefused, "the platform refused the Provisioning Token: {detail}"
        ),
        (Credential.REGISTRATION_TOKEN, 401): _RT_REFUSED,
        (Credential.REGISTRATION_TOKEN, 403): _RT_REFUSED,
    },
    by_field={
        (400, "deviceId"): Refusal(
            DeviceIdRefused, "the platform refused Device ID {device_id!r}: {detail}"
        ),
    },
)
"""The one problem → exception table every :class:`DeviceApi` call raises through."""


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


def _refused(
    response: httpx.Response, credential: Credential, *, device_id: str | None = None
) -> DeviceError:
    return REFUSALS.exception_for(_problem(response), credential, device_id=device_id)


@functools.lru_cache(maxsize=8)
def _trust(ca_cert: str | None, modified: int) -> ssl.SSLContext:
    """One TLS context per CA file, shared by every client of the process (an
    ``SSLContext`` may serve many connections and threads). Building one loads the CA
    bundle: about 10 ms of CPU, which a process starting 250 devices paid 250 times
    (py-spy, a hybrid run's worker, issue 18)."""
    if ca_cert is None:
        return httpx.create_ssl_context()
    return ssl.create_default_context(cafile=ca_cert)


class DeviceApi:
    """Blocking calls (with a timeout) to the platform's device API."""

    def __init__(
        self, server_url: str, *, timeout: float = 10.0, ca_cert: str | Path | None = None
    ) -> None:
        """``ca_cert``: PEM file of the CA to trust for an ``https://`` platform (its
        development CA); None: httpx's default trust (certifi)."""
        if ca_cert is None:
            verify = _trust(None, 0)
        else:  # keyed by modification time too: a CA made again at the same path is read again
            verify = _trust(str(ca_cert), Path(ca_cert).stat().st_mtime_ns)
        self.http = httpx.Client(base_url=server_url.rstrip("/"), timeout=timeout, verify=verify)

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
        if r.status_code != 200:
            raise _refused(r, Credential.PROVISIONING_TOKEN, device_id=device_id)
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
        if r.status_code != 200:
            raise _refused(r, Credential.PROVISIONING_TOKEN)
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
        raise _refused(r, Credential.PROVISIONING_TOKEN)

    @staticmethod
    def _issued(b: dict[str, Any]) -> IssuedToken:
        lifetime = b.get("lifetime")
        return IssuedToken(
            b["registrationToken"], None if lifetime is None else float(lifetime), b["deviceId"]
        )

    def register(self, rt: str) -> Registration:
        r = self.http.put("/devices/register", headers=self._auth(rt))
        if r.status_code != 200:
            raise _refused(r, Credential.REGISTRATION_TOKEN)
        b = r.json()
        return Registration(
            b.get("mqttClientId") or b["deviceId"],
            b["mqttHost"],
            int(b["mqttPort"]),
            b["mqttUsername"],
            b["mqttPassword"],
            b.get("refreshAfter"),
            b.get("registrationTokenLifetime"),
            int(b.get("maxMqttMessageSize") or 262144),
            bool(b.get("mqttTls", False)),
        )

    def refresh(self, pt: str, rt: str) -> IssuedToken:
        r = self.http.put(
            "/devices/registration-tokens/refresh",
            json={"registrationToken": rt},
            headers=self._auth(pt),
        )
        if r.status_code == 201:
            return self._issued(r.json())
        # the RT travels in the body: the PT authenticates the call
        raise _refused(r, Credential.PROVISIONING_TOKEN)

    def upload(self, rt: str, stream: str, message_id: str, payload: bytes) -> bool:
        """Store a large message over HTTP; False if it was already stored."""
        r = self.http.post(
            "/devices/messages",
            params={"stream": stream, "messageId": message_id},
            content=payload,
            headers={**self._auth(rt), "Content-Type": "application/octet-stream"},
        )
        if r.status_code not in (200, 201):
            raise _refused(r, Credential.REGISTRATION_TOKEN)
        return r.status_code == 201
