"""Evaluators (Olive's keys): accuracy on a held-out split, perplexity, latency, throughput and size
of the input, the merged and the int4 model; goals that fail the run and publish nothing; the report."""

from __future__ import annotations

import copy
import json
import math
import os
import shutil
import subprocess
from pathlib import Path
from typing import Any

import pytest

from olivekube.api.evaluation import MetricGoal
from olivekube.api.workflow import parse_workflow
from olivekube.core.errors import PassError
from olivekube.runner.engine import WorkflowRunner
from olivekube.runner.evaluation import goal_met
from olivekube.storage.outputs import current_model
from tests.helpers.manifests import DATA, LORA, workflow_doc, write
from tests.helpers.processes import olivekube_cli, olivekube_run

FAST = {"warmup_num": 1, "repeat_test_num": 3}


def evaluated_workflow(model: Path, accuracy_goal: dict[str, Any] | None = None, precision: str = "int4") -> dict:
    passes = {
        "lora": LORA,
        "merge": {"type": "MergeAdapterWeights", "evaluator": "tone"},
        "builder": {"type": "ModelBuilder", "precision": precision},
    }
    doc = workflow_doc(str(model), "tone.json", passes)
    train = doc["spec"]["data_configs"][0]
    train["load_dataset_config"]["split"] = "train[:80%]"
    held_out = copy.deepcopy(train)
    held_out["name"] = "held_out"
    held_out["load_dataset_config"]["split"] = "train[80%:]"
    doc["spec"]["data_configs"].append(held_out)
    accuracy: dict[str, Any] = {"name": "accuracy_score"}
    if accuracy_goal:
        accuracy["goal"] = accuracy_goal
    doc["spec"]["evaluators"] = {
        "tone": {
            "metrics": [
                {
                    "name": "accuracy",
                    "type": "accuracy",
                    "data_config": "held_out",
                    "sub_types": [accuracy, {"name": "f1_score"}, {"name": "perplexity"}],
                    "user_config": {"max_samples": 40},
                },
                {
                    "name": "latency",
                    "type": "latency",
                    "sub_types": [{"name": "avg"}, {"name": "p90"}],
                    "user_config": FAST,
                },
                {
                    "name": "throughput",
                    "type": "throughput",
                    "sub_types": [{"name": "avg"}, {"name": "time_to_first_token"}, {"name": "time_per_token"}],
                    "user_config": {**FAST, "max_new_tokens": 8},
                },
                {"name": "size", "type": "size_on_disk", "sub_types": [{"name": "bytes"}]},
            ]
        }
    }
    doc["spec"]["evaluator"] = "tone"
    return doc


def project(tmp_path: Path, doc: dict) -> Path:
    shutil.copy(DATA, tmp_path / "tone.json")
    (tmp_path / "models").mkdir()
    (tmp_path / "models" / "README.txt").write_text("the team's notes")
    doc["spec"]["output_dir"] = "models"
    return write(tmp_path / "wf.json", doc)


def test_input_merged_and_int4_models_are_measured_and_reported(tiny_models, tmp_path: Path) -> None:  # type: ignore[no-untyped-def]
    path = project(tmp_path, evaluated_workflow(tiny_models["phi3"]))
    out = olivekube_run(path)
    assert out.returncode == 0, out.stdout + out.stderr
    assert "evaluation: tone" in out.stdout and "accuracy-accuracy_score" in out.stdout
    final = Path(str(current_model(str(tmp_path / "models"))))
    report = json.loads((final / "olivekube-evaluation.json").read_text())
    assert set(report["models"]) == {"input", "pass:merge", "final"} and report["goalsMet"] is True
    values = {
        role: {f"{v['metric']}-{v['sub_type']}": v for v in vs["tone"]} for role, vs in report["models"].items()
    }
    for role in values:
        assert 0 <= values[role]["accuracy-accuracy_score"]["value"] <= 1
        assert values[role]["accuracy-perplexity"]["value"] > 1
        assert values[role]["latency-avg"]["value"] > 0 and values[role]["throughput-avg"]["value"] > 0
        assert values[role]["size-bytes"]["value"] > 0
    # Training moved the model: the merged model's perplexity on data it never saw is below the input's,
    # and each later model's values name the input model's as their baseline.
    assert values["pass:merge"]["accuracy-perplexity"]["value"] < values["input"]["accuracy-perplexity"]["value"]
    assert values["final"]["size-bytes"]["baseline"] == values["input"]["size-bytes"]["value"]
    assert values["final"]["size-bytes"]["value"] < values["pass:merge"]["size-bytes"]["value"]  # int4
    assert report["training"]["lora"] and any("loss" in e for e in report["training"]["lora"])
    page = (final / "olivekube-evaluation.html").read_text()
    assert page.count("<svg") == 2 and "polyline" in page and "metric comparison" in page
    assert (tmp_path / "models" / "README.txt").read_text() == "the team's notes"
    # The same evaluator on its own, on the published model (an output_dir, or its version folder).
    evaluated = olivekube_cli("evaluate", str(tmp_path / "models"), "-c", str(path))
    assert evaluated.returncode == 0, evaluated.stdout + evaluated.stderr
    assert "accuracy-accuracy_score" in evaluated.stdout and "│ model" in evaluated.stdout
    doc = json.loads(path.read_text())
    doc["spec"]["evaluators"]["tone"]["metrics"][0]["sub_types"][0]["goal"] = {"type": "threshold", "value": 1.01}
    strict = write(tmp_path / "strict.json", doc)
    missed = olivekube_cli("evaluate", str(final), "-c", str(strict))
    assert missed.returncode == 1 and "GoalNotMet" in " ".join(missed.stdout.split())


@pytest.mark.parametrize(
    ("change", "named"),
    [
        (lambda doc: doc, "accuracy-accuracy_score"),  # a threshold of 1.01 cannot be met
        (
            lambda doc: doc["spec"]["evaluators"]["tone"]["metrics"][1]["sub_types"][0].update(
                goal={"type": "threshold", "value": 0.000001}
            ),
            "latency-avg",  # a microsecond per forward pass: below what this machine can do
        ),
    ],
    ids=["accuracy", "latency"],
)
def test_a_goal_that_cannot_be_met_fails_the_run_and_publishes_nothing(  # type: ignore[no-untyped-def]
    tiny_models, tmp_path: Path, change, named: str
) -> None:
    doc = evaluated_workflow(
        tiny_models["phi3"], {"type": "threshold", "value": 1.01} if named.startswith("acc") else None
    )
    change(doc)
    doc["spec"]["passes"]["merge"].pop("evaluator")
    path = project(tmp_path, doc)
    out = olivekube_run(path)
    text = " ".join((out.stdout + out.stderr).split())
    assert out.returncode == 1, text
    assert "GoalNotMet" in text and named in text and "Nothing was published" in text
    assert sorted(p.name for p in (tmp_path / "models").iterdir()) == ["README.txt"]


def test_an_olive_config_with_evaluators_runs(tiny_models, tmp_path: Path) -> None:  # type: ignore[no-untyped-def]
    """The same workflow as an Olive config (current form, Olive's evaluator keys), run as it is."""
    from olivekube.api.olive_config import spec_to_olive

    doc = evaluated_workflow(tiny_models["phi3"], {"type": "min-improvement", "value": -1.0})
    shutil.copy(DATA, tmp_path / "tone.json")
    config = spec_to_olive(doc["spec"])
    config["evaluators"]["tone"]["metrics"][1]["user_config"]["io_bind"] = True  # an ORT setting: dropped
    (tmp_path / "olive-config.json").write_text(json.dumps(config))
    out = olivekube_run(tmp_path / "olive-config.json")
    assert out.returncode == 0, out.stdout + out.stderr
    assert "user_config.io_bind: dropped" in out.stderr
    assert "evaluation: tone" in out.stdout and "│ yes │" in out.stdout  # the goal, met


def test_onnx_and_pytorch_perplexity_agree(tiny_models, tmp_path: Path) -> None:  # type: ignore[no-untyped-def]
    """The same fp32 model scored by transformers (the merged model) and by onnxruntime-genai (its
    fp32 ONNX build): the two perplexities agree, so either side of a degradation goal is fair."""
    shutil.copy(DATA, tmp_path / "tone.json")
    doc = evaluated_workflow(tiny_models["phi3"], precision="fp32")
    runner = WorkflowRunner(parse_workflow(doc), tmp_path)
    runner.run()
    models = runner.acceptance.report["models"]
    merged = {v["sub_type"]: v["value"] for v in models["pass:merge"]["tone"] if v["metric"] == "accuracy"}
    onnx = {v["sub_type"]: v["value"] for v in models["final"]["tone"] if v["metric"] == "accuracy"}
    assert math.isclose(merged["perplexity"], onnx["perplexity"], rel_tol=1e-3), (merged, onnx)
    assert merged["accuracy_score"] == onnx["accuracy_score"]


def test_a_metric_the_target_cannot_run_here_is_refused_before_any_pass(tiny_models, tmp_path: Path) -> None:  # type: ignore[no-untyped-def]
    doc = evaluated_workflow(tiny_models["phi3"])
    doc["spec"]["systems"] = {
        "gpu": {
            "type": "LocalSystem",
            "accelerators": [{"device": "gpu", "execution_providers": ["CUDAExecutionProvider"]}],
        }
    }
    doc["spec"]["target"] = "gpu"
    shutil.copy(DATA, tmp_path / "tone.json")
    doc["spec"]["cache_dir"] = str(tmp_path / "cache")
    with pytest.raises(PassError) as exc:
        WorkflowRunner(parse_workflow(doc), tmp_path).run()
    assert (
        exc.value.field == "spec.evaluators.tone.metrics.0.type" and "CUDAExecutionProvider" in exc.value.message
    )
    assert not (tmp_path / "cache" / "passes").exists()


@pytest.mark.parametrize(
    ("goal", "value", "baseline", "higher", "met"),
    [
        (("threshold", 0.8), 0.81, None, True, True),
        (("threshold", 0.8), 0.79, None, True, False),
        (("threshold", 10.0), 9.0, None, False, True),  # latency: at most 10 ms
        (("max-degradation", 0.05), 0.86, 0.9, True, True),
        (("max-degradation", 0.05), 0.84, 0.9, True, False),
        (("min-improvement", 2.0), 7.0, 10.0, False, True),  # latency down by 3 ms
        (("min-improvement", 2.0), 9.0, 10.0, False, False),
        (("percent-max-degradation", 10.0), 0.82, 0.9, True, True),
        (("percent-max-degradation", 10.0), 0.80, 0.9, True, False),
        (("percent-min-improvement", 20.0), 7.9, 10.0, False, True),
        (("percent-min-improvement", 20.0), 8.1, 10.0, False, False),
    ],
)
def test_goal_types_as_olive_defines_them(goal, value, baseline, higher, met) -> None:  # type: ignore[no-untyped-def]
    assert goal_met(MetricGoal(type=goal[0], value=goal[1]), value, baseline, higher) is met


def screenshot(page: Path, size: str) -> list[tuple[int, ...]]:
    """The pixels of `page` as a real headless browser (Debian's chromium) draws it at `size`."""
    from tests.helpers.png import pixels

    browser = shutil.which("chromium-headless-shell") or shutil.which("chromium")
    assert browser, "no chromium: tools/setup.sh installs Debian's chromium-headless-shell"
    shot = page.with_suffix(".png")
    done = subprocess.run(
        [
            browser,
            "--no-sandbox",
            "--disable-gpu",
            "--hide-scrollbars",
            f"--screenshot={shot}",
            f"--window-size={size}",
            page.as_uri(),
        ],
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert shot.exists(), done.stderr
    return pixels(shot)


def test_the_html_report_shows_the_loss_curve_and_the_metric_chart_in_a_browser(tmp_path: Path) -> None:
    """The page, opened by a real headless browser (Debian's chromium): the screenshot holds the loss
    curve's and the bars' colours, not a blank page."""
    from olivekube.runner.report import COLOURS, render_html

    log = [{"step": s, "loss": 3.0 - 0.1 * s} for s in range(1, 11)] + [{"step": 10, "eval_loss": 2.5}]
    value = {"metric": "accuracy", "sub_type": "accuracy_score", "higher_is_better": True}
    report = {
        "evaluator": "tone",
        "goalsMet": True,
        "models": {"input": {"tone": [{**value, "value": 0.4}]}, "final": {"tone": [{**value, "value": 0.9}]}},
        "training": {"lora": log},
    }
    page = tmp_path / "report.html"
    page.write_text(render_html(report))
    seen = screenshot(page, "800,900")
    white = sum(p == (255, 255, 255) for p in seen)
    assert white < 0.97 * len(seen), "the page is blank"
    for colour in COLOURS[:2]:  # the loss curve and the input model's bars; eval loss and the final's
        rgb = tuple(int(colour[i : i + 2], 16) for i in (1, 3, 5))
        assert sum(p == rgb for p in seen) > 100, f"nothing drawn in {colour}"


def test_the_search_page_draws_the_trials_and_the_frontier_in_a_browser(tmp_path: Path) -> None:
    """Four planted trials on accuracy and latency: two on the frontier (joined, in their colour), two
    dominated (grey), the best ringed; the table has a row per trial. Opened by headless chromium."""
    from olivekube.runner.report import BEST, FRONTIER, OTHER, render_search_html

    def trial(number: int, accuracy: float, latency: float) -> dict[str, Any]:
        metrics = {"accuracy-accuracy_score": accuracy, "latency-avg": latency}
        return {
            "number": number,
            "parameters": f'{{"lora": {{"r": {number}}}}}',
            "state": "succeeded",
            "metrics": metrics,
        }

    trials = [trial(1, 0.5, 3.0), trial(2, 0.5, 2.0), trial(3, 0.9, 5.0), trial(4, 0.9, 6.0)]
    axes = ("accuracy-accuracy_score", "latency-avg")
    page = render_search_html(trials, axes, {2, 3}, 3, "space exhausted")
    assert page.count("<circle") == 4 + 1 and page.count("<polyline") == 1  # a dot each, the best's ring
    assert page.count("<tr>") == 1 + 4 and "space exhausted" in page
    path = tmp_path / "search.html"
    path.write_text(page)
    seen = screenshot(path, "800,700")
    for colour in (FRONTIER, OTHER, BEST):
        rgb = tuple(int(colour[i : i + 2], 16) for i in (1, 3, 5))
        assert sum(p == rgb for p in seen) > 50, f"nothing drawn in {colour}"


def test_onnx_runs_on_as_many_threads_as_the_process_may_use(tiny_models, tmp_path: Path, monkeypatch) -> None:  # type: ignore[no-untyped-def]
    """onnxruntime's own default is a thread per core of the node: a pod limited to 2 CPUs of 64
    would run 64. The evaluator's sessions take the count torch gets (affinity and CPU quota)."""
    import subprocess
    import sys

    doc = {
        "apiVersion": "olivekube.io/v1alpha1",
        "kind": "OptimizationWorkflow",
        "metadata": {"name": "threads"},
        "spec": {
            "input_model": {"model_path": str(tiny_models["llama"])},
            "passes": {"builder": {"type": "ModelBuilder", "precision": "fp32"}},
            "cache_dir": "cache",
        },
    }
    _, output = WorkflowRunner(parse_workflow(doc), tmp_path).run()
    probe = (
        "import sys, onnxruntime_genai as og; from pathlib import Path\n"
        "import olivekube.runner.cpus as cpus; cpus.usable_cpus = lambda: int(sys.argv[2])\n"
        "from olivekube.runner.evaluation import genai_config\n"
        "model = og.Model(genai_config(og, Path(sys.argv[1])))\n"
        "print([l.split()[1] for l in open('/proc/self/status') if l.startswith('Threads:')][0])\n"
    )

    def threads(cpus: int) -> int:
        env = {k: v for k, v in os.environ.items() if k != "OMP_NUM_THREADS"}
        command = [sys.executable, "-c", probe, output, str(cpus)]
        out = subprocess.run(command, capture_output=True, text=True, env=env)
        assert out.returncode == 0, out.stderr[-2000:]
        return int(out.stdout.split()[-1])

    assert threads(7) - threads(1) == 6  # one pool thread per CPU beyond the calling one
    from olivekube.runner.cpus import thread_count

    monkeypatch.setenv("OMP_NUM_THREADS", "3")  # the user's choice wins
    assert thread_count() == 3
