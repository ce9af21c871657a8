"""The checked-in CRD is what the models generate, and its schema is structural."""

from __future__ import annotations

import copy
from pathlib import Path
from typing import Any

import jsonschema
import pytest
import yaml
from openapi_schema_validator import OAS30Validator

from olivekube.api.crd import crd, crd_yaml, openapi_schema
from olivekube.api.olive_config import to_manifest

REPO = Path(__file__).resolve().parents[2]
CRD_FILE = REPO / "crds" / "olivekube.io_optimizationworkflows.yaml"
FORBIDDEN = {"$ref", "anyOf", "oneOf", "allOf", "not", "title", "default", "const", "$defs", "discriminator"}


def walk(node: dict[str, Any], path: str = ""):
    yield path, node
    for name, sub in node.get("properties", {}).items():
        yield from walk(sub, f"{path}.{name}")
    if isinstance(node.get("additionalProperties"), dict):
        yield from walk(node["additionalProperties"], f"{path}.*")
    if "items" in node:
        yield from walk(node["items"], f"{path}[]")


def test_checked_in_crd_is_what_the_models_generate() -> None:
    assert CRD_FILE.read_text() == crd_yaml(), "crds/ is stale: run `olivekube crd -o crds/...yaml`"


def test_schema_is_structural() -> None:
    schema = openapi_schema()
    for path, node in walk(schema):
        assert not FORBIDDEN & set(node), f"{path}: {FORBIDDEN & set(node)}"
        typed = "type" in node
        untyped_ok = node.get("x-kubernetes-preserve-unknown-fields") or node.get("x-kubernetes-int-or-string")
        assert typed or untyped_ok, f"{path} has no type"
        if node.get("type") == "object" and "properties" in node and "additionalProperties" in node:
            pytest.fail(f"{path}: properties and additionalProperties are exclusive")


def test_every_field_has_a_description() -> None:
    for path, node in walk(openapi_schema()["properties"]["spec"], "spec"):
        for name, sub in node.get("properties", {}).items():
            assert sub.get("description"), f"{path}.{name} has no description"


def test_lists_and_maps_that_cel_reads_are_bounded() -> None:
    spec = openapi_schema()["properties"]["spec"]
    assert spec["properties"]["passes"]["maxProperties"] <= 16
    assert spec["properties"]["systems"]["maxProperties"] <= 8
    assert spec["properties"]["data_configs"]["maxItems"] <= 16
    name = spec["properties"]["data_configs"]["items"]["properties"]["name"]
    assert name["maxLength"] <= 63


def test_schema_is_valid_json_schema_draft4() -> None:
    """OpenAPI v3.0 schemas are a draft-4 dialect: strip the Kubernetes extensions and check it."""

    def strip(node: Any) -> Any:
        if isinstance(node, dict):
            return {k: strip(v) for k, v in node.items() if not k.startswith("x-kubernetes-")}
        if isinstance(node, list):
            return [strip(v) for v in node]
        return node

    jsonschema.Draft4Validator.check_schema(strip(openapi_schema()))


def test_crd_document_shape() -> None:
    doc = crd()
    version = doc["spec"]["versions"][0]
    assert doc["spec"]["names"]["shortNames"] == ["owf"]
    assert version["subresources"] == {"status": {}}
    assert [c["name"] for c in version["additionalPrinterColumns"]] == ["Phase", "Pass", "Progress", "Age"]
    assert yaml.safe_load(crd_yaml()) == doc


def test_converted_examples_satisfy_the_crd_schema() -> None:
    """Manifests the models accept also pass the CRD's OpenAPI schema (CEL aside)."""
    validator = OAS30Validator(openapi_schema())
    for config in sorted((REPO / "examples" / "olive").glob("*.json")):
        manifest, _ = to_manifest(yaml.safe_load(config.read_text()), "example")
        errors = list(validator.iter_errors(copy.deepcopy(manifest)))
        assert not errors, f"{config.name}: {[e.message for e in errors]}"
