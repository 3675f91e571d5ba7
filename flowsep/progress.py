"""Progress bars: tqdm's (a widget in Jupyter, text in a terminal), switched off by FLOWSEP_PROGRESS=off.

The book build sets FLOWSEP_PROGRESS=off: a rendered page cannot show a live bar, only its first
frame ("0%"), which would mislead a reader.
"""
from __future__ import annotations

import os

from tqdm.auto import tqdm


def enabled() -> bool:
    return os.environ.get("FLOWSEP_PROGRESS", "on").strip().lower() not in ("off", "0", "false", "no")


def bar(iterable=None, *, show: bool = True, **kwargs):
    """A ``tqdm.auto.tqdm`` bar, disabled when ``show`` is False or FLOWSEP_PROGRESS is off."""
    return tqdm(iterable, disable=not (show and enabled()), **kwargs)
