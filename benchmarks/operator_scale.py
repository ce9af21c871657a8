"""Operator at scale: 500 workflows applied at once on the real control plane.

Prints the time from apply to each workflow's first Job (p50, p99), the operator's peak RSS, and API
requests per workflow from the API server's own /metrics. No node agent runs, so the Jobs' pods
stay pending: this measures the operator, not training. Targets: p50 < 0.5 s, p99 < 3 s,
RSS < 300 MB, requests per workflow bounded (no polling).

    .venv/bin/python benchmarks/operator_scale.py [--workflows 500]
"""

from __future__ import annotations

import argparse
import re
import statistics
import subprocess
import sys
import threading
import time
from pathlib import Path

import yaml

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))


def requests_total(cp) -> float:  # type: ignore[no-untyped-def]
    text = cp.get("/metrics", timeout=30)
    return sum(float(m) for m in re.findall(r"^apiserver_request_total\{[^}]*\} ([0-9.e+]+)$", text, flags=re.M))


def workflow(i: int) -> dict:  # type: ignore[type-arg]
    return {
        "apiVersion": "olivekube.io/v1alpha1",
        "kind": "OptimizationWorkflow",
        "metadata": {"name": f"wf-{i:04d}", "namespace": "scale"},
        "spec": {
            "input_model": {"model_path": "s3://models/tiny"},
            "data_configs": [
                {"name": "d", "load_dataset_config": {"data_name": "json", "data_files": "s3://d/x.json"}}
            ],
            "passes": {"lora": {"type": "LoRA", "train_data_config": "d", "r": 1 + i % 64}},
        },
    }


def main() -> None:
    import psutil
    from kubernetes import client, config, watch

    from tools.controlplane.harness import ControlPlane, bin_dir

    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--workflows", type=int, default=500)
    args = parser.parse_args()
    import tempfile

    cp = ControlPlane(workdir=Path(tempfile.mkdtemp(prefix="olivekube-scale-")), bin=bin_dir())
    cp.start(node_agent=False)
    try:
        cp.kubectl("apply", "--server-side", "-f", str(REPO / "crds" / "olivekube.io_optimizationworkflows.yaml"))
        for _ in range(60):  # the CRD can take a moment to be listed, then to be Established
            crd = "crd/optimizationworkflows.olivekube.io"
            if cp.kubectl("wait", "--for=condition=Established", crd, "--timeout=5s", check=False).returncode == 0:
                break
            time.sleep(0.5)
        cp.kubectl("create", "namespace", "scale")
        operator = subprocess.Popen(
            [
                str(REPO / ".venv/bin/olivekube"),
                "operator",
                "--namespace",
                "scale",
                "--metrics-port",
                "0",
                "--liveness-port",
                "0",
            ],
            env=cp.env(),
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
        )
        time.sleep(8)  # operator start-up (imports, first list)
        config.load_kube_config(str(cp.kubeconfig))
        first_job: dict[str, float] = {}
        created: dict[str, float] = {}
        peak = [0.0]
        stop = threading.Event()

        def watch_jobs() -> None:
            for event in watch.Watch().stream(
                client.BatchV1Api().list_namespaced_job, "scale", timeout_seconds=600
            ):
                owner = event["object"].metadata.labels.get("olivekube.io/workflow")
                first_job.setdefault(owner, time.monotonic())
                if len(first_job) >= args.workflows or stop.is_set():
                    return

        def watch_workflows() -> None:
            stream = watch.Watch().stream(
                client.CustomObjectsApi().list_namespaced_custom_object,
                "olivekube.io",
                "v1alpha1",
                "scale",
                "optimizationworkflows",
                timeout_seconds=600,
            )
            for event in stream:
                created.setdefault(event["object"]["metadata"]["name"], time.monotonic())
                if len(created) >= args.workflows or stop.is_set():
                    return

        def sample_rss() -> None:
            proc = psutil.Process(operator.pid)
            while not stop.is_set():
                peak[0] = max(peak[0], proc.memory_info().rss / 2**20)
                time.sleep(0.2)

        watcher = threading.Thread(target=watch_jobs, daemon=True)
        watcher.start()
        threading.Thread(target=watch_workflows, daemon=True).start()
        threading.Thread(target=sample_rss, daemon=True).start()
        before = requests_total(cp)
        manifest = yaml.safe_dump_all([workflow(i) for i in range(args.workflows)])
        applied = time.monotonic()
        cp.kubectl("apply", "--server-side", "-f", "-", input=manifest)
        applied_done = time.monotonic()
        watcher.join(timeout=600)
        time.sleep(5)  # let the operator finish its status writes
        after = requests_total(cp)
        stop.set()
        # From the moment a workflow exists in the API server (seen by a watch) to its first Job.
        latencies = sorted(first_job[n] - created[n] for n in first_job if n in created)
        operator.terminate()
        operator.wait(timeout=20)
        p50 = statistics.median(latencies)
        p99 = latencies[min(len(latencies) - 1, int(len(latencies) * 0.99))]
        print(f"workflows applied: {args.workflows} (kubectl apply took {applied_done - applied:.1f}s)")
        print(f"workflows with a Job: {len(first_job)}")
        print(f"workflow created → first Job: p50 {p50:.2f}s  p99 {p99:.2f}s  (targets 0.5s / 3s)")
        print(f"operator peak RSS: {peak[0]:.0f} MB (target 300 MB)")
        per_workflow = (after - before) / args.workflows
        print(f"API requests per workflow (all clients: kubectl, controllers, operator): {per_workflow:.1f}")
    finally:
        cp.stop()


if __name__ == "__main__":
    main()
