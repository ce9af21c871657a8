"""The two keys of a pass, side by side.

- The **chain key** is computed from the spec alone: sha256 of the runner version, the pass's
  options, the previous pass's chain key (or the input model as written), the data configs it
  reads and, for a pass that builds for a target, the systems. The operator compares it with the
  key the runner recorded in status (`chainKey`) to know which passes a spec change invalidates,
  names Jobs with it, and finds the pass's index entry (`CACHE/index/CHAIN_KEY`) with it.
- The **content key** is computed by the runner from what it really got: the options, the input
  artifact's digest (and its base model's), the data files' digests and the execution provider.
  It names the published artifact (`CACHE/passes/CONTENT_KEY[:32]`) and is the source of truth for
  reuse: equal content keys mean equal outputs.
"""

from __future__ import annotations

import hashlib
import json
from typing import Any

from olivekube.core.constants import RUNNER_VERSION


def digest(body: Any) -> str:
    """sha256 of canonical JSON."""
    return hashlib.sha256(json.dumps(body, sort_keys=True, separators=(",", ":")).encode()).hexdigest()


def _options(options: dict[str, Any]) -> dict[str, Any]:
    """Pass options without what does not change the output (where it runs)."""
    return {k: v for k, v in options.items() if k != "host"}


def chain_key(options: dict[str, Any], previous: Any, data: list[Any] | None = None, target: Any = None) -> str:
    """A pass's identity from the spec: `previous` is the previous pass's chain key or the input
    model as written; `data` the data configs it reads; `target` what it builds for."""
    body: dict[str, Any] = {"runner": RUNNER_VERSION, "options": _options(options), "input": previous}
    if data:
        body["data"] = data
    if target is not None:
        body.update(target)
    return digest(body)


def content_key(
    options: dict[str, Any],
    input_digest: str,
    base_digest: str | None = None,
    data: list[Any] | None = None,
    execution_provider: str | None = None,
    models: dict[str, str] | None = None,
) -> str:
    """A pass's identity from its real inputs: equal keys, equal outputs. `models`: the digests of
    other models the pass reads, by name."""
    body: dict[str, Any] = {"runner": RUNNER_VERSION, "options": _options(options), "input": input_digest}
    if base_digest is not None:
        body["base"] = base_digest
    if data is not None:
        body["data"] = data
    if execution_provider is not None:
        body["execution_provider"] = execution_provider
    if models is not None:
        body["models"] = models
    return hashlib.sha256(json.dumps(body, sort_keys=True).encode()).hexdigest()


def index_uri(cache_dir: str, scope: str, chain: str) -> str:
    """The index entry of a pass in a cache: its chain key → where its output is and what it holds.
    `scope` (the workflow's namespace) keeps each tenant's entries apart."""
    return f"{cache_dir.rstrip('/')}/index/{scope}/{chain}"


def artifact_prefix(cache_dir: str, scope: str) -> str:
    """Where the pass outputs of one scope (namespace) lie in a cache."""
    return f"{cache_dir.rstrip('/')}/passes/{scope}/"


def artifact_uri(cache_dir: str, scope: str, content: str) -> str:
    """Where a pass output with this content key is published in a cache."""
    return artifact_prefix(cache_dir, scope) + content[:32]


def checkpoint_root(cache_dir: str, scope: str, workflow: str, content: str) -> str:
    """Where the training checkpoints of one workflow's pass with this content key lie in a cache,
    until the pass's output is published (then they go). Per workflow: two workflows training the
    same pass never resume from, or clear, each other's."""
    return f"{cache_dir.rstrip('/')}/checkpoints/{scope}/{workflow}/{content[:32]}"
