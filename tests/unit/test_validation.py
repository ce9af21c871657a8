"""Bad manifests are rejected offline with the field path in the message."""

from __future__ import annotations

import subprocess
import sys
from collections.abc import Callable
from pathlib import Path

import pytest
import yaml

from olivekube.api.validation import validate_document, validate_text
from tests.helpers.manifests import BAD, Doc, valid_manifest


@pytest.mark.parametrize(("name", "mutate", "path"), BAD, ids=[b[0] for b in BAD])
def test_bad_manifest_is_rejected_with_its_path(name: str, mutate: Callable[[Doc], None], path: str) -> None:
    doc = valid_manifest()
    mutate(doc)
    problems = validate_document(doc)
    assert problems, f"{name}: accepted"
    assert any(p.path == path for p in problems), [str(p) for p in problems]


def test_valid_manifest_is_accepted() -> None:
    assert validate_document(valid_manifest()) == []


def test_at_least_thirty_distinct_bad_inputs() -> None:
    assert len({b[0] for b in BAD}) >= 30


@pytest.mark.parametrize(
    ("text", "word"),
    [("- a\n- b\n", "mapping"), ("just a string", "mapping"), ("a: [1,\n", "YAML"), ("", "no document")],
)
def test_documents_that_are_not_manifests(text: str, word: str) -> None:
    problems = validate_text(text)
    assert problems and word in problems[0].message


def test_messages_say_what_is_allowed() -> None:
    doc = valid_manifest()
    doc["spec"]["passes"]["builder"]["precision"] = "int3"
    doc["spec"]["passes"]["conv"] = {"type": "OnnxConversion"}
    messages = {p.path: p.message for p in validate_document(doc)}
    assert "'int4'" in messages["spec.passes.builder.precision"]
    assert "ModelBuilder" in messages["spec.passes.conv.type"]
    doc = valid_manifest()
    doc["spec"]["passes"]["lora"]["lora_r"] = 4
    messages = {p.path: p.message for p in validate_document(doc)}
    assert "'r'" in messages["spec.passes.lora.lora_r"]


def test_cli_validate_prints_one_line_per_problem(tmp_path: Path) -> None:
    doc = valid_manifest()
    doc["spec"]["passes"]["lora"]["r"] = 0
    doc["spec"]["passes"]["builder"]["precision"] = "int3"
    path = tmp_path / "bad.yaml"
    path.write_text(yaml.safe_dump(doc))
    out = subprocess.run(
        [sys.executable, "-m", "olivekube.cli", "validate", str(path)], capture_output=True, text=True
    )
    assert out.returncode == 1
    lines = out.stdout.strip().splitlines()
    assert len(lines) == 2
    assert any(line.startswith(f"{path}: spec.passes.lora.r: ") for line in lines)
    assert any(line.startswith(f"{path}: spec.passes.builder.precision: ") for line in lines)


def test_odd_keys_are_quoted_in_paths() -> None:
    doc = valid_manifest()
    doc["."] = None
    doc["spec"]["passes"]["lora"]["a b"] = 1
    paths = {p.path for p in validate_document(doc)}
    assert {'"."', 'spec.passes.lora."a b"'} <= paths


def test_yaml_aliases_are_refused_before_they_expand(tmp_path: Path) -> None:
    lines = ['a: &a ["lol","lol","lol","lol","lol","lol","lol","lol","lol"]']
    lines += [f"{chr(98 + i)}: &{chr(98 + i)} [*{chr(97 + i)}, *{chr(97 + i)}, *{chr(97 + i)}]" for i in range(8)]
    bomb = "\n".join(lines) + "\n"
    assert len(bomb) < 500
    problems = validate_text(bomb)
    assert len(problems) == 1 and "aliases" in problems[0].message
    path = tmp_path / "bomb.yaml"
    path.write_text(bomb)
    out = subprocess.run(
        [sys.executable, "-m", "olivekube.cli", "run", str(path)], capture_output=True, text=True, timeout=60
    )
    assert out.returncode == 2 and "aliases" in out.stderr


def test_exponent_floats_are_numbers_as_in_json_and_the_api_server() -> None:
    """json.dumps writes 0.00001 as 1e-05, which PyYAML's YAML 1.1 rules would read as a string."""
    from olivekube.api.yaml_text import load_yaml

    assert load_yaml('{"learning_rate": 1e-05, "eps": 2E3, "name": "1e5"}') == {
        "learning_rate": 1e-05,
        "eps": 2000.0,
        "name": "1e5",
    }
    assert load_yaml("a: 1e-6\nb: -2.5e+3\nc: 10\nd: 1.2.3") == {"a": 1e-06, "b": -2500.0, "c": 10, "d": "1.2.3"}
