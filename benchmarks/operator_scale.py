"""Operator at scale: N workflows created at once on the real control plane (default 2,000).

Two phases. The burst: N workflows applied at once, as `kubectl apply --server-side -f` applies one
file of them (the default), or created by `--clients K` clients in parallel, as fast as the API
server takes them; prints creation → first Job (p50, p99) and the throughput, which on a small
machine is bound by the API server's writes (about 7 per workflow), not by the operator. At scale:
with the N workflows and their Jobs held, new workflows arrive at a steady rate (`--arrivals` at
`--rate` per second, as a team's submissions do); prints their creation → first Job (p50, p99) and
the API requests per second while idle with N workflows held (no polling: the operator's are near
zero). Also the operator's peak RSS, the API requests per workflow (from the API server's own
/metrics, all clients together, and the largest kinds by verb and resource), CPU seconds per
process, and how long the operator takes to stop after SIGTERM. No node agent runs, so the Jobs'
pods stay pending: this measures the operator, not training. Targets: p99 < 1 s, RSS < 300 MB,
requests per workflow bounded (no LIST per Job per tick), stop within a few seconds.

    .venv/bin/python benchmarks/operator_scale.py [--workflows 2000]
"""

from __future__ import annotations

import argparse
import contextlib
import json
import re
import statistics
import subprocess
import sys
import tempfile
import threading
import time
from collections import Counter
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))
NS = "scale"
REQUEST = re.compile(r"^apiserver_request_total\{([^}]*)\} ([0-9.e+]+)$", flags=re.M)


def requests_by_kind(cp) -> Counter[str]:  # type: ignore[no-untyped-def]
    """apiserver_request_total summed by `VERB resource` (every client)."""
    counts: Counter[str] = Counter()
    for labels, value in REQUEST.findall(cp.get("/metrics", timeout=30)):
        fields = dict(re.findall(r'(\w+)="([^"]*)"', labels))
        counts[f"{fields.get('verb', '?')} {fields.get('resource', '?')}"] += int(float(value))
    return counts


def cpu_seconds(cp, operator_pid: int) -> Counter[str]:  # type: ignore[no-untyped-def]
    """User+system CPU seconds so far of each control-plane process, the operator and this script."""
    import psutil

    pids = {name: proc.pid for name, proc in cp.processes.items()} | {"operator": operator_pid}
    pids["benchmark (watches, clients)"] = psutil.Process().pid
    seconds: Counter[str] = Counter()
    for name, pid in pids.items():
        with contextlib.suppress(psutil.Error):
            times = psutil.Process(pid).cpu_times()
            seconds[name] = times.user + times.system
    return seconds


def workflow(i: int) -> dict[str, Any]:
    """A one-pass workflow with S3 stores (pod-local ones are refused); distinct options per workflow."""
    return {
        "apiVersion": "olivekube.io/v1alpha1",
        "kind": "OptimizationWorkflow",
        "metadata": {"name": f"wf-{i:04d}", "namespace": NS},
        "spec": {
            "input_model": {"model_path": "s3://models/tiny"},
            "data_configs": [
                {"name": "d", "load_dataset_config": {"data_name": "json", "data_files": "s3://d/x.json"}}
            ],
            "passes": {"lora": {"type": "LoRA", "train_data_config": "d", "r": 1 + i % 64}},
            "cache_dir": "s3://scale/cache",
            "output_dir": f"s3://scale/outputs/wf-{i:04d}",
        },
    }


def _quantiles(latencies: list[float]) -> str:
    if not latencies:
        return "none"
    ordered = sorted(latencies)
    p99 = ordered[min(len(ordered) - 1, int(len(ordered) * 0.99))]
    return f"p50 {statistics.median(ordered):.2f}s  p99 {p99:.2f}s"


def main() -> None:
    import psutil
    from kubernetes import client, config, watch

    from tools.controlplane.harness import ControlPlane, bin_dir

    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--workflows", type=int, default=2000)
    parser.add_argument("--timeout", type=float, default=900, help="seconds to wait for every Job")
    parser.add_argument("--clients", type=int, help="create the burst with this many parallel clients")
    parser.add_argument("--arrivals", type=int, default=100, help="workflows created one by one at scale")
    parser.add_argument("--rate", type=float, default=5.0, help="arrivals per second")
    parser.add_argument("--idle", type=float, default=10.0, help="seconds idle, requests counted, at scale")
    args = parser.parse_args()

    cp = ControlPlane(workdir=Path(tempfile.mkdtemp(prefix="olivekube-scale-")), bin=bin_dir())
    cp.start(node_agent=False)
    try:
        cp.kubectl("apply", "--server-side", "-f", str(REPO / "crds" / "olivekube.io_optimizationworkflows.yaml"))
        for _ in range(60):  # the CRD can take a moment to be listed, then to be Established
            crd = "crd/optimizationworkflows.olivekube.io"
            if cp.kubectl("wait", "--for=condition=Established", crd, "--timeout=5s", check=False).returncode == 0:
                break
            time.sleep(0.5)
        cp.kubectl("create", "namespace", NS)
        command = [str(REPO / ".venv/bin/olivekube"), "operator", "--namespace", NS]
        log = (cp.workdir / "operator.log").open("w")
        operator = subprocess.Popen(
            [*command, "--metrics-port", "0", "--liveness-port", "0"],
            env=cp.env(),
            stdout=log,
            stderr=subprocess.STDOUT,
        )
        time.sleep(8)  # operator start-up (imports, first list)
        if operator.poll() is not None:
            log_text = (cp.workdir / "operator.log").read_text()[-3000:]
            sys.exit(f"the operator exited ({operator.returncode}):\n{log_text}")
        config.load_kube_config(str(cp.kubeconfig))
        first_job: dict[str, float] = {}
        created: dict[str, float] = {}
        peak = [0.0]
        stop = threading.Event()
        all_jobs = threading.Event()

        def watch_jobs() -> None:
            for event in watch.Watch().stream(client.BatchV1Api().list_namespaced_job, NS, timeout_seconds=1800):
                owner = event["object"].metadata.labels.get("olivekube.io/workflow")
                first_job.setdefault(owner, time.monotonic())
                if len(first_job) >= args.workflows:
                    all_jobs.set()
                if len(first_job) >= args.workflows + args.arrivals:
                    return

        def watch_workflows() -> None:
            api = client.CustomObjectsApi()
            stream = watch.Watch().stream(
                api.list_namespaced_custom_object,
                "olivekube.io",
                "v1alpha1",
                NS,
                "optimizationworkflows",
                timeout_seconds=1800,
            )
            for event in stream:
                created.setdefault(event["object"]["metadata"]["name"], time.monotonic())
                if len(created) >= args.workflows + args.arrivals or stop.is_set():
                    return

        def sample_rss() -> None:
            proc = psutil.Process(operator.pid)
            while not stop.is_set():
                peak[0] = max(peak[0], proc.memory_info().rss / 2**20)
                time.sleep(0.2)

        for target in (watch_jobs, watch_workflows, sample_rss):
            threading.Thread(target=target, daemon=True).start()
        time.sleep(1)
        before = requests_by_kind(cp)
        cpu_before = cpu_seconds(cp, operator.pid)
        api = client.CustomObjectsApi()

        def create(i: int) -> None:
            api.create_namespaced_custom_object(
                "olivekube.io", "v1alpha1", NS, "optimizationworkflows", workflow(i)
            )

        began = time.monotonic()
        if args.clients:
            with ThreadPoolExecutor(max_workers=args.clients) as pool:
                list(pool.map(create, range(args.workflows)))
            how = f"by {args.clients} clients"
        else:
            folder = cp.workdir / "burst.yaml"
            folder.write_text("".join("---\n" + json.dumps(workflow(i)) + "\n" for i in range(args.workflows)))
            cp.kubectl("apply", "--server-side", "-f", str(folder))
            how = "by kubectl apply --server-side of one file"
        creating = time.monotonic() - began
        all_jobs.wait(timeout=args.timeout)
        burst_wall = time.monotonic() - began
        time.sleep(5)  # let the operator finish its status writes
        after = requests_by_kind(cp)
        cpu_spent = cpu_seconds(cp, operator.pid) - cpu_before
        idle_seconds = args.idle
        time.sleep(idle_seconds)  # N workflows held, nothing arriving: what does the operator cost?
        idle_kinds = Counter(
            {kind: n for kind, n in (requests_by_kind(cp) - after).items() if not kind.endswith(" ")}
        )  # resources only: not the /metrics, /healthz or /readyz GETs of the benchmark and the probes
        idle = sum(idle_kinds.values())
        for i in range(args.workflows, args.workflows + args.arrivals):
            step = time.monotonic()
            create(i)
            time.sleep(max(0.0, 1 / args.rate - (time.monotonic() - step)))
        deadline = time.monotonic() + 60
        while len(first_job) < args.workflows + args.arrivals and time.monotonic() < deadline:
            time.sleep(0.2)
        stop.set()
        signalled = time.monotonic()
        operator.terminate()
        try:
            operator.wait(timeout=60)
            stopped = f"{time.monotonic() - signalled:.1f}s"
        except subprocess.TimeoutExpired:
            operator.kill()
            stopped = "more than 60s (killed)"
        # From the moment a workflow exists in the API server (seen by a watch) to its first Job.
        names = [f"wf-{i:04d}" for i in range(args.workflows + args.arrivals)]
        burst = [first_job[n] - created[n] for n in names[: args.workflows] if n in first_job and n in created]
        steady = [first_job[n] - created[n] for n in names[args.workflows :] if n in first_job and n in created]
        spent = after - before
        print(f"burst: {args.workflows} workflows created in {creating:.1f}s {how}")
        print(f"  workflows with a Job: {len(burst)}, the last {burst_wall:.1f}s after the first was created")
        rate = args.workflows / burst_wall
        print(f"  {rate:.0f} workflows/s to their Job; created → first Job: {_quantiles(burst)}")
        print(f"at scale: {args.workflows} workflows held; {args.arrivals} more arriving at {args.rate:g}/s")
        kinds = ", ".join(f"{kind} {count / idle_seconds:.1f}/s" for kind, count in idle_kinds.most_common(3))
        print(f"  API requests while idle: {idle / idle_seconds:.1f}/s (every client; {kinds or 'none'})")
        print(f"  workflows with a Job: {len(steady)}; created → first Job: {_quantiles(steady)}  (target p99 1s)")
        print(f"operator peak RSS: {peak[0]:.0f} MB (target 300 MB)")
        print(f"API requests per workflow (every client): {sum(spent.values()) / args.workflows:.1f}")
        for kind, count in spent.most_common(8):
            print(f"  {kind}: {count / args.workflows:.2f} per workflow")
        print(f"operator stopped {stopped} after SIGTERM")
        wall = burst_wall + 5
        print(f"CPU seconds over the burst's {wall:.0f}s (2 cores = {2 * wall:.0f}s at most):")
        for name, seconds in cpu_spent.most_common():
            print(f"  {name}: {seconds:.0f}s")
        if len(first_job) < args.workflows + args.arrivals:
            raise SystemExit(f"only {len(first_job)} of {args.workflows + args.arrivals} workflows got a Job")
    finally:
        cp.stop()


if __name__ == "__main__":
    main()
