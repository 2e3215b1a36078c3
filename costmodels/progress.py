"""Progress bars for long work (library code uses this, not the CLI)."""

from __future__ import annotations


def progress(description: str = "working"):
    """A rich progress bar (done/total, rate, ETA) on stderr; use as a context manager."""
    from rich.console import Console
    from rich.progress import (
        BarColumn,
        MofNCompleteColumn,
        Progress,
        TextColumn,
        TimeElapsedColumn,
        TimeRemainingColumn,
    )

    return Progress(TextColumn("[bold]{task.description}"), BarColumn(), MofNCompleteColumn(),
                    TimeElapsedColumn(), TextColumn("eta"), TimeRemainingColumn(),
                    console=Console(stderr=True), transient=False)
