"""The workspaces resource, ``/api/v1/workspaces``: a platform-wide admin key only."""

from __future__ import annotations

from litestar import delete, get, post
from litestar.di import NamedDependency
from litestar.params import FromPath, JSONBody

from ..services import Services
from .admin import ADMIN, ApiController
from .auth import PLATFORM
from .models import CreateWorkspaceRequest, WorkspaceOut
from .problems import PROBLEMS


class WorkspacesController(ApiController):
    """Create, list and delete workspaces. A workspace's own routes are the technician/admin
    API under ``/api/v1/workspaces/{workspaceId}/…``."""

    path = "/api/v1/workspaces"
    tags = ["workspaces"]
    opt = {**ADMIN, PLATFORM: True}

    @post("/", status_code=201, opt={PROBLEMS: (409,)})
    async def create(
        self, data: JSONBody[CreateWorkspaceRequest], services: NamedDependency[Services]
    ) -> WorkspaceOut:
        """A new, empty workspace (409 if the id is taken)."""
        return WorkspaceOut.of(await services.workspaces.create(data.id))

    @get("/")
    async def list_workspaces(self, services: NamedDependency[Services]) -> list[WorkspaceOut]:
        return [WorkspaceOut.of(w) for w in await services.workspaces.list()]

    @get("/{workspace_id:str}")
    async def get_workspace(
        self, workspace_id: FromPath[str], services: NamedDependency[Services]
    ) -> WorkspaceOut:
        return WorkspaceOut.of(await services.workspaces.get(workspace_id))

    @delete("/{workspace_id:str}", status_code=204, opt={PROBLEMS: (409,)})
    async def delete_workspace(
        self, workspace_id: FromPath[str], services: NamedDependency[Services]
    ) -> None:
        """Delete an empty workspace: 409 while it has devices (delete them first) and for
        ``default``. Its Provisioning Tokens and API keys are revoked, its fleet
        configurations deleted."""
        await services.delete_workspace(workspace_id)
