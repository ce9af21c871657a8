"""Every benchmark that fits the test command runs at its smallest size, so none breaks unseen: each
must exit 0 and print its figures (the numbers themselves are the benchmark's to judge, not a test's)."""

from __future__ import annotations

import re
import subprocess
import sys
from pathlib import Path

REPO = Path(__file__).resolve().parents[2]
NUMBER = r"[0-9]+(?:\.[0-9]+)?"


def bench(script: str, *args: str, timeout: float = 600) -> str:
    out = subprocess.run(
        [sys.executable, str(REPO / "benchmarks" / script), *args],
        capture_output=True,
        text=True,
        timeout=timeout,
        cwd=REPO,
    )
    assert out.returncode == 0, out.stdout[-3000:] + out.stderr[-3000:]
    return out.stdout


def test_operator_scale_runs_small_and_prints_its_figures() -> None:
    out = bench(
        "operator_scale.py",
        "--workflows",
        "20",
        "--timeout",
        "120",
        "--arrivals",
        "5",
        "--rate",
        "10",
        "--idle",
        "2",
    )
    assert "workflows with a Job: 20, the last" in out, out
    assert re.search(rf"workflows with a Job: 5; created → first Job: p50 {NUMBER}s  p99 {NUMBER}s", out), out
    assert re.search(rf"API requests while idle: {NUMBER}/s", out), out
    assert re.search(rf"API requests per workflow \(every client\): {NUMBER}", out), out
    assert re.search(rf"operator stopped {NUMBER}s after SIGTERM", out), out
    assert re.search(rf"peak RSS: {NUMBER} MB", out), out
    assert re.search(rf"  operator: {NUMBER}s", out), out  # CPU seconds per process


def test_distributed_runs_small_and_prints_its_figures() -> None:
    out = bench("distributed.py", "--steps", "10", "--repeat", "1")  # one checkpoint
    assert re.search(rf"speed-up 2/1: {NUMBER}x", out), out
    assert re.search(rf"one checkpoint: {NUMBER} MB", out), out


def test_evaluation_runs_and_prints_its_figures(tiny_models) -> None:  # type: ignore[no-untyped-def]
    out = bench("evaluation.py", "--model", str(tiny_models["phi3"]))
    assert re.search(rf"evaluation adds: +-?{NUMBER} s, ratio {NUMBER}", out), out


def test_vs_olive_runs_small_and_prints_its_figures() -> None:
    """Olive 0.13 in its side virtualenv (uv, from the shared download cache) against olivekube run."""
    out = bench("vs_olive.py", "--steps", "5", "--repeat", "1")
    assert re.search(rf"wall time \(s\) +{NUMBER} +{NUMBER} +{NUMBER}", out), out
    assert re.search(rf"wall-time ratio of each pair: {NUMBER}", out), out
    assert re.search(rf"pass builder \(s\) +{NUMBER} +{NUMBER}", out), out


def test_vs_olive_search_runs_small_and_both_tools_search_alike() -> None:
    """The same search config through both: the same 4 trials, each pass run once per distinct input
    and options, and the same best candidate."""
    out = bench("vs_olive.py", "--search", "--steps", "5", "--repeat", "1")
    assert re.search(rf"median wall ratio: {NUMBER}", out), out
    assert "trials: olivekube 4, olive 4" in out, out
    runs = "lora 2/2, mergeadapterweights 2/2, modelbuilder 4/4"
    assert f"pass runs executed (olivekube/olive): {runs}" in out, out
    assert re.search(r"best \(.*\): olivekube \(4, 128, .*\): same", out), out
