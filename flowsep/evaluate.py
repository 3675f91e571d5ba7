"""Evaluation with museval (BSS Eval v4): the standard MUSDB18 protocol and the InstGlow paper's.

Chapter: "Evaluation".

The scores are museval's (BSS Eval v4, images), computed by :func:`flowsep.bsseval.bss_eval`, which gives
museval.evaluate's numbers in a fraction of its time; museval still aggregates them (its TrackStore and
EvalStore).

Any system is a callable ``f(mixture, rate) -> {target: estimate}`` with (channels, samples) arrays;
InstGlow's :class:`flowsep.separate.Separator`, the baselines and the bounds below (mixture as
estimate, oracle ratio mask) are all scored by the same code:

* **standard** (SiSEC 2018 / MUSDB18): 44.1 kHz stereo, BSS Eval v4 in 1 s windows with a 1 s hop,
  median over the windows of a track, then median over tracks.
* **paper** (the protocol of the published InstGlow table): mono at 22.05 kHz, one BSS Eval window per
  60 s segment, segments whose reference is near-silent dropped, median over all segments of all
  tracks pooled. Its numbers are not comparable with the standard protocol's.

Files written by :func:`evaluate_separator` under ``out``: ``estimates/<subset>/<track>/<target>.wav``
(float wav at the track's rate), ``scores/<subset>/<track>.json`` (museval's per-track format) and
``summary.csv`` (target, SDR, SIR, SAR, ISR).
"""
from __future__ import annotations

import json
import math
import warnings
from dataclasses import dataclass, field
from pathlib import Path

import museval
import numpy as np
import pandas as pd
import torch
from museval.aggregate import TrackStore, json2df

from .bsseval import bss_eval
from .data.musdb import open_db, resolve_root, stream_audio, target_audio
from .errors import FlowsepError
from .io import atomic_path, check_writable_dir, read_audio, write_audio
from .progress import bar as progress_bar
from .separate import Separator
from .separate_files import add_separation_options, load_priors, separation_options
from .spectral import as_channels_first, downmix, resample

METRICS = ("SDR", "SIR", "SAR", "ISR")
PROTOCOLS = ("standard", "paper")
PAPER_RATE = 22050
PAPER_SEGMENT = 60.0
PAPER_SILENCE_DB = -60.0   # a reference segment quieter than this (RMS, dBFS) is "near-silent"; the
#                           paper does not give its threshold
MIN_PAPER_SEGMENT = 1.0    # a trailing segment shorter than this (seconds) is not scored


# ---- scoring one track --------------------------------------------------------------------------------
def _museval_layout(audio, what: str) -> np.ndarray:
    """(channels, samples) or (samples,) -> museval's (samples, channels) float64."""
    t = as_channels_first(audio, what)
    return t.double().numpy().T


def _groups(targets: list[str]) -> list[tuple[list[str], set[str]]]:
    """museval's grouping: targets scored together, and which of them to keep from that group.

    As in ``museval.eval_mus_track``, when both vocals and accompaniment are estimated the pair is scored
    on its own (vocals' score comes from the pair) and accompaniment is left out of the main group.
    """
    has_acc = "vocals" in targets and "accompaniment" in targets
    if not has_acc:
        return [(targets, set(targets))]
    main = [t for t in targets if t != "accompaniment"]
    groups = [(["vocals", "accompaniment"], {"vocals", "accompaniment"})]
    if len(main) >= 2:
        groups.insert(0, (main, set(main) - {"vocals"}))
    return groups


def _bss(references: dict, estimates: dict, targets: list[str], win: int, hop: int) -> dict[str, dict]:
    """BSS Eval v4 of ``targets``: {target: {metric: list over windows}} (museval.evaluate's numbers, computed
    by :func:`flowsep.bsseval.bss_eval`)."""
    out = {}
    for group, keep in _groups(targets):
        ref = np.stack([references[t] for t in group])
        est = [estimates[t] for t in group]
        n = ref.shape[1]
        est = np.stack([e[:n] if len(e) >= n else np.pad(e, ((0, n - len(e)), (0, 0))) for e in est])
        sdr, isr, sir, sar = bss_eval(ref, est, win=win, hop=hop)
        for i, t in enumerate(group):
            if t in keep:
                out[t] = {"SDR": sdr[i].tolist(), "SIR": sir[i].tolist(), "SAR": sar[i].tolist(),
                          "ISR": isr[i].tolist()}
    return out


def _common_targets(references: dict, estimates: dict, track_name: str) -> list[str]:
    targets = [t for t in references if t in estimates]
    if not targets:
        raise FlowsepError(f"none of the estimates ({', '.join(estimates) or 'none'}) is a target of track "
                           f"{track_name!r} ({', '.join(references)}); name the priors after the stems")
    return targets


def _prepare(references: dict, estimates: dict, track_name: str):
    targets = _common_targets(references, estimates, track_name)
    refs = {t: _museval_layout(references[t], f"reference {t!r}") for t in targets}
    ests = {t: _museval_layout(estimates[t], f"estimate {t!r}") for t in targets}
    for t in targets:
        if refs[t].shape[1] != ests[t].shape[1]:
            raise FlowsepError(f"estimate {t!r} of {track_name!r} has {ests[t].shape[1]} channel(s) but the "
                               f"reference has {refs[t].shape[1]}; give estimates with the mixture's channels")
    return targets, refs, ests


def score_track(references: dict, estimates: dict, rate: int, *, win: float = 1.0, hop: float = 1.0,
                track_name: str = "track"):
    """BSS Eval v4 (standard protocol) of one track's estimates.

    references, estimates: {target: (channels, samples)}; targets present in both are scored together,
    as ``museval.eval_mus_track`` does. Returns a ``museval.TrackStore``: ``.df`` is a long DataFrame
    (track, target, metric, score, time) with one row per window, ``.json`` museval's per-track file.
    """
    targets, refs, ests = _prepare(references, estimates, track_name)
    store = TrackStore(track_name=track_name, win=win, hop=hop)
    scores = _bss(refs, ests, targets, int(win * rate), int(hop * rate))
    for t in targets:
        store.add_target(target_name=t, values=scores[t])
    return store


def _downmix_columns(x: np.ndarray, rate: int, new_rate: int) -> np.ndarray:
    """(samples, channels) -> (samples, 1) downmix at ``new_rate``."""
    return downmix(x, rate, new_rate, channel_axis=1)[:, None]


def score_track_paper(references: dict, estimates: dict, rate: int, *, segment: float = PAPER_SEGMENT,
                      eval_rate: int = PAPER_RATE, silence_db: float = PAPER_SILENCE_DB,
                      track_name: str = "track"):
    """The paper's protocol for one track: mono at ``eval_rate``, one window per ``segment`` seconds.

    A target's score in a segment where its reference is near-silent (RMS below ``silence_db`` dBFS) is NaN
    (dropped from the pooled median). Returns a ``museval.TrackStore`` with one frame per segment.
    """
    targets, refs, ests = _prepare(references, estimates, track_name)
    refs = {t: _downmix_columns(v, rate, eval_rate) for t, v in refs.items()}
    ests = {t: _downmix_columns(v, rate, eval_rate) for t, v in ests.items()}
    n = len(next(iter(refs.values())))
    seg = int(round(segment * eval_rate))
    starts = [s for s in range(0, n, seg) if min(n, s + seg) - s >= MIN_PAPER_SEGMENT * eval_rate] or [0]
    values = {t: {m: [] for m in METRICS} for t in targets}
    floor = 10 ** (silence_db / 20)
    for s in starts:
        r = {t: v[s:s + seg] for t, v in refs.items()}
        e = {t: v[s:s + seg] for t, v in ests.items()}
        length = len(next(iter(r.values())))
        scores = _bss(r, e, targets, length, length)
        for t in targets:
            silent = float(np.sqrt(np.mean(r[t] ** 2))) < floor
            for m in METRICS:
                values[t][m].append(math.nan if silent else float(scores[t][m][0]))
    store = TrackStore(track_name=track_name, win=segment, hop=segment)
    for t in targets:
        store.add_target(target_name=t, values=values[t])
    return store


# ---- summaries --------------------------------------------------------------------------------------
def scores_frame(scores) -> pd.DataFrame:
    """A long DataFrame (track, target, metric, score, time) from TrackStores, DataFrames or a mix."""
    if isinstance(scores, pd.DataFrame):
        return scores
    frames = [s if isinstance(s, pd.DataFrame) else s.df for s in scores]
    if not frames:
        return pd.DataFrame(columns=["track", "target", "metric", "score", "time"])
    return pd.concat(frames, ignore_index=True)


def summarize(scores, protocol: str = "standard") -> pd.DataFrame:
    """Table of SDR, SIR, SAR, ISR per target (rows in first-seen order).

    standard: median over windows per track (NaN windows skipped), then median over tracks.
    paper: median over all segments of all tracks pooled (NaN = dropped segments skipped).
    """
    if protocol not in PROTOCOLS:
        raise FlowsepError(f"unknown protocol {protocol!r}; use 'standard' or 'paper'")
    df = scores_frame(scores)
    if df.empty:
        return pd.DataFrame(columns=list(METRICS)).rename_axis("target")
    df = df.assign(score=pd.to_numeric(df["score"], errors="coerce"))
    if protocol == "standard":  # museval's own aggregation: median over windows, then over tracks
        store = museval.EvalStore(frames_agg="median", tracks_agg="median")
        store.add_track(df)
        table = store.agg_frames_tracks_scores()
    else:
        table = df.groupby(["target", "metric"], sort=False)["score"].median()
    table = table.unstack("metric")
    return table.reindex(columns=list(METRICS)).reindex(list(dict.fromkeys(df["target"])))


def format_summary(summary: pd.DataFrame) -> str:
    """The summary as a fixed-width text table (dB, two decimals)."""
    return summary.to_string(float_format=lambda v: f"{v:.2f}", na_rep="nan")


# ---- datasets ---------------------------------------------------------------------------------------
@dataclass
class Track:
    """One track of a MUSDB18-format set: (channels, samples) float32 arrays at ``rate``.

    ``sources``: the stems that add up to the mixture; ``references``: every scorable target (the stems
    and musdb's derived targets such as accompaniment).
    """

    name: str
    subset: str
    rate: int
    mixture: np.ndarray
    sources: dict[str, np.ndarray]
    references: dict[str, np.ndarray] = field(repr=False, default_factory=dict)

    def as_mono(self) -> "Track":
        """The same track downmixed to one channel (the paper's protocol separates mono mixtures)."""
        down = lambda a: a.mean(axis=0, keepdims=True)  # noqa: E731
        return Track(self.name, self.subset, self.rate, down(self.mixture),
                     {k: down(v) for k, v in self.sources.items()},
                     {k: down(v) for k, v in self.references.items()})


def open_tracks(root, subset: str = "test", tracks=None) -> list:
    """The musdb tracks of ``root``'s ``subset``: the first ``tracks`` (an int), the named ones (a list), or all."""
    db = open_db(root, subset, None)
    found = list(db.tracks)
    if not found:
        raise FlowsepError(f"{root} has no tracks in its {subset!r} subset; check --data and --subset")
    if tracks is None:
        return found
    if isinstance(tracks, (int, np.integer)):
        if tracks < 1:
            raise FlowsepError(f"--tracks must be at least 1, got {tracks}")
        return found[:int(tracks)]
    by_name = {t.name: t for t in found}
    missing = [n for n in tracks if n not in by_name]
    if missing:
        raise FlowsepError(f"no track {missing[0]!r} in {root}/{subset}; choose from: {', '.join(by_name)}")
    return [by_name[n] for n in tracks]


def load_track(track) -> Track:
    """Read a musdb track's audio into a :class:`Track`."""
    f32 = lambda a: np.ascontiguousarray(np.asarray(a, dtype=np.float32).T)  # noqa: E731
    sources = {k: f32(stream_audio(track, s)) for k, s in track.sources.items()}
    references = dict(sources)
    for k in track.targets:
        if k not in references and k != "linear_mixture":
            references[k] = f32(target_audio(track, k))
    return Track(track.name, track.subset, int(track.rate), f32(stream_audio(track)), sources, references)


def iter_tracks(root, subset: str = "test", tracks=None):
    """Yield :class:`Track` objects one at a time (audio is read when the track is reached)."""
    for t in open_tracks(root, subset, tracks):
        yield load_track(t)


# ---- evaluating a system on a dataset ----------------------------------------------------------------
@dataclass
class Evaluation:
    """Scores of one system: ``scores`` (long DataFrame, one row per window or segment), ``summary``."""

    scores: pd.DataFrame
    summary: pd.DataFrame
    protocol: str

    def __str__(self) -> str:
        return format_summary(self.summary)


def _write_text(path: Path, text: str) -> None:
    with atomic_path(path) as tmp:
        tmp.write_text(text)


def load_scores(out, subset: str = "test") -> pd.DataFrame:
    """The long score DataFrame of every ``out/scores/<subset>/<track>.json``."""
    frames = []
    for p in sorted((Path(out) / "scores" / subset).glob("*.json")):
        frames.append(json2df(json.loads(p.read_text()), p.stem))
    return scores_frame(frames)


def _call_system(system, track: Track) -> dict:
    if getattr(system, "needs_sources", False):
        est = system(track.mixture, track.rate, sources=track.sources)
    else:
        est = system(track.mixture, track.rate)
    if not isinstance(est, dict):
        raise FlowsepError(f"the system returned a {type(est).__name__}; it must return {{target: estimate}}")
    return {k: np.asarray(v.detach().cpu() if isinstance(v, torch.Tensor) else v, dtype=np.float32)
            for k, v in est.items()}


def excerpt_tracks(listed: list, excerpt) -> list:
    """Limit musdb tracks to ``excerpt`` = (offset, seconds) of each: musdb then reads only that part of
    the mixture and of every stem. None leaves them whole."""
    if excerpt is None:
        return listed
    offset, seconds = float(excerpt[0]), float(excerpt[1])
    if offset < 0 or not seconds > 0:
        raise FlowsepError(f"an excerpt needs an offset >= 0 and a positive length, got {offset:g} s and {seconds:g} s")
    for mt in listed:
        if offset + seconds > mt.duration + 1e-6:
            raise FlowsepError(f"track {mt.name!r} lasts {mt.duration:.1f} s, too short for {seconds:g} s from "
                               f"{offset:g} s; choose a shorter excerpt or an earlier offset")
        mt.chunk_start, mt.chunk_duration = offset, seconds
    return listed


def _evaluate(estimate, root, subset, tracks, out, protocol, progress, resume, save_estimates,
              desc: str = "tracks", excerpt=None) -> Evaluation:
    if protocol not in PROTOCOLS:
        raise FlowsepError(f"unknown protocol {protocol!r}; use 'standard' or 'paper'")
    out = Path(out) if out is not None else None
    if out is not None:
        check_writable_dir(out)
    listed = excerpt_tracks(open_tracks(root, subset, tracks), excerpt)
    stores = []
    for mt in progress_bar(listed, show=progress, desc=desc, unit="track"):
        json_path = out / "scores" / subset / f"{mt.name}.json" if out is not None else None
        if resume and json_path is not None and json_path.is_file():
            stores.append(json2df(json.loads(json_path.read_text()), mt.name))
            continue
        track = load_track(mt)
        if protocol == "paper":
            track = track.as_mono()
        est = estimate(track)
        if est is None:
            continue
        if protocol == "standard":
            store = score_track(track.references, est, track.rate, track_name=track.name)
        else:
            store = score_track_paper(track.references, est, track.rate, track_name=track.name)
        if out is not None:
            if save_estimates:
                for target, audio in est.items():
                    write_audio(out / "estimates" / subset / track.name / f"{target}.wav", audio, track.rate, "FLOAT")
            _write_text(json_path, store.json)
        stores.append(store)
    if not stores:
        raise FlowsepError(f"no track of {root}/{subset} could be scored; check the estimates folder")
    scores = scores_frame(stores)
    summary = summarize(scores, protocol)
    if out is not None:
        _write_text(out / "summary.csv", summary.to_csv(float_format="%.4f"))
    return Evaluation(scores, summary, protocol)


def evaluate_separator(separator, root, subset: str = "test", tracks=None, out=None, protocol: str = "standard",
                       progress: bool = True, resume: bool = False, save_estimates: bool = True,
                       desc: str = "tracks", excerpt=None) -> Evaluation:
    """Separate and score every track of ``root``'s ``subset`` with any system.

    separator: a callable ``f(mixture (channels, samples), rate) -> {target: (channels, samples)}``
    (a :class:`~flowsep.separate.Separator`, a baseline, :class:`MixtureAsEstimate`), or one with
    ``needs_sources = True`` called as ``f(mixture, rate, sources={stem: audio})`` (oracles).
    tracks: None (all), an int (the first N) or a list of names. Under the paper protocol the system is
    given the mono downmix. With ``out``, estimates, per-track JSON and summary.csv are written there;
    ``resume`` reuses per-track JSON files already in ``out``. desc: the progress bar's label. excerpt:
    (offset, seconds) to score only that part of every track (:func:`excerpt_tracks`), or None.
    """
    if not callable(separator):
        raise FlowsepError(f"the system to evaluate must be callable, got a {type(separator).__name__}")
    return _evaluate(lambda track: _call_system(separator, track), root, subset, tracks, out, protocol,
                     progress, resume, save_estimates, desc, excerpt)


def _estimates_folder(estimates_dir: Path, subset: str) -> Path:
    for cand in (estimates_dir / "estimates" / subset, estimates_dir / subset):
        if cand.is_dir():
            return cand
    raise FlowsepError(f"{estimates_dir} has no {subset}/ (or estimates/{subset}/) folder of track estimates; "
                       "give the folder written by `flowsep evaluate --prior ... --out` or musdb's layout")


def evaluate_estimates(estimates_dir, root, subset: str = "test", tracks=None, out=None,
                       protocol: str = "standard", progress: bool = True) -> Evaluation:
    """Score estimates already on disk: ``estimates_dir/[estimates/]<subset>/<track>/<target>.wav``.

    Tracks without an estimates folder are skipped (with a warning); files at another rate are resampled
    to the track's rate.
    """
    folder = _estimates_folder(Path(estimates_dir), subset)

    def estimate(track: Track):
        d = folder / track.name
        files = sorted(d.glob("*.wav")) if d.is_dir() else []
        if not files:
            warnings.warn(f"no estimates for track {track.name!r} in {folder}; skipped")
            return None
        est = {}
        for f in files:
            audio, rate = read_audio(f)
            if rate != track.rate:
                audio = resample(torch.from_numpy(audio), rate, track.rate).numpy()
            if protocol == "paper":
                audio = audio.mean(axis=0, keepdims=True)
            est[f.stem] = audio
        return est

    return _evaluate(estimate, root, subset, tracks, out, protocol, progress, False, False)


# ---- command line -----------------------------------------------------------------------------------
def register_cli(subparsers) -> None:
    p = subparsers.add_parser(
        "evaluate", help="score separations of a MUSDB18-format set with museval (BSS Eval v4)",
        description="Separate every track of --data/--subset with trained priors (--prior NAME=CKPT ...) or "
                    "read estimates written before (--estimates DIR), score them with museval and write "
                    "OUT/scores/<subset>/<track>.json, OUT/summary.csv (and OUT/estimates/... when separating).")
    p.add_argument("--data", required=True, metavar="ROOT", help="MUSDB18-format root (wav or stems)")
    p.add_argument("--subset", default="test", choices=("train", "test"), help="subset to score (default test)")
    p.add_argument("--tracks", type=int, default=None, metavar="N", help="score only the first N tracks")
    p.add_argument("-p", "--priors", default=None, metavar="BUNDLE",
                   help="separate with this prior bundle (flowsep priors build)")
    p.add_argument("--prior", action="append", default=[], metavar="NAME=CKPT",
                   help="separate with these priors (repeat once per source; adds to -p)")
    p.add_argument("--estimates", metavar="DIR", help="score estimates already on disk instead")
    p.add_argument("--out", required=True, metavar="DIR", help="folder for scores, summary.csv and estimates")
    p.add_argument("--protocol", choices=PROTOCOLS, default="standard",
                   help="standard (MUSDB18: 1 s windows, stereo 44.1 kHz) or paper (60 s mono segments, 22.05 kHz)")
    p.add_argument("--device", default="auto", help="auto (default), cpu or cuda")
    add_separation_options(p)
    p.add_argument("--resume", action="store_true", help="keep the scores of tracks already in OUT")
    p.add_argument("--quiet", action="store_true", help="no progress bars")
    p.set_defaults(func=_cli)


def _cli(args) -> int:
    separate = bool(args.prior) or args.priors is not None
    if separate == bool(args.estimates):
        raise FlowsepError("give either -p BUNDLE or --prior NAME=CKPT ... (separate, then score) or --estimates DIR, "
                           "not both")
    check_writable_dir(args.out)
    args.data = resolve_root(args.data)  # "musdb-preview": MUSDB18's previews, fetched once
    if separate:
        priors = load_priors(args.prior, args.priors)
        sep = Separator(priors, progress=not args.quiet, **separation_options(args))
        result = evaluate_separator(sep, args.data, args.subset, args.tracks, args.out, args.protocol,
                                    progress=not args.quiet, resume=args.resume)
    else:
        result = evaluate_estimates(args.estimates, args.data, args.subset, args.tracks, args.out, args.protocol,
                                    progress=not args.quiet)
    print(f"{args.protocol} protocol, {result.scores['track'].nunique()} track(s), median SDR/SIR/SAR/ISR in dB:")
    print(format_summary(result.summary))
    print(f"wrote {Path(args.out) / 'summary.csv'}")
    return 0
