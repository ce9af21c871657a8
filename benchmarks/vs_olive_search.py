"""`vs_olive.py --search`: the same search config through `olive run` 0.13 and `olivekube run`.

The workflow of vs_olive.py with LoRA `r` in {4, 8} and ModelBuilder `int4_block_size` in {32, 128}
(Olive's search parameters, written in the config), a joint search with the sequential sampler,
evaluated by size on disk (smaller is better). Both tools search the default space of an option not
written (`include_pass_params`, true by default; Olive 0.13 fails every trial when it is false: "Search
point is not in the search space"), so the config writes ModelBuilder's `int4_is_symmetric` and
`int4_algo_config`: 4 points. Both tools read the same file. Printed: the median wall ratio of
interleaved runs, the trials each ran, the pass runs each executed (distinct footprint nodes by
pass: a pass with the same options on the same input runs once in both), and whether both picked
the same best candidate (its searched options, from each tool's footprint.json).

Olive 0.13.0 (the newest release) fails every trial that reuses a cached pass run (its
FootprintNode.update sets a field by its alias, which pydantic refuses); the benchmark applies
upstream's fix (microsoft/Olive 47aa21544, 2026-07-22, not released) to its side virtualenv, so
that Olive completes its search.
"""

from __future__ import annotations

import json
import re
import shutil
import statistics
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import vs_olive

FIXED_UPDATE = """    def update(self, **kwargs):
        alias_to_field = {
            field_info.alias: field_name
            for field_name, field_info in type(self).model_fields.items()
            if field_info.alias is not None
        }
        for k, v in kwargs.items():
            setattr(self, alias_to_field.get(k, k), v)
"""
BROKEN_UPDATE = """    def update(self, **kwargs):
        for k, v in kwargs.items():
            setattr(self, k, v)
"""


def patch_olive(olive: Path) -> None:
    """Upstream's fix of FootprintNode.update, in the side virtualenv (idempotent)."""
    (footprint,) = olive.parent.parent.glob("lib/python*/site-packages/olive/engine/footprint.py")
    text = footprint.read_text()
    if BROKEN_UPDATE in text:
        footprint.write_text(text.replace(BROKEN_UPDATE, FIXED_UPDATE))
    elif FIXED_UPDATE not in text:
        raise SystemExit(f"{footprint}: FootprintNode.update is neither 0.13.0's nor upstream's fix")


def search_config(model: str, steps: int, output: str, cache: str) -> dict[str, Any]:
    config = vs_olive.config(model, steps, output, cache, seed=0)
    for pass_name, option, support in (("lora", "r", [4, 8]), ("builder", "int4_block_size", [32, 128])):
        parameter = {"olive_parameter_type": "SearchParameter", "type": "Categorical", "support": support}
        config["passes"][pass_name][option] = parameter
    # Written, so that neither tool adds their default spaces (include_pass_params): 4 points
    config["passes"]["builder"].update(int4_is_symmetric=True, int4_algo_config="default")
    config["evaluators"] = {
        "size": {
            "type": "OnnxEvaluator",  # Olive 0.13 fails on an evaluator with no type; olivekube drops it
            "metrics": [
                {"name": "size", "type": "size_on_disk", "sub_types": [{"name": "bytes", "priority": 1}]},
            ],
        }
    }
    config["evaluator"] = "size"
    config["search_strategy"] = {"execution_order": "joint", "sampler": "sequential"}
    return config


@dataclass
class SearchRun:
    wall: float
    trials: int
    pass_runs: dict[str, int]
    best: tuple[Any, ...]  # (r, int4_block_size, int4_is_symmetric, int4_algo_config)


SEARCHED = ("r", "int4_block_size", "int4_is_symmetric", "int4_algo_config")


def _chain(nodes: dict[str, Any], node_id: str) -> tuple[Any, ...]:
    """The searched options along a footprint node's parents (None: not set, the pass's default)."""
    found: dict[str, Any] = {}
    while node_id:
        node = nodes[node_id]
        config = node.get("pass_run_config") or {}
        found.update({k: config[k] for k in SEARCHED if k in config and k not in found})
        node_id = node.get("parent_model_id")
    return tuple(found.get(k) for k in SEARCHED)


def _pass_runs(nodes: dict[str, Any]) -> dict[str, int]:
    counts: dict[str, int] = {}
    for node in nodes.values():
        if node.get("from_pass"):
            name = str(node["from_pass"]).lower()
            counts[name] = counts.get(name, 0) + 1
    return counts


def _prepare(tool: str, work: Path, model: Path, steps: int, i: int) -> tuple[Path, Path, Path]:
    """A tool's empty output and cache folders and its config file: (output, config, log of run i)."""
    out, cache = work / f"{tool}-search-out", work / f"{tool}-search-cache"
    for old in (out, cache):
        shutil.rmtree(old, ignore_errors=True)
    cfg = work / f"{tool}-search.json"
    cfg.write_text(json.dumps(search_config(str(model), steps, str(out), str(cache))))
    return out, cfg, work / f"{tool}-search-{i}.log"


def run_ours(work: Path, model: Path, steps: int, env: dict[str, str], i: int) -> SearchRun:
    out, cfg, log = _prepare("ours", work, model, steps, i)
    wall, _, code = vs_olive.timed([str(vs_olive.REPO / ".venv/bin/olivekube"), "run", str(cfg)], env, log)
    footprints = sorted(out.rglob("footprint.json"))
    if code != 0 or not footprints:
        raise SystemExit(f"olivekube's search failed (exit code {code}); see {log}")
    footprint = json.loads(footprints[0].read_text())
    nodes = footprint["nodes"]
    number = int(str(footprint["best"]).rsplit("-", 1)[-1])
    best = next(n for n, node in nodes.items() if node.get("trial") == number)
    history = (footprints[0].parent / "run_history.txt").read_text().splitlines()[1:]
    return SearchRun(wall, len(history), _pass_runs(nodes), _chain(nodes, best))


def run_olive(olive: Path, work: Path, model: Path, steps: int, env: dict[str, str], i: int) -> SearchRun:
    out, cfg, log = _prepare("olive", work, model, steps, i)
    wall, _, code = vs_olive.timed([str(olive), "run", "--config", str(cfg)], env, log)
    text = log.read_text(errors="replace")
    saved = re.findall(r"Loading model (\w+) from cache\.\n.*Saved output model", text)
    if code != 0 or not saved or not (out / "footprint.json").is_file():
        raise SystemExit(f"olive's search failed (exit code {code}); see {log}")
    failed = len(re.findall(r"search point .* FAILED", text))
    if failed:
        raise SystemExit(f"olive failed {failed} trial(s); see {log}")
    nodes = json.loads((out / "footprint.json").read_text())
    trials = len(re.findall(r"Step \d+ with search point", text))
    return SearchRun(wall, trials, _pass_runs(nodes), _chain(nodes, saved[-1]))


def main(args: Any, olive: Path, work: Path, model: Path, env: dict[str, str]) -> None:
    patch_olive(olive)
    ours: list[SearchRun] = []
    theirs: list[SearchRun] = []
    for i in range(args.repeat):  # interleaved, alternating which goes first (see vs_olive.main)
        for tool in ("ours", "olive") if i % 2 == 0 else ("olive", "ours"):
            if tool == "ours":
                ours.append(run_ours(work, model, args.steps, env, i))
            else:
                theirs.append(run_olive(olive, work, model, args.steps, env, i))
    print(
        f"search: LoRA r {{4, 8}} x ModelBuilder int4_block_size {{32, 128}}, joint, sequential, "
        f"{args.steps} steps; objective size on disk; median of {args.repeat} interleaved runs"
    )
    print(f"{'':24}{'olivekube':>12}{'olive 0.13':>12}{'ratio':>8}")
    ours_wall = statistics.median(r.wall for r in ours)
    olive_wall = statistics.median(r.wall for r in theirs)
    print(vs_olive._row("wall time (s)", ours_wall, olive_wall))
    ratios = [a.wall / b.wall for a, b in zip(ours, theirs, strict=True)]
    print(f"wall-time ratio of each pair: {', '.join(f'{r:.2f}' for r in ratios)}")
    print(f"median wall ratio: {statistics.median(ratios):.2f}")
    print(f"trials: olivekube {ours[0].trials}, olive {theirs[0].trials}")
    passes = sorted(set(ours[0].pass_runs) | set(theirs[0].pass_runs))
    runs = ", ".join(f"{p} {ours[0].pass_runs.get(p, 0)}/{theirs[0].pass_runs.get(p, 0)}" for p in passes)
    print(f"pass runs executed (olivekube/olive): {runs}")
    picks = [(a.best, b.best) for a, b in zip(ours, theirs, strict=True)]
    for a, b in picks:
        print(f"best ({', '.join(SEARCHED)}): olivekube {a}, olive {b}: {'same' if a == b else 'different'}")
