"""pydantic v2 models of the OptimizationWorkflow resource: the single source of truth for the CRD."""

from olivekube.api.common import API_VERSION, GROUP, KIND, VERSION
from olivekube.api.passes import PASS_TYPES
from olivekube.api.status import WorkflowPhase, WorkflowStatus
from olivekube.api.workflow import OptimizationWorkflow, WorkflowSpec

__all__ = [
    "API_VERSION",
    "GROUP",
    "KIND",
    "PASS_TYPES",
    "VERSION",
    "OptimizationWorkflow",
    "WorkflowPhase",
    "WorkflowSpec",
    "WorkflowStatus",
]
