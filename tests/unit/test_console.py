"""Status text reaches the terminal as it is: brackets in it are not rich markup."""

from __future__ import annotations

import io

from rich.console import Console

from olivekube.entrypoints.console import pass_bars
from olivekube.entrypoints.local_run import summary


def test_progress_info_with_brackets_is_printed_literally() -> None:
    out = io.StringIO()
    with pass_bars(Console(file=out, width=200, force_terminal=False), elapsed=False) as bars:
        task = bars.add_task("lora", total=None, info="")
        bars.update(task, info="Failed: s3://b/[/x] and [red]not red[/]")
        bars.refresh()
    assert "[/x] and [red]not red[/]" in out.getvalue()


def test_a_failure_message_with_brackets_fits_in_the_summary() -> None:
    out = io.StringIO()
    Console(file=out, width=300).print(summary([], ("lora", "spec.x: [/x] is [bold]odd")))
    assert "[/x] is [bold]odd" in out.getvalue()


def test_a_yaml_error_quoting_brackets_is_reported_not_crashed_on(tmp_path) -> None:  # type: ignore[no-untyped-def]
    import subprocess
    import sys

    path = tmp_path / "bad.yaml"
    path.write_text("a: [/x]\n  b: c\n")
    out = subprocess.run([sys.executable, "-m", "olivekube.cli", "run", str(path)], capture_output=True, text=True)
    assert out.returncode == 2 and "not valid JSON or YAML" in out.stderr and "MarkupError" not in out.stderr
