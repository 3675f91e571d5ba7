"""The comparison of the paper's table, rerun on our data with one budget: InstGlow against full supervision.

Chapter: "Evaluation".

The systems are a registry, :data:`SYSTEMS` (each a :class:`System`: key, name, kind, and how it is built),
and :func:`run_benchmark` is three plain steps over them: :func:`build` (train or reuse), :func:`score`
(separate and score the test tracks), :func:`report` (the table, the ledger).

:func:`run_benchmark` trains what needs training on the train split of a MUSDB18-format root — the four
InstGlow priors (vocals, drums, bass, other; :func:`flowsep.cache.ensure_prior`) and the four supervised
systems (Open-Unmix, Demucs, Conv-TasNet, Wave-U-Net; :mod:`flowsep.baselines`), every one with the
profile's budget (:func:`flowsep.baselines.models.training_budget`) — then separates the test tracks with
every system, the oracles and the mixture-as-estimate bound included, scores them with museval through
:func:`flowsep.evaluate.evaluate_separator`, and writes under ``out``:

* ``table.md`` and ``table.csv``: one row per system; median SDR (dB) of vocals, drums, bass, other (by
  default the standard protocol: 1 s windows, median over windows then over tracks), their mean, the
  training steps and seconds (summed over the four priors for InstGlow), the budget, the real-time factor
  of separation (seconds of computing per second of audio), and the statistics over songs
  (:func:`song_statistics`): ``song_mean``, the mean SDR over songs x targets (each song's SDR of a target:
  its median over windows), with ``ci_low`` and ``ci_high``, a bootstrap 95% interval of it; and the paired
  difference to InstGlow over the same songs (``diff_instglow`` with its interval, ``wins`` and ``losses``:
  the songs on which the system's mean over targets is above, below InstGlow's). The table's title names
  the budget: "equal training time: S s per system" or "equal steps: N";
* ``benchmark.json``: the same numbers with the profile, protocol, budget and tracks, and ``per_track.csv``:
  the SDR of every system, song and target;
* ``ledger.md`` and ``ledger.csv``: the reproduction ledger (:mod:`flowsep.ledger`), every claim of the paper
  with this run's value and a status (its relations judged by the paired differences of :func:`paired_table`),
  the paper's separation settings beside flowsep's, and every deviation of flowsep from the paper;
* ``scores/<system>/``: museval's per-track JSON files (``scores/<system>/scores/test/<track>.json``, which
  ``resume=True`` and a budget curve's ``reuse`` take instead of separating that song again) and
  ``summary.csv`` of each system;
* ``models/<system>.pt``: the supervised checkpoints (reused, or resumed, by the next run);
  ``models/<system>-<S>s.pt`` and ``priors/seconds<S/4>/`` for a race at equal training time (InstGlow
  uses the book's priors instead when the profile trains each prior for S/4: :func:`race_prior_bundle`);
* ``demo/<system>/<target>.wav`` for the first test track, and ``demo/reference/`` with its mixture
  and true stems: the book's grid of audio players (an excerpt of ``demo_seconds``, 16-bit).

Budgets. ``steps=N`` (or the profile's steps) is the step-matched race: every network, each prior and each
supervised model, takes N steps of the same batch size and example length. ``train_seconds=S`` is the race
at equal training time: every learned *system* gets S seconds of training (validation and checkpoint
writing not counted, for every model alike; :func:`flowsep.trainer.fit`); InstGlow is a system of four
networks trained one after the other, so each prior gets S/4 and the four together S. (Giving each prior
S would grant InstGlow four times the compute of any other system; Open-Unmix, whose four per-target
networks train together inside one step here, is held to S as a whole too.)
"""
from __future__ import annotations

import json
import math
import shutil
import time
from dataclasses import dataclass
from pathlib import Path
from typing import NamedTuple

import numpy as np
import pandas as pd

from . import __version__, ledger, verdict
from .baselines import MixtureAsEstimate, OracleRatioMask, OracleWiener, ensure_supervised, training_budget
from .bundle import is_bundle, load_bundle, read_manifest, train_into_bundle
from .cache import ensure_dataset, ensure_prior, prior_bundle_path
from .constants import DISPLAY_NAMES, TARGETS, counted
from .data.musdb import is_musdb_root, resolve_root
from .data.synth import MANIFEST
from .errors import FlowsepError
from .evaluate import PROTOCOLS, evaluate_separator, excerpt_tracks, load_track, open_tracks
from .io import atomic_path, check_writable_dir, data_home, write_audio
from .prior import PriorConfig
from .progress import log as progress_log
from .separate import Separator

#: bootstrap resamples and seed of the intervals (fixed, so the same scores give the same interval)
BOOTSTRAP = 2000
BOOTSTRAP_SEED = 0
TABLE_COLUMNS = ["system", "kind", "key", *TARGETS, "mean", "steps", "train_seconds", "budget_seconds", "rtf",
                 "song_mean", "ci_low", "ci_high", "diff_instglow", "diff_ci_low", "diff_ci_high", "wins",
                 "losses", "songs"]


class System(NamedTuple):
    """A system of the comparison: its key, its name in tables (:data:`flowsep.constants.DISPLAY_NAMES`) and
    its kind ("source-only", "supervised", "oracle" or "bound"). ``system.build(race)`` trains it (or reuses
    what was trained) for a :class:`Race` and returns it :class:`Built`."""

    key: str
    name: str
    kind: str

    def build(self, race: "Race") -> "Built":
        return BUILDERS[self.kind](self, race)


class Built(NamedTuple):
    """A system ready to separate (``separator(mixture, rate) -> {target: estimate}``) and what its training
    took: steps and seconds (InstGlow: its four priors together), the seconds it was allowed (NaN: none)."""

    separator: object
    steps: float = math.nan
    seconds: float = math.nan
    allowed: float = math.nan


#: every system, in the order of the table
SYSTEMS = tuple(System(key, DISPLAY_NAMES[key], kind) for key, kind in (
    ("instglow", "source-only"), ("openunmix", "supervised"), ("demucs", "supervised"),
    ("convtasnet", "supervised"), ("waveunet", "supervised"), ("oracle-irm", "oracle"), ("oracle-mwf", "oracle"),
    ("mixture", "bound")))
SYSTEM_KEYS = tuple(s.key for s in SYSTEMS)


class TimedSystem:
    """Wraps a system, adds up its computing time and the audio it separated, keeps its first output.

    ``seconds`` / ``audio_seconds`` is the real-time factor; ``first`` the estimates of the first call.
    """

    def __init__(self, system):
        self.system = system
        self.needs_sources = getattr(system, "needs_sources", False)
        self.seconds = 0.0
        self.audio_seconds = 0.0
        self.first = None

    def __call__(self, mixture, rate, **kwargs):
        t0 = time.perf_counter()
        est = self.system(mixture, rate, **kwargs)
        self.seconds += time.perf_counter() - t0
        self.audio_seconds += np.asarray(mixture).shape[-1] / float(rate)
        if self.first is None:
            self.first = est
        return est

    @property
    def real_time_factor(self) -> float:
        return self.seconds / self.audio_seconds if self.audio_seconds else math.nan


def _excerpt(n: int, rate: int, seconds: float) -> slice:
    """The central ``seconds`` of a track of ``n`` samples (the whole track for seconds <= 0)."""
    if seconds <= 0 or seconds * rate >= n:
        return slice(0, n)
    length = int(seconds * rate)
    start = (n - length) // 2
    return slice(start, start + length)


def _write_demo(folder: Path, audio: dict, rate: int, cut: slice) -> None:
    for name, a in audio.items():
        write_audio(folder / f"{name}.wav", np.asarray(a)[..., cut], rate)


def _fmt(v, d) -> str:
    return "-" if v is None or (isinstance(v, float) and math.isnan(v)) else f"{v:.{d}f}"


def format_table(table: pd.DataFrame) -> pd.DataFrame:
    """The table as text, as table.md and the book show it: dB with two decimals, "-" where a row has no value
    (the oracles and the mixture have no training; InstGlow no difference to itself)."""
    rows = []
    for _, r in table.iterrows():
        ci = f"{_fmt(r['song_mean'], 2)} [{_fmt(r['ci_low'], 2)}, {_fmt(r['ci_high'], 2)}]"
        diff = ("-" if r["key"] == "instglow" or pd.isna(r["diff_instglow"]) else
                f"{r['diff_instglow']:+.2f} [{r['diff_ci_low']:+.2f}, {r['diff_ci_high']:+.2f}]")
        wl = "-" if diff == "-" else f"{int(r['wins'])}/{int(r['losses'])}"
        rows.append({"system": r["system"], "kind": r["kind"], **{t: _fmt(r[t], 2) for t in TARGETS},
                     "mean": _fmt(r["mean"], 2), "steps": _fmt(r["steps"], 0), "train s": _fmt(r["train_seconds"], 0),
                     "RTF": _fmt(r["rtf"], 3), "song mean [95% CI]": ci, "vs InstGlow [95% CI]": diff,
                     "wins/losses": wl})
    return pd.DataFrame(rows)


def _markdown(table: pd.DataFrame, title: str) -> str:
    shown = format_table(table)
    cols = list(shown.columns)
    lines = [f"# {title}", "", "| " + " | ".join(cols) + " |", "|" + "---|" * len(cols)]
    for _, r in shown.iterrows():
        lines.append("| " + " | ".join(str(r[c]) for c in cols) + " |")
    return "\n".join(lines) + "\n"


def per_track_sdr(scores: pd.DataFrame, targets=TARGETS) -> pd.DataFrame:
    """The SDR of every song and target: the median over its windows (or segments). Rows: songs; columns:
    targets (NaN where every window of a target was dropped)."""
    df = scores[(scores["metric"] == "SDR") & scores["target"].isin(targets)]
    df = df.assign(score=pd.to_numeric(df["score"], errors="coerce"))
    med = df.groupby(["track", "target"], sort=False)["score"].median().unstack("target")
    return med.reindex(columns=list(targets))


def bootstrap_mean(values: np.ndarray, n: int = BOOTSTRAP, seed: int = BOOTSTRAP_SEED) -> tuple[float, float, float]:
    """The mean of a (songs, targets) array and a percentile-bootstrap 95% interval of it.

    Songs are the independent units, so the resampling draws whole songs (every target of a drawn song);
    with one song it draws targets instead. NaNs (targets with no valid window) are skipped.
    Returns (mean, low, high); NaNs for an empty array.
    """
    v = np.asarray(values, dtype=float)
    if v.ndim == 1:
        v = v[None, :]
    if not np.isfinite(v).any():
        return math.nan, math.nan, math.nan
    mean = float(np.nanmean(v))
    rng = np.random.default_rng(seed)
    if v.shape[0] >= 2:
        idx = rng.integers(0, v.shape[0], size=(n, v.shape[0]))
        draws = v[idx].reshape(n, -1)
    else:
        flat = v[0][np.isfinite(v[0])]
        draws = flat[rng.integers(0, flat.size, size=(n, flat.size))]
    with np.errstate(all="ignore"):
        stats = np.nanmean(draws, axis=1)
    stats = stats[np.isfinite(stats)]
    low, high = np.percentile(stats, [2.5, 97.5])
    return mean, float(low), float(high)


def leaders(per_track: dict) -> list:
    """The systems that no other system is ahead of by the book's rule (:func:`flowsep.verdict.relation`
    on the paired bootstrap interval over the songs both scored), best mean first: the top group this run
    cannot order. per_track: {key: per_track_sdr(...)}, (songs, targets) frames."""
    means = {k: float(np.nanmean(pt.to_numpy(dtype=float))) for k, pt in per_track.items()}

    def ahead(a, b) -> bool:
        songs = [s for s in per_track[a].index if s in per_track[b].index]
        d = (per_track[a].loc[songs] - per_track[b].loc[songs]).to_numpy(dtype=float)
        _, low, high = bootstrap_mean(d) if songs else (math.nan, math.nan, math.nan)
        return verdict.relation(low, high) == verdict.AHEAD

    top = [k for k in per_track if not any(ahead(j, k) for j in per_track if j != k)]
    return sorted(top, key=lambda k: -means[k])


def song_statistics(per_track: dict, reference: str = "instglow") -> pd.DataFrame:
    """Per system: the mean SDR over songs x targets with its bootstrap interval, and the paired comparison
    with ``reference`` over the songs both scored (difference of the per-song means over targets, its
    bootstrap interval, and how many songs the system wins and loses). per_track: {key: per_track_sdr(...)}.
    """
    rows = {}
    ref = per_track.get(reference)
    for key, pt in per_track.items():
        mean, low, high = bootstrap_mean(pt.to_numpy())
        row = {"song_mean": mean, "ci_low": low, "ci_high": high, "songs": int(len(pt)),
               "diff_instglow": math.nan, "diff_ci_low": math.nan, "diff_ci_high": math.nan,
               "wins": math.nan, "losses": math.nan}
        if ref is not None and key != reference:
            songs = [s for s in pt.index if s in ref.index]
            d = (pt.loc[songs] - ref.loc[songs]).to_numpy(dtype=float)  # (songs, targets)
            if songs and np.isfinite(d).any():
                row["diff_instglow"], row["diff_ci_low"], row["diff_ci_high"] = bootstrap_mean(d)
                with np.errstate(all="ignore"):
                    per_song = np.nanmean(d, axis=1)
                row["wins"], row["losses"] = int((per_song > 0).sum()), int((per_song < 0).sum())
        rows[key] = row
    return pd.DataFrame.from_dict(rows, orient="index")


def budget_title(steps: int | None, train_seconds: float | None, budget: dict) -> str:
    """The budget in words, as the table's title gives it."""
    if train_seconds is not None:
        return f"equal training time: {train_seconds:g} s per system (InstGlow: {train_seconds / 4:g} s per prior)"
    if steps is None and budget.get("train_seconds"):
        return f"the profile's training time: {budget['train_seconds']:g} s per network"
    return f"equal steps: {steps if steps is not None else budget['steps']} per network"


def _last_step(history) -> float:
    steps = (history or {}).get("step") or []
    return float(steps[-1]) if steps else math.nan


# ---- the book's settings: chapters 6 and 7 read them, nothing in the library does --------------------------
#: THE BOOK'S: chapter 6's race, seconds of training per learned system at each profile (at ``paper``, none:
#: the race there is the published step budget); at cpu and gpu four times a prior's ``train_seconds``, so
#: that chapter 4's priors are InstGlow's entry (:func:`race_prior_bundle`)
RACE_SECONDS = {"smoke": 4.0, "cpu": 120.0, "gpu": 720.0}
#: THE BOOK'S: the budget curve's other points, as fractions of the race's budget (the race is the point at 1); at
#: cpu none, so that the race can score 6 songs x 15 s within the book's time (chapter 6's ``CURVE`` adds points)
CURVE_FRACTIONS = {"smoke": (0.5,), "cpu": (), "gpu": (0.25, 0.5)}
#: THE BOOK'S: how many of the race's songs the budget curve scores (the first ones; a profile not named: all).
#: At the race's budget the curve takes the race's own scores of them (:func:`budget_curve`'s ``reuse``)
CURVE_SONGS = {"cpu": 3}


def models_folder(root, profile: str) -> Path:
    """Where the book keeps the systems it trained on ``root`` at ``profile`` (``models_dir`` of its races,
    shared by every protocol and excerpt)."""
    return data_home() / "benchmarks" / f"{Path(root).name}-{profile}-models"


def model_file(key: str, train_seconds: float | None = None) -> str:
    """The checkpoint name of a supervised system in a models folder: ``<key>-<S>s.pt`` for a race at
    equal training time, ``<key>.pt`` for a step budget."""
    return f"{key}.pt" if train_seconds is None else f"{key}-{train_seconds:g}s.pt"


def race_prior_bundle(profile: str, root, seconds: float, models_dir, source: str) -> Path:
    """Where the race keeps InstGlow's prior of ``source`` trained for ``seconds``.

    The book's own priors (:func:`flowsep.cache.prior_bundle_path`) when the profile trains each prior for
    exactly ``seconds`` and that bundle's ``source`` was trained to that budget (then chapter 4's priors are
    InstGlow's entry and are not trained twice); else ``models_dir/priors/seconds<S>/``, so that the book's
    priors stay as they are.
    """
    book = prior_bundle_path(profile, root)
    if PriorConfig.preset(profile).train_seconds == seconds:
        entry = read_manifest(book).get("sources", {}).get(source) if is_bundle(book) else None
        if entry is None or entry.get("budget") == {"seconds": float(seconds)}:
            return book
    return Path(models_dir) / "priors" / f"seconds{seconds:g}"


@dataclass(frozen=True)
class Race:
    """The settings of one run of the comparison, checked (:func:`plan_race`); see :func:`run_benchmark`.

    root: the dataset the systems train on; test_root: the one whose test tracks are scored (``root``, or
    songs of another kind); listed: those test tracks (excerpts, if any) and names their names; budget: the
    profile's training budget (:func:`flowsep.baselines.models.training_budget`); steps or train_seconds:
    the run's own budget (None: the profile's); models_dir: where trained models and time-budget priors are
    kept; systems: the :class:`System` s to run; log: a print-like function.
    """

    data: object
    root: Path
    test_root: Path
    listed: list
    profile: str
    out: Path
    models_dir: Path
    budget: dict
    systems: tuple
    steps: int | None = None
    train_seconds: float | None = None
    iterations: int = 150
    protocol: str = "standard"
    device: str = "auto"
    demo_seconds: float | None = 10.0
    priors: object = None
    excerpt: tuple | None = None
    progress: bool = True
    compile: bool = False
    resume: bool = False
    log: object = progress_log

    @property
    def names(self) -> list[str]:
        return [t.name for t in self.listed]


def plan_race(data=None, profile: str = "cpu", out="benchmark", tracks=None, systems=None, models_dir=None,
              excerpt=None, log=progress_log, test_data=None, **settings) -> Race:
    """A checked :class:`Race` (one-line errors for a user's mistake); the dataset made when it is missing.
    test_data: a MUSDB18-format root whose test tracks are scored instead of ``data``'s (the systems still
    train on ``data``). settings: the rest of :class:`Race`'s (steps, train_seconds, iterations, protocol,
    device, demo_seconds, priors, progress, compile, resume)."""
    steps, seconds = settings.get("steps"), settings.get("train_seconds")
    if settings.get("protocol", "standard") not in PROTOCOLS:
        raise FlowsepError(f"unknown protocol {settings['protocol']!r}; use 'standard' or 'paper'")
    if steps is not None and steps <= 0:
        raise FlowsepError(f"--steps must be positive, got {steps}")
    if seconds is not None and steps is not None:
        raise FlowsepError("give a budget in --steps or in --train-seconds, not both")
    if seconds is not None and not (seconds > 0 and math.isfinite(seconds)):
        raise FlowsepError(f"--train-seconds must be positive, got {seconds}")
    chosen = list(SYSTEM_KEYS) if systems is None else list(systems)
    unknown = [s for s in chosen if s not in SYSTEM_KEYS]
    if unknown or not chosen:
        raise FlowsepError(f"unknown system {unknown[0] if unknown else '(none)'!r}; choose from: "
                           f"{', '.join(SYSTEM_KEYS)}")
    out = check_writable_dir(out)
    if data is not None and str(data) not in ("", "synthetic"):
        if not Path(data).is_dir() or not is_musdb_root(data):
            raise FlowsepError(f"--data {data} is not a MUSDB18-format root (no train/ or test/ folder); run "
                               f"`flowsep synth {data}` first, or leave --data out for the synthetic set")
    if test_data is not None and not (Path(test_data).is_dir() and is_musdb_root(test_data)):
        raise FlowsepError(f"test data {test_data} is not a MUSDB18-format root (no train/ or test/ folder)")
    root = Path(ensure_dataset(profile, root=data, progress=settings.get("progress", True))).resolve()
    test_root = Path(test_data).resolve() if test_data is not None else root
    return Race(data=data, root=root, test_root=test_root,
                listed=excerpt_tracks(open_tracks(test_root, "test", tracks), excerpt),
                profile=profile, out=out, models_dir=Path(models_dir) if models_dir is not None else out,
                budget=training_budget(profile), systems=tuple(s for s in SYSTEMS if s.key in chosen),
                excerpt=excerpt, log=log or (lambda *a: None), **settings)


def run_benchmark(data=None, profile: str = "cpu", out="benchmark", tracks=None, steps: int | None = None,
                  iterations: int = 150, protocol: str = "standard", device="auto", systems=None,
                  demo_seconds: float = 10.0, progress: bool = True, log=progress_log, priors=None,
                  train_seconds: float | None = None, models_dir=None, excerpt=None, test_data=None,
                  compile: bool = False, resume: bool = False) -> pd.DataFrame:
    """Train, separate, score; write the table, the scores and the demo (see the module docstring).

    data: a MUSDB18-format root, or None / "synthetic" for the profile's synthetic set. tracks: None (every
    test track), the first N, or a list of names. steps: training steps of every learned network (default:
    the profile's budget). train_seconds: instead, seconds of training of every learned system (InstGlow's
    four priors S/4 each; see the module docstring). models_dir: where the trained models and time-budget
    priors are kept (default: ``out``), so that runs in other folders can share them. iterations: InstGlow's
    separation iterations. systems: a subset of :data:`SYSTEM_KEYS` (default: all). priors: a prior bundle
    folder (:mod:`flowsep.bundle`) that InstGlow separates with instead of training its priors (its
    training seconds come from bundle.json). excerpt: (offset, seconds): score only that part of every test
    track (None: whole tracks). test_data: a MUSDB18-format root whose test tracks are scored instead (the
    systems train on ``data`` all the same: songs they were not made for). compile: InstGlow's priors through
    torch.compile (the same estimates within float rounding, faster after compiling; its real-time factor
    includes the compiling). resume: a song whose scores a system already has in ``out`` (an earlier run of
    the same race, killed or not) is not separated again; a system that separated nothing has no real-time
    factor (NaN). Returns the table as a DataFrame.

    Three steps: :func:`build` every system, :func:`score` each on the test tracks, :func:`report` the table.
    """
    race = plan_race(data, profile, out, tracks, systems, models_dir, excerpt, log, test_data, steps=steps,
                     train_seconds=train_seconds, iterations=iterations, protocol=protocol, device=device,
                     demo_seconds=demo_seconds, priors=priors, progress=progress, compile=compile, resume=resume)
    built = build(race)
    rows, per_track = score(race, built)
    return report(race, built, rows, per_track)


# ---- step 1: build every system ---------------------------------------------------------------------------
def build(race: Race) -> dict[str, Built]:
    """{key: Built} of every system of the race, trained or reused, in the order of the table."""
    return {s.key: s.build(race) for s in race.systems}


def _build_instglow(system: System, race: Race) -> Built:
    """InstGlow: a bundle's priors (``race.priors``), or the four priors trained to the race's budget."""
    if race.priors is not None:
        bundle = load_bundle(race.priors)
        race.log(f"[{system.name}] priors of bundle {bundle.name}")
        entries = bundle.manifest["sources"].values()
        return Built(Separator(dict(bundle), method="instglow", iterations=race.iterations, device=race.device,
                               compile=race.compile, progress=False),
                     sum(float(e.get("steps", math.nan)) for e in entries),
                     sum(float(e.get("seconds", math.nan)) for e in entries))
    trained = {}
    for source in TARGETS:
        race.log(f"[{system.name}] prior {source}")
        if race.train_seconds is None:
            trained[source] = ensure_prior(source, race.profile, dataset=race.root, steps=race.steps,
                                           device=race.device, progress=race.progress)
        else:
            seconds = race.train_seconds / 4
            trained[source] = train_into_bundle(
                race_prior_bundle(race.profile, race.root, seconds, race.models_dir, source), source,
                PriorConfig.preset(race.profile), race.root, seconds=seconds, device=race.device,
                progress=race.progress, resume=True, retrain_other_config=True)
    histories = [getattr(p, "history", {}) or {} for p in trained.values()]
    return Built(Separator(trained, method="instglow", iterations=race.iterations, device=race.device,
                           compile=race.compile, progress=False),
                 sum(_last_step(h) for h in histories), sum(float(h.get("seconds", math.nan)) for h in histories),
                 race.train_seconds if race.train_seconds is not None else math.nan)


def _build_supervised(system: System, race: Race) -> Built:
    race.log(f"[{system.name}] training")
    model = ensure_supervised(system.key, race.root, race.profile,
                              race.models_dir / "models" / model_file(system.key, race.train_seconds),
                              steps=race.steps, seconds=race.train_seconds, device=race.device,
                              progress=race.progress)
    return Built(model, _last_step(model.history), model.train_seconds,
                 race.train_seconds if race.train_seconds is not None else math.nan)


#: the systems nothing trains: the oracles (which see the true stems) and the mixture as every estimate
UNTRAINED = {"oracle-irm": OracleRatioMask, "oracle-mwf": OracleWiener, "mixture": MixtureAsEstimate}

#: how a system of each kind is built
BUILDERS = {"source-only": _build_instglow, "supervised": _build_supervised,
            "oracle": lambda system, race: Built(UNTRAINED[system.key](TARGETS)),
            "bound": lambda system, race: Built(UNTRAINED[system.key](TARGETS))}


# ---- step 2: score each on the test tracks ----------------------------------------------------------------
def score(race: Race, built: dict[str, Built]) -> tuple[list[dict], dict]:
    """Separate and score the test tracks with every built system (museval:
    :func:`flowsep.evaluate.evaluate_separator`); writes their scores and the demo. Returns (one table row per
    system, {key: :func:`per_track_sdr`})."""
    rows, per_track, demo = [], {}, None
    for system in race.systems:
        b = built[system.key]
        race.log(f"[{system.name}] separating and scoring {counted(len(race.listed), 'track')}")
        # resumed, the first song may have been scored before: then this run has no demo of it to write
        scored_before = race.resume and (race.out / "scores" / system.key / "scores" / "test" /
                                         f"{race.listed[0].name}.json").is_file()
        timed = TimedSystem(b.separator)
        result = evaluate_separator(timed, race.test_root, "test", race.names, out=race.out / "scores" / system.key,
                                    protocol=race.protocol, progress=race.progress, save_estimates=False,
                                    desc=f"score {system.name}", excerpt=race.excerpt, resume=race.resume)
        sdr = result.summary["SDR"]
        row = {"system": system.name, "kind": system.kind, "key": system.key,
               **{t: float(sdr.get(t, math.nan)) for t in TARGETS}}
        row["mean"] = float(np.nanmean([row[t] for t in TARGETS]))
        row.update(steps=b.steps, train_seconds=b.seconds, budget_seconds=b.allowed, rtf=timed.real_time_factor)
        rows.append(row)
        per_track[system.key] = per_track_sdr(result.scores)
        if race.demo_seconds is not None and timed.first is not None and not scored_before:
            if demo is None:  # the first test track: its mixture and true stems, once
                track = load_track(race.listed[0])
                cut = _excerpt(track.mixture.shape[-1], track.rate, race.demo_seconds)
                _write_demo(race.out / "demo" / "reference", {"mixture": track.mixture, **track.sources},
                            track.rate, cut)
                demo = (track.rate, cut)
            _write_demo(race.out / "demo" / system.key, {t: timed.first[t] for t in TARGETS if t in timed.first},
                        *demo)
    return rows, per_track


# ---- step 3: report the table ------------------------------------------------------------------------------
def report(race: Race, built: dict[str, Built], rows: list[dict], per_track: dict) -> pd.DataFrame:
    """The table (with the statistics over songs), written as table.md, table.csv, per_track.csv,
    benchmark.json and the ledger; returns it."""
    stats = song_statistics(per_track)
    for r in rows:
        r.update(stats.loc[r["key"]].to_dict())
    table = pd.DataFrame(rows, columns=TABLE_COLUMNS)
    for col in ("wins", "losses", "songs"):
        table[col] = table[col].astype("Int64")
    in_words = budget_title(race.steps, race.train_seconds, race.budget)
    excerpt = f", {race.excerpt[1]:g} s from {race.excerpt[0]:g} s of each" if race.excerpt else ""
    title = (f"Median SDR (dB), {in_words}; {race.protocol} protocol, profile {race.profile}, "
             f"{counted(len(race.listed), 'test track')} of {race.test_root.name}" + excerpt)
    long = pd.concat({k: v for k, v in per_track.items()}, names=["system", "track"]).reset_index()
    with atomic_path(race.out / "per_track.csv") as tmp:
        long.to_csv(tmp, index=False, float_format="%.4f")
    with atomic_path(race.out / "table.csv") as tmp:
        table.drop(columns="key").to_csv(tmp, index=False, float_format="%.4f")
    with atomic_path(race.out / "table.md") as tmp:
        tmp.write_text(_markdown(table, title) + _table_note(race))
    with atomic_path(race.out / "benchmark.json") as tmp:
        tmp.write_text(json.dumps(_benchmark_info(race, table, in_words), indent=2, default=_json_default))
    instglow = built["instglow"].separator if "instglow" in built else None
    _write_ledger(race.out, table, profile=race.profile, protocol=race.protocol, root=race.root, data=race.data,
                  tracks=len(race.listed), budget=in_words, instglow=instglow, excerpt=race.excerpt,
                  per_track=per_track, test_root=race.test_root)
    return table


def _table_note(race: Race) -> str:
    """The paragraph under table.md's table: the budget, the iterations, what each column means."""
    b = race.budget
    if race.train_seconds is not None:
        spec = (f"\nEvery learned system: {race.train_seconds:g} s of training (InstGlow: four priors of "
                f"{race.train_seconds / 4:g} s), batches of {b['batch_size']} x {b['segment_seconds']:.3f} s "
                f"examples. ")
    else:
        spec = (f"\nEvery learned network: {race.steps if race.steps is not None else b['steps']} steps x batch "
                f"{b['batch_size']} x {b['segment_seconds']:.3f} s examples "
                f"(each prior: one source; each supervised model: mixtures with stems). ")
    return (spec + f"InstGlow: {race.iterations} separation iterations. steps and train s: training steps and "
            f"seconds (InstGlow: its four priors together); RTF: separation seconds per second of audio. Song "
            f"mean: the mean SDR over songs x targets, with a bootstrap 95% interval ({BOOTSTRAP} resamples of the "
            f"songs, of the targets when there is one song; seed {BOOTSTRAP_SEED}); vs InstGlow: the paired "
            f"difference over the same songs, and the songs won/lost. flowsep {__version__}.\n")


def _benchmark_info(race: Race, table: pd.DataFrame, in_words: str) -> dict:
    """benchmark.json: the table's numbers with the run's settings."""
    steps = None if race.train_seconds is not None else (race.steps if race.steps is not None
                                                         else race.budget["steps"])
    return {"flowsep_version": __version__, "profile": race.profile, "protocol": race.protocol,
            "data": str(race.root), "test_data": str(race.test_root), "tracks": race.names,
            "excerpt": list(map(float, race.excerpt)) if race.excerpt else None, "steps": steps,
            "train_seconds": race.train_seconds, "budget_title": in_words, "budget": race.budget,
            "iterations": race.iterations, "bootstrap": {"resamples": BOOTSTRAP, "seed": BOOTSTRAP_SEED},
            "systems": [{k: (None if isinstance(v, float) and math.isnan(v) else v) for k, v in r.items()}
                        for r in table.drop(columns="key").astype(object).to_dict(orient="records")]}


def _json_default(v):
    if v is pd.NA:
        return None
    if isinstance(v, (np.integer,)):
        return int(v)
    return float(v)


def is_synthetic(root) -> bool:
    """True for a dataset flowsep generated (:func:`flowsep.data.synth.synthesize` writes its manifest there)."""
    return (Path(root) / MANIFEST).is_file()


def paired_table(per_track: dict, pairs) -> pd.DataFrame:
    """The paired difference a - b of each pair (a, b) of systems over the songs both scored: the mean over
    songs x targets, its bootstrap 95% interval (:func:`bootstrap_mean`, songs resampled) and the number of
    songs (columns :data:`flowsep.ledger.PAIRED_COLUMNS`). per_track: {key: per_track_sdr(...)}."""
    rows = []
    for a, b in pairs:
        if a not in per_track or b not in per_track:
            continue
        songs = [s for s in per_track[a].index if s in per_track[b].index]
        d = (per_track[a].loc[songs] - per_track[b].loc[songs]).to_numpy(dtype=float)
        diff, low, high = bootstrap_mean(d) if songs else (math.nan, math.nan, math.nan)
        rows.append({"a": a, "b": b, "diff": diff, "ci_low": low, "ci_high": high, "songs": len(songs)})
    return pd.DataFrame(rows, columns=ledger.PAIRED_COLUMNS)


def _write_ledger(out: Path, table: pd.DataFrame, *, profile, protocol, root, data, tracks, budget, instglow,
                  excerpt=None, per_track=None, test_root=None):
    synthetic = data is None or str(data) in ("", "synthetic") or is_synthetic(root)
    settings = ledger.flowsep_settings(profile, instglow)
    paired = paired_table(per_track or {}, ledger.pairs_to_judge(table["key"]))
    claim_rows = ledger.claims(table, profile=profile, protocol=protocol, synthetic=synthetic, paired=paired,
                               songs=tracks, seconds=excerpt[1] if excerpt else None,
                               test_set=Path(test_root).name if test_root is not None and
                               Path(test_root).resolve() != Path(root).resolve() else None)
    deviation_rows = ledger.deviations(profile, data=Path(root).name, synthetic=synthetic, protocol=protocol,
                                       tracks=tracks, budget=budget, settings=settings, excerpt=excerpt)
    ledger.write_ledger(out, claim_rows, deviation_rows,
                        f"Reproduction ledger: profile {profile}, {protocol} protocol, {budget}",
                        ledger.settings_rows(settings))


def budget_curve(data=None, profile: str = "cpu", out="curve", budgets=(60.0, 180.0, 540.0), tracks=None,
                 systems=("instglow", "openunmix"), models_dir=None, reuse=None, log=progress_log,
                 **kwargs) -> pd.DataFrame:
    """Mean SDR of each system at several training-time budgets: how each grows with compute, where they cross.

    For every budget S (seconds per system, as ``run_benchmark(train_seconds=S)``) the systems are trained
    (or reused from ``models_dir``, e.g. the folder of a race at one of the budgets) and scored; the results
    go to ``out/seconds<S>/`` and the curve to ``out/budget_curve.csv`` and ``out/budget_curve.md``: one row
    per system and budget with the mean SDR over songs x targets, its bootstrap 95% interval, the median-based
    mean of the table, the steps and seconds trained and the real-time factor. reuse: {budget: folder} of races
    already run at that budget with these systems' models (give the same ``models_dir``), the same protocol and
    excerpt (e.g. the chapter's race; checked against its benchmark.json): the per-song scores they have of the
    curve's songs are taken as they are, so no song is separated twice (a system whose songs all came from
    the race has no real-time factor at that point). kwargs go to :func:`run_benchmark`. Returns the curve.
    """
    budgets = sorted(float(b) for b in budgets)
    if len(budgets) < 1 or not all(b > 0 and math.isfinite(b) for b in budgets):
        raise FlowsepError(f"budgets must be positive seconds, got {budgets}")
    out = check_writable_dir(out)
    models_dir = Path(models_dir) if models_dir is not None else out
    rows = []
    for b in budgets:
        (log or (lambda *a: None))(f"[budget curve] {b:g} s per system")
        point = out / f"seconds{b:g}"
        if b in (reuse or {}):
            _copy_scores(Path(reuse[b]), point, systems, kwargs.get("protocol", "standard"), kwargs.get("excerpt"))
        table = run_benchmark(data, profile, point, tracks=tracks, train_seconds=b, systems=list(systems),
                              demo_seconds=None, models_dir=models_dir, log=log, resume=b in (reuse or {}), **kwargs)
        for _, r in table[table["key"].isin(systems)].iterrows():
            rows.append({"system": r["system"], "key": r["key"], "budget_seconds": b, "song_mean": r["song_mean"],
                         "ci_low": r["ci_low"], "ci_high": r["ci_high"], "mean": r["mean"], "steps": r["steps"],
                         "train_seconds": r["train_seconds"], "rtf": r["rtf"], "songs": r["songs"],
                         "diff_instglow": r["diff_instglow"], "diff_ci_low": r["diff_ci_low"],
                         "diff_ci_high": r["diff_ci_high"]})
    curve = pd.DataFrame(rows)
    with atomic_path(out / "budget_curve.csv") as tmp:
        curve.to_csv(tmp, index=False, float_format="%.4f")
    lines = [f"# Mean SDR against training time: profile {profile}, {counted(int(curve['songs'].max()), 'test song')}",
             "",
             "| system | budget s | steps | train s | song mean [95% CI] | median-based mean | RTF |",
             "|---|---|---|---|---|---|---|"]
    for _, r in curve.iterrows():
        lines.append(f"| {r['system']} | {r['budget_seconds']:g} | {_fmt(r['steps'], 0)} | "
                     f"{_fmt(r['train_seconds'], 0)} | {r['song_mean']:.2f} [{r['ci_low']:.2f}, {r['ci_high']:.2f}] | "
                     f"{r['mean']:.2f} | {_fmt(r['rtf'], 3)} |")
    lines.append(f"\nEvery system: the budget in seconds of training (InstGlow: four priors of a quarter each). "
                 f"flowsep {__version__}.")
    with atomic_path(out / "budget_curve.md") as tmp:
        tmp.write_text("\n".join(lines) + "\n")
    return curve


def _copy_scores(race_out: Path, out: Path, systems, protocol: str, excerpt) -> None:
    """Each system's per-song score files of the race in ``race_out`` into the race in ``out`` (a point of a
    budget curve), where ``run_benchmark(resume=True)`` takes them instead of separating those songs again.
    The race must have scored with the same protocol and excerpt (its benchmark.json)."""
    info_path = race_out / "benchmark.json"
    if not info_path.is_file():
        raise FlowsepError(f"{race_out} holds no finished race (no benchmark.json); run it first, or leave it out "
                           "of reuse")
    info = json.loads(info_path.read_text())
    want = list(map(float, excerpt)) if excerpt else None
    if info.get("protocol") != protocol or info.get("excerpt") != want:
        raise FlowsepError(f"the race in {race_out} scored with the {info.get('protocol')} protocol and excerpt "
                           f"{info.get('excerpt')}, not {protocol} and {want}; reuse only the same race")
    for key in systems:
        found = sorted((race_out / "scores" / key / "scores" / "test").glob("*.json"))
        if not found:
            raise FlowsepError(f"the race in {race_out} has no scores of {key}; run it first, or leave it out of reuse")
        folder = out / "scores" / key / "scores" / "test"
        folder.mkdir(parents=True, exist_ok=True)
        for path in found:
            with atomic_path(folder / path.name) as tmp:
                shutil.copyfile(path, tmp)


# ---- command line -----------------------------------------------------------------------------------
def register_cli(subparsers) -> None:
    p = subparsers.add_parser(
        "benchmark", help="rerun the paper's comparison: InstGlow, supervised systems, oracles, on one budget",
        description="Train the InstGlow priors and the supervised systems (Open-Unmix, Demucs, Conv-TasNet, "
                    "Wave-U-Net) with one budget, separate the test tracks with every system (and the oracles "
                    "and the mixture), score them with museval and write OUT/table.md, OUT/table.csv (with bootstrap "
                    "intervals and paired differences to InstGlow), OUT/ledger.md and OUT/ledger.csv (the paper's "
                    "claims beside this run, and flowsep's deviations) and OUT/demo/<system>/<target>.wav.")
    p.add_argument("--data", default="synthetic", metavar="ROOT",
                   help="MUSDB18-format root (default: the profile's synthetic set, generated if missing)")
    p.add_argument("--profile", default="cpu", help="smoke, cpu, gpu or paper (default: cpu)")
    p.add_argument("--out", required=True, metavar="DIR", help="folder for the table, scores, models and demo")
    p.add_argument("--tracks", type=int, default=None, metavar="N", help="score only the first N test tracks")
    p.add_argument("--excerpt", type=float, default=None, metavar="SECONDS",
                   help="score only this many seconds of every test track, from --offset (default: whole tracks)")
    p.add_argument("--offset", type=float, default=0.0, metavar="SECONDS",
                   help="where the --excerpt starts in every test track (default 0)")
    p.add_argument("--steps", type=int, default=None, help="training steps of every learned network: the "
                                                                "step-matched race (default: the profile's budget)")
    p.add_argument("--train-seconds", type=float, default=None, metavar="S",
                        help="seconds of training of every learned system: the race at equal training time "
                             "(InstGlow's four priors S/4 each; validation and checkpoints not counted)")
    p.add_argument("--curve", default=None, metavar="S1,S2,...",
                   help="instead of the table: mean SDR of InstGlow and Open-Unmix (or --systems) at each of "
                        "these training-time budgets (seconds per system), written to OUT/budget_curve.md")
    p.add_argument("--test-data", default=None, metavar="ROOT",
                   help="score the test tracks of this MUSDB18-format root instead (the systems still train on "
                        "--data); 'heldout': the profile's synthetic set of the held-out style")
    p.add_argument("--models", default=None, metavar="DIR",
                   help="where the trained systems are kept (default: OUT); give an earlier race's OUT to score "
                        "its systems on --test-data without training them again")
    p.add_argument("--iterations", type=int, default=150, help="InstGlow separation iterations (default 150)")
    p.add_argument("--compile", action="store_true",
                   help="InstGlow's priors through torch.compile (the same estimates; faster after compiling)")
    p.add_argument("--resume", action="store_true",
                   help="take the per-song scores an earlier run left in OUT (killed or not) instead of separating "
                        "those songs again (their systems then have no real-time factor)")
    p.add_argument("-p", "--priors", default=None, metavar="BUNDLE",
                   help="separate with this prior bundle instead of training InstGlow's priors")
    p.add_argument("--protocol", choices=("standard", "paper"), default="standard",
                   help="standard (MUSDB18: 1 s windows, stereo 44.1 kHz) or paper (60 s mono segments)")
    p.add_argument("--systems", default=None, metavar="LIST",
                   help=f"comma-separated subset of: {','.join(SYSTEM_KEYS)} (default: all)")
    p.add_argument("--demo-seconds", type=float, default=10.0,
                   help="length of the demo excerpt of the first test track (0: whole track; default 10)")
    p.add_argument("--device", default="auto", help="auto (default), cpu or cuda")
    p.add_argument("--quiet", action="store_true", help="no progress bars")
    p.set_defaults(func=_cli)


def _cli(args) -> int:
    if args.tracks is not None and args.tracks < 1:
        raise FlowsepError(f"--tracks must be at least 1, got {args.tracks}")
    if args.iterations < 0:
        raise FlowsepError(f"--iterations must be 0 or more, got {args.iterations}")
    systems = [s.strip() for s in args.systems.split(",") if s.strip()] if args.systems else None
    if args.offset and args.excerpt is None:
        raise FlowsepError("--offset needs --excerpt (the seconds to score from there)")
    excerpt = (args.offset, args.excerpt) if args.excerpt is not None else None
    test_data = args.test_data
    if test_data == "heldout":
        test_data = ensure_dataset(args.profile, style="heldout", progress=not args.quiet)

    if args.curve is not None:
        try:
            budgets = [float(b) for b in args.curve.split(",") if b.strip()]
        except ValueError:
            raise FlowsepError(f"--curve takes seconds separated by commas, got {args.curve!r}") from None
        if args.steps is not None or args.train_seconds is not None:
            raise FlowsepError("--curve sets the budgets itself; leave out --steps and --train-seconds")
        if args.resume:
            raise FlowsepError("--resume goes on with one race; leave it out of --curve (or run each budget with "
                               "--train-seconds S --resume)")
        curve = budget_curve(resolve_root(args.data), args.profile, args.out, budgets, tracks=args.tracks,
                             systems=systems or ("instglow", "openunmix"), iterations=args.iterations,
                             protocol=args.protocol, device=args.device, progress=not args.quiet,
                             log=(lambda *a: None) if args.quiet else progress_log, excerpt=excerpt,
                             models_dir=args.models, test_data=test_data, compile=args.compile)
        print(curve[["system", "budget_seconds", "steps", "song_mean", "ci_low", "ci_high"]].to_string(
            index=False, float_format=lambda v: f"{v:.2f}"))
        print(f"wrote {Path(args.out) / 'budget_curve.md'}")
        return 0
    table = run_benchmark(resolve_root(args.data), args.profile, args.out, tracks=args.tracks, steps=args.steps,
                          iterations=args.iterations, protocol=args.protocol, device=args.device,
                          systems=systems, demo_seconds=args.demo_seconds, progress=not args.quiet,
                          log=(lambda *a: None) if args.quiet else progress_log, priors=args.priors,
                          train_seconds=args.train_seconds, excerpt=excerpt, models_dir=args.models,
                          test_data=test_data, compile=args.compile, resume=args.resume)
    cols = ["system", *TARGETS, "mean", "steps", "train_seconds", "rtf", "ci_low", "ci_high"]
    print(table[cols].to_string(index=False, float_format=lambda v: f"{v:.2f}"))
    print(f"wrote {Path(args.out) / 'table.md'}, {Path(args.out) / 'table.csv'} and {Path(args.out) / 'ledger.md'}")
    return 0
