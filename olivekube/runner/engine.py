"""Run a workflow's passes in order: resolve the input model, reuse cached pass outputs, publish.

The same code serves `olivekube run` (all passes in one process, on this machine) and the
in-cluster runner (one pass per Job); the difference is only which passes run and where the
progress goes.
"""

from __future__ import annotations

import contextlib
import hashlib
import json
import os
import shutil
import tempfile
import time
import uuid
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

from olivekube.api.workflow import OptimizationWorkflow
from olivekube.core.artifact import ModelArtifact, hub_digest, is_hub_id
from olivekube.core.constants import RUNNER_VERSION
from olivekube.core.errors import PassError, StorageError
from olivekube.core.keys import artifact_uri, checkpoint_root, content_key, index_uri
from olivekube.runner.acceptance import Acceptance
from olivekube.runner.checkpoints import CheckpointStore
from olivekube.runner.context import PassContext
from olivekube.runner.distributed import Topology, run_distributed
from olivekube.runner.passes import PASSES
from olivekube.runner.passes.base import RunnerPass
from olivekube.runner.progress import ProgressSink, null_sink
from olivekube.runner.results import PassResult
from olivekube.storage import build_manifest, is_uri, store_for
from olivekube.storage.manifest import MANIFEST_NAME, Manifest, file_sha256, verify
from olivekube.storage.outputs import publish_version, read_pointer

PREFLIGHT_PASSED: set[tuple[str, str]] = set()
"""(chain key, input model digest) of the passes whose preflight passed in this process."""


@contextlib.contextmanager
def _failing_pass(name: str, results: list[PassResult]) -> Iterator[None]:
    """Tag a PassError with the pass that raised it and the results before it."""
    try:
        yield
    except PassError as exc:
        exc.pass_name = name
        exc.results_so_far = list(results)
        raise


def _kwargs(workflow: OptimizationWorkflow) -> dict[str, Any]:
    load = workflow.spec.input_model.load_kwargs
    return load.dump() if load else {}


def work_folder(cache_dir: str) -> Path:
    """A folder of this run's own for what it fetches and builds before publishing: beside a local
    cache (so that publishing is a rename on one file system), else in the user's cache folder. Runs
    sharing a cache each have their own, so one finishing never removes another's work."""
    parent = user_cache_folder() / "olivekube" / "work" if is_uri(cache_dir) else Path(cache_dir) / ".work"
    return parent / uuid.uuid4().hex[:12]


def user_cache_folder() -> Path:
    """$XDG_CACHE_HOME, else ~/.cache, else (no writable home: the runner image's read-only root) the
    temporary folder."""
    if os.environ.get("XDG_CACHE_HOME"):
        return Path(os.environ["XDG_CACHE_HOME"])
    home = Path(os.path.expanduser("~"))
    if home.is_absolute() and os.access(home, os.W_OK):
        return home / ".cache"
    return Path(tempfile.gettempdir())


class WorkflowRunner:
    """Runs the passes of one workflow."""

    def __init__(
        self,
        workflow: OptimizationWorkflow,
        base_dir: Path,
        report: ProgressSink = null_sink,
        cache_dir: str | None = None,
        output_dir: str | None = None,
        topology: Topology | None = None,
    ) -> None:
        self.workflow = workflow
        self.topology = topology or Topology()
        """How many processes run each training pass (runner/distributed.py)."""
        self.spec = workflow.spec
        self.base_dir = base_dir
        self.report = report
        self.cache_dir = self._location(cache_dir or self.spec.cache_dir or ".olivekube-cache")
        self.output_dir = self._location(output_dir or self.spec.output_dir or f"outputs/{workflow.metadata.name}")
        self.chain = self.spec.chain_keys()
        self.scope = workflow.metadata.namespace or "default"  # a namespace's own part of the cache
        self.workflow_name = workflow.metadata.name
        self.work_root = work_folder(self.cache_dir)
        self.output_fence: dict[str, Any] | None = None  # in a cluster: the workflow's uid and generation
        self._resolved: dict[str, ModelArtifact] = {}
        self.acceptance = Acceptance(self)

    def _location(self, value: str) -> str:
        """URIs stay; relative paths are relative to the workflow file's folder."""
        if is_uri(value) or Path(value).is_absolute():
            return value
        return str((self.base_dir / value).resolve())

    # -- the input model ------------------------------------------------------------------
    def input_model(self) -> ModelArtifact:
        model = self.spec.input_model
        field_name = "spec.input_model.model_path"
        kwargs = _kwargs(self.workflow)
        artifact = self._resolve_model(model.model_path, field_name, kwargs)
        if model.model_file_format == "PyTorch.MLflow" and artifact.path is not None:
            inner = artifact.path / "data" / "model"
            if not inner.is_dir():
                raise PassError(field_name, f"no MLflow model there ({inner} is missing)")
            artifact.path = inner
        if model.adapter_path:
            adapter = self._resolve_model(model.adapter_path, "spec.input_model.adapter_path", kwargs)
            return ModelArtifact(
                kind="adapter",
                digest=adapter.digest,
                path=adapter.path,
                base=artifact,
                metadata={"load_kwargs": kwargs},
            )
        return artifact

    def _resolve_model(self, value: str, field_name: str, kwargs: dict[str, Any]) -> ModelArtifact:
        meta = {"load_kwargs": kwargs}
        if is_uri(value):
            try:
                store = store_for(value)
                local = store.local_path(value)
                if local is not None and local.is_dir():
                    return ModelArtifact("hf", build_manifest(local).digest, path=local, uri=value, metadata=meta)
                dest = self.work_root / "inputs" / hashlib.sha256(value.encode()).hexdigest()[:16]
                manifest = store.fetch(value, dest)
            except StorageError as exc:
                raise PassError(field_name, str(exc)) from exc
            return ModelArtifact("hf", manifest.digest, path=dest, uri=value, metadata=meta)
        path = Path(value).expanduser()
        path = path if path.is_absolute() else self.base_dir / path
        if path.is_dir():
            return ModelArtifact("hf", build_manifest(path).digest, path=path, uri=str(path), metadata=meta)
        if is_hub_id(value):
            return ModelArtifact("hf", hub_digest(value, kwargs.get("revision")), hub_id=value, metadata=meta)
        raise PassError(field_name, f"no model at {path}, and {value!r} is not a Hugging Face id or a URI")

    # -- passes ---------------------------------------------------------------------------
    def make_pass(self, name: str, workdir: Path) -> RunnerPass:
        options = self.spec.passes[name]
        if options.type not in PASSES:
            raise PassError(f"spec.passes.{name}.type", f"{options.type} is not implemented by this runner")
        ctx = PassContext(self.spec, name, workdir, self.base_dir, self.report, resolve_model=self.resolve_model)
        return PASSES[options.type](options, ctx)

    def resolve_model(self, value: str, field_name: str) -> ModelArtifact:
        """A model a pass reads besides its input (by folder or URI), fetched once per run."""
        if value not in self._resolved:
            self._resolved[value] = self._resolve_model(value, field_name, _kwargs(self.workflow))
        return self._resolved[value]

    def content_key(self, name: str, model: ModelArtifact, runner_pass: RunnerPass) -> str:
        options = self.spec.passes[name]
        others = {
            key: self.resolve_model(uri, f"spec.passes.{name}.{key}").digest
            for key, uri in options.model_uris().items()
        }
        return content_key(
            options.dump(),
            model.digest,
            model.base.digest if model.base is not None else None,
            self._data_fingerprint(name) if options.trains else None,
            runner_pass.ctx.execution_provider()[1] if options.builds_for_target else None,
            others or None,
        )

    def with_pass_adapter(self, name: str, model: ModelArtifact) -> ModelArtifact:
        """ModelBuilder's `adapter_path`: the adapter's bytes (fetched when given by URI) join the
        pass's input, so that its digest enters the content key and a changed adapter builds again."""
        path = getattr(self.spec.passes[name], "adapter_path", None)
        if not path:
            return model
        kwargs = dict(model.metadata.get("load_kwargs") or {})
        adapter = self._resolve_model(path, f"spec.passes.{name}.adapter_path", kwargs)
        base = model.base if model.kind == "adapter" and model.base is not None else model
        meta = model.metadata
        return ModelArtifact("adapter", adapter.digest, adapter.path, uri=adapter.uri, base=base, metadata=meta)

    def input_versions(self) -> dict[str, str] | None:
        """The input model's folders (model and adapter) and what identifies their bytes now, for the
        operator to check a first pass's entry against; None when one is not in a store (a hub id)."""
        model = self.spec.input_model
        versions: dict[str, str] = {}
        for uri in filter(None, (model.model_path, model.adapter_path)):
            version = store_for(uri).folder_version(uri) if is_uri(uri) else None
            if version is None:
                return None
            versions[uri] = version
        return versions

    def data_versions(self, pass_name: str) -> dict[str, str]:
        """Each data file a training pass reads, and what identifies its bytes now (digest or ETag)."""
        if not self.spec.passes[pass_name].trains:
            return {}
        return {f: str(v) for entry in self._data_fingerprint(pass_name) for f, v in entry["files"].items()}

    def _data_fingerprint(self, pass_name: str) -> list[Any]:
        out: list[Any] = []
        configs = self.spec.data_configs or []
        for config in self.spec.pass_data_configs(pass_name):
            field = f"spec.data_configs.{configs.index(config)}.load_dataset_config.data_files"
            digests = {}
            for f in config.load_dataset_config.listed_files():
                local = Path(f) if Path(f).is_absolute() else self.base_dir / f
                if is_uri(f):  # the bytes behind the URI now, so that changed data trains again
                    try:
                        digests[f] = store_for(f).file_version(f) or f
                    except StorageError as exc:
                        raise PassError(field, str(exc)) from exc
                else:
                    digests[f] = file_sha256(local) if local.is_file() else f
            out.append({"config": config.dump(), "files": digests})
        return out

    def preflight(self, model: ModelArtifact) -> None:
        """Cheap checks of every pass before any heavy work: the first pass sees the input model,
        later ModelBuilder passes check their target; the rest check their real input when they run.
        The evaluators check that the models they measure can run here. A pass that passed them in
        this process with the same chain key on the same input is not checked again (a search's
        trials share the process: LoRA's check builds a model skeleton and reads its data)."""
        with _failing_pass("evaluator", []):
            self.acceptance.preflight()
        keys = self.spec.chain_keys()
        for i, name in enumerate(self.spec.ordered_pass_names()):
            options = self.spec.passes[name]
            checked = (keys[name], model.digest)
            if checked in PREFLIGHT_PASSED:
                continue
            if i == 0 or options.builds_for_target or options.model_uris():
                with _failing_pass(name, []):
                    self.make_pass(name, self.work_root).preflight(model)
                PREFLIGHT_PASSED.add(checked)

    def from_artifact(
        self, uri: str, manifest: Manifest, base: ModelArtifact | None, local: Path | None = None
    ) -> ModelArtifact:
        """A published pass output as a model; `base` is the adapter's base model (for adapters);
        `local` is this process's own copy of what it just published (no download, no check).
        Anything else is checked against `manifest` (digests, no links out) before use."""
        store = store_for(uri)
        path = local
        if path is None and (in_place := store.local_path(uri)) is not None:
            verify(in_place, manifest)
            path = in_place
        if path is None:
            path = self.work_root / "fetched" / manifest.digest[:16]
            store.fetch(uri, path)
        meta = manifest.metadata
        if meta["kind"] == "adapter" and meta.get("base_folder"):
            # The pass wrote the adapter's base beside it (LoftQ's new base weights): use that one.
            folder = str(meta["base_folder"])
            load = base.metadata if base is not None else {}
            base = ModelArtifact(
                "hf",
                str(meta["base_folder_digest"]),
                path=path / folder,
                uri=f"{uri.rstrip('/')}/{folder}",
                metadata=load,
            )
        return ModelArtifact(
            kind=meta["kind"],
            digest=manifest.digest,
            path=path,
            uri=uri,
            base=base if meta["kind"] == "adapter" else None,
            metadata=meta,
        )

    def index_uri(self, name: str) -> str:
        """Where the chain-key index entry of a pass lives."""
        return index_uri(self.cache_dir, self.scope, self.chain[name])

    def run_pass(self, name: str, model: ModelArtifact) -> tuple[ModelArtifact, PassResult]:
        """Run (or take from the cache) one pass, and record it in the chain-key index."""
        used = self.with_pass_adapter(name, model)
        out_model, result = self._run_pass(name, used)
        entry = {
            "uri": result.uri,
            "digest": result.digest,
            "sizeBytes": result.size_bytes,
            "contentKey": result.content_key,
            "kind": out_model.kind,
            "metrics": result.metrics,
            # What the operator checks before it takes this entry without a Job (cache_lookup.py).
            "input": model.digest,
            "adapter": {"path": used.uri, "digest": used.digest} if used is not model else None,
            "models": {
                key: {"path": uri, "digest": self.resolve_model(uri, f"spec.passes.{name}.{key}").digest}
                for key, uri in self.spec.passes[name].model_uris().items()
            },
            "data": self.data_versions(name),
            "inputVersions": self.input_versions() if self.spec.previous_pass(name) is None else None,
        }
        store_for(self.cache_dir).write_text(self.index_uri(name), json.dumps(entry))
        return out_model, result

    def _run_pass(self, name: str, model: ModelArtifact) -> tuple[ModelArtifact, PassResult]:
        options = self.spec.passes[name]
        workdir = self.work_root / uuid.uuid4().hex[:12]
        workdir.mkdir(parents=True, exist_ok=True)
        started = time.monotonic()
        try:
            runner_pass = self.make_pass(name, workdir)
            if model.kind not in runner_pass.accepts:
                raise PassError(
                    f"spec.passes.{name}.type",
                    f"{options.type} takes a {' or '.join(runner_pass.accepts)} model, not a {model.kind} model",
                )
            key = self.content_key(name, model, runner_pass)
            uri = artifact_uri(self.cache_dir, self.scope, key)
            cached = None if self.spec.clean_cache else store_for(uri).read_manifest(uri)
            if cached is not None:
                out_model = self.from_artifact(uri, cached, model)
                status, manifest, metrics = "cached", cached, dict(cached.metadata.get("metrics", {}))
            else:
                out_model, manifest = self._run_and_publish(runner_pass, model, workdir, uri, key)
                status, metrics = "ran", dict(manifest.metadata.get("metrics", {}))  # the winner's, if raced
            seconds = time.monotonic() - started
            result = PassResult(
                name, options.type, status, seconds, uri, manifest.digest, manifest.size_bytes, key, metrics
            )
            result.metadata = manifest.metadata
            return out_model, result
        finally:
            shutil.rmtree(workdir, ignore_errors=True)

    def train_on_worker_node(self, name: str, model: ModelArtifact) -> None:
        """On a pod other than pod 0 of a several-node training pass: train with the others (pod 0
        holds global rank 0, which writes and publishes the output). Nothing to do when the output
        is in the cache already: pod 0 finds it too, and trains not."""
        workdir = self.work_root / uuid.uuid4().hex[:12]
        workdir.mkdir(parents=True, exist_ok=True)
        try:
            runner_pass = self.make_pass(name, workdir)
            key = self.content_key(name, model, runner_pass)
            uri = artifact_uri(self.cache_dir, self.scope, key)
            if not self.spec.clean_cache and store_for(uri).read_manifest(uri) is not None:
                return
            runner_pass.ctx.checkpoint_root = checkpoint_root(self.cache_dir, self.scope, self.workflow_name, key)
            runner_pass.preflight(model)
            (workdir / "out").mkdir()
            run_distributed(runner_pass, model, workdir / "out", self.topology)
        finally:
            shutil.rmtree(workdir, ignore_errors=True)

    def _run_and_publish(
        self, runner_pass: RunnerPass, model: ModelArtifact, workdir: Path, uri: str, key: str
    ) -> tuple[ModelArtifact, Manifest]:
        """Run the pass into a fresh folder and publish it at `uri` (all or nothing)."""
        options = runner_pass.options
        checkpoints = (
            CheckpointStore(checkpoint_root(self.cache_dir, self.scope, self.workflow_name, key))
            if options.trains
            else None
        )
        runner_pass.ctx.checkpoint_root = checkpoints.root if checkpoints else None
        runner_pass.preflight(model)
        out = workdir / "out"
        out.mkdir()
        if options.trains and self.topology.distributed:
            metadata = run_distributed(runner_pass, model, out, self.topology)
        else:
            metadata = runner_pass.run(model, out)
        metadata.update(
            kind=runner_pass.produces,
            pass_name=runner_pass.ctx.pass_name,
            pass_type=options.type,
            content_key=key,
            input=model.digest,
            runner=RUNNER_VERSION,
            metrics=runner_pass.ctx.metrics,
        )
        if runner_pass.produces == "adapter":
            metadata["base"] = {"uri": model.uri, "hub_id": model.hub_id, "digest": model.digest}
            metadata["quantized_base"] = options.needs_bitsandbytes
        ours = build_manifest(out, metadata)
        store = store_for(uri)
        manifest = store.publish_once(out, uri, ours, consume=True)
        if checkpoints:
            checkpoints.clear()  # the published output supersedes them
        local = store.local_path(uri)  # a local store: the output is there, as published
        if manifest.digest != ours.digest:  # another run published this key first: take its output
            shutil.rmtree(out, ignore_errors=True)
            if local is None:
                local = self.work_root / "published" / manifest.digest[:16]
                store.fetch(uri, local)
        elif out.exists():  # a remote store: keep the local copy for the next pass
            local = self.work_root / "published" / manifest.digest[:16]
            shutil.rmtree(local, ignore_errors=True)
            local.parent.mkdir(parents=True, exist_ok=True)
            out.rename(local)
        return self.from_artifact(uri, manifest, model, local), manifest

    def publish_output(self, model: ModelArtifact, extra_files: dict[str, str] | None = None) -> str:
        """Publish the final model as a new version under output_dir (all or nothing; nothing else
        there is touched) and point to it. Returns the version's URI."""
        assert model.path is not None
        src = model.path
        if extra_files:
            src = self._with_files(model.path, extra_files)
        manifest = build_manifest(src, model.metadata)
        try:
            return publish_version(self.output_dir, src, manifest, self.output_fence)
        except StorageError as exc:
            raise PassError("spec.output_dir", str(exc)) from exc
        finally:
            if src != model.path:
                shutil.rmtree(src, ignore_errors=True)

    def _with_files(self, folder: Path, files: dict[str, str]) -> Path:
        """A copy of `folder` (hard links where the file system allows) with `files` added."""
        staging = self.work_root / "outputs" / uuid.uuid4().hex[:12]
        staging.parent.mkdir(parents=True, exist_ok=True)

        def link(src: str, dst: str) -> None:
            try:
                os.link(src, dst)
            except OSError:
                shutil.copy2(src, dst)

        shutil.copytree(folder, staging, copy_function=link, ignore=shutil.ignore_patterns(MANIFEST_NAME))
        for name, text in files.items():
            (staging / name).write_text(text)
        return staging

    def run(self, on_result: Callable[[PassResult], None] | None = None) -> tuple[list[PassResult], str]:
        """Run every pass in order. Raises PassError (with `results_so_far`) when a pass fails."""
        try:
            return self._run_passes(on_result)
        finally:
            shutil.rmtree(self.work_root, ignore_errors=True)  # this run's own folder, never a sibling's

    def _run_passes(self, on_result: Callable[[PassResult], None] | None) -> tuple[list[PassResult], str]:
        results: list[PassResult] = []
        self.check_output_dir()
        model = self.input_model()
        self.preflight(model)
        for name in self.spec.ordered_pass_names():
            with _failing_pass(name, results):
                model, result = self.run_pass(name, model)
            if on_result is not None:
                on_result(result)
            results.append(result)
            with _failing_pass(name, results):
                self.acceptance.after_pass(name, model, result.uri)
        with _failing_pass("evaluator", results):
            self.acceptance.final(model, results[-1].uri if results else None)
        with _failing_pass("output_dir", results):
            output = self.publish_output(model, self.acceptance.files(results))
        return results, output

    def check_output_dir(self) -> None:
        """Before any work: PassError naming output_dir when olivekube could not publish there."""
        try:
            read_pointer(self.output_dir)
        except StorageError as exc:
            raise PassError("spec.output_dir", str(exc)) from exc
