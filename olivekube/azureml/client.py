"""An MLClient for a workspace, with the credential of this process (see storage.azure_identity)."""

from __future__ import annotations

from typing import Any

from olivekube.api.systems import AzureMLClient
from olivekube.storage.azure_identity import credential


def ml_client(workspace: AzureMLClient, field_name: str) -> Any:
    from azure.ai.ml import MLClient

    return MLClient(
        credential(field_name),
        subscription_id=workspace.subscription_id,
        resource_group_name=workspace.resource_group,
        workspace_name=workspace.workspace_name,
    )
