"""The Azure credential of this process, from the runner pod's environment.

Service principal variables (AZURE_TENANT_ID, AZURE_CLIENT_ID, AZURE_CLIENT_SECRET, from the Secret
named by the system's `credentials_secret`) or workload identity (AZURE_FEDERATED_TOKEN_FILE, set
by the workload identity webhook). Sovereign and private clouds are chosen the standard way:
AZURE_AUTHORITY_HOST, ARM_CLOUD_METADATA_URL and AZUREML_CURRENT_CLOUD.
"""

from __future__ import annotations

import os
from typing import Any
from urllib.parse import urlparse

from olivekube.core.errors import PassError

SERVICE_PRINCIPAL = ("AZURE_TENANT_ID", "AZURE_CLIENT_ID", "AZURE_CLIENT_SECRET")
KNOWN_AUTHORITIES = {
    "login.microsoftonline.com",
    "login.chinacloudapi.cn",
    "login.microsoftonline.us",
    "login.partner.microsoftonline.cn",
}


def azure_message(exc: Exception, limit: int = 1000) -> str:
    """An Azure SDK error's message on one line, bounded."""
    message = getattr(exc, "message", None) or str(exc)
    return " ".join(str(message).split())[:limit]


def credential(field_name: str) -> Any:
    """The credential to use, or PassError naming `field_name` when there is none."""
    from azure.identity import ClientSecretCredential, WorkloadIdentityCredential

    authority = os.environ.get("AZURE_AUTHORITY_HOST") or "https://login.microsoftonline.com"
    # Instance discovery asks login.microsoftonline.com about other hosts: off for a private authority.
    private = (
        urlparse(authority if "://" in authority else f"https://{authority}").hostname not in KNOWN_AUTHORITIES
    )
    if all(os.environ.get(v) for v in SERVICE_PRINCIPAL):
        return ClientSecretCredential(
            os.environ["AZURE_TENANT_ID"],
            os.environ["AZURE_CLIENT_ID"],
            os.environ["AZURE_CLIENT_SECRET"],
            authority=authority,
            disable_instance_discovery=private,
        )
    if os.environ.get("AZURE_FEDERATED_TOKEN_FILE") and os.environ.get("AZURE_CLIENT_ID"):
        return WorkloadIdentityCredential(authority=authority, disable_instance_discovery=private)
    missing = [v for v in SERVICE_PRINCIPAL if not os.environ.get(v)]
    raise PassError(
        field_name,
        "no Azure credentials in the runner's environment: name a Secret with AZURE_TENANT_ID, "
        f"AZURE_CLIENT_ID and AZURE_CLIENT_SECRET (missing: {', '.join(missing)}), or give the runner's "
        "service account workload identity",
    )
