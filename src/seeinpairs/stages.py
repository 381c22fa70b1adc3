"""One plain line per finished stage, for runs that show no progress bars.

A study can run for hours; with ``--no-progress`` (or output going to a file)
nothing else would say that it is alive or where it is. The CLI turns these
lines on for ``eval``, ``study``, ``suite`` and ``demo``; the stages (data
prepared, reference bank built, model trained, condition evaluated, tables and
report written) announce themselves through :func:`stage_done`, which does
nothing unless lines are on, so library calls stay silent::

    with stage_lines(True):
        run_study(config, progress=False)
    # [14:02:11] model trained: single (k=0): 400 steps, 61.2 s
"""

from __future__ import annotations

import sys
import time
from contextlib import contextmanager
from typing import Iterator, TextIO

_stream: TextIO | None = None


@contextmanager
def stage_lines(enabled: bool, stream: TextIO | None = None) -> Iterator[None]:
    """Print stage lines to ``stream`` (standard output by default) inside the block when ``enabled``."""
    global _stream
    previous = _stream
    _stream = (stream or sys.stdout) if enabled else None
    try:
        yield
    finally:
        _stream = previous


def stage_done(stage: str, detail: str = "", seconds: float | None = None) -> None:
    """``[HH:MM:SS] stage: detail (12.3 s)``, flushed at once (a log file shows it while the run goes on)."""
    if _stream is None:
        return
    text = f"[{time.strftime('%H:%M:%S')}] {stage}"
    if detail:
        text += f": {detail}"
    if seconds is not None:
        text += f" ({seconds:.1f} s)"
    print(text, file=_stream, flush=True)


def lines_wanted(progress: bool) -> bool:
    """Stage lines go where no progress bar is shown: ``--no-progress``, or output that is not a terminal."""
    return not progress or not sys.stdout.isatty()
