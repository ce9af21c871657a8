"""`olivekube run` of a workflow that searches (Olive's `search_strategy`, searchable options,
alternatives): each trial is the workflow with one point of the space filled in, run here.

Trials share one cache, so a pass with the same options on the same input runs once, whichever
trial needs it first (four trials over two LoRA ranks and two builder settings train twice). The
input model is measured once. Each trial's final model is measured with the workflow's evaluator;
the best (Olive's priority order, among the trials that meet every goal) becomes the current version
of `output_dir`, every other model of the Pareto frontier a version there too, and the best
version holds `footprint.json` (Olive's layout), `run_history.txt`, `input_model_metrics.json` and
`search.html` (the trials on the two highest-priority objectives, the frontier drawn, and a row per
trial).
Joint execution with the sequential, random or tpe sampler (tpe is told each trial's first objective).
Pass-by-pass as Olive walks it (olive/search/search_strategy.py): every choice of the first pass is a
trial whose final model is that pass's output; the goal-meeting ones (or, when none meets the goals,
every one that succeeded) ranked best first, the walk goes down the best into the next pass, and back
up to the next best when a branch is done; the budget counts per pass, as Olive's samplers do.
"""

from __future__ import annotations

import json
import random
import shutil
import tempfile
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from rich.console import Console
from rich.table import Table

from olivekube.api.passes import PASS_TYPES
from olivekube.api.workflow import OptimizationWorkflow
from olivekube.core.errors import PassError
from olivekube.runner.acceptance import Acceptance
from olivekube.runner.cpus import size_thread_pools
from olivekube.runner.engine import WorkflowRunner
from olivekube.runner.evaluation import GoalNotMet
from olivekube.runner.process import quiet_libraries
from olivekube.runner.report import render_search_html
from olivekube.runner.results import PassResult
from olivekube.search.config import concrete
from olivekube.search.results import Objective, frontier, ordered, rank
from olivekube.search.samplers import Sampler
from olivekube.search.space import PassChoice, Point, SearchSpace
from olivekube.search.strategy import Strategy
from olivekube.storage.manifest import MANIFEST_NAME, Manifest, build_manifest
from olivekube.storage.outputs import publish_version

ToWorkflow = Callable[[dict[str, Any]], OptimizationWorkflow]


@dataclass
class Trial:
    number: int
    point: Point
    state: str = "running"  # succeeded, goals-missed, failed
    seconds: float = 0.0
    metrics: dict[str, float] = field(default_factory=dict)
    results: list[PassResult] = field(default_factory=list)
    model: Path | None = None  # the final model's folder (this trial's own version)
    message: str | None = None
    complete: bool = True  # False: a pass-by-pass trial of the first passes only

    @property
    def ident(self) -> str:
        return f"trial-{self.number}"


def _objectives(report: dict[str, Any]) -> tuple[list[Objective], dict[str, float], bool]:
    """The final model's objectives, its values and whether every goal was met, from a run's report."""
    objectives, values, met = [], {}, True
    for by_evaluator in [report.get("models", {}).get("final", {})]:
        for entries in by_evaluator.values():
            for v in entries:
                key = f"{v['metric']}-{v['sub_type']}"
                values[key] = float(v["value"])
                objectives.append(Objective(key, int(v.get("priority", -1)), bool(v["higher_is_better"])))
                met = met and v.get("met") is not False
    return objectives, values, met


class Search:
    """One search, trial by trial."""

    def __init__(
        self,
        raw: dict[str, Any],
        space: SearchSpace,
        strategy: Strategy,
        to_workflow: ToWorkflow,
        base_dir: Path,
        console: Console,
        overrides: dict[str, Any],
    ) -> None:
        self.raw, self.space, self.strategy = raw, space, strategy
        self.to_workflow, self.base_dir, self.console = to_workflow, base_dir, console
        self.overrides = overrides
        self.trials: list[Trial] = []
        self.objectives: list[Objective] = []
        self.met: dict[str, bool] = {}
        self.baselines: Acceptance | None = None
        self.input_report: dict[str, Any] = {}
        self.reason = ""
        self._started = 0.0

    def describe(self) -> str:
        s = self.strategy
        budget = s.budget()
        size = len(self.space)
        covered = (
            "each pass's choices in turn, on the best model of the pass before"
            if s.execution_order == "pass-by-pass"
            else "every point"
            if budget is None or budget >= size
            else f"{budget} of them, drawn by the {s.sampler} sampler"
        )
        return f"search: {size} points ({s.execution_order}, {s.sampler}): tries {covered}"

    def run(self, work: Path) -> None:
        self._started = time.monotonic()
        if self.strategy.execution_order == "pass-by-pass":
            if not self._walk(work, _run_order(self.space), 0, {}):
                self.reason = "space exhausted"
            return
        sampler = Sampler(self.space, self.strategy.sampler, self.strategy.seed)
        while True:
            budget = self.strategy.budget()
            if budget is not None and len(self.trials) >= budget:
                self.reason = f"budget spent: {len(self.trials)} trials (max_samples/max_iter)"
                return
            if self._time_spent():
                return
            point = sampler.suggest()
            if point is None:
                self.reason = "space exhausted"
                return
            trial = self._record(self._run_trial(Trial(len(self.trials) + 1, point), work))
            sampler.tell(point, self._told_value(trial))
            if self._ends_with(trial, goals_met=trial.state == "succeeded"):
                return

    def _time_spent(self) -> bool:
        """Whether `max_time` has passed (never before the first trial); `reason` then says so."""
        limit = self.strategy.max_time
        if self.trials and limit is not None and time.monotonic() - self._started >= limit:
            self.reason = f"time spent: max_time {limit:g}s"
            return True
        return False

    def _record(self, trial: Trial) -> Trial:
        self.trials.append(trial)
        self.console.print(self._line(trial), markup=False, highlight=False)
        return trial

    def _ends_with(self, trial: Trial, goals_met: bool) -> bool:
        """Whether the search ends after `trial`: too many failures, or its goals met when
        `stop_when_goals_met`; `reason` then says why."""
        limit = self.strategy.max_failed_trials
        failures = sum(t.state == "failed" for t in self.trials)
        if limit is not None and failures > limit:
            self.reason = f"too many failed trials: {failures} (max_failed_trials {limit})"
            return True
        if self.strategy.stop_when_goals_met and goals_met:
            self.reason = f"goals met by trial {trial.number} (stop_when_goals_met)"
            return True
        return False

    def _walk(self, work: Path, names: list[str], depth: int, chosen: dict[str, PassChoice]) -> bool:
        """Pass-by-pass from pass `names[depth]` on, the earlier passes fixed to `chosen`. True when
        the search ends (a budget, the goals met, too many failures): `reason` says why."""
        name, last = names[depth], depth == len(names) - 1
        choices = self.space.pass_choices(name)
        order = list(range(len(choices)))
        if self.strategy.sampler == "random":
            random.Random(self.strategy.seed).shuffle(order)
        level: list[Trial] = []
        for i in order[: self.strategy.budget()]:
            if self._time_spent():
                return True
            point = Point(len(self.trials), {**chosen, name: choices[i]})
            trial = self._record(self._run_trial(Trial(len(self.trials) + 1, point, complete=last), work))
            level.append(trial)
            if self._ends_with(trial, goals_met=last and self.met.get(trial.ident, False)):
                return True
        if last:
            return False
        met = {t.ident: t.metrics for t in level if self.met.get(t.ident)}
        pool = met or {t.ident: t.metrics for t in level if t.state != "failed"}
        by_ident = {t.ident: t for t in level}
        for ident in rank(pool, self.objectives, goals_first=False):
            if self._walk(work, names, depth + 1, {**chosen, name: by_ident[ident].point.passes[name]}):
                return True
        return False

    def _run_trial(self, trial: Trial, work: Path) -> Trial:
        began = time.monotonic()
        out = work / trial.ident
        try:
            workflow = self.to_workflow(concrete(self.raw, trial.point))
            runner = WorkflowRunner(
                workflow, self.base_dir, report=lambda *_: None, **{**self.overrides, "output_dir": str(out)}
            )
            if self.baselines is not None:
                runner.acceptance.reuse_baselines(self.baselines)
            try:
                trial.results, output = runner.run()
                trial.state, trial.model = "succeeded", Path(output)
            except GoalNotMet as exc:
                trial.state, trial.message, trial.results = "goals-missed", str(exc), exc.results_so_far
            if self.baselines is None and "input" in runner.acceptance.report["models"]:
                self.baselines = runner.acceptance
                self.input_report = runner.acceptance.report.get("models", {}).get("input", {})
            objectives, trial.metrics, met = _objectives(runner.acceptance.report)
            self.objectives = self.objectives or objectives
            self.met[trial.ident] = met and trial.state == "succeeded"
        except (PassError, ValueError) as exc:
            trial.state, trial.message = "failed", str(exc)
            trial.results = list(getattr(exc, "results_so_far", []) or [])
        trial.seconds = time.monotonic() - began
        return trial

    def _told_value(self, trial: Trial) -> float | None:
        """What the sampler learns of a trial (tpe only): its first objective made higher-is-better
        (Olive ranks by priority, so the first decides); None when it failed."""
        if trial.state == "failed":
            return None
        first = ordered(self.objectives)
        return first[0].scaled(trial.metrics) if first else 0.0

    def _line(self, trial: Trial) -> str:
        values = "  ".join(f"{k} {v:.4g}" for k, v in trial.metrics.items())
        trained = sum(r.status == "ran" for r in trial.results)
        extra = f"  ({trial.message})" if trial.message and trial.state == "failed" else ""
        return (
            f"trial {trial.number}: {json.dumps(trial.point.parameters())}  {trial.state}  "
            f"{trial.seconds:.1f}s, {trained} pass(es) run  {values}{extra}"
        )

    def ranked(self) -> tuple[list[str], list[str]]:
        """(goal-meeting trials best first, the Pareto frontier)."""
        candidates = {t.ident: t.metrics for t in self.trials if self.met.get(t.ident) and t.complete}
        return rank(candidates, self.objectives, goals_first=False), frontier(candidates, self.objectives)

    def table(self, best: str | None, front: list[str]) -> Table:
        table = Table(title=f"olivekube search: {self.reason}")
        names = [o.name for o in self.objectives if o.priority > 0] or sorted(
            {k for t in self.trials for k in t.metrics}
        )
        for column in ("trial", "parameters", "state", *names, "frontier", "best"):
            table.add_column(column)
        for t in self.trials:
            table.add_row(
                str(t.number),
                json.dumps(t.point.parameters()),
                t.state,
                *(f"{t.metrics[n]:.4g}" if n in t.metrics else "" for n in names),
                "yes" if t.ident in front else "",
                "best" if t.ident == best else "",
            )
        return table

    def page(self, front: list[str], best: str) -> str:
        """search.html: the trials on the two highest-priority objectives, and a row per trial."""
        rows = [
            {
                "number": t.number,
                "parameters": json.dumps(t.point.parameters()),
                "state": t.state if t.complete else f"{t.state} (first passes)",
                "metrics": t.metrics,
            }
            for t in self.trials
        ]
        by_priority = [o.name for o in ordered(self.objectives)]
        axes = (by_priority[0], by_priority[1]) if len(by_priority) >= 2 else None
        numbers = {t.ident: t.number for t in self.trials}
        return render_search_html(rows, axes, {numbers[f] for f in front}, numbers.get(best), self.reason)

    def files(self, front: list[str], best: str) -> dict[str, str]:
        """footprint.json, run_history.txt and input_model_metrics.json, for the best model's folder."""
        nodes: dict[str, Any] = {
            "input": {
                "model_id": "input",
                "parent_model_id": None,
                "from_pass": None,
                "pass_run_config": None,
                "is_pareto_frontier": False,
                "metrics": None,
            },
        }
        for t in self.trials:
            parent = "input"
            for r in t.results:
                node = (r.content_key or r.digest or f"{t.ident}-{r.name}")[:16]
                options = t.point.passes[r.name].options if r.name in t.point.passes else None
                nodes.setdefault(
                    node,
                    {
                        "model_id": node,
                        "parent_model_id": parent,
                        "from_pass": r.type,
                        "pass_run_config": options,
                        "is_pareto_frontier": False,
                        "metrics": None,
                    },
                )
                parent = node
            if t.metrics and parent != "input":
                nodes[parent]["metrics"] = {
                    "value": {k: {"value": v} for k, v in t.metrics.items()},
                    "cmp_direction": {o.name: 1 if o.higher_is_better else -1 for o in self.objectives},
                    "if_goals_met": self.met.get(t.ident, False),
                }
                nodes[parent]["is_pareto_frontier"] = t.ident in front
                nodes[parent]["trial"] = t.number
        objective_dict = {
            o.name: {"higher_is_better": o.higher_is_better, "priority": o.priority} for o in self.objectives
        }
        history = ["trial\tstate\tseconds\tparameters\tmetrics"] + [
            f"{t.number}\t{t.state}\t{t.seconds:.1f}\t{json.dumps(t.point.parameters())}\t{json.dumps(t.metrics)}"
            for t in self.trials
        ]
        inputs = {
            f"{v['metric']}-{v['sub_type']}": v["value"] for entries in self.input_report.values() for v in entries
        }
        return {
            "search.html": self.page(front, best),
            "footprint.json": json.dumps(
                {"nodes": nodes, "objective_dict": objective_dict, "best": best}, indent=1
            ),
            "run_history.txt": "\n".join(history) + "\n",
            "input_model_metrics.json": json.dumps(inputs, indent=1),
        }


def _run_order(space: SearchSpace) -> list[str]:
    """The passes in the order a workflow runs them (by stage), the order pass-by-pass walks."""

    def stage(name: str) -> int:
        kind = space.pass_choices(name)[0].options.get("type")
        return PASS_TYPES[kind].stage if kind in PASS_TYPES else len(PASS_TYPES)

    return sorted(space.passes, key=stage)


def _publish(output_dir: str, model: Path, files: dict[str, str], extra: dict[str, Any], work: Path) -> str:
    """A trial's model (with `files` added) as a version of the real output_dir."""
    staging = work / "publish" / model.name
    shutil.rmtree(staging, ignore_errors=True)
    shutil.copytree(model, staging, ignore=shutil.ignore_patterns(MANIFEST_NAME))
    for name, text in files.items():
        (staging / name).write_text(text)
    manifest_file = model / MANIFEST_NAME
    metadata = Manifest.from_json(manifest_file.read_text()).metadata if manifest_file.is_file() else {}
    return publish_version(output_dir, staging, build_manifest(staging, {**metadata, "search": extra}))


def run_search(
    raw: dict[str, Any],
    space: SearchSpace,
    strategy: Strategy,
    to_workflow: ToWorkflow,
    base_dir: Path,
    console: Console,
    **overrides: Any,
) -> int:
    """Run the trials, print them, publish the best and the frontier. Returns the exit code."""
    quiet_libraries()
    size_thread_pools()
    search = Search(raw, space, strategy, to_workflow, base_dir, console, overrides)
    console.print(search.describe(), markup=False, highlight=False)
    output_dir = overrides.get("output_dir")
    work = Path(tempfile.mkdtemp(prefix="olivekube-search-"))
    try:
        search.run(work)
        ranked, front = search.ranked()
        best = ranked[0] if ranked else None
        console.print(search.table(best, front))
        if best is None:
            why = f"no trial succeeded and met every goal ({search.reason}); nothing was published"
            console.print(f"error: {why}", markup=False)
            return 1
        trials = {t.ident: t for t in search.trials}
        if output_dir is None:
            output_dir = WorkflowRunner(to_workflow(concrete(raw, trials[best].point)), base_dir).output_dir
        for ident in [*(f for f in front if f != best), best]:  # the best last: it is the current version
            t = trials[ident]
            assert t.model is not None
            extra = {"trial": t.number, "parameters": t.point.parameters(), "frontier": ident in front}
            files = search.files(front, best) if ident == best else {}
            uri = _publish(output_dir, t.model, files, extra, work)
        console.print(f"best: trial {trials[best].number}  output: {uri}", markup=False, highlight=False)
        return 0
    finally:
        shutil.rmtree(work, ignore_errors=True)
