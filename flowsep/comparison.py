"""The comparison of the paper's table, rerun on our data with one budget: InstGlow against full supervision.

Chapter: "Evaluation".

:func:`run_benchmark` trains what needs training on the train split of a MUSDB18-format root — the four
InstGlow priors (vocals, drums, bass, other; :func:`flowsep.assets.ensure_prior`) and the four supervised
systems (Open-Unmix, Demucs, Conv-TasNet, Wave-U-Net; :mod:`flowsep.baselines`), every one with the
profile's budget (:func:`flowsep.baselines.models.training_budget`) — then separates the test tracks with
every system, the oracles and the mixture-as-estimate bound included, scores them with museval through
:func:`flowsep.evaluate.evaluate_separator`, and writes under ``out``:

* ``table.md`` and ``table.csv``: one row per system; median SDR (dB) of vocals, drums, bass, other (by
  default the standard protocol: 1 s windows, median over windows then over tracks), their mean, the
  training time (seconds, summed over the four priors for InstGlow) and the real-time factor of
  separation (seconds of computing per second of audio);
* ``benchmark.json``: the same numbers with the profile, protocol, budget and tracks;
* ``scores/<system>/``: museval's per-track JSON files and ``summary.csv`` of each system;
* ``models/<system>.pt``: the supervised checkpoints (reused, or resumed, by the next run);
* ``demo/<system>/<target>.wav`` for the first test track, and ``demo/reference/`` with its mixture
  and true stems: the book's grid of audio players (an excerpt of ``demo_seconds``, 16-bit).
"""
from __future__ import annotations

import json
import math
import time
from pathlib import Path

import numpy as np
import pandas as pd

from . import __version__
from .errors import FlowsepError

TARGETS = ("vocals", "drums", "bass", "other")
#: (key, name in the table, kind), in the order of the table
SYSTEMS = (
    ("instglow", "InstGlow", "source-only"),
    ("openunmix", "Open-Unmix", "supervised"),
    ("demucs", "Demucs", "supervised"),
    ("convtasnet", "Conv-TasNet", "supervised"),
    ("waveunet", "Wave-U-Net", "supervised"),
    ("oracle-irm", "oracle IRM", "oracle"),
    ("oracle-mwf", "oracle MWF", "oracle"),
    ("mixture", "mixture", "bound"),
)
SYSTEM_KEYS = tuple(k for k, _, _ in SYSTEMS)


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
    from .io import write_audio

    for name, a in audio.items():
        write_audio(folder / f"{name}.wav", np.asarray(a)[..., cut], rate)


def _markdown(table: pd.DataFrame, title: str) -> str:
    cols = ["system", "kind", *TARGETS, "mean", "train s", "RTF"]
    lines = [f"# {title}", "", "| " + " | ".join(cols) + " |", "|" + "---|" * len(cols)]
    fmt = lambda v, d: "-" if v is None or (isinstance(v, float) and math.isnan(v)) else f"{v:.{d}f}"  # noqa: E731
    for _, r in table.iterrows():
        cells = [r["system"], r["kind"], *(fmt(r[t], 2) for t in TARGETS), fmt(r["mean"], 2),
                 fmt(r["train_seconds"], 0), fmt(r["rtf"], 3)]
        lines.append("| " + " | ".join(cells) + " |")
    return "\n".join(lines) + "\n"


def run_benchmark(data=None, profile: str = "cpu", out="benchmark", tracks=None, steps: int | None = None,
                  iterations: int = 150, protocol: str = "standard", device="auto", systems=None,
                  demo_seconds: float = 10.0, progress: bool = True, log=print, priors=None) -> pd.DataFrame:
    """Train, separate, score; write the table, the scores and the demo (see the module docstring).

    data: a MUSDB18-format root, or None / "synthetic" for the profile's synthetic set. tracks: None (every
    test track), the first N, or a list of names. steps: training steps of every learned system (default:
    the profile's budget). iterations: InstGlow's separation iterations. systems: a subset of
    :data:`SYSTEM_KEYS` (default: all). priors: a prior bundle folder (:mod:`flowsep.bundle`) that InstGlow
    separates with instead of training its priors (its training seconds come from bundle.json). Returns the
    table as a DataFrame.
    """
    from .assets import ensure_dataset, ensure_prior
    from .baselines import MixtureAsEstimate, OracleRatioMask, OracleWiener, ensure_supervised, training_budget
    from .evaluate import PROTOCOLS, evaluate_separator, load_track, open_tracks
    from .io import atomic_path
    from .separate import Separator
    from .separate_files import check_writable_dir

    if protocol not in PROTOCOLS:
        raise FlowsepError(f"unknown protocol {protocol!r}; use 'standard' or 'paper'")
    if steps is not None and steps <= 0:
        raise FlowsepError(f"--steps must be positive, got {steps}")
    chosen = list(SYSTEM_KEYS) if systems is None else list(systems)
    unknown = [s for s in chosen if s not in SYSTEM_KEYS]
    if unknown or not chosen:
        raise FlowsepError(f"unknown system {unknown[0] if unknown else '(none)'!r}; choose from: "
                           f"{', '.join(SYSTEM_KEYS)}")
    budget = training_budget(profile)
    out = check_writable_dir(out)
    if data is not None and str(data) not in ("", "synthetic"):
        from .data.musdb import is_musdb_root
        if not Path(data).is_dir() or not is_musdb_root(data):
            raise FlowsepError(f"--data {data} is not a MUSDB18-format root (no train/ or test/ folder); run "
                               f"`flowsep synth {data}` first, or leave --data out for the synthetic set")
    root = Path(ensure_dataset(profile, root=data, progress=progress)).resolve()
    listed = open_tracks(root, "test", tracks)
    names = [t.name for t in listed]
    log = log or (lambda *a: None)

    rows, built = [], {}
    for key, title, kind in SYSTEMS:
        if key not in chosen:
            continue
        train_seconds = math.nan
        if key == "instglow" and priors is not None:
            from .bundle import load_bundle
            bundle = load_bundle(priors)
            log(f"[{title}] priors of bundle {bundle.name}")
            train_seconds = sum(float(e.get("seconds", math.nan)) for e in bundle.manifest["sources"].values())
            system = Separator(dict(bundle), iterations=iterations, device=device, progress=False)
        elif key == "instglow":
            trained = {}
            for source in TARGETS:
                log(f"[{title}] prior {source}")
                trained[source] = ensure_prior(source, profile, dataset=root, steps=steps, device=device,
                                               progress=progress)
            train_seconds = sum(float(getattr(p, "history", {}).get("seconds", math.nan)) for p in trained.values())
            system = Separator(trained, iterations=iterations, device=device, progress=False)
        elif kind == "supervised":
            log(f"[{title}] training")
            system = ensure_supervised(key, root, profile, out / "models" / f"{key}.pt", steps=steps,
                                       device=device, progress=progress)
            train_seconds = system.train_seconds
        elif key == "oracle-irm":
            system = OracleRatioMask(TARGETS)
        elif key == "oracle-mwf":
            system = OracleWiener(TARGETS)
        else:
            system = MixtureAsEstimate(TARGETS)
        built[key] = (title, kind, system, train_seconds)

    demo = None
    for key, (title, kind, system, train_seconds) in built.items():
        log(f"[{title}] separating and scoring {len(names)} track(s)")
        timed = TimedSystem(system)
        result = evaluate_separator(timed, root, "test", names, out=out / "scores" / key, protocol=protocol,
                                    progress=progress, save_estimates=False, desc=f"score {title}")
        sdr = result.summary["SDR"]
        row = {"system": title, "kind": kind, "key": key,
               **{t: float(sdr.get(t, math.nan)) for t in TARGETS}}
        row["mean"] = float(np.nanmean([row[t] for t in TARGETS]))
        row["train_seconds"], row["rtf"] = train_seconds, timed.real_time_factor
        rows.append(row)
        if demo_seconds is not None and timed.first is not None:
            if demo is None:  # the first test track: its mixture and true stems, once
                track = load_track(listed[0])
                cut = _excerpt(track.mixture.shape[-1], track.rate, demo_seconds)
                _write_demo(out / "demo" / "reference", {"mixture": track.mixture, **track.sources}, track.rate, cut)
                demo = (track.rate, cut)
            _write_demo(out / "demo" / key, {t: timed.first[t] for t in TARGETS if t in timed.first}, *demo)

    table = pd.DataFrame(rows, columns=["system", "kind", "key", *TARGETS, "mean", "train_seconds", "rtf"])
    title = (f"Median SDR (dB), {protocol} protocol, profile {profile}, {len(names)} test track(s) of "
             f"{Path(root).name}")
    with atomic_path(out / "table.csv") as tmp:
        table.drop(columns="key").to_csv(tmp, index=False, float_format="%.4f")
    note = (f"\nEvery learned system: {steps if steps is not None else budget['steps']} steps x batch "
            f"{budget['batch_size']} x {budget['segment_seconds']:.3f} s examples "
            f"(each prior: one source; each supervised model: mixtures with stems). "
            f"InstGlow: {iterations} separation iterations. train s: training seconds (InstGlow: four priors); "
            f"RTF: separation seconds per second of audio. flowsep {__version__}.\n")
    with atomic_path(out / "table.md") as tmp:
        tmp.write_text(_markdown(table, title) + note)
    info = {"flowsep_version": __version__, "profile": profile, "protocol": protocol, "data": str(root),
            "tracks": names, "steps": steps if steps is not None else budget["steps"], "budget": budget,
            "iterations": iterations, "systems": table.drop(columns="key").to_dict(orient="records")}
    with atomic_path(out / "benchmark.json") as tmp:
        tmp.write_text(json.dumps(info, indent=2, default=float))
    return table


# ---- command line -----------------------------------------------------------------------------------
def register_cli(subparsers) -> None:
    p = subparsers.add_parser(
        "benchmark", help="rerun the paper's comparison: InstGlow, supervised systems, oracles, on one budget",
        description="Train the InstGlow priors and the supervised systems (Open-Unmix, Demucs, Conv-TasNet, "
                    "Wave-U-Net) with one budget, separate the test tracks with every system (and the oracles "
                    "and the mixture), score them with museval and write OUT/table.md, OUT/table.csv and "
                    "OUT/demo/<system>/<target>.wav.")
    p.add_argument("--data", default="synthetic", metavar="ROOT",
                   help="MUSDB18-format root (default: the profile's synthetic set, generated if missing)")
    p.add_argument("--profile", default="cpu", help="smoke, cpu, gpu or paper (default: cpu)")
    p.add_argument("--out", required=True, metavar="DIR", help="folder for the table, scores, models and demo")
    p.add_argument("--tracks", type=int, default=None, metavar="N", help="score only the first N test tracks")
    p.add_argument("--steps", type=int, default=None, help="training steps of every learned system "
                                                           "(default: the profile's budget)")
    p.add_argument("--iterations", type=int, default=150, help="InstGlow separation iterations (default 150)")
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
    from .data.musdb import resolve_root

    table = run_benchmark(resolve_root(args.data), args.profile, args.out, tracks=args.tracks, steps=args.steps,
                          iterations=args.iterations, protocol=args.protocol, device=args.device,
                          systems=systems, demo_seconds=args.demo_seconds, progress=not args.quiet,
                          log=(lambda *a: None) if args.quiet else print, priors=args.priors)
    cols = ["system", *TARGETS, "mean", "train_seconds", "rtf"]
    print(table[cols].to_string(index=False, float_format=lambda v: f"{v:.2f}"))
    print(f"wrote {Path(args.out) / 'table.md'} and {Path(args.out) / 'table.csv'}")
    return 0
