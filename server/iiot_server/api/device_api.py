"""The device-facing API (Provisioning Token or Registration Token in
``Authorization: DeviceToken <token>``), wire-compatible with Spotflow's device API."""

from __future__ import annotations

from typing import Annotated, Any

from litestar import Controller, Request, Response, get, post, put
from litestar.di import NamedDependency
from litestar.openapi.datastructures import ResponseSpec
from litestar.params import FromPath, JSONBody, QueryParameter

from ..domain.topics import DEFAULT_STREAM, MESSAGE_ID_PATTERN, STREAM_PATTERN
from ..services import Services
from ..services.provisioning import ProvisioningToken
from ..services.registration import RegistrationToken
from .auth import ACCESS, Access, registration_token_secret
from .models import (
    CompleteOperationRequest,
    InitOperationRequest,
    InitOperationResponse,
    OperationStatusResponse,
    RefreshRequest,
    RegisterResponse,
    RegistrationTokenResponse,
    UploadOut,
)
from .problems import PROBLEMS


class DeviceProvisioningController(Controller):
    """A device with its Provisioning Token starts and completes an operation."""

    path = "/provisioning-operations"
    tags = ["device"]
    opt = {ACCESS: Access.PROVISIONING_TOKEN}
    security = [{"deviceToken": []}]

    @post("/init", status_code=200)
    async def init(
        self,
        data: JSONBody[InitOperationRequest],
        pt: NamedDependency[ProvisioningToken],
        services: NamedDependency[Services],
    ) -> InitOperationResponse:
        """Start a Provisioning Operation; show its verification code to the technician."""
        op = await services.provisioning.init_operation(pt, data.device_id, data.attributes)
        return InitOperationResponse(
            provisioning_operation_id=op.id,
            verification_code=op.verification_code,
            expiration_time=op.expires_at,
            poll_interval=services.settings.poll_interval,
        )

    @put(
        "/complete",
        status_code=200,
        responses={
            202: ResponseSpec(
                None, description="Still pending: poll again after `Retry-After` seconds."
            )
        },
        opt={PROBLEMS: (410,)},
    )
    async def complete(
        self,
        data: JSONBody[CompleteOperationRequest],
        pt: NamedDependency[ProvisioningToken],
        services: NamedDependency[Services],
    ) -> Response[Any]:
        """202 while pending (poll again after ``Retry-After``); 200 with the Registration
        Token once approved; 410 once cancelled or expired."""
        issued = await services.provisioning.complete_operation(pt, data.provisioning_operation_id)
        if issued is None:
            retry = str(max(1, round(services.settings.poll_interval)))
            return Response(b"", status_code=202, headers={"Retry-After": retry})
        return Response(RegistrationTokenResponse.of(issued), status_code=200)

    @get("/{operation_id:str}")
    async def status(
        self,
        operation_id: FromPath[str],
        pt: NamedDependency[ProvisioningToken],
        services: NamedDependency[Services],
    ) -> OperationStatusResponse:
        """The operation's state, so a rebooted device can resume its pending operation."""
        op = await services.provisioning.get_operation_for_token(pt, operation_id)
        return OperationStatusResponse(
            provisioning_operation_id=op.id,
            verification_code=op.verification_code,
            expiration_time=op.expires_at,
            state=op.state,
        )


class DeviceRegistrationController(Controller):
    """A provisioned device registers and refreshes its Registration Token."""

    path = "/devices"
    tags = ["device"]
    opt = {ACCESS: Access.REGISTRATION_TOKEN}
    security = [{"deviceToken": []}]

    @put("/register", status_code=200)
    async def register(
        self, request: Request[Any, Any, Any], services: NamedDependency[Services]
    ) -> RegisterResponse:
        """MQTT connection details for the Registration Token in the header. An unknown,
        expired or revoked token is a 401 (``WWW-Authenticate: DeviceToken``): the device
        provisions again, as Spotflow's SDK does on a 401 only."""
        secret = registration_token_secret(request)
        return RegisterResponse.of(await services.registration.register(secret))

    @post(
        "/messages",
        status_code=201,
        responses={200: ResponseSpec(UploadOut, description="Already stored (same messageId).")},
    )
    async def upload_message(
        self,
        request: Request[Any, Any, Any],
        rt: NamedDependency[RegistrationToken],
        services: NamedDependency[Services],
        stream: Annotated[str, QueryParameter(pattern=f"^{STREAM_PATTERN.pattern}$")] = (
            DEFAULT_STREAM
        ),
        message_id: Annotated[
            str | None,
            QueryParameter(name="messageId", pattern=f"^{MESSAGE_ID_PATTERN.pattern}$"),
        ] = None,
    ) -> Response[UploadOut]:
        """Upload a message too large for MQTT (raw body); 201 stored, 200 already stored."""
        body = await request.body()
        stored = await services.messages.store(rt.device_id, stream, body, message_id)
        return Response(UploadOut(stored=stored), status_code=201 if stored else 200)

    @put(
        "/registration-tokens/refresh",
        status_code=201,
        # a Registration Token issued under another Provisioning Token: 403; an unknown,
        # expired or revoked one: 401, with its own problem type (the PT is fine)
        opt={ACCESS: Access.PROVISIONING_TOKEN, PROBLEMS: (403,)},
    )
    async def refresh(
        self,
        data: JSONBody[RefreshRequest],
        pt: NamedDependency[ProvisioningToken],
        services: NamedDependency[Services],
    ) -> RegistrationTokenResponse:
        """A new Registration Token (the Provisioning Token authenticates the call)."""
        issued = await services.registration.refresh(pt.id, data.registration_token)
        return RegistrationTokenResponse.of(issued)
