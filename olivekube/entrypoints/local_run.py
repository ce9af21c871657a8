"""`olivekube run`: a whole workflow on this machine, with a progress bar per pass and a summary."""

from __future__ import annotations

import json
import time
from pathlib import Path
from typing import Any

from rich.console import Console
from rich.progress import Progress, TaskID
from rich.table import Table
from rich.text import Text

from olivekube.api.workflow import OptimizationWorkflow
from olivekube.core.errors import PassError
from olivekube.entrypoints.console import pass_bars
from olivekube.runner.cpus import size_thread_pools
from olivekube.runner.engine import WorkflowRunner
from olivekube.runner.process import quiet_libraries
from olivekube.runner.results import PassResult


class Bars:
    """One rich progress bar per pass, fed by the runner's progress sink."""

    def __init__(self, progress: Progress, names: list[str]) -> None:
        self.progress = progress
        self.tasks: dict[str, TaskID] = {n: progress.add_task(n, total=None, start=False, info="") for n in names}

    def __call__(self, pass_name: str, progress: dict[str, Any]) -> None:
        values = progress
        if pass_name not in self.tasks:  # the evaluation, after the passes
            self.tasks[pass_name] = self.progress.add_task(pass_name, total=None, start=False, info="")
        task = self.tasks[pass_name]
        self.progress.start_task(task)
        info = []
        if "loss" in values:
            info.append(f"loss {values['loss']:.4f}")
        if "evalLoss" in values:
            info.append(f"eval {values['evalLoss']:.4f}")
        if "message" in values:
            info.append(values["message"])
        self.progress.update(
            task, total=values.get("totalSteps"), completed=values.get("step", 0), info="  ".join(info)
        )

    def finish(self, result: PassResult) -> None:
        task = self.tasks[result.name]
        self.progress.start_task(task)
        total = self.progress.tasks[task].total or 1
        self.progress.update(task, total=total, completed=total, info=result.status)


def summary(results: list[PassResult], failed: tuple[str, str] | None = None) -> Table:
    table = Table(title="olivekube run")
    for column in ("pass", "type", "status", "time", "artifact", "final loss", "eval loss"):
        table.add_column(column)
    for r in results:
        loss = r.metrics.get("final_loss", r.metrics.get("train_loss"))
        table.add_row(
            r.name,
            r.type,
            r.status,
            f"{r.seconds:.1f}s",
            Text(r.uri or ""),
            f"{loss:.4f}" if loss is not None else "",
            f"{r.metrics['eval_loss']:.4f}" if "eval_loss" in r.metrics else "",
        )
    if failed:
        table.add_row(Text(failed[0]), "", Text("failed", "red"), "", Text(failed[1]), "", "")
    return table


def evaluation_table(report: dict[str, Any]) -> Table | None:
    """Each evaluated model's metrics, with the input model's value and the goal beside them."""
    rows = [
        (role, v)
        for role, by_evaluator in report.get("models", {}).items()
        for values in by_evaluator.values()
        for v in values
    ]
    if not rows:
        return None
    table = Table(title=f"evaluation: {report.get('evaluator') or ''}")
    for column in ("model", "metric", "value", "input model", "goal", "met"):
        table.add_column(column)
    for role, v in rows:
        goal = v.get("goal")
        met = {True: Text("yes", "green"), False: Text("NO", "red")}.get(v.get("met"), Text(""))
        table.add_row(
            role,
            f"{v['metric']}-{v['sub_type']}",
            f"{v['value']:.4g}",
            f"{v['baseline']:.4g}" if v.get("baseline") is not None else "",
            f"{goal['type']} {goal['value']}" if goal else "",
            met,
        )
    return table


def write_summary(path: Path, results: list[PassResult], output: str | None, error: str | None) -> None:
    """The run as JSON, for scripts and benchmarks."""
    passes = [
        {
            "name": r.name,
            "type": r.type,
            "status": r.status,
            "seconds": round(r.seconds, 3),
            "uri": r.uri,
            "digest": r.digest,
            "sizeBytes": r.size_bytes,
            "metrics": r.metrics,
        }
        for r in results
    ]
    path.write_text(json.dumps({"passes": passes, "output": output, "error": error}, indent=1))


def run_local(
    workflow: OptimizationWorkflow,
    base_dir: Path,
    console: Console,
    summary_json: Path | None = None,
    **overrides: Any,
) -> int:
    """Run every pass here; print a summary. Returns the exit code (1 when a pass failed)."""
    quiet_libraries()
    size_thread_pools()
    names = workflow.spec.ordered_pass_names()
    started = time.monotonic()
    with pass_bars(console, elapsed=True) as progress:
        bars = Bars(progress, names)
        runner = WorkflowRunner(workflow, base_dir, report=bars, **overrides)
        try:
            results, output = runner.run(on_result=bars.finish)
        except PassError as exc:
            done: list[PassResult] = exc.results_so_far
            failing = exc.pass_name
            progress.stop()
            console.print(summary(done, (failing or "(before the passes)", str(exc))))
            if (table := evaluation_table(runner.acceptance.report)) is not None:
                console.print(table)
            where = f"pass {failing!r} failed" if failing else "the workflow cannot start"
            console.print(Text.assemble(("error:", "red"), f" {where}: {exc}"), highlight=False)
            if summary_json:
                write_summary(summary_json, done, None, f"{where}: {exc}")
            return 1
    console.print(summary(results))
    if (table := evaluation_table(runner.acceptance.report)) is not None:
        console.print(table)
    if summary_json:
        write_summary(summary_json, results, output, None)
    console.print(f"output: {output}  ({time.monotonic() - started:.1f}s)", markup=False, highlight=False)
    return 0
