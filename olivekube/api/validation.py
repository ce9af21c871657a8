"""Offline validation of manifests: one `path: message` line per problem."""

from __future__ import annotations

import json
import re
from dataclasses import dataclass
from typing import Any

import yaml
from pydantic import ValidationError

from olivekube.api.common import KEYED_ERRORS
from olivekube.api.passes import PASS_TYPES
from olivekube.api.systems import SYSTEM_TYPES
from olivekube.api.workflow import parse_workflow
from olivekube.api.yaml_text import load_all_yaml

SIMPLE_KEY = re.compile(r"[A-Za-z0-9_\-/]+")


@dataclass(frozen=True)
class Problem:
    """One reason a document is invalid, at a dotted field path."""

    path: str
    message: str

    def __str__(self) -> str:
        return f"{self.path}: {self.message}" if self.path else self.message


def _error_path(loc: tuple[int | str, ...], error_type: str, ctx: dict[str, Any]) -> str:
    parts: list[str] = []
    for i, part in enumerate(loc):
        # pydantic puts a discriminated union's tag in the path (spec.passes.lora.LoRA.r): drop it.
        if isinstance(part, str) and i == 3 and (part in PASS_TYPES or part in SYSTEM_TYPES):
            continue
        if isinstance(part, str) and part.startswith(("function-", "json-or-python")):
            continue
        parts.append(_segment(part))
    if error_type in ("union_tag_invalid", "union_tag_not_found"):
        parts.append("type")
    if error_type in KEYED_ERRORS:
        parts.append(_segment(ctx["key"]))
    return ".".join(parts)


def _segment(part: int | str) -> str:
    """A path segment; a key that would make the dotted path ambiguous is quoted."""
    text = str(part)
    return text if SIMPLE_KEY.fullmatch(text) else json.dumps(text)


def _message(err: Any) -> str:
    msg = str(err["msg"])
    if err["type"] == "union_tag_invalid":
        ctx = err.get("ctx", {})
        return f"unknown type {ctx.get('tag')!r}; allowed: {ctx.get('expected_tags')}"
    if err["type"] == "union_tag_not_found":
        return "missing 'type'"
    if err["type"] == "extra_forbidden":
        return "unknown field (not part of the OptimizationWorkflow API; check the spelling)"
    return msg.removeprefix("Value error, ")


def problems_from_error(exc: ValidationError) -> list[Problem]:
    """Turn a pydantic error into problems with dotted paths from the document root."""
    out: list[Problem] = []
    for err in exc.errors():
        ctx = err.get("ctx") or {}
        path = _error_path(tuple(err["loc"]), err["type"], ctx)
        if err["type"] == "field_problems":
            out.extend(Problem(".".join(filter(None, (path, sub))), msg) for sub, msg in ctx["problems"])
        else:
            out.append(Problem(path, _message(err)))
    return out


def validate_document(doc: Any) -> list[Problem]:
    """Problems of one parsed YAML document; empty when it is a valid OptimizationWorkflow."""
    if not isinstance(doc, dict):
        return [Problem("", f"a manifest must be a mapping, not {type(doc).__name__}")]
    try:
        parse_workflow(doc)
    except ValidationError as exc:
        return problems_from_error(exc)
    return []


def validate_text(text: str) -> list[Problem]:
    """Problems of every document in a YAML or JSON text."""
    try:
        docs = [d for d in load_all_yaml(text) if d is not None]
    except yaml.YAMLError as exc:
        return [Problem("", f"not valid YAML: {exc}")]
    if not docs:
        return [Problem("", "no document in the file")]
    problems: list[Problem] = []
    for i, doc in enumerate(docs):
        for p in validate_document(doc):
            prefix = f"[{i}]" if len(docs) > 1 else ""
            problems.append(Problem(f"{prefix}{'.' if prefix and p.path else ''}{p.path}", p.message))
    return problems
