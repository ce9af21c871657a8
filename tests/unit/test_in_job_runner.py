"""The in-Job runner records a pass only while the workflow still wants it: a run of a spec that was
edited meanwhile changes nothing (fenced by chain key and resourceVersion)."""

from __future__ import annotations

import copy
from typing import Any

import pytest
from kubernetes.client.rest import ApiException

from olivekube.api.workflow import parse_workflow
from olivekube.entrypoints.in_job_runner import Superseded, fenced_patch
from tests.helpers.manifests import valid_manifest


class Workflows:
    """One workflow; `edits` are spec changes that land between the runner's read and its patch."""

    def __init__(self, doc: dict[str, Any], edits: list[dict[str, Any]] | None = None) -> None:
        self.body = copy.deepcopy(doc) | {"metadata": {**doc["metadata"], "resourceVersion": "1"}}
        self.edits = list(edits or [])
        self.patches: list[dict[str, Any]] = []

    def get(self, namespace: str, name: str) -> dict[str, Any]:
        return copy.deepcopy(self.body)

    def patch_status(self, namespace: str, name: str, status: dict[str, Any], resource_version: str | None = None):  # type: ignore[no-untyped-def]
        if self.edits:  # someone edited the spec after the runner's read
            self.body["spec"] = self.edits.pop(0)
            self.body["metadata"]["resourceVersion"] = str(int(self.body["metadata"]["resourceVersion"]) + 1)
        if resource_version != self.body["metadata"]["resourceVersion"]:
            raise ApiException(status=409)
        self.patches.append(status)
        return self.body


def _key(doc: dict[str, Any]) -> str:
    return parse_workflow(doc).spec.chain_keys()["lora"]


def test_the_current_runs_result_is_recorded() -> None:
    doc = valid_manifest()
    api = Workflows(doc)
    fenced_patch(api, "ml", "tone", "lora", _key(doc), {"passes": {"lora": {"chainKey": _key(doc)}}})  # type: ignore[arg-type]
    assert api.patches == [{"passes": {"lora": {"chainKey": _key(doc)}}}]


def test_a_run_of_an_edited_spec_records_nothing() -> None:
    old = valid_manifest()
    new = copy.deepcopy(old)
    new["spec"]["passes"]["lora"]["r"] = 32
    api = Workflows(new)
    with pytest.raises(Superseded):
        fenced_patch(api, "ml", "tone", "lora", _key(old), {"passes": {"lora": {"chainKey": _key(old)}}})  # type: ignore[arg-type]
    assert api.patches == []


def test_an_edit_between_read_and_patch_is_caught_by_the_resource_version() -> None:
    old = valid_manifest()
    new = copy.deepcopy(old)
    new["spec"]["passes"]["lora"]["r"] = 32
    api = Workflows(old, edits=[new["spec"]])
    with pytest.raises(Superseded):
        fenced_patch(api, "ml", "tone", "lora", _key(old), {"passes": {"lora": {"chainKey": _key(old)}}})  # type: ignore[arg-type]
    assert api.patches == []


def test_throttled_progress_keeps_a_field_a_later_update_does_not_carry() -> None:
    from olivekube.runner.progress import Throttled

    sent: list[tuple[str, dict[str, object]]] = []
    sink = Throttled(lambda name, progress: sent.append((name, progress)), interval=3600)
    sink("lora", {"step": 1})  # the first goes at once
    sink("lora", {"step": 10, "checkpointStep": 10})
    sink("lora", {"step": 11, "loss": 2.0})
    sink.flush()
    assert sent == [("lora", {"step": 1}), ("lora", {"step": 11, "checkpointStep": 10, "loss": 2.0})]
