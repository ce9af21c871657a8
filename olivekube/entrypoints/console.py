"""What `olivekube run` and `olivekube watch` show alike: one progress bar per pass."""

from __future__ import annotations

from rich.console import Console
from rich.progress import BarColumn, Progress, ProgressColumn, TextColumn, TimeElapsedColumn


def pass_bars(console: Console, elapsed: bool) -> Progress:
    """Bars named by pass, with steps done of all, the time since start (`elapsed`), and an `info` field."""
    columns: list[ProgressColumn] = [
        TextColumn("[bold]{task.description:<24}"),
        BarColumn(),
        TextColumn("{task.completed}/{task.total}"),
    ]
    if elapsed:
        columns.append(TimeElapsedColumn())
    columns.append(TextColumn("{task.fields[info]}", markup=False))  # status text, printed as it is
    return Progress(*columns, console=console, transient=False)
