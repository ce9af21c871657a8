"""Generate the CustomResourceDefinition from the pydantic models.

pydantic writes JSON Schema 2020-12; the API server wants a structural OpenAPI v3 schema: no
`$ref`, no `anyOf` carrying types, every node typed (or explicitly preserving unknown fields), no
`title`. A discriminated union (the passes) becomes one object with every variant's properties and
CEL rules that keep each option to the pass types that have it.
"""

from __future__ import annotations

import copy
from typing import Any

import yaml

from olivekube.api.common import GROUP, KIND, PLURAL, SHORT_NAMES, SINGULAR, VERSION
from olivekube.api.workflow import OptimizationWorkflow

Schema = dict[str, Any]
PRESERVE = "x-kubernetes-preserve-unknown-fields"
KEEP = {
    "type",
    "format",
    "description",
    "enum",
    "pattern",
    "minimum",
    "maximum",
    "exclusiveMinimum",
    "exclusiveMaximum",
    "minLength",
    "maxLength",
    "minItems",
    "maxItems",
    "minProperties",
    "maxProperties",
    "required",
}


class SchemaError(ValueError):
    """The models use a construct the generator cannot express structurally."""


class _Converter:
    def __init__(self, defs: dict[str, Schema]) -> None:
        self.defs = defs

    def resolve(self, node: Schema) -> Schema:
        if "$ref" in node:
            target = copy.deepcopy(self.defs[node["$ref"].rsplit("/", 1)[-1]])
            rest = {k: v for k, v in node.items() if k != "$ref"}
            return {**target, **rest}
        return node

    def convert(self, node: Schema, path: str, need_description: bool = True) -> Schema:
        node = self.resolve(node)
        extras = {k: v for k, v in node.items() if k.startswith("x-kubernetes-")}
        description = node.get("description")
        if need_description and not description:
            raise SchemaError(f"{path}: every field needs a description (Field(description=...))")
        if node.get(PRESERVE):
            # Keep the type when there is one, so that CEL rules can refer to the field.
            kinds = {o.get("type") for o in node.get("anyOf", [node]) if o.get("type") != "null"}
            out: Schema = {PRESERVE: True}
            if kinds == {"object"}:
                # An open object may still bound its size and type some of its keys.
                out = self._bounds({"type": "object", PRESERVE: True}, node)
                known: dict[str, Schema] = node.get("properties", {})
                if known:
                    out["properties"] = {k: self.convert(v, f"{path}.{k}", False) for k, v in known.items()}
        elif node.get("x-kubernetes-int-or-string"):
            out = {}
        elif "anyOf" in node:
            out = self._any_of(node, path)
        elif "oneOf" in node:
            out = self._discriminated(node, path)
        else:
            out = self._typed(node, path)
        out.update(extras)
        if description:
            out["description"] = description
        return out

    def _any_of(self, node: Schema, path: str) -> Schema:
        options = [self.resolve(o) for o in node["anyOf"] if o.get("type") != "null"]
        if len(options) == 1:
            merged = {**options[0], **{k: v for k, v in node.items() if k != "anyOf"}}
            return self.convert(merged, path, need_description=False)
        types = {o.get("type") for o in options}
        if types <= {"integer", "number"}:
            return self._bounds({"type": "number"}, node)
        if types <= {"integer", "string"}:
            return {"x-kubernetes-int-or-string": True}
        raise SchemaError(
            f"{path}: a union of {sorted(t or '?' for t in types)} needs "
            "json_schema_extra={'x-kubernetes-preserve-unknown-fields': True}"
        )

    def _bounds(self, out: Schema, node: Schema) -> Schema:
        for key in ("minimum", "maximum", "minLength", "maxLength", "pattern", "minItems", "maxItems"):
            if key in node:
                out[key] = node[key]
        for key, bound in (("exclusiveMinimum", "minimum"), ("exclusiveMaximum", "maximum")):
            if key in node and not isinstance(node[key], bool):
                out[bound] = node[key]
                out[key] = True
        if "minProperties" in node or "maxProperties" in node:
            out.update({k: node[k] for k in ("minProperties", "maxProperties") if k in node})
        return out

    def _typed(self, node: Schema, path: str) -> Schema:
        if "const" in node:
            value = node["const"]
            const_kind = {bool: "boolean", int: "integer", str: "string"}[type(value)]
            return {"type": const_kind, "enum": [value]}
        kind: str | None = node.get("type")
        if kind is None and "enum" in node:
            values = node["enum"]
            kind = "integer" if all(isinstance(v, int) for v in values) else "string"
        if kind is None:
            raise SchemaError(f"{path}: no type")
        out: Schema = {"type": kind}
        if "enum" in node:
            out["enum"] = list(node["enum"])
        if "format" in node:
            out["format"] = node["format"]
        self._bounds(out, node)
        if kind == "object":
            props = node.get("properties", {})
            if props:
                out["properties"] = {name: self.convert(sub, f"{path}.{name}") for name, sub in props.items()}
            if node.get("required"):
                out["required"] = list(node["required"])
            extra = node.get("additionalProperties")
            if extra is True or (extra is None and not props):
                out[PRESERVE] = True
            elif isinstance(extra, dict):
                out["additionalProperties"] = self.convert(extra, f"{path}.*", need_description=False)
        elif kind == "array":
            out["items"] = self.convert(node.get("items", {}), f"{path}[]", need_description=False)
        return out

    def _discriminated(self, node: Schema, path: str) -> Schema:
        field = node["discriminator"]["propertyName"]
        variants = [self.resolve(v) for v in node["oneOf"]]
        tags: list[str] = []
        props: dict[str, Schema] = {}
        owners: dict[str, list[str]] = {}
        rules: list[dict[str, str]] = []
        for variant in variants:
            tag = variant["properties"][field]["const"]
            tags.append(tag)
            for name, sub in variant["properties"].items():
                if name == field:
                    continue
                converted = self.convert(sub, f"{path}({tag}).{name}")
                if name in props and props[name] != converted:
                    raise SchemaError(f"{path}.{name}: variants disagree on its schema")
                props[name] = converted
                owners.setdefault(name, []).append(tag)
            for name in variant.get("required", []):
                if name != field:
                    rules.append(
                        {
                            "rule": f"self.{field} != '{tag}' || has(self.{name})",
                            "message": f"{name} is required for {field} {tag}",
                            "fieldPath": f".{name}",
                            "reason": "FieldValueRequired",
                        }
                    )
        for name, owning in owners.items():
            if len(owning) < len(tags):
                allowed = ", ".join(owning)
                listed = ", ".join(f"'{t}'" for t in owning)
                rules.append(
                    {
                        "rule": f"!has(self.{name}) || self.{field} in [{listed}]",
                        "message": f"{name} is an option of {allowed} only",
                        "fieldPath": f".{name}",
                        "reason": "FieldValueForbidden",
                    }
                )
        type_prop = {"type": "string", "enum": tags, "description": f"{field}: one of {', '.join(tags)}."}
        return {
            "type": "object",
            "required": [field],
            "properties": {field: type_prop, **props},
            "x-kubernetes-validations": rules,
        }


def openapi_schema() -> Schema:
    """The structural openAPIV3Schema of the resource."""
    raw = OptimizationWorkflow.model_json_schema(mode="validation")
    converter = _Converter(raw.get("$defs", {}))
    props = raw["properties"]
    return {
        "type": "object",
        "description": raw["description"],
        "required": ["spec"],
        "properties": {
            "apiVersion": {"type": "string", "description": "API version: olivekube.io/v1alpha1."},
            "kind": {"type": "string", "description": "Kind: OptimizationWorkflow."},
            "metadata": {"type": "object"},
            "spec": converter.convert(props["spec"], "spec"),
            "status": converter.convert(props["status"], "status"),
        },
    }


PRINTER_COLUMNS = [
    {"name": "Phase", "type": "string", "jsonPath": ".status.phase", "description": "Workflow phase."},
    {"name": "Pass", "type": "string", "jsonPath": ".status.currentPass", "description": "Current pass."},
    {"name": "Progress", "type": "string", "jsonPath": ".status.progress", "description": "Passes done."},
    {"name": "Age", "type": "date", "jsonPath": ".metadata.creationTimestamp"},
]


def crd() -> dict[str, Any]:
    """The CustomResourceDefinition document."""
    return {
        "apiVersion": "apiextensions.k8s.io/v1",
        "kind": "CustomResourceDefinition",
        "metadata": {
            "name": f"{PLURAL}.{GROUP}",
            "labels": {"app.kubernetes.io/name": "olivekube", "app.kubernetes.io/component": "crd"},
        },
        "spec": {
            "group": GROUP,
            "names": {
                "kind": KIND,
                "listKind": f"{KIND}List",
                "plural": PLURAL,
                "singular": SINGULAR,
                "shortNames": SHORT_NAMES,
                "categories": ["olivekube"],
            },
            "scope": "Namespaced",
            "versions": [
                {
                    "name": VERSION,
                    "served": True,
                    "storage": True,
                    "subresources": {"status": {}},
                    "additionalPrinterColumns": PRINTER_COLUMNS,
                    "schema": {"openAPIV3Schema": openapi_schema()},
                }
            ],
        },
    }


def crd_yaml() -> str:
    """The CRD as the YAML checked in under crds/."""
    header = "# Generated by `olivekube crd` from olivekube/api: do not edit by hand.\n"
    return header + yaml.safe_dump(crd(), sort_keys=False, width=100)
