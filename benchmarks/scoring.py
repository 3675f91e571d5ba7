"""BSS Eval v4 scores: museval.evaluate against flowsep.bsseval.bss_eval on the same arrays, time and agreement.

    python benchmarks/scoring.py [--seconds 3 15] [--out benchmarks/results/scoring_cpu]

For each length: four stereo references at 44.1 kHz (noise through a one-pole low-pass, so that delayed
copies correlate as music does) and estimates that leak the other sources and add noise; both scorers
get the same arrays with the standard protocol's 1 s windows. Reported: each one's seconds, their ratio
and the largest difference of any SDR, ISR, SIR or SAR (dB); and flowsep.bsseval's seconds for a second
set of estimates of the same references (as a race scores each song for every system), which reuses the
references' factorised Gram matrices, with its largest difference to museval on those estimates.
Printed and saved to <out>.json and <out>.md.
"""
from __future__ import annotations

import argparse
import json
import os
import platform
import time
from pathlib import Path

import numpy as np
import torch
from scipy.signal import lfilter

RESULTS = Path(__file__).resolve().parent / "results"
RATE = 44100


def main(argv=None) -> int:
    import museval

    from flowsep.bsseval import bss_eval

    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--seconds", type=float, nargs="+", default=[3.0, 15.0])
    parser.add_argument("--out", default=str(RESULTS / "scoring_cpu"))
    args = parser.parse_args(argv)
    rows = []
    for seconds in args.seconds:
        rng = np.random.default_rng(0)
        refs = lfilter([1.0], [1.0, -0.9], rng.standard_normal((4, int(seconds * RATE), 2)), axis=1)
        ests = 0.7 * refs + 0.2 * refs.sum(0) + 0.1 * rng.standard_normal(refs.shape)
        t0 = time.perf_counter()
        want = museval.evaluate(refs, ests, win=RATE, hop=RATE)
        t1 = time.perf_counter()
        got = bss_eval(refs, ests, win=RATE, hop=RATE)
        t2 = time.perf_counter()
        other = 0.5 * refs + 0.3 * refs[::-1] + 0.2 * rng.standard_normal(refs.shape)   # another system's
        t3 = time.perf_counter()
        again = bss_eval(refs, other, win=RATE, hop=RATE)
        t4 = time.perf_counter()
        diff = max(float(np.nanmax(np.abs(np.asarray(w) - g))) for w, g in zip(want, got))
        diff_again = max(float(np.nanmax(np.abs(np.asarray(w) - g)))
                         for w, g in zip(museval.evaluate(refs, other, win=RATE, hop=RATE), again))
        rows.append({"seconds": seconds, "museval_s": t1 - t0, "bsseval_s": t2 - t1,
                     "speedup": (t1 - t0) / (t2 - t1), "max_difference_db": diff,
                     "bsseval_same_references_s": t4 - t3, "speedup_same_references": (t1 - t0) / (t4 - t3),
                     "max_difference_same_references_db": diff_again})
        print(rows[-1], flush=True)
    cores = f"{os.cpu_count()} CPU cores ({torch.backends.cpu.get_cpu_capability()})"
    info = {"machine": f"{platform.machine()}, {cores}", "rows": rows}
    md = ["# BSS Eval v4: museval.evaluate against flowsep.bsseval.bss_eval (4 stereo sources, 1 s windows)", "",
          f"`python benchmarks/scoring.py --seconds {' '.join(f'{s:g}' for s in args.seconds)}` on {info['machine']}.",
          "", "| audio (s) | museval (s) | flowsep.bsseval (s) | x museval | largest difference (dB) | "
          "bsseval, other estimates of the same references (s) | x museval | largest difference (dB) |",
          "|---|---|---|---|---|---|---|---|"]
    md += [f"| {r['seconds']:g} | {r['museval_s']:.2f} | {r['bsseval_s']:.2f} | {r['speedup']:.1f} | "
           f"{r['max_difference_db']:.1e} | {r['bsseval_same_references_s']:.2f} | "
           f"{r['speedup_same_references']:.1f} | {r['max_difference_same_references_db']:.1e} |" for r in rows]
    text = "\n".join(md) + "\n"
    print(text)
    out = Path(args.out)
    out.with_suffix(".json").write_text(json.dumps(info, indent=2) + "\n")
    out.with_suffix(".md").write_text(text)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
