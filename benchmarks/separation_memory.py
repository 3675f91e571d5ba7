"""Peak memory and time of `flowsep separate` on long songs: does memory stay flat as the input grows?

    python benchmarks/separation_memory.py [--profile cpu] [--minutes 1 3 10] [--iterations 2] \\
        [--methods instglow map ...] [--prior vocals=V.pt ... | -p BUNDLE] [--max-memory SIZE] \\
        [--out benchmarks/results/separation_memory_cpu]

For each length, a stereo 44.1 kHz song is made by joining the test mixtures of the profile's synthetic
set (generated under data/ if missing) and separated by the `flowsep separate` command with its default
settings, in a fresh process, so that the process's peak resident memory (the kernel's high-water mark,
ru_maxrss) is the separation's. Priors: the ones given, else four untrained priors of the profile (the
memory and the time do not depend on the weights, only on the architecture). ``--iterations`` (default 2) keeps the run
short: each chunk of parts is optimised to the end before the next, so the memory does not depend on
the number of iterations; the time does. ``--methods``: run the separation with each of these methods
(``--method``; default: the command's default), every length for each; a method with a warm start also
runs its own warm-start steps. Also reported: the
process's resident memory after its imports (the floor every run pays) and, for reference, one
chunk-size sweep (``--chunk-sweep``): seconds per iteration of one part against several parts per batch.

Results are printed and saved to <out>.json and <out>.md.
"""
from __future__ import annotations

import argparse
import json
import os
import platform
import subprocess
import sys
import tempfile
import time
from pathlib import Path

RESULTS = Path(__file__).resolve().parent / "results"


def child(argv: list[str]) -> None:
    """Runs in the measured process: `flowsep separate` with ``argv``, then prints its peak memory and time."""
    import torch  # noqa: F401  (the import floor is part of what is reported)

    from flowsep.cli import main
    from flowsep.memory import peak_resident_bytes

    floor = peak_resident_bytes()
    t0 = time.perf_counter()
    code = main(argv)
    print(json.dumps({"code": code, "seconds": time.perf_counter() - t0, "peak_bytes": peak_resident_bytes(),
                      "floor_bytes": floor}))


def make_song(root: Path, minutes: float, path: Path) -> None:
    """Join the test mixtures of ``root`` (in order, repeated) into a stereo wav of ``minutes`` minutes."""
    import numpy as np
    import soundfile as sf

    mixtures = sorted((root / "test").glob("*/mixture.wav"))
    if not mixtures:
        raise SystemExit(f"{root} has no test mixtures")
    rate = sf.info(str(mixtures[0])).samplerate
    need = int(minutes * 60 * rate)
    with sf.SoundFile(str(path), "w", samplerate=rate, channels=2, subtype="PCM_16") as out:
        written = 0
        while written < need:
            for m in mixtures:
                a, _ = sf.read(str(m), dtype="float32", always_2d=True)
                a = a[:need - written]
                out.write(a)
                written += len(a)
                if written >= need:
                    break


def measure(args, prior_args: list[str], song: Path, tmp: Path, method: str) -> dict:
    cmd = [sys.executable, __file__, "--child", "separate", str(song), *prior_args, "-o", str(tmp / "out"),
           "--method", method, "--iterations", str(args.iterations), "--quiet", "--overwrite"]
    if args.max_memory:
        cmd += ["--max-memory", args.max_memory]
    env = {**os.environ, "OMP_NUM_THREADS": str(args.threads)} if args.threads else None
    run = subprocess.run(cmd, capture_output=True, text=True, env=env)
    if run.returncode != 0:
        raise SystemExit(f"flowsep separate failed on {song.name}:\n{run.stderr[-2000:]}")
    return json.loads(run.stdout.strip().splitlines()[-1])


def chunk_sweep(args, priors: dict, seconds: float = 60.0, iterations: int = 3) -> list[dict]:
    """Seconds per iteration with 1, 2 and 4 parts of ``seconds`` each in one batch (the chunk size's effect).

    Each part is one channel of a noise clip of ``seconds`` (one segment); the memory setting lets every
    part into one chunk; the time is the optimisation's alone (``timings["optimize"]``).
    """
    import torch

    from flowsep.separate import Separator
    rows = []
    for parts in (1, 2, 4):
        sep = Separator(priors, iterations=iterations, progress=False, stereo="channels", segment_seconds=seconds,
                        max_memory="64G")
        wave = 0.1 * torch.randn(parts, int(seconds * sep.sample_rate) - sep.config.hop,
                                 generator=torch.Generator().manual_seed(0))
        result = sep.estimate(wave, sep.sample_rate)
        assert result.chunks == 1
        per_it = result.timings["optimize"] / iterations
        rows.append({"parts": parts, "seconds_per_iteration": per_it, "seconds_per_iteration_per_part": per_it / parts})
        print(f"{parts} part(s) in one batch: {per_it / parts:.2f} s per iteration per part", flush=True)
    return rows


def main() -> None:
    if len(sys.argv) > 1 and sys.argv[1] == "--child":
        child(sys.argv[2:])
        return
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--profile", default="cpu")
    ap.add_argument("--minutes", type=float, nargs="*", default=[1, 3, 10],
                    help="song lengths (none: only the chunk sweep)")
    ap.add_argument("--iterations", type=int, default=2)
    ap.add_argument("--methods", nargs="+", default=None, help="separation methods (default: the default method)")
    ap.add_argument("--prior", action="append", default=[], metavar="NAME=CKPT")
    ap.add_argument("-p", "--priors", dest="bundle", default=None, help="a prior bundle folder")
    ap.add_argument("--max-memory", default=None, help="passed to flowsep separate (default: its own choice)")
    ap.add_argument("--threads", type=int, default=None, help="OMP_NUM_THREADS of the measured process")
    ap.add_argument("--chunk-sweep", action="store_true",
                    help="also time 1, 2 and 4 parts per batch (saved to <out>_chunks.json/.md)")
    ap.add_argument("--out", default=None)
    args = ap.parse_args()

    from flowsep.cache import ensure_dataset
    from flowsep.prior import FlowPrior, PriorConfig
    from flowsep.separate import DEFAULT_METHOD
    root = ensure_dataset(args.profile, progress=False)
    methods = args.methods or [DEFAULT_METHOD]
    rows = []
    with tempfile.TemporaryDirectory() as tmp:
        tmp = Path(tmp)
        if args.bundle:
            prior_args = ["-p", args.bundle]
        elif args.prior:
            prior_args = [a for spec in args.prior for a in ("--prior", spec)]
        else:
            prior_args = []
            for s in ("vocals", "drums", "bass", "other"):
                FlowPrior(PriorConfig.preset(args.profile)).save(tmp / f"{s}.pt")
                prior_args += ["--prior", f"{s}={tmp / f'{s}.pt'}"]
        for minutes in args.minutes:
            song = tmp / f"song-{minutes:g}min.wav"
            make_song(root, minutes, song)
            for method in methods:
                r = measure(args, prior_args, song, tmp, method)
                audio = minutes * 60
                rows.append({"method": method, "minutes": minutes, "peak_gb": r["peak_bytes"] / 2 ** 30,
                             "floor_gb": r["floor_bytes"] / 2 ** 30, "seconds": r["seconds"],
                             "iterations": args.iterations, "rtf": r["seconds"] / audio})
                print(f"{method}, {minutes:g} min: peak {rows[-1]['peak_gb']:.2f} GB, {r['seconds']:.1f} s", flush=True)
            song.unlink()
        sweep = []
        if args.chunk_sweep:
            from flowsep.separate_files import load_priors
            priors = (load_priors(bundle=args.bundle) if args.bundle else
                      {spec.split("=")[0]: FlowPrior.load(spec.split("=", 1)[1]) for spec in prior_args[1::2]})
            sweep = chunk_sweep(args, priors)
    import torch
    machine = {"threads": args.threads or torch.get_num_threads(), "cpus": os.cpu_count(),
               "machine": platform.processor() or platform.machine(), "torch": torch.__version__}
    out = Path(args.out) if args.out else RESULTS / f"separation_memory_{args.profile}"
    out.parent.mkdir(parents=True, exist_ok=True)
    if rows:
        for r in rows:
            first = next(f for f in rows if f["method"] == r["method"])
            r["peak_vs_first"] = r["peak_gb"] / first["peak_gb"]
        result = {"profile": args.profile, "iterations": args.iterations, "max_memory": args.max_memory or "auto",
                  **machine, "rows": rows}
        lines = [f"# `flowsep separate` on long songs, {args.profile} profile", "",
                 f"Stereo 44.1 kHz songs joined from the synthetic test mixtures; each method's settings "
                 f"(max memory: {result['max_memory']}), {args.iterations} iterations (memory does not depend on "
                 f"the iteration count; time does; consistent also runs its warm-start steps), "
                 f"{result['cpus']} CPUs, torch {torch.__version__}. "
                 "Peak = the process's peak resident memory (ru_maxrss); floor = after its imports.", "",
                 "| method | song | peak memory | vs its first | floor | time | time per audio second |",
                 "|---|---|---|---|---|---|---|"]
        for r in sorted(rows, key=lambda r: (methods.index(r["method"]), r["minutes"])):
            lines.append(f"| {r['method']} | {r['minutes']:g} min | {r['peak_gb']:.2f} GB | "
                         f"{r['peak_vs_first']:.2f}x | {r['floor_gb']:.2f} GB | {r['seconds']:.1f} s | {r['rtf']:.3f} |")
        save(out, result, lines)
    if sweep:
        lines = [f"# Parts per batch, {args.profile} profile: seconds per optimisation iteration", "",
                 f"One-channel 60-s parts, all in one chunk, {machine['cpus']} CPUs, torch {torch.__version__}.", "",
                 "| parts in the batch | s / iteration | s / iteration / part |", "|---|---|---|"]
        lines += [f"| {s['parts']} | {s['seconds_per_iteration']:.2f} | {s['seconds_per_iteration_per_part']:.2f} |"
                  for s in sweep]
        save(out.with_name(out.name + "_chunks"), {"profile": args.profile, **machine, "rows": sweep}, lines)


def save(out: Path, result: dict, lines: list[str]) -> None:
    md = "\n".join(lines) + "\n"
    print(md)
    out.with_suffix(".json").write_text(json.dumps(result, indent=2) + "\n")
    out.with_suffix(".md").write_text(md)


if __name__ == "__main__":
    main()
