"""Random mutations of a valid manifest: validate never crashes, and names a field when it refuses."""

from __future__ import annotations

import copy
from typing import Any

from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from olivekube.api.validation import validate_document
from tests.helpers.manifests import valid_manifest

ROOT_KEYS = ("apiVersion", "kind", "metadata", "spec", "status")

values = st.recursive(
    st.none() | st.booleans() | st.integers(-(2**40), 2**40) | st.floats(allow_nan=False) | st.text(max_size=20),
    lambda inner: st.lists(inner, max_size=3) | st.dictionaries(st.text(max_size=10), inner, max_size=3),
    max_leaves=6,
)


def paths(node: Any, prefix: tuple[Any, ...] = ()) -> list[tuple[Any, ...]]:
    out = [prefix] if prefix else []
    if isinstance(node, dict):
        for k, v in node.items():
            out += paths(v, (*prefix, k))
    elif isinstance(node, list):
        for i, v in enumerate(node):
            out += paths(v, (*prefix, i))
    return out


ALL_PATHS = paths(valid_manifest())


@st.composite
def mutated(draw: st.DrawFn) -> dict[str, Any]:
    doc = copy.deepcopy(valid_manifest())
    for _ in range(draw(st.integers(1, 3))):
        path = draw(st.sampled_from(ALL_PATHS))
        node: Any = doc
        try:
            for key in path[:-1]:
                node = node[key]
            action = draw(st.sampled_from(["set", "delete", "add"]))
            if action == "delete" and isinstance(node, dict):
                node.pop(path[-1], None)
            elif action == "add" and isinstance(node, dict):
                node[draw(st.text(min_size=1, max_size=12))] = draw(values)
            else:
                node[path[-1]] = draw(values)
        except (KeyError, IndexError, TypeError):
            continue
    return doc


@settings(max_examples=300, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(mutated())
def test_validate_never_crashes_and_names_a_field(doc: dict[str, Any]) -> None:
    problems = validate_document(doc)
    for problem in problems:
        assert problem.path, f"no field named: {problem}"
        first = problem.path.split(".")[0]
        quoted_key = problem.path.startswith('"')  # an odd unknown key, quoted so the path stays readable
        assert first in ROOT_KEYS or first in map(str, doc) or quoted_key, problem
        assert problem.message
