"""A typed client for the platform's technician/admin API.

Returns the server's own wire Structs (``iiot_server.api.models``: snake_case attributes,
camelCase on the wire), so client and server cannot drift apart. :func:`to_frame` turns a
list of them into a pandas DataFrame.

A technician approves by the code the device shows
(``admin.approve_operation("WDJB-MJHT")``) or by operation id. Example (it starts a real
embedded platform, a few seconds):

>>> from iiotsim import Platform
>>> with Platform() as platform:
...     admin = platform.admin
...     pt = admin.create_provisioning_token("line 1")
...     frame = to_frame(admin.list_provisioning_tokens())
>>> frame[["name", "device_id_override"]].to_dict("records")
[{'name': 'line 1', 'device_id_override': 'enforced_at_init'}]

Workspaces (isolated tenants of one platform): ``AdminClient(..., workspace="class-01")`` or
``admin.in_workspace("class-01")`` acts in that workspace (``/api/v1/workspaces/{id}/…``);
without one, in ``default``. The platform's admin key manages them:

>>> with Platform() as platform:
...     created = platform.admin.create_workspace("class-01")
...     with platform.admin.in_workspace("class-01") as trainee:
...         pt = trainee.create_provisioning_token("bench 1")
...         mine = len(trainee.list_provisioning_tokens())
...     in_default = len(platform.admin.list_provisioning_tokens())
>>> mine, in_default
(1, 0)
"""

from __future__ import annotations

import base64
import ssl
from collections.abc import Mapping, Sequence
from datetime import datetime
from pathlib import Path
from typing import Any, TypeVar

import httpx
import msgspec
import pandas as pd
from iiot_server.api.alerts import AlertOut
from iiot_server.api.models import (
    ApiKeyOut,
    AuditEventOut,
    BatchOut,
    CloudToDeviceOut,
    ConnectionEventOut,
    CreatedApiKeyOut,
    CreatedProvisioningTokenOut,
    DeviceOut,
    FleetConfigurationDryRunOut,
    FleetConfigurationOut,
    Health,
    MessageOut,
    OperationOut,
    ProvisioningTokenOut,
    RevokeDeviceOut,
    TwinConvergenceOut,
    TwinOut,
    TwinProvenanceOut,
    WorkspaceOut,
)

from .errors import PlatformError

T = TypeVar("T")


class ClassSeat(msgspec.Struct):
    """One trainee's share of a class (:meth:`AdminClient.create_class`): a workspace of
    their own, a Provisioning Token for their devices and a technician key that acts in
    that workspace only. The secrets are shown here once."""

    workspace_id: str
    provisioning_token: str
    technician_key: str


def to_frame(items: Sequence[msgspec.Struct]) -> pd.DataFrame:
    """A DataFrame with one row per Struct and one column per field."""
    return pd.DataFrame([msgspec.structs.asdict(item) for item in items])


class AdminClient:
    """Technician/admin API calls with an API key. Every call raises
    :class:`~iiotsim.errors.PlatformError` with the platform's problem on refusal."""

    def __init__(
        self,
        base_url: str,
        api_key: str,
        *,
        timeout: float = 30.0,
        ca_cert: str | Path | None = None,
        workspace: str | None = None,
    ) -> None:
        """``ca_cert``: a PEM file of the CA to trust for an ``https://`` platform (e.g.
        ``Platform.ca_cert_path``, the development CA); None: the system's trust store.
        ``workspace``: the workspace every call acts in; None: ``default``."""
        self.base_url = base_url.rstrip("/")
        self.workspace = workspace
        self._api_key, self._timeout, self._ca_cert = api_key, timeout, ca_cert
        self._prefix = "/api/v1" if workspace is None else f"/api/v1/workspaces/{workspace}"
        verify: ssl.SSLContext | bool = True
        if ca_cert is not None:
            verify = ssl.create_default_context(cafile=str(ca_cert))
        self._http = httpx.Client(
            base_url=self.base_url,
            headers={"Authorization": f"Bearer {api_key}"},
            timeout=timeout,
            verify=verify,
        )

    def close(self) -> None:
        self._http.close()

    def in_workspace(self, workspace: str) -> AdminClient:
        """A client with the same key acting in ``workspace`` (close it when done)."""
        return AdminClient(
            self.base_url,
            self._api_key,
            timeout=self._timeout,
            ca_cert=self._ca_cert,
            workspace=workspace,
        )

    def _path(self, path: str) -> str:
        """A ``/api/v1/…`` path of the workspace this client acts in."""
        if path.startswith("/api/v1/"):
            return self._prefix + path[len("/api/v1") :]
        return path

    def __enter__(self) -> AdminClient:
        return self

    def __exit__(self, *_: object) -> None:
        self.close()

    def _call(
        self,
        method: str,
        path: str,
        kind: type[T] | None = None,
        *,
        json: dict[str, Any] | None = None,
        params: dict[str, Any] | None = None,
    ) -> T:
        body = None if json is None else {k: v for k, v in json.items() if v is not None}
        query = None if params is None else {k: v for k, v in params.items() if v is not None}
        response = self._http.request(method, self._path(path), json=body, params=query)
        return self._decode(response, kind)

    def _decode(self, response: httpx.Response, kind: type[T] | None) -> T:
        if response.status_code >= 400:
            try:
                p = response.json()
            except ValueError:
                p = {}
            raise PlatformError(
                response.status_code,
                p.get("type", "/problems/error"),
                p.get("title", response.reason_phrase),
                p.get("detail"),
                p.get("field"),
            )
        if kind is None:
            return None  # type: ignore[return-value]
        return msgspec.json.decode(response.content, type=kind)

    # Health ------------------------------------------------------------------------

    def health(self) -> bool:
        """True when the platform answers ``/health``."""
        return self._http.get("/health").status_code == 200

    def server_time(self) -> datetime | None:
        """The platform's own clock (from ``/health``): ages and expiries are judged by
        it, not by this machine's clock. None if the platform does not say."""
        return self._decode(self._http.get("/health"), Health).time

    # Provisioning Tokens ---------------------------------------------------------------

    def create_provisioning_token(
        self,
        name: str,
        *,
        device_id: str | None = None,
        device_id_override: str | None = None,
        max_registration_token_lifetime: float | None = None,
        registration_token_lifetime_override: str = "disabled",
        allow_infinite_lifetime: bool = False,
    ) -> CreatedProvisioningTokenOut:
        """Create a Provisioning Token; ``.provisioning_token`` holds its secret (once).

        Without ``device_id`` the device names itself at init (``enforced_at_init``).
        """
        return self._call(
            "POST",
            "/api/v1/provisioning-tokens",
            CreatedProvisioningTokenOut,
            json={
                "name": name,
                "deviceId": device_id,
                "deviceIdOverride": device_id_override,
                "maxRegistrationTokenLifetime": max_registration_token_lifetime,
                "registrationTokenLifetimeOverride": registration_token_lifetime_override,
                "allowInfiniteLifetime": allow_infinite_lifetime,
            },
        )

    def create_provisioning_tokens_bulk(
        self,
        name: str,
        *,
        device_ids: Sequence[str] | None = None,
        count: int | None = None,
        device_id_prefix: str | None = None,
        max_registration_token_lifetime: float | None = None,
        registration_token_lifetime_override: str = "disabled",
        allow_infinite_lifetime: bool = False,
    ) -> list[CreatedProvisioningTokenOut]:
        """Per-device tokens for a factory run (save with ``to_frame(...).to_csv(...)``)."""
        return self._call(
            "POST",
            "/api/v1/provisioning-tokens/bulk",
            list[CreatedProvisioningTokenOut],
            json={
                "name": name,
                "deviceIds": list(device_ids) if device_ids is not None else None,
                "count": count,
                "deviceIdPrefix": device_id_prefix,
                "maxRegistrationTokenLifetime": max_registration_token_lifetime,
                "registrationTokenLifetimeOverride": registration_token_lifetime_override,
                "allowInfiniteLifetime": allow_infinite_lifetime,
            },
        )

    def list_provisioning_tokens(self) -> list[ProvisioningTokenOut]:
        return self._call("GET", "/api/v1/provisioning-tokens", list[ProvisioningTokenOut])

    def get_provisioning_token(self, token_id: str) -> ProvisioningTokenOut:
        return self._call("GET", f"/api/v1/provisioning-tokens/{token_id}", ProvisioningTokenOut)

    def revoke_provisioning_token(
        self, token_id: str, *, reason: str | None = None
    ) -> ProvisioningTokenOut:
        """Revoke a token (``reason``: recorded in the audit trail, as for every mutation
        taking one)."""
        return self._call(
            "POST",
            f"/api/v1/provisioning-tokens/{token_id}/revoke",
            ProvisioningTokenOut,
            params={"reason": reason},
        )

    def pause_token(self, token_id: str, reason: str | None = None) -> ProvisioningTokenOut:
        """Pause a Provisioning Token, reversibly: init with it is refused (403) until
        :meth:`resume_token`; its operations already open keep working. ``reason`` is kept
        as ``paused_reason`` and in the audit trail."""
        return self._call(
            "POST",
            f"/api/v1/provisioning-tokens/{token_id}/pause",
            ProvisioningTokenOut,
            params={"reason": reason},
        )

    def resume_token(self, token_id: str) -> ProvisioningTokenOut:
        """Resume a paused Provisioning Token: it opens operations again."""
        return self._call(
            "POST", f"/api/v1/provisioning-tokens/{token_id}/resume", ProvisioningTokenOut
        )

    # Provisioning Operations -----------------------------------------------------------

    def list_operations(
        self, state: str | None = None, verification_code: str | None = None
    ) -> list[OperationOut]:
        """Operations, newest first (``state``: pending / approved / completed / cancelled)."""
        return self._call(
            "GET",
            "/api/v1/provisioning-operations",
            list[OperationOut],
            params={"state": state, "verificationCode": verification_code},
        )

    def get_operation(self, operation_id: str) -> OperationOut:
        return self._call("GET", f"/api/v1/provisioning-operations/{operation_id}", OperationOut)

    def approve_operation(
        self,
        code_or_id: str,
        *,
        device_id: str | None = None,
        registration_token_lifetime: float | None = None,
        infinite_lifetime: bool = False,
        reason: str | None = None,
    ) -> OperationOut:
        """Approve by verification code (``'WDJB-MJHT'``, any case, dash optional) or
        operation id: the platform resolves the code. ``reason`` goes to the audit trail."""
        return self._call(
            "POST",
            f"/api/v1/provisioning-operations/{code_or_id.strip()}/approve",
            OperationOut,
            params={"reason": reason},
            json={
                "deviceId": device_id,
                "registrationTokenLifetime": registration_token_lifetime,
                "infiniteLifetime": infinite_lifetime or None,
            },
        )

    def cancel_operation(self, code_or_id: str, *, reason: str | None = None) -> OperationOut:
        """Cancel by verification code or operation id (the platform resolves the code)."""
        return self._call(
            "POST",
            f"/api/v1/provisioning-operations/{code_or_id.strip()}/cancel",
            OperationOut,
            params={"reason": reason},
        )

    def approve_operations(
        self,
        filter: Mapping[str, Any],  # the wire's name
        *,
        dry_run: bool = False,
        reason: str | None = None,
        limit: int | None = None,
        registration_token_lifetime: float | None = None,
        infinite_lifetime: bool = False,
    ) -> BatchOut:
        """Approve every pending operation ``filter`` selects, in one call
        (``POST /api/v1/provisioning-operations/approve``). ``filter`` takes the wire's
        fields, camelCase or snake_case: ``provisioning_token_id``, ``device_id_prefix``,
        ``device_id_pattern`` (a glob: ``*``, ``?``), ``attributes``, ``created_after``,
        ``created_before`` (datetimes), ``ids``, ``verification_codes``, ``state``.
        ``dry_run``: what would happen, nothing changed. Check ``.truncated``: past
        ``limit`` (1000) only the first were done.

        >>> from iiotsim import Platform
        >>> with Platform() as platform:
        ...     done = platform.admin.approve_operations({"device_id_prefix": "line3-"})
        >>> done.matched, done.truncated, done.results
        (0, False, [])
        """
        return self._batch(
            "approve",
            filter,
            dry_run=dry_run,
            reason=reason,
            limit=limit,
            registrationTokenLifetime=registration_token_lifetime,
            infiniteLifetime=infinite_lifetime or None,
        )

    def cancel_operations(
        self,
        filter: Mapping[str, Any],  # the wire's name
        *,
        dry_run: bool = False,
        reason: str | None = None,
        limit: int | None = None,
    ) -> BatchOut:
        """Cancel every pending or approved operation ``filter`` selects (as
        :meth:`approve_operations`; ``state`` narrows to one of the two)."""
        return self._batch("cancel", filter, dry_run=dry_run, reason=reason, limit=limit)

    def _batch(
        self,
        action: str,
        selection: Mapping[str, Any],
        *,
        dry_run: bool,
        reason: str | None,
        limit: int | None,
        **overrides: Any,
    ) -> BatchOut:
        wire = {}
        for name, value in selection.items():
            head, *rest = name.split("_")
            key = head + "".join(part[:1].upper() + part[1:] for part in rest)
            wire[key] = value.isoformat() if isinstance(value, datetime) else value
        return self._call(
            "POST",
            f"/api/v1/provisioning-operations/{action}",
            BatchOut,
            json={
                "filter": wire,
                "dryRun": dry_run,
                "reason": reason,
                "limit": limit,
                **overrides,
            },
        )

    # Devices ---------------------------------------------------------------------------

    def list_devices(
        self,
        *,
        after: str | None = None,
        limit: int = 1000,
        convergence: str | None = None,
        desired_property: str | None = None,
    ) -> list[DeviceOut]:
        """Devices by Device ID; ``convergence`` (``"pending"``, ``"converged"``,
        ``"drifted"``, ``"failed"``): only those with a desired property in that state
        (``desired_property``: that one)."""
        return self._call(
            "GET",
            "/api/v1/devices",
            list[DeviceOut],
            params={
                "after": after,
                "limit": limit,
                "convergence": convergence,
                "property": desired_property,
            },
        )

    def devices(
        self, *, convergence: str | None = None, desired_property: str | None = None
    ) -> list[DeviceOut]:
        """Every device (all pages), e.g. ``devices(convergence="pending")``."""
        found: list[DeviceOut] = []
        while True:
            page = self.list_devices(
                after=found[-1].device_id if found else None,
                convergence=convergence,
                desired_property=desired_property,
            )
            found += page
            if len(page) < 1000:
                return found

    def get_device(self, device_id: str) -> DeviceOut:
        return self._call("GET", f"/api/v1/devices/{device_id}", DeviceOut)

    def delete_device(self, device_id: str, *, reason: str | None = None) -> None:
        self._call("DELETE", f"/api/v1/devices/{device_id}", params={"reason": reason})

    def revoke_device(self, device_id: str, *, reason: str | None = None) -> RevokeDeviceOut:
        """Revoke every Registration Token of the device: it must provision again."""
        return self._call(
            "POST",
            f"/api/v1/devices/{device_id}/revoke",
            RevokeDeviceOut,
            params={"reason": reason},
        )

    def list_device_messages(
        self, device_id: str, *, stream: str | None = None, after: int = 0, limit: int = 100
    ) -> list[MessageOut]:
        """Stored messages of a device, oldest first (``to_frame(...)`` for a DataFrame);
        page with ``after`` (the last ``seq`` seen)."""
        return self._call(
            "GET",
            f"/api/v1/devices/{device_id}/messages",
            list[MessageOut],
            params={"stream": stream, "after": after, "limit": limit},
        )

    def list_device_connections(
        self, device_id: str, *, after: int = 0, limit: int = 1000
    ) -> list[ConnectionEventOut]:
        """The device's connects and disconnects as the broker saw them, oldest first; page
        with ``after`` (the last ``seq`` seen). :func:`iiotsim.sim.connection_intervals`
        turns a fleet's worth into online/offline intervals."""
        return self._call(
            "GET",
            f"/api/v1/devices/{device_id}/connections",
            list[ConnectionEventOut],
            params={"after": after, "limit": limit},
        )

    # Alerts (leak detection) -----------------------------------------------------------

    def alerts(
        self,
        *,
        kind: str | None = None,
        severity: str | None = None,
        device_id: str | None = None,
        since: datetime | None = None,
        state: str | None = None,
        after: str | None = None,
        limit: int = 100,
    ) -> list[AlertOut]:
        """Leak-detection alerts, newest first (``docs/leak_detection.md``): filter by
        ``kind`` (e.g. ``"shared_credential"``), ``severity``, ``device_id``, ``since`` and
        ``state`` (``"open"`` / ``"acknowledged"``); page with ``after`` (the last id)."""
        return self._call(
            "GET",
            "/api/v1/alerts",
            list[AlertOut],
            params={
                "kind": kind,
                "severity": severity,
                "deviceId": device_id,
                "since": None if since is None else since.isoformat(),
                "state": state,
                "after": after,
                "limit": limit,
            },
        )

    def acknowledge_alert(self, alert_id: str) -> AlertOut:
        """Mark an alert seen; a later repeat raises a new one."""
        return self._call("POST", f"/api/v1/alerts/{alert_id}/acknowledge", AlertOut)

    def send_to_device(
        self,
        device_id: str,
        payload: str | bytes,
        *,
        properties: dict[str, str] | None = None,
        time_to_live: float = 3600,
    ) -> CloudToDeviceOut:
        """Queue a cloud-to-device message (text, or bytes sent as base64); the device
        gets it over MQTT once it listens. ``time_to_live`` in seconds (1 s to 2 days)."""
        body: dict[str, Any]
        if isinstance(payload, bytes):
            body = {"payload": base64.b64encode(payload).decode("ascii"), "encoding": "base64"}
        else:
            body = {"payload": payload}
        body |= {"properties": properties, "timeToLiveSeconds": int(time_to_live)}
        return self._call(
            "POST",
            f"/api/v1/devices/{device_id}/cloud-to-device-messages",
            CloudToDeviceOut,
            json=body,
        )

    def list_cloud_to_device_messages(
        self, device_id: str, *, after: int = 0, limit: int = 100
    ) -> list[CloudToDeviceOut]:
        """Messages sent to the device with ``state`` pending / delivered / expired."""
        return self._call(
            "GET",
            f"/api/v1/devices/{device_id}/cloud-to-device-messages",
            list[CloudToDeviceOut],
            params={"after": after, "limit": limit},
        )

    def get_twin(self, device_id: str) -> TwinOut:
        """The device's twin: ``.desired``, ``.reported``, ``.tags`` with versions."""
        return self._call("GET", f"/api/v1/devices/{device_id}/twin", TwinOut)

    def twin_provenance(self, device_id: str) -> TwinProvenanceOut:
        """Who set each desired property of the device (a configuration at its priority,
        or a manual patch), when, and which configurations targeting it set it too."""
        return self._call("GET", f"/api/v1/devices/{device_id}/twin/provenance", TwinProvenanceOut)

    def twin_convergence(self) -> TwinConvergenceOut:
        """Fleet-wide: devices pending / converged / drifted / failed per desired property and per
        fleet configuration."""
        return self._call("GET", "/api/v1/twin-convergence", TwinConvergenceOut)

    def update_desired_properties(self, device_id: str, patch: dict[str, Any]) -> TwinOut:
        """Merge-patch the desired properties (None removes a key); pushed to the device."""
        return self._http_json("PATCH", f"/api/v1/devices/{device_id}/twin/desired", patch)

    def update_tags(self, device_id: str, patch: dict[str, Any]) -> TwinOut:
        """Merge-patch the tags (platform-side only)."""
        return self._http_json("PATCH", f"/api/v1/devices/{device_id}/twin/tags", patch)

    def _http_json(self, method: str, path: str, body: dict[str, Any]) -> TwinOut:
        # merge patches carry meaningful nulls: send the body as is
        response = self._http.request(method, self._path(path), json=body)
        return self._decode(response, TwinOut)

    # Fleet configurations -----------------------------------------------------------

    def create_fleet_configuration(
        self,
        target_condition: dict[str, Any],
        desired_properties: dict[str, Any],
        *,
        priority: int = 0,
        configuration_id: str | None = None,
        rollout: dict[str, Any] | None = None,
    ) -> FleetConfigurationOut:
        """Set ``desired_properties`` on every device ``target_condition`` matches, e.g.
        ``{"eq": {"path": "tags.site", "value": "plant-7"}}``; higher ``priority`` wins.
        ``rollout``: in stages, e.g. ``{"stages": [{"count": 1}, {"percent": 100}],
        "advanceWhenConverged": 0.9, "haltWhenDriftedOrFailed": 0.1, "pendingTimeout": 3600}``."""
        return self._call(
            "POST",
            "/api/v1/fleet-configurations",
            FleetConfigurationOut,
            json={
                "id": configuration_id,
                "targetCondition": target_condition,
                "desiredProperties": desired_properties,
                "priority": priority,
                "rollout": rollout,
            },
        )

    def preview_fleet_configuration(
        self,
        target_condition: dict[str, Any],
        desired_properties: dict[str, Any],
        *,
        priority: int = 0,
        configuration_id: str | None = None,
        rollout: dict[str, Any] | None = None,
        replace: bool = False,
    ) -> FleetConfigurationDryRunOut:
        """A dry run of creating (``replace``: changing ``configuration_id``) a
        configuration: the devices it would target, their desired properties before and
        after; nothing is written."""
        body = {
            "id": configuration_id,
            "targetCondition": target_condition,
            "desiredProperties": desired_properties,
            "priority": priority,
            "rollout": rollout,
        }
        if replace:
            body.pop("id")
        return self._call(
            "PUT" if replace else "POST",
            f"/api/v1/fleet-configurations/{configuration_id}"
            if replace
            else "/api/v1/fleet-configurations",
            FleetConfigurationDryRunOut,
            json=body,
            params={"dryRun": "true"},
        )

    def replace_fleet_configuration(
        self,
        configuration_id: str,
        target_condition: dict[str, Any],
        desired_properties: dict[str, Any],
        *,
        priority: int = 0,
        rollout: dict[str, Any] | None = None,
    ) -> FleetConfigurationOut:
        return self._call(
            "PUT",
            f"/api/v1/fleet-configurations/{configuration_id}",
            FleetConfigurationOut,
            json={
                "targetCondition": target_condition,
                "desiredProperties": desired_properties,
                "priority": priority,
                "rollout": rollout,
            },
        )

    def resume_rollout(self, configuration_id: str) -> FleetConfigurationOut:
        """Resume a halted staged rollout (its stage is judged again at once)."""
        return self._call(
            "POST",
            f"/api/v1/fleet-configurations/{configuration_id}/rollout/resume",
            FleetConfigurationOut,
        )

    def abort_rollout(self, configuration_id: str) -> FleetConfigurationOut:
        """Stop a staged rollout; devices it reached keep the configuration."""
        return self._call(
            "POST",
            f"/api/v1/fleet-configurations/{configuration_id}/rollout/abort",
            FleetConfigurationOut,
        )

    def list_fleet_configurations(self) -> list[FleetConfigurationOut]:
        """Configurations with their ``metrics`` (targeted, applied, pending, converged,
        drifted, a staged rollout's stages) and ``rollout`` state."""
        return self._call("GET", "/api/v1/fleet-configurations", list[FleetConfigurationOut])

    def get_fleet_configuration(self, configuration_id: str) -> FleetConfigurationOut:
        return self._call(
            "GET", f"/api/v1/fleet-configurations/{configuration_id}", FleetConfigurationOut
        )

    def delete_fleet_configuration(self, configuration_id: str) -> None:
        self._call("DELETE", f"/api/v1/fleet-configurations/{configuration_id}")

    # API keys --------------------------------------------------------------------------

    def create_api_key(self, name: str, role: str = "technician") -> CreatedApiKeyOut:
        return self._call(
            "POST", "/api/v1/api-keys", CreatedApiKeyOut, json={"name": name, "role": role}
        )

    def list_api_keys(self) -> list[ApiKeyOut]:
        return self._call("GET", "/api/v1/api-keys", list[ApiKeyOut])

    def revoke_api_key(self, key_id: str, *, reason: str | None = None) -> ApiKeyOut:
        return self._call(
            "POST", f"/api/v1/api-keys/{key_id}/revoke", ApiKeyOut, params={"reason": reason}
        )

    # Audit trail -------------------------------------------------------------------------

    def audit(
        self,
        *,
        action: str | None = None,
        actor: str | None = None,
        target_kind: str | None = None,
        target_id: str | None = None,
        device_id: str | None = None,
        request_id: str | None = None,
        since: datetime | None = None,
        until: datetime | None = None,
        limit: int | None = 1000,
    ) -> list[AuditEventOut]:
        """Audit events of this client's workspace, newest first, every page up to ``limit``
        rows (None: all): who (``actor``, e.g. ``"api_key:<id>"``, ``"device:pump-1"``) did
        what (``action``, ``"operation."`` for a prefix) to what (``target_kind``,
        ``target_id``; ``device_id`` is ``target_id`` of a device), when and why
        (``reason``), in which request. An admin key's call. ``to_frame(...)`` makes a
        DataFrame of them."""
        if device_id is not None:
            target_kind, target_id = "device", device_id
        params: dict[str, Any] = {
            "action": action,
            "actor": actor,
            "targetKind": target_kind,
            "targetId": target_id,
            "requestId": request_id,
            "since": None if since is None else since.isoformat(),
            "until": None if until is None else until.isoformat(),
        }
        found: list[AuditEventOut] = []
        while limit is None or len(found) < limit:
            page_size = 1000 if limit is None else min(1000, limit - len(found))
            page = self._call(
                "GET",
                "/api/v1/audit",
                list[AuditEventOut],
                params={**params, "limit": page_size, "before": found[-1].id if found else None},
            )
            found += page
            if len(page) < page_size:
                break
        return found

    # Workspaces (a platform-wide admin key) ----------------------------------------------

    def create_workspace(self, workspace_id: str) -> WorkspaceOut:
        """A new, empty workspace (its id follows the Device ID rules)."""
        response = self._http.post("/api/v1/workspaces", json={"id": workspace_id})
        return self._decode(response, WorkspaceOut)

    def list_workspaces(self) -> list[WorkspaceOut]:
        return self._decode(self._http.get("/api/v1/workspaces"), list[WorkspaceOut])

    def delete_workspace(self, workspace_id: str) -> None:
        """Delete an empty workspace (refused while it has devices, and for ``default``)."""
        self._decode(self._http.delete(f"/api/v1/workspaces/{workspace_id}"), None)

    def create_class(
        self, trainees: int | Sequence[str], *, prefix: str = "trainee-"
    ) -> list[ClassSeat]:
        """For a trainer: a workspace per trainee (``trainees`` names them, or counts them:
        ``trainee-01``, ``trainee-02``, …), each with a Provisioning Token and a technician
        key of its own, so no trainee sees or approves another's devices. Needs a
        platform-wide admin key.

        >>> from iiotsim import Platform
        >>> with Platform() as platform:
        ...     seats = platform.admin.create_class(2)
        >>> to_frame(seats)["workspace_id"].tolist()
        ['trainee-01', 'trainee-02']
        """
        names = (
            [f"{prefix}{i:02d}" for i in range(1, trainees + 1)]
            if isinstance(trainees, int)
            else list(trainees)
        )
        seats = []
        for name in names:
            self.create_workspace(name)
            with self.in_workspace(name) as workspace:
                token = workspace.create_provisioning_token(f"{name} devices")
                key = workspace.create_api_key(f"{name} technician", "technician")
            seats.append(ClassSeat(name, token.provisioning_token, key.api_key))
        return seats
