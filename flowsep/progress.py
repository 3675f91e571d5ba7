"""Progress: tqdm's bars (a widget in Jupyter, text in a terminal), switched off by FLOWSEP_PROGRESS=off,
and one-line stage logs ("[Open-Unmix] training"), on stderr.

The book build sets FLOWSEP_PROGRESS=off and leaves stderr off its pages: a rendered page is read after
the run, where a bar or a log of it says nothing; results go to stdout.
"""
from __future__ import annotations

import os
import sys

from tqdm.auto import tqdm


def enabled() -> bool:
    return os.environ.get("FLOWSEP_PROGRESS", "on").strip().lower() not in ("off", "0", "false", "no")


def bar(iterable=None, *, show: bool = True, **kwargs):
    """A ``tqdm.auto.tqdm`` bar, disabled when ``show`` is False or FLOWSEP_PROGRESS is off."""
    return tqdm(iterable, disable=not (show and enabled()), **kwargs)


def log(*parts) -> None:
    """A stage of a long run, as ``print`` would write it, on stderr (the book's pages leave it out)."""
    print(*parts, file=sys.stderr, flush=True)
