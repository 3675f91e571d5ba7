"""What a chapter made and what it reused, so that the book can say what a chapter costs run alone from nothing.

Chapter: the preface's table "What each chapter needs".

The book's cached things (a synthetic set, a trained prior, a trained supervised model) are made by the
first chapter that needs them and reused by the later ones. Each time one is made, the seconds it took
are kept beside the data (``<data home>/made_seconds.json``, keyed by its path under the data home). When
``FLOWSEP_WORKLOG`` names a file (the book's build sets one per chapter), every cached thing a chapter
asks for is appended to it as a JSON line ``{"key": ..., "made": true | false}``. A chapter run alone
from nothing would have made everything it reused: :func:`alone_seconds` adds their seconds to its own.
"""
from __future__ import annotations

import json
import os
import time
from contextlib import contextmanager
from pathlib import Path

from .io import atomic_path, data_home

ENV = "FLOWSEP_WORKLOG"
MADE_FILE = "made_seconds.json"


def key_of(path) -> str:
    """The key of a cached thing: its path under the data home (the absolute path if it lies elsewhere)."""
    path, home = Path(path).resolve(), data_home().resolve()
    return str(path.relative_to(home)) if home in path.parents else str(path)


def made_seconds() -> dict[str, float]:
    """{key: seconds it took to make} of everything made under the current data home."""
    file = data_home() / MADE_FILE
    try:
        return json.loads(file.read_text()) if file.is_file() else {}
    except ValueError:
        return {}


def _note_use(key: str, made: bool) -> None:
    log = os.environ.get(ENV)
    if log:
        with open(log, "a") as f:
            f.write(json.dumps({"key": key, "made": made}) + "\n")


@contextmanager
def making(path):
    """Time the making of the cached thing at ``path``: its seconds are kept and its use logged as made."""
    t0 = time.perf_counter()
    yield
    key = key_of(path)
    record = made_seconds()
    record[key] = round(time.perf_counter() - t0, 2)
    file = data_home() / MADE_FILE
    file.parent.mkdir(parents=True, exist_ok=True)
    with atomic_path(file, suffix=".json") as tmp:
        tmp.write_text(json.dumps(record, indent=1, sort_keys=True) + "\n")
    _note_use(key, made=True)


def reusing(path) -> None:
    """Log that the cached thing at ``path`` was reused (made by an earlier chapter or run)."""
    _note_use(key_of(path), made=False)


def uses(log_file) -> list[dict]:
    """The lines a chapter's log holds ([] if it wrote none)."""
    log_file = Path(log_file)
    if not log_file.is_file():
        return []
    return [json.loads(line) for line in log_file.read_text().splitlines() if line.strip()]


def alone_seconds(own: float, used: list[dict], made: dict[str, float]) -> float | None:
    """A chapter's seconds run alone from nothing: its own plus the making of what it reused.

    own: its seconds in this build; used: its log (:func:`uses`); made: :func:`made_seconds`.
    None when something it reused has no recorded making time (made before times were kept).
    """
    reused = {u["key"] for u in used if not u["made"]} - {u["key"] for u in used if u["made"]}
    if any(k not in made for k in reused):
        return None
    return own + sum(made[k] for k in reused)
