"""Likelihood separation: quality (museval SDR) and speed (real-time factor), batched against unbatched.

    python benchmarks/separation.py --data ROOT --prior vocals=V.pt --prior bass=B.pt ... \\
        [--subset test --tracks N --iterations 150] [--out benchmarks/results/separation]
    python benchmarks/separation.py --speed-only [--profiles cpu paper --speed-seconds 10 ...]

Quality (needs --data and --prior or -p): every track of the subset is separated once per stereo mode
(``--stereo``: midside, mid (the side shared in mid's ratios) and channels); the
same magnitude estimates are rendered with each post-filter (none, mask, wiener) and scored with
museval under the standard protocol, next to the mixture-as-estimate and oracle ratio-mask (IRM1, IRM2)
bounds. Targets are the prior names that are stems of the set.

Speed: priors of each profile (untrained: the cost does not depend on the weights), ``--sources`` of
them, on a stereo noise clip of ``--speed-seconds`` at 44.1 kHz cut into segments of ``--speed-segment``
seconds; the separation runs unbatched (source by source, item by item), batched (one pass per prior
per iteration over every segment and channel), batched + stacked (all priors as one vmapped model) and
batched + bf16 (the priors' networks in bfloat16 where the device computes it fast; float32 elsewhere).
Reported: seconds per iteration and the real-time factor (compute seconds per audio second) of a
separation with the chosen number of iterations, measured and extrapolated to 150 iterations.

Methods (``--methods``, needs --data and --prior): every separation method on the same priors and the same
songs (standard protocol, Wiener post-filter): the mean SDR per target at the method's own settings, the
SDR after each of ``--curve`` iterations (one run to the largest, estimates kept at each point; for the
annealed search, whose noise schedule is spread over its iterations, one run per point), and the
real-time factor of a run at the method's own settings. A method that needs other priors (annealed:
noise-conditioned ones, trained for the same time on the same stems) gets them with ``--method-priors
METHOD=BUNDLE``.

Results are printed and saved to <out>.json and <out>.md (default benchmarks/results/separation).
"""
from __future__ import annotations

import argparse
import json
import platform
import sys
import time
from pathlib import Path

RESULTS = Path(__file__).resolve().parent / "results"
POSTS = ("none", "mask", "wiener")


# ---- quality ------------------------------------------------------------------------------------------
def quality(args) -> dict:
    import numpy as np

    from flowsep.baselines.oracles import MixtureAsEstimate, OracleRatioMask
    from flowsep.evaluate import iter_tracks, score_track, scores_frame, summarize
    from flowsep.separate import Separator
    from flowsep.separate_files import load_priors

    priors = load_priors(args.prior, args.bundle)
    seps = {mode: Separator(priors, iterations=args.iterations, stereo=mode, device=args.device, progress=False)
            for mode in args.stereo}
    stores: dict[str, list] = {}
    seconds = {mode: 0.0 for mode in args.stereo}
    audio_seconds = 0.0
    for track in iter_tracks(args.data, args.subset, args.tracks):
        track = _excerpt(track, args)
        targets = [n for n in priors if n in track.references]
        if not targets:
            raise SystemExit(f"none of the priors ({', '.join(priors)}) is a stem of {track.name}")
        systems = {}
        for mode, sep in seps.items():
            t0 = time.perf_counter()
            result = sep.estimate(track.mixture, track.rate)
            seconds[mode] += time.perf_counter() - t0
            for post in (POSTS if mode == args.stereo[0] else ("wiener",)):
                t0 = time.perf_counter()
                est = result.render(post)
                if post == "wiener":
                    seconds[mode] += time.perf_counter() - t0
                systems[f"instglow-{post}-{mode}"] = est
        audio_seconds += track.mixture.shape[1] / track.rate
        systems["mixture"] = MixtureAsEstimate(targets)(track.mixture, track.rate)
        for power in (1, 2):
            systems[f"oracle-irm{power}"] = OracleRatioMask(targets, power=power)(
                track.mixture, track.rate, sources=track.sources)
        for name, est in systems.items():
            est = {k: v for k, v in est.items() if k in targets}
            stores.setdefault(name, []).append(score_track(track.references, est, track.rate,
                                                           track_name=track.name))
        print(f"  scored {track.name}", flush=True)
    table = {}
    for name, st in stores.items():
        s = summarize(scores_frame(st), "standard")["SDR"]
        table[name] = {**{k: float(v) for k, v in s.items()}, "mean": float(np.nanmean(s.to_numpy(float)))}
    return {"data": str(args.data), "subset": args.subset, "tracks": len(stores["mixture"]),
            "excerpt": [args.offset, args.excerpt] if args.excerpt else None,
            "priors": args.prior or args.bundle, "iterations": args.iterations, "sdr": table,
            "rtf_wiener": {m: seconds[m] / audio_seconds for m in seconds},
            "prior_profile": next(iter(priors.values())).config.profile}


# ---- methods -----------------------------------------------------------------------------------------
def _excerpt(track, args):
    if args.excerpt:
        a = int(args.offset * track.rate)
        cut = slice(a, a + int(args.excerpt * track.rate))
        track.mixture = track.mixture[:, cut]
        track.sources = {k: v[:, cut] for k, v in track.sources.items()}
        track.references = {k: v[:, cut] for k, v in track.references.items()}
    return track


def methods(args) -> dict:
    import dataclasses

    import numpy as np
    import torch

    from flowsep.comparison import per_track_sdr, song_statistics
    from flowsep.evaluate import iter_tracks, score_track, scores_frame, summarize
    from flowsep.search import AnnealedSearch
    from flowsep.separate import METHODS, Separator
    from flowsep.separate_files import load_priors

    priors = load_priors(args.prior, args.bundle)
    own_priors = {}
    for spec in args.method_priors:
        m, sep_, path = spec.partition("=")
        if not sep_ or m not in METHODS:
            raise SystemExit(f"--method-priors {spec!r}: expected METHOD=BUNDLE with METHOD one of "
                             f"{', '.join(METHODS)}")
        own_priors[m] = load_priors([], path)
    curve = sorted(set(args.curve))
    stores: dict[tuple, list] = {}
    seconds = {m: 0.0 for m in args.methods}
    audio = 0.0
    for track in iter_tracks(args.data, args.subset, args.tracks):
        track = _excerpt(track, args)
        targets = [n for n in priors if n in track.references]
        audio += track.mixture.shape[1] / track.rate
        for m in args.methods:
            own = METHODS[m].search.iterations
            m_priors = own_priors.get(m, priors)
            # the method at its own settings: timed, scored
            sep = Separator(m_priors, method=m, device=args.device, progress=False)
            t0 = time.perf_counter()
            est = sep(track.mixture, track.rate)
            seconds[m] += time.perf_counter() - t0
            stores.setdefault((m, own), []).append(
                score_track(track.references, {k: est[k] for k in targets}, track.rate, track_name=track.name))
            # the curve: one run to the last point, the estimates kept at every point
            points = [i for i in curve if i != own]
            if isinstance(METHODS[m].search, AnnealedSearch):  # its schedule depends on the iterations: one run per point
                for i in points:
                    est = Separator(m_priors, method=m, iterations=i, device=args.device, progress=False)(
                        track.mixture, track.rate)
                    stores.setdefault((m, i), []).append(
                        score_track(track.references, {k: est[k] for k in targets}, track.rate,
                                    track_name=track.name))
            elif points:
                sep = Separator(m_priors, method=m, iterations=max(points), snapshots=points, device=args.device,
                                progress=False)
                result = sep.estimate(track.mixture, track.rate)
                for i in points:
                    mags = {k: torch.from_numpy(v).to(result.items.device) for k, v in result.snapshots[i].items()}
                    est = dataclasses.replace(result, magnitudes=mags).render("wiener")
                    stores.setdefault((m, i), []).append(
                        score_track(track.references, {k: est[k] for k in targets}, track.rate,
                                    track_name=track.name))
        print(f"  scored {track.name}", flush=True)
    rows = []
    for (m, i), st in sorted(stores.items()):
        sdr = summarize(scores_frame(st), "standard")["SDR"]
        rows.append({"method": m, "iterations": i, "own": i == METHODS[m].search.iterations,
                     **{k: float(v) for k, v in sdr.items()}, "mean": float(np.nanmean(sdr.to_numpy(float)))})
    # over songs, at each method's own settings: the mean with its bootstrap interval, paired with instglow
    per_track = {m: per_track_sdr(scores_frame(stores[(m, METHODS[m].search.iterations)]), targets) for m in args.methods}
    songs = song_statistics(per_track, reference="instglow")
    return {"data": str(args.data), "subset": args.subset, "tracks": len(stores[(args.methods[0],
            METHODS[args.methods[0]].search.iterations)]), "excerpt": [args.offset, args.excerpt] if args.excerpt else None,
            "priors": args.prior or args.bundle, "prior_profile": next(iter(priors.values())).config.profile,
            "method_priors": {m: getattr(p, "name", None) for m, p in own_priors.items()},
            "rows": rows, "rtf": {m: seconds[m] / audio for m in args.methods},
            "songs": {m: {k: (None if v != v else float(v)) for k, v in r.items()} for m, r in songs.iterrows()},
            "per_track": {m: {t: {k: float(v) for k, v in r.items()} for t, r in pt.iterrows()}
                          for m, pt in per_track.items()},
            "settings": {m: {**dataclasses.asdict(METHODS[m]), "search_kind": type(METHODS[m].search).__name__}
                         for m in args.methods}}


# ---- speed --------------------------------------------------------------------------------------------
def speed(args) -> list[dict]:
    import torch

    from flowsep import FlowPrior, PriorConfig
    from flowsep.separate import Separator

    rate = 44100
    g = torch.Generator().manual_seed(0)
    mix = (0.1 * torch.randn(2, int(args.speed_seconds * rate), generator=g)).numpy()
    rows = []
    for profile in args.profiles:
        torch.manual_seed(0)
        priors = {f"s{j}": FlowPrior(PriorConfig.preset(profile)) for j in range(args.sources)}
        modes = {"unbatched": dict(unbatched=True), "batched": dict(stack_sources=False),
                 "batched+stacked": dict(stack_sources=True), "batched+bf16": dict(stack_sources=False, bf16=True)}
        base = None
        for mode, kw in modes.items():
            sep = Separator(priors, iterations=1, segment_seconds=args.speed_segment, overlap=args.speed_overlap,
                            device=args.device, progress=False, **kw)
            sep(mix, rate)  # warm-up: first-call allocations, kernels, vmap tracing
            sep.method = sep.method.replace(iterations=args.speed_iterations)  # the same frozen priors
            if sep.device.type == "cuda":
                torch.cuda.synchronize()
            t0 = time.perf_counter()
            result = sep.estimate(mix, rate)
            result.render(sep.method.post, sep.method.wiener_iterations)
            if sep.device.type == "cuda":
                torch.cuda.synchronize()
            total = time.perf_counter() - t0
            t = dict(result.timings)
            per_it = t["optimize"] / args.speed_iterations
            fixed = total - t["optimize"]
            row = {"profile": profile, "mode": mode, "device": str(sep.device), "sources": args.sources,
                   "audio_seconds": args.speed_seconds, "segment_seconds": args.speed_segment,
                   "batch_items": _items(sep, mix, rate),
                   "iterations": args.speed_iterations, "seconds": total, "seconds_per_iteration": per_it,
                   "rtf": total / args.speed_seconds, "rtf_150": (fixed + 150 * per_it) / args.speed_seconds,
                   "threads": torch.get_num_threads()}
            base = base or row["seconds_per_iteration"]
            row["speedup_vs_unbatched"] = base / row["seconds_per_iteration"]
            rows.append(row)
            print(f"  {profile}/{mode}: {per_it:.3f} s/iteration, RTF(150 it) {row['rtf_150']:.1f}", flush=True)
    return rows


def _items(sep, mix, rate) -> int:
    """Batch items per prior: segments x channels."""
    from flowsep.spectral import plan_segments

    c = sep.config
    frames = 1 + round(mix.shape[-1] * c.sample_rate / rate) // c.hop
    fps = c.sample_rate / c.hop
    _, starts = plan_segments(frames, round(sep.method.segment_seconds * fps), round(sep.method.overlap * fps),
                              sep.priors.frame_multiple)
    return len(starts) * mix.shape[0]


# ---- report -------------------------------------------------------------------------------------------
def markdown(result: dict) -> str:
    lines = []
    q = result.get("quality")
    if q:
        targets = [k for k in next(iter(q["sdr"].values())) if k != "mean"]
        lines += [f"# Separation quality: SDR (dB, museval v4, standard protocol), {q['tracks']} track(s) of "
                  f"{q['data']} ({q['subset']}" + (f", {q['excerpt'][1]:g} s from {q['excerpt'][0]:g} s"
                                                    if q.get("excerpt") else "") +
                  f"), priors at profile {q['prior_profile']}, {q['iterations']} iterations", "",
                  "| system | " + " | ".join(targets) + " | mean |", "|---" * (len(targets) + 2) + "|"]
        for name, row in q["sdr"].items():
            lines.append(f"| {name} | " + " | ".join(f"{row[t]:.2f}" for t in targets) + f" | {row['mean']:.2f} |")
        lines += ["", "Real-time factor of InstGlow + Wiener (compute seconds per audio second): " +
                  ", ".join(f"{m} {v:.2f}" for m, v in q["rtf_wiener"].items()), ""]
    mt = result.get("methods")
    if mt:
        own = [r for r in mt["rows"] if r["own"]]
        targets = [k for k in own[0] if k not in ("method", "iterations", "own", "mean")]
        base = next((r for r in own if r["method"] == "instglow"), None)
        lines += [f"# Separation methods: SDR (dB, museval v4, standard protocol, median over frames and tracks), "
                  f"{mt['tracks']} track(s) of {mt['data']} ({mt['subset']}" +
                  (f", {mt['excerpt'][1]:g} s from {mt['excerpt'][0]:g} s" if mt.get("excerpt") else "") +
                  f"), priors at profile {mt['prior_profile']}, Wiener post-filter", ""]
        if mt.get("method_priors"):
            lines += ["Priors: " + "; ".join(f"{m}: bundle {b}" for m, b in mt["method_priors"].items()) +
                      f"; every other method: {mt['priors']}", ""]
        lines += ["| method | iterations | " + " | ".join(targets) + " | mean | vs instglow | song mean [95% CI] | "
                  "vs instglow over songs [95% CI] | wins/losses | RTF | RTF vs instglow |",
                  "|---" * (len(targets) + 9) + "|"]
        for r in own:
            rel = f"{r['mean'] - base['mean']:+.2f}" if base else "-"
            rtf = mt["rtf"][r["method"]]
            rrel = f"{rtf / mt['rtf']['instglow']:.2f}" if "instglow" in mt["rtf"] else "-"
            sg = mt.get("songs", {}).get(r["method"])
            song = f"{sg['song_mean']:.2f} [{sg['ci_low']:.2f}, {sg['ci_high']:.2f}]" if sg else "-"
            paired = (f"{sg['diff_instglow']:+.2f} [{sg['diff_ci_low']:+.2f}, {sg['diff_ci_high']:+.2f}]"
                      if sg and sg["diff_instglow"] is not None else "-")
            wl = f"{sg['wins']:.0f}/{sg['losses']:.0f}" if sg and sg["wins"] is not None else "-"
            lines.append(f"| {r['method']} | {r['iterations']} | " + " | ".join(f"{r[t]:.2f}" for t in targets) +
                         f" | {r['mean']:.2f} | {rel} | {song} | {paired} | {wl} | {rtf:.2f} | {rrel} |")
        lines += ["", "mean: the mean over targets of museval's standard summary (per target, the median over "
                  "every window of every song); song mean: the mean over songs x targets of each song's median, "
                  "with a bootstrap 95% interval over songs; vs instglow over songs: the paired difference, "
                  "song by song, with its interval; wins/losses: songs whose mean over targets is above/below "
                  "instglow's; RTF: seconds of separation (search and post-filter) per second of audio"]
        methods_ = list(dict.fromkeys(r["method"] for r in mt["rows"]))
        points = sorted({r["iterations"] for r in mt["rows"]})
        lines += ["", "Mean SDR after N iterations (the method's own count in bold)", "",
                  "| method | " + " | ".join(str(p) for p in points) + " |", "|---" * (len(points) + 1) + "|"]
        for m in methods_:
            cells = []
            for p in points:
                r = next((r for r in mt["rows"] if r["method"] == m and r["iterations"] == p), None)
                cells.append("" if r is None else (f"**{r['mean']:.2f}**" if r["own"] else f"{r['mean']:.2f}"))
            lines.append(f"| {m} | " + " | ".join(cells) + " |")
        lines += ["", "Settings: " + "; ".join(f"{m}: {v['summary']}" for m, v in mt["settings"].items()), ""]
    s = result.get("speed")
    if s:
        r0 = s[0]
        lines += [f"# Separation speed on {r0['device']} ({platform.processor() or platform.machine()}, "
                  f"{r0['threads']} threads): {r0['sources']} untrained priors, stereo {r0['audio_seconds']:g} s "
                  f"clip at 44.1 kHz in {r0['segment_seconds']:g} s segments, {r0['iterations']} iterations", "",
                  "| profile | mode | batch items per prior | s / iteration | x unbatched | RTF measured | "
                  "RTF at 150 iterations |", "|---|---|---|---|---|---|---|"]
        for r in s:
            lines.append(f"| {r['profile']} | {r['mode']} | {r['batch_items']} | {r['seconds_per_iteration']:.3f} | "
                         f"{r['speedup_vs_unbatched']:.2f} | {r['rtf']:.2f} | {r['rtf_150']:.1f} |")
    if result.get("note"):
        lines += ["", f"Note: {result['note']}"]
    return "\n".join(lines) + "\n"


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--data", help="MUSDB18-format root (quality part)")
    ap.add_argument("--prior", action="append", default=[], metavar="NAME=CKPT", help="trained priors (quality)")
    ap.add_argument("--subset", default="test")
    ap.add_argument("--tracks", type=int, default=None)
    ap.add_argument("--iterations", type=int, default=150)
    ap.add_argument("--stereo", nargs="+", default=["midside", "channels"], choices=["midside", "mid", "channels"],
                    help="stereo modes (the first gets every post-filter, the others Wiener only)")
    ap.add_argument("--excerpt", type=float, default=None, metavar="SECONDS",
                    help="score only SECONDS of each track, from --offset (default: whole tracks)")
    ap.add_argument("--offset", type=float, default=0.0, help="start of the excerpt (seconds)")
    ap.add_argument("--device", default="auto")
    ap.add_argument("--threads", type=int, default=None, help="torch intra-op threads (default: torch's)")
    ap.add_argument("-p", "--priors", dest="bundle", default=None, help="a prior bundle folder (instead of --prior)")
    ap.add_argument("--methods", nargs="+", default=None, help="compare these separation methods (and nothing else)")
    ap.add_argument("--method-priors", action="append", default=[], metavar="METHOD=BUNDLE",
                    help="priors for one method instead of -p (annealed needs noise-conditioned ones)")
    ap.add_argument("--curve", type=int, nargs="+", default=[10, 25, 50, 100, 150],
                    help="methods: iterations at which the SDR is measured")
    ap.add_argument("--speed-only", action="store_true")
    ap.add_argument("--quality-only", action="store_true")
    ap.add_argument("--profiles", nargs="+", default=["cpu", "paper"], help="speed: prior profiles")
    ap.add_argument("--sources", type=int, default=4, help="speed: number of priors")
    ap.add_argument("--speed-seconds", type=float, default=10.0)
    ap.add_argument("--speed-segment", type=float, default=2.5)
    ap.add_argument("--speed-overlap", type=float, default=0.5)
    ap.add_argument("--speed-iterations", type=int, default=10)
    ap.add_argument("--out", default=str(RESULTS / "separation"), help="output path without extension")
    ap.add_argument("--note", default="", help="a line saved with the results (how the priors were trained...)")
    args = ap.parse_args()
    if args.threads:
        import torch
        torch.set_num_threads(args.threads)
    result = {"command": " ".join(sys.argv), "note": args.note}
    if args.methods:
        if not (args.data and (args.prior or args.bundle)):
            ap.error("--methods needs --data and --prior or -p")
        result["methods"] = methods(args)
    elif not args.speed_only:
        if not (args.data and (args.prior or args.bundle)):
            ap.error("the quality part needs --data and --prior or -p (or pass --speed-only or --methods)")
        result["quality"] = quality(args)
    if not args.quality_only and not args.methods:
        result["speed"] = speed(args)
    text = markdown(result)
    print(text)
    out = Path(args.out)
    out.parent.mkdir(parents=True, exist_ok=True)
    out.with_suffix(".json").write_text(json.dumps(result, indent=2))
    out.with_suffix(".md").write_text(text)


if __name__ == "__main__":
    main()
