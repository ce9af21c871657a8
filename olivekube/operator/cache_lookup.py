"""The operator's own look into a workflow's cache: a pass whose output is in the cache's index
completes without a Job.

The operator reads a store with its own credentials, so it looks only where the cluster admin told
it to (`--cache-lookup-prefix`, the chart's `policy.cacheLookupPrefixes`); elsewhere the pass gets a
Job, and the runner, with the workflow's own credentials, finds the output in the cache itself. An
index entry is trusted only when it lies in the workflow's namespace's part of the cache and points
there: what another namespace wrote is never taken.

The chain key names a pass's options and place in the chain, not the bytes it read, so an entry is
also checked against what the pass would read now, as the spec names it: the previous pass's
current index entry (its output digest) or, for the first pass, the input model's folders (their
listing with ETags), and the version of each data file, model and adapter. Whatever the
operator may not or cannot check (a file outside its prefixes, an older entry that recorded
nothing) makes the pass run its Job, whose runner keys its cache by content.
"""

from __future__ import annotations

import json
import logging
from dataclasses import dataclass, field
from typing import Any

from olivekube.api.workflow import OptimizationWorkflow
from olivekube.core.keys import artifact_prefix, index_uri
from olivekube.storage import is_uri, store_for

log = logging.getLogger("olivekube.operator")


@dataclass
class CacheLookup:
    """`lookup(pass, chain_key)` for the planner; `refused` says which entries it would not take."""

    workflow: OptimizationWorkflow
    prefixes: tuple[str, ...]
    refused: list[str] = field(default_factory=list)

    @property
    def cache_dir(self) -> str | None:
        spec = self.workflow.spec
        if spec.clean_cache or not spec.cache_dir or not spec.cache_dir.startswith(self.prefixes or ("\0",)):
            return None
        return spec.cache_dir

    def __call__(self, pass_name: str, key: str) -> dict[str, Any] | None:
        cache_dir = self.cache_dir
        if cache_dir is None:
            return None
        scope = self.workflow.metadata.namespace or "default"
        try:
            text = store_for(cache_dir).read_text(index_uri(cache_dir, scope, key))
            entry = json.loads(text) if text else None
            if not entry:
                return None
            uri = str(entry.get("uri") or "")
            if not uri.startswith(artifact_prefix(cache_dir, scope)):
                self.refused.append(
                    f"pass {pass_name}: the cache's index points outside this namespace's part ({uri})"
                )
                return None
            manifest = store_for(uri).read_manifest(uri)
            if manifest is None or manifest.digest != entry.get("digest"):
                self.refused.append(f"pass {pass_name}: the cached output at {uri} does not match its index entry")
                return None
            return dict(entry) if self._inputs_unchanged(pass_name, entry) else None
        except Exception as exc:  # no access to the store: run the pass
            log.info("cache lookup for %s failed: %s", pass_name, exc)
        return None

    def _readable(self, uri: str | None) -> bool:
        return bool(uri) and is_uri(str(uri)) and str(uri).startswith(self.prefixes)

    def _inputs_unchanged(self, pass_name: str, entry: dict[str, Any]) -> bool:
        """Whether the pass would read now what it read when the entry was written.

        What is checked comes from the spec, never from the entry: an entry that claims to have read
        other data files, models or adapter than the spec names (inputs made up by whoever could
        write to this namespace's part of the cache) is refused, and one that records none is not
        taken."""
        if "input" not in entry or "data" not in entry:
            return False  # written before olivekube recorded inputs
        spec = self.workflow.spec
        options = spec.passes[pass_name]
        adapter = getattr(options, "adapter_path", None)
        if adapter and not self._readable(adapter):
            return False
        data = {f for c in spec.pass_data_configs(pass_name) for f in c.load_dataset_config.listed_files()}
        claims = {
            "data files": (set(dict(entry["data"])), data if options.trains else set()),
            "models": (
                {k: (m or {}).get("path") for k, m in (entry.get("models") or {}).items()},
                options.model_uris(),
            ),
            "adapter": ((entry.get("adapter") or {}).get("path"), adapter),
        }
        for what, (recorded, expected) in claims.items():
            if recorded != expected:
                self.refused.append(
                    f"pass {pass_name}: the cache's index entry records other {what} than the spec names"
                )
                return False
        previous = spec.previous_pass(pass_name)
        if previous is None:
            if not self._input_model_unchanged(entry):
                return False
        else:
            assert self.cache_dir is not None
            scope = self.workflow.metadata.namespace or "default"
            before = index_uri(self.cache_dir, scope, spec.chain_keys()[previous])
            text = store_for(self.cache_dir).read_text(before)
            if not text or json.loads(text).get("digest") != entry["input"]:
                return False
        for path, version in dict(entry["data"]).items():
            if not self._readable(path) or store_for(path).file_version(path) != version:
                return False
        models = [entry["adapter"]] if entry.get("adapter") else []
        models += list((entry.get("models") or {}).values())
        for model in models:
            where = model.get("path")
            manifest = store_for(where).read_manifest(where) if self._readable(where) else None
            if manifest is None or manifest.digest != model.get("digest"):
                return False
        return True

    def _input_model_unchanged(self, entry: dict[str, Any]) -> bool:
        """A first pass read the input model: its folders (model, adapter) must be the ones the spec
        names, in a store the operator may read, with the bytes they had (a hub id: the Job runs)."""
        model = self.workflow.spec.input_model
        wanted = [uri for uri in (model.model_path, model.adapter_path) if uri]
        recorded = entry.get("inputVersions") or {}
        if sorted(recorded) != sorted(wanted) or not all(self._readable(uri) for uri in wanted):
            return False
        return all(store_for(uri).folder_version(uri) == recorded[uri] for uri in wanted)
