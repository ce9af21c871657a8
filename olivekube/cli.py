"""The `olivekube` command."""

from __future__ import annotations

import itertools
import json
import sys
from pathlib import Path
from typing import Annotated, Any

import typer
import yaml
from pydantic import ValidationError
from rich.console import Console
from rich.text import Text

from olivekube.api.crd import crd_yaml
from olivekube.api.olive_config import ConvertError, manifest_name, spec_to_olive, to_manifest
from olivekube.api.validation import problems_from_error, validate_text
from olivekube.api.workflow import OptimizationWorkflow, parse_workflow
from olivekube.api.yaml_text import load_yaml

app = typer.Typer(
    help="Run Olive-style model optimization workflows on Kubernetes, or locally.",
    no_args_is_help=True,
    add_completion=False,
)
err = Console(stderr=True, soft_wrap=True)


def _load(path: Path) -> Any:
    try:
        text = path.read_text()
    except OSError as exc:
        err.print(f"[red]error:[/] cannot read {path}: {exc.strerror}")
        raise typer.Exit(2) from exc
    try:
        return load_yaml(text)
    except yaml.YAMLError as exc:
        err.print(Text.assemble(("error:", "red"), f" {path} is not valid JSON or YAML: {exc}"))  # text as it is
        raise typer.Exit(2) from exc


def _convert(path: Path, data: Any, name: str | None, namespace: str | None) -> dict[str, Any]:
    """An Olive config as a manifest; problems and warnings go to stderr (exit 1 on problems)."""
    default = data.get("workflow_id") if isinstance(data, dict) else None
    try:
        manifest, warnings = to_manifest(data, name or manifest_name(str(default or path.stem)), namespace)
    except ConvertError as exc:
        for problem in exc.problems:
            err.print(f"{path}: {problem}", markup=False, highlight=False)
        raise typer.Exit(1) from exc
    for warning in warnings:
        err.print(f"warning: {warning}", markup=False, highlight=False)
    return manifest


@app.command()
def crd(
    output: Annotated[Path | None, typer.Option("--output", "-o", help="Write to this file.")] = None,
) -> None:
    """Print the CustomResourceDefinition generated from the API models."""
    text = crd_yaml()
    if output:
        output.write_text(text)
    else:
        sys.stdout.write(text)


@app.command()
def convert(
    config: Annotated[Path, typer.Argument(help="Olive config (JSON or YAML), legacy or current form.")],
    name: Annotated[str | None, typer.Option("--name", "-n", help="Workflow name.")] = None,
    namespace: Annotated[str | None, typer.Option("--namespace", help="Namespace.")] = None,
    to: Annotated[str, typer.Option(help="'manifest' (from an Olive config) or 'olive' (from a manifest).")] = (
        "manifest"
    ),
) -> None:
    """Turn an Olive config into an OptimizationWorkflow manifest (or a manifest back into an Olive config)."""
    data = _load(config)
    if to == "olive":
        if not isinstance(data, dict) or not isinstance(data.get("spec"), dict):
            err.print(f"[red]error:[/] {config} is not an OptimizationWorkflow manifest (no spec)")
            raise typer.Exit(1)
        sys.stdout.write(json.dumps(spec_to_olive(data["spec"]), indent=2) + "\n")
        return
    if to != "manifest":
        err.print(f"[red]error:[/] --to must be 'manifest' or 'olive', not {to!r}")
        raise typer.Exit(2)
    manifest = _convert(config, data, name, namespace)
    found = parse_workflow(manifest).spec.search()
    if found is not None:  # on stderr: stdout is the manifest
        err.print(f"{config}: {_described(*found)}", markup=False, highlight=False)
    sys.stdout.write(yaml.safe_dump(manifest, sort_keys=False, width=100))


@app.command()
def validate(files: Annotated[list[Path], typer.Argument(help="Manifests to check (YAML or JSON).")]) -> None:
    """Check manifests offline with the models the CRD is generated from."""
    failed = False
    for path in files:
        try:
            text = path.read_text()
        except OSError as exc:
            err.print(f"{path}: cannot read: {exc.strerror}", markup=False)
            failed = True
            continue
        searching = _search_problems(path, text)
        problems = validate_text(text) if searching is None else searching
        for problem in problems:
            typer.echo(f"{path}: {problem}")
        failed = failed or bool(problems)
        if not problems:
            typer.echo(f"{path}: valid")
    if failed:
        raise typer.Exit(1)


SHOWN_POINTS = 20
CHECKED_POINTS = 1000


def _described(space: Any, strategy: Any) -> str:
    """The size of a search space, and how much of it the budget lets the sampler draw."""
    budget = strategy.budget()
    drawn = "" if budget is None or budget >= len(space) else f"; {budget} drawn by the {strategy.sampler} sampler"
    return f"search over {len(space)} points (joint, {strategy.sampler}{drawn})"


def _search_problems(path: Path, text: str) -> list[str] | None:
    """For a manifest that searches: print its space (the points, or their number) and check each
    point's manifest (the first CHECKED_POINTS); None for one that does not search."""
    from olivekube.search.config import concrete, search_of

    try:
        found = search_of(load_yaml(text))
    except yaml.YAMLError:
        return None
    except ValueError as exc:
        return [str(exc)]
    if found is None:
        return None
    space, strategy = found
    size = len(space)
    typer.echo(f"{path}: {_described(space, strategy)}")
    problems = []
    for point in itertools.islice(space.points(), CHECKED_POINTS):
        if point.index < SHOWN_POINTS:
            typer.echo(f"  point {point.index}: {json.dumps(point.parameters())}")
        doc = concrete(load_yaml(text), point)
        problems += [
            f"point {point.index} {json.dumps(point.parameters())}: {p}"
            for p in validate_text(yaml.safe_dump(doc))
        ]
    if size > SHOWN_POINTS:
        typer.echo(f"  … {size - SHOWN_POINTS} more")
    return problems


def _load_workflow(path: Path) -> OptimizationWorkflow:
    """A manifest, or an Olive config (either form) converted on the fly."""
    return _workflow_of(path, _load(path))


def _workflow_of(path: Path, data: Any) -> OptimizationWorkflow:
    """`data` (read from `path`) as a workflow; problems go to stderr (exit 1)."""
    if isinstance(data, dict) and "input_model" in data and "spec" not in data:
        data = _convert(path, data, None, None)
    try:
        return parse_workflow(data)
    except ValidationError as exc:
        for problem in problems_from_error(exc):
            err.print(f"{path}: {problem}", markup=False, highlight=False)
        raise typer.Exit(1) from exc


def _search_here(
    file: Path,
    data: dict[str, Any],
    space: Any,
    strategy: Any,
    cache_dir: str | None,
    output_dir: str | None,
    topology: Any,
) -> int:
    """`olivekube run` of a workflow that searches: its trials, here."""
    from olivekube.entrypoints.local_search import run_search
    from olivekube.runner.process import leave_out_bitsandbytes

    def trial_workflow(doc: dict[str, Any]) -> OptimizationWorkflow:
        """One trial's workflow; ValueError naming the fields when its options are wrong (a failed trial)."""
        try:
            if "input_model" in doc and "spec" not in doc:
                doc, _ = to_manifest(doc, manifest_name(str(doc.get("workflow_id") or file.stem)))
            workflow = parse_workflow(doc)
        except ConvertError as exc:
            raise ValueError("; ".join(str(p) for p in exc.problems)) from exc
        except ValidationError as exc:
            raise ValueError("; ".join(str(p) for p in problems_from_error(exc))) from exc
        leave_out_bitsandbytes(workflow.spec)
        return workflow

    base = file.resolve().parent
    return run_search(
        data,
        space,
        strategy,
        trial_workflow,
        base,
        Console(),
        cache_dir=cache_dir,
        output_dir=output_dir,
        topology=topology,
    )


@app.command()
def run(
    file: Annotated[Path, typer.Argument(help="Workflow manifest, or an Olive config (legacy or current form).")],
    cache_dir: Annotated[str | None, typer.Option(help="Override spec.cache_dir.")] = None,
    output_dir: Annotated[str | None, typer.Option(help="Override spec.output_dir.")] = None,
    summary_json: Annotated[Path | None, typer.Option(help="Also write the summary as JSON here.")] = None,
    nproc_per_node: Annotated[
        int,
        typer.Option(
            min=1, max=64, help="Processes that train each training pass together (data-parallel; one per GPU)."
        ),
    ] = 1,
) -> None:
    """Run a whole workflow on this machine. Relative paths in it are relative to its folder. A workflow
    that searches (search_strategy, searchable options, alternatives) runs its trials here."""
    from olivekube.entrypoints.local_run import run_local
    from olivekube.runner.distributed import Topology
    from olivekube.runner.process import end_process, leave_out_bitsandbytes
    from olivekube.search.config import search_of

    data = _load(file)
    try:
        found = search_of(data)
    except ValueError as exc:
        err.print(f"{file}: {exc}", markup=False, highlight=False)
        raise typer.Exit(1) from exc
    if found is not None:
        end_process(
            _search_here(file, data, *found, cache_dir, output_dir, Topology(nproc_per_node=nproc_per_node))
        )
    workflow = _workflow_of(file, data)
    leave_out_bitsandbytes(workflow.spec)
    code = run_local(
        workflow,
        file.resolve().parent,
        Console(),
        summary_json,
        cache_dir=cache_dir,
        output_dir=output_dir,
        topology=Topology(nproc_per_node=nproc_per_node),
    )
    end_process(code)


@app.command()
def evaluate(
    model: Annotated[
        str, typer.Argument(help="A model folder or URI (ONNX, Hugging Face, PEFT adapter) or an output_dir.")
    ],
    config: Annotated[
        Path, typer.Option("--config", "-c", help="Workflow manifest or Olive config with evaluators.")
    ],
    evaluator: Annotated[
        str | None, typer.Option(help="Evaluator to use. Default: the config's evaluator.")
    ] = None,
) -> None:
    """Measure one model with a config's evaluator (its input model is the baseline of degradation
    goals); exit 1 when a goal is missed."""
    from olivekube.entrypoints.evaluate import evaluate_model
    from olivekube.runner.process import end_process

    workflow = _load_workflow(config)
    end_process(evaluate_model(workflow, config.resolve().parent, model, evaluator))


def _encode(model: Path, tokenizer: Any, prompt: str) -> list[int]:
    """Encode the prompt as training saw its texts: "{bos} {text}" (Olive's and olivekube's
    pre-processing with add_special_tokens), with the model's own Hugging Face tokenizer."""
    hf_tokenizer = model / "tokenizer.json"
    if not hf_tokenizer.is_file():
        return list(tokenizer.encode(prompt))
    from tokenizers import Tokenizer

    config_path = model / "tokenizer_config.json"
    bos = json.loads(config_path.read_text()).get("bos_token") if config_path.is_file() else None
    if isinstance(bos, dict):
        bos = bos.get("content")
    text = f"{bos} {prompt}" if bos else prompt
    return list(Tokenizer.from_file(str(hf_tokenizer)).encode(text, add_special_tokens=False).ids)


@app.command()
def runner(
    pass_name: Annotated[str, typer.Option("--pass", help="The pass to run.")],
    workflow: Annotated[
        str | None, typer.Option(help="NAMESPACE/NAME of the OptimizationWorkflow (in a Kubernetes Job).")
    ] = None,
    output: Annotated[
        Path | None, typer.Option(help="Without --workflow: write the pass's output here (an Azure ML job).")
    ] = None,
    model: Annotated[Path | None, typer.Option(help="Without --workflow: the previous pass's output.")] = None,
    base: Annotated[Path | None, typer.Option(help="Without --workflow: the input model.")] = None,
    data_file: Annotated[
        list[str] | None, typer.Option(help="Without --workflow: URI=PATH, a data file's local copy.")
    ] = None,
) -> None:
    """Run one pass: of a workflow in the cluster (the operator's Jobs), or, without --workflow, of
    the workflow in OLIVEKUBE_WORKFLOW into --output (what an Azure ML job runs)."""
    from olivekube.entrypoints.in_job_runner import run_in_cluster
    from olivekube.runner.process import end_process, quiet_libraries

    if workflow is None:
        _run_standalone(pass_name, output, model, base, data_file or [])
        return
    if "/" not in workflow:
        err.print("[red]error:[/] --workflow must be NAMESPACE/NAME")
        raise typer.Exit(2)
    quiet_libraries()
    namespace, name = workflow.split("/", 1)
    end_process(run_in_cluster(namespace, name, pass_name, Path.cwd()))


def _run_standalone(
    pass_name: str, output: Path | None, model: Path | None, base: Path | None, data_files: list[str]
) -> None:
    from olivekube.core.errors import PassError
    from olivekube.entrypoints.azureml_job import run_standalone
    from olivekube.runner.process import quiet_libraries

    if output is None:
        err.print("[red]error:[/] --output is required without --workflow")
        raise typer.Exit(2)
    pairs = dict(item.split("=", 1) for item in data_files if "=" in item)
    if len(pairs) != len(data_files):
        err.print("[red]error:[/] --data-file takes URI=PATH")
        raise typer.Exit(2)
    quiet_libraries()
    try:
        run_standalone(pass_name, output, model, base, pairs)
    except PassError as exc:
        err.print(f"[red]error:[/] {exc}")
        raise typer.Exit(1) from exc


Names = list[str] | None


def _opt(help_text: str) -> Any:
    """A typer option with its help (keeps long signatures to one line per option)."""
    return typer.Option(help=help_text)


# The operator's policy options (the chart's policy.* and runner.* values).
ImagePrefixes = Annotated[Names, _opt("An image prefix workflows may name (and the runner image).")]
ServiceAccounts = Annotated[Names, _opt("A ServiceAccount workflows may name (and the runner's).")]
RunnerSecrets = Annotated[
    Names, _opt("A Secret (in the workflow's namespace) whose keys every runner gets as env.")
]
CachePrefixes = Annotated[
    Names, _opt("A cache URI prefix the operator may read itself (its own credentials) to skip Jobs.")
]
RunnerNamespaces = Annotated[
    Names, _opt("A namespace where workflows may run (cluster-wide mode); none: every watched one.")
]
WritablePrefixes = Annotated[
    Names,
    _opt(
        "A URI prefix under which cache_dir and output_dir must lie ({namespace}: the workflow's); none: anywhere."
    ),
]


StartTimeout = Annotated[
    float, _opt("Seconds a pass's pods may wait to start (unschedulable, pull errors) before it fails.")
]
RendezvousPolicies = Annotated[
    bool, _opt("A NetworkPolicy per several-pod Job admitting its own pods (pair with a deny-all one).")
]


@app.command()
def operator(
    namespace: Annotated[
        Names, typer.Option("--namespace", "-n", help="Watch these namespaces (default all).")
    ] = None,
    runner_image: Annotated[str, _opt("Default runner image.")] = "olivekube/runner:0.1.0",
    runner_service_account: Annotated[
        str, _opt("A ServiceAccount every workflow may name (passes run as their own by default).")
    ] = "olivekube-runner",
    metrics_port: Annotated[int, _opt("Prometheus /metrics port (0: off).")] = 8080,
    liveness_port: Annotated[int, _opt("kopf liveness /healthz port (0: off).")] = 8081,
    peering: Annotated[str | None, _opt("kopf peering name, for more than one replica.")] = None,
    peering_lifetime: Annotated[int, _opt("Seconds a replica's keep-alive lasts (failover time).")] = 60,
    retry_backoff_seconds: Annotated[float, _opt("First retry delay; doubles per failure.")] = 10.0,
    allowed_image_prefix: ImagePrefixes = None,
    allowed_service_account: ServiceAccounts = None,
    allowed_priority_class: Annotated[Names, _opt("A priority class workflows may name (default: none).")] = None,
    runner_env_from_secret: RunnerSecrets = None,
    cache_lookup_prefix: CachePrefixes = None,
    runner_namespace: RunnerNamespaces = None,
    writable_prefix: WritablePrefixes = None,
    scratch_size_limit: Annotated[str, _opt("sizeLimit of the runner's /tmp emptyDir.")] = "100Gi",
    scratch_request: Annotated[str, _opt("ephemeral-storage request of runner containers.")] = "10Gi",
    cpu_request: Annotated[str, _opt("CPU request of a pass that names no resources.")] = "1",
    memory_request: Annotated[str, _opt("Memory request of a pass that names no resources.")] = "4Gi",
    job_ttl_seconds: Annotated[
        int, _opt("ttlSecondsAfterFinished of Jobs whose workflow names none (negative: keep them).")
    ] = 86400,
    termination_grace_seconds: Annotated[
        int, _opt("terminationGracePeriodSeconds of runner pods: time to checkpoint after SIGTERM.")
    ] = 120,
    start_timeout_seconds: StartTimeout = 300.0,
    rendezvous_network_policies: RendezvousPolicies = False,
) -> None:
    """Run the operator: reconcile OptimizationWorkflows into Jobs, one per pass."""
    from olivekube.operator.jobs import OperatorSettings
    from olivekube.operator.main import run_operator

    settings = OperatorSettings(
        runner_image=runner_image,
        service_account=runner_service_account,
        scratch_size_limit=scratch_size_limit,
        scratch_request=scratch_request,
        cpu_request=cpu_request,
        memory_request=memory_request,
        job_ttl_seconds=job_ttl_seconds if job_ttl_seconds >= 0 else None,
        termination_grace_seconds=termination_grace_seconds,
        allowed_images=tuple(allowed_image_prefix or ()),
        allowed_service_accounts=tuple(allowed_service_account or ()),
        allowed_priority_classes=tuple(allowed_priority_class or ()),
        cache_lookup_prefixes=tuple(cache_lookup_prefix or ()),
        runner_env_from_secrets=tuple(runner_env_from_secret or ()),
        writable_prefixes=tuple(writable_prefix or ()),
        runner_namespaces=tuple(runner_namespace or ()),
        rendezvous_network_policies=rendezvous_network_policies,
        start_timeout_seconds=start_timeout_seconds,
    )
    run_operator(
        namespace or [], settings, metrics_port, liveness_port, peering, retry_backoff_seconds, peering_lifetime
    )


@app.command()
def watch(
    name: Annotated[str, typer.Argument(help="Workflow name.")],
    namespace: Annotated[str, typer.Option("--namespace", "-n", help="Namespace.")] = "default",
) -> None:
    """Show a workflow's progress live, until it succeeds or fails."""
    from olivekube.entrypoints.watch import watch_workflow

    raise typer.Exit(watch_workflow(namespace, name, Console()))


@app.command()
def generate(
    model: Annotated[
        Path, typer.Argument(help="An ONNX model folder written by the ModelBuilder pass, or an output_dir.")
    ],
    prompt: Annotated[str, typer.Option("--prompt", "-p", help="Text to continue.")] = "Hello",
    max_new_tokens: Annotated[int, typer.Option(help="Tokens to generate after the prompt.")] = 16,
    adapter: Annotated[
        str | None,
        typer.Option(help="Generate with this adapter (adapters/NAME.onnx_adapter, written by ExtractAdapters)."),
    ] = None,
) -> None:
    """Greedy generation with onnxruntime-genai, to try a built model (with one of its adapters)."""
    import onnxruntime_genai as og

    from olivekube.storage.outputs import current_model

    current = current_model(str(model))  # an output_dir: its current version
    model = Path(current) if current else model
    if not (model / "genai_config.json").is_file():
        err.print(f"[red]error:[/] {model} is not an onnxruntime-genai model folder (no genai_config.json)")
        raise typer.Exit(1)
    m = og.Model(str(model))
    tokenizer = og.Tokenizer(m)
    params = og.GeneratorParams(m)
    tokens = _encode(model, tokenizer, prompt)
    params.set_search_options(max_length=len(tokens) + max_new_tokens, do_sample=False)
    generator = og.Generator(m, params)
    if adapter is not None:
        files = {p.name.removesuffix(".onnx_adapter"): p for p in (model / "adapters").glob("*.onnx_adapter")}
        if adapter not in files:
            known = ", ".join(sorted(files)) or "none: the model has no adapters"
            err.print(f"error: {model} has no adapter {adapter!r} (its adapters: {known})", markup=False)
            raise typer.Exit(1)
        adapters = og.Adapters(m)
        adapters.load(str(files[adapter]), adapter)
        generator.set_active_adapter(adapters, adapter)
    generator.append_tokens(tokens)
    while not generator.is_done():
        generator.generate_next_token()
    typer.echo(prompt + tokenizer.decode(generator.get_sequence(0)[len(tokens) :]))


@app.command()
def doctor(
    device: Annotated[
        str, typer.Option(help="cuda: check this node's GPU path; cpu: what a CPU node runs (gloo, CPU builds).")
    ] = "cuda",
    as_json: Annotated[bool, typer.Option("--json", help="Print the checks as JSON instead of a table.")] = False,
    steps: Annotated[int, typer.Option(help="Training steps of the QLoRA pass.")] = 30,
    hidden: Annotated[int, typer.Option(help="Hidden size of the tiny Llama-config model.")] = 256,
    layers: Annotated[int, typer.Option(help="Layers of the tiny model.")] = 4,
    new_tokens: Annotated[int, typer.Option(help="Tokens each generation check makes.")] = 32,
) -> None:
    """Check that this node runs olivekube's passes: environment, CUDA libraries, a process group, a tiny
    QLoRA, merge and int4 build, and generation. Exit status 1 when a check failed or could not run."""
    from rich.table import Table

    from olivekube.doctor.checks import Doctor

    if device not in ("cuda", "cpu"):
        err.print(f"error: --device {device!r}: use cuda or cpu", markup=False)
        raise typer.Exit(2)
    checks = Doctor(
        device,  # type: ignore[arg-type]
        steps=steps,
        hidden=hidden,
        layers=layers,
        new_tokens=new_tokens,
        say=lambda line: err.print(line, markup=False, highlight=False),
    ).run()
    if as_json:
        typer.echo(json.dumps([c.as_json() for c in checks], indent=1))
    else:
        table = Table(title=f"olivekube doctor --device {device}")
        for column in ("check", "result", "seconds", "detail"):
            table.add_column(column, overflow="fold")
        colours = {"ok": "green", "skipped": "dim", "failed": "red", "not checked": "yellow"}
        for c in checks:
            table.add_row(c.name, Text(c.state, style=colours[c.state]), f"{c.seconds:.1f}", c.detail)
        Console(soft_wrap=False).print(table)
    raise typer.Exit(0 if all(c.ok for c in checks) else 1)


if __name__ == "__main__":
    app()
