"""Progress bars for long work (library code uses this, not the CLI)."""

from __future__ import annotations


def progress(description: str = "working"):
    """A rich progress bar (done/total, rate, ETA) on stderr when it is a terminal; use as a
    context manager."""
    from rich.progress import (
        BarColumn,
        MofNCompleteColumn,
        Progress,
        TextColumn,
        TimeElapsedColumn,
        TimeRemainingColumn,
    )

    err = console(stderr=True)
    # Drawn on a terminal only: in a pipe or a log file it would be one more line
    # beside the results and the one `error:` line.
    return Progress(TextColumn("[bold]{task.description}"), BarColumn(), MofNCompleteColumn(),
                    TimeElapsedColumn(), TextColumn("eta"), TimeRemainingColumn(),
                    console=err, transient=False, disable=not err.is_terminal)


def console(**kw):
    """A rich Console for the CLI's tables. A closed pipe (``| head``) ends the command like
    any other CLI's (exit 0, via ``BrokenPipeError``), where rich's own exits 1; on stderr
    (``stderr=True``: progress lines) a closed pipe only silences it, the work goes on;
    written to a pipe or a file, it is at least 160 columns wide."""
    import os
    import sys

    from rich.console import Console

    class _Console(Console):
        def on_broken_pipe(self) -> None:
            devnull = os.open(os.devnull, os.O_WRONLY)
            if self.stderr:  # progress lines to a closed pipe are lost; the work goes on
                os.dup2(devnull, sys.stderr.fileno())
                return
            os.dup2(devnull, sys.stdout.fileno())  # nothing more reaches the closed pipe
            raise BrokenPipeError

    out = _Console(**kw)
    if "width" not in kw and not out.is_terminal:  # a pipe or a file: no terminal to fit
        out.width = max(out.width, 160)  # (COLUMNS=20 wrapped every value onto a new line)
    return out
