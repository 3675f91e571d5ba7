"""InstGlow's search step at the cpu profile: time per iteration, where it goes, and how far it can fall.

    python benchmarks/separation_iteration.py [--baseline COMMIT] [--seconds 15] [--iterations 12]
                                              [--out benchmarks/results/separation_iteration_cpu]

One iteration of the published search (``instglow``: Adam on four latents decoded through four frozen
priors, generalized-KL loss) on a stereo mixture of ``--seconds`` at the cpu profile, timed in a fresh
process for each variant, one after the other in the same run:

- ``baseline``: flowsep as it was at ``--baseline`` (a git commit of this repository, extracted into a
  temporary folder), float32;
- ``current``: this working tree, float32 (the default search);
- ``current-bf16``: this tree with the networks in bfloat16 (``bf16=True``), where the CPU has bf16 units;
- ``current-compiled`` (``--compiled``): this tree with each prior's synthesis through ``torch.compile``
  (inductor, static shapes; its compile time is in the whole separation's seconds, not in the median).

Every variant separates the same mixture through the same priors (four cpu-profile priors with seeded
random weights: the cost of a step does not depend on what the weights are) and reports seconds per
iteration (median of the timed iterations after two warm-up ones), the whole separation's seconds for
``--iterations`` iterations, and the largest difference of its estimates from the baseline's, relative to
their peak. The top operators of one profiled iteration are printed for each variant.

The ceiling: the convolutions' multiply-adds per iteration (forward and the backward to the latents),
divided by the float32 matrix-multiply rate this machine reaches (measured here), is the least time an
iteration can take in float32 whatever else is removed.

Results are printed and saved to <out>.json and <out>.md.
"""
from __future__ import annotations

import argparse
import json
import os
import platform
import subprocess
import sys
import tarfile
import tempfile
import time
from io import BytesIO
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
RESULTS = ROOT / "benchmarks" / "results"
SOURCES = ("vocals", "drums", "bass", "other")

# run inside each variant's process: prints one JSON line
WORKER = r"""
import json, sys, time
import numpy as np, torch
from flowsep.prior import FlowPrior, PriorConfig
from flowsep.separate import Separator
seconds, iterations, bf16, profile_ops, out = float(sys.argv[1]), int(sys.argv[2]), sys.argv[3] == "1", sys.argv[4] == "1", sys.argv[5]
if len(sys.argv) > 6 and sys.argv[6] == "compile":   # every prior's synthesis through torch.compile (inductor)
    import flowsep.frozen as fr
    _init = fr.FrozenPriors.__init__
    def init(self, *a, **k):
        _init(self, *a, **k)
        self._compiled = {n: torch.compile(fr.Synthesis(p), dynamic=False) for n, p in self.priors.items()}
    fr.FrozenPriors.__init__ = init
    fr.FrozenPriors._synthesize = lambda self, zs: [self._compiled[n](z) for n, z in zip(self.names, zs)]

def prior(k):
    torch.manual_seed(k)
    p = FlowPrior(PriorConfig.preset("cpu"))
    with torch.no_grad():
        for prm in p.parameters():
            prm.add_(0.05 * torch.randn_like(prm))
        for m in p.modules():
            if hasattr(m, "initialized"):
                m.initialized.fill_(True)
    return p.eval()

priors = {n: prior(k) for k, n in enumerate(("vocals", "drums", "bass", "other"))}
rng = np.random.default_rng(0)
t = np.arange(int(seconds * 44100)) / 44100
mix = np.stack([0.2 * np.sin(2 * np.pi * 110 * t) + 0.05 * rng.standard_normal(t.size),
                0.2 * np.sin(2 * np.pi * 220 * t) + 0.05 * rng.standard_normal(t.size)]).astype(np.float32)
stamps = []
sep = Separator(priors, iterations=iterations, progress=False, **({"bf16": True} if bf16 else {}))
def on_step(*a):
    stamps.append(time.perf_counter())
import flowsep.search as search
orig = search.LatentSearch.__call__
def call(self, priors, target, valid, parts, on_step_=None, bar=None):
    def both(*a):
        on_step(*a)
        if on_step_:
            on_step_(*a)
    return orig(self, priors, target, valid, parts, both, bar)
search.LatentSearch.__call__ = call
t0 = time.perf_counter()
result = sep.estimate(mix, 44100)
total = time.perf_counter() - t0
steps = np.diff(stamps[:iterations + 1])[2:]
est = result.render("none")
np.save(out, np.stack([est[n] for n in ("vocals", "drums", "bass", "other")]))
ops = []
if profile_ops:
    from torch.profiler import profile
    sep1 = Separator(priors, iterations=3, progress=False, **({"bf16": True} if bf16 else {}))
    with profile() as prof:
        sep1.estimate(mix, 44100)
    for e in sorted(prof.key_averages(), key=lambda e: -e.self_cpu_time_total)[:10]:
        ops.append([e.key, round(e.self_cpu_time_total / 1e6 / 3, 4), e.count // 3])
print(json.dumps({"seconds_per_iteration": float(np.median(steps)), "total_seconds": total, "ops": ops,
                  "threads": torch.get_num_threads(), "bf16_units": bool(torch.ops.mkldnn._is_mkldnn_bf16_supported())}))
"""


def extract(commit: str, into: Path) -> Path:
    """The repository's flowsep package at ``commit``, extracted under ``into``."""
    data = subprocess.run(["git", "-C", str(ROOT), "archive", "--format=tar", commit, "flowsep", "pyproject.toml"],
                          check=True, capture_output=True).stdout
    with tarfile.open(fileobj=BytesIO(data)) as tar:
        tar.extractall(into, filter="data")
    return into


def run_variant(tree: Path, seconds: float, iterations: int, bf16: bool, out: Path, compiled: bool = False) -> dict:
    env = dict(os.environ, PYTHONPATH=str(tree), FLOWSEP_PROGRESS="off")
    r = subprocess.run([sys.executable, "-c", WORKER, str(seconds), str(iterations), "1" if bf16 else "0",
                        "0" if compiled else "1", str(out), "compile" if compiled else "-"],
                       env=env, capture_output=True, text=True, cwd=tree)
    if r.returncode != 0:
        raise SystemExit(f"variant failed ({tree}): {r.stderr.strip().splitlines()[-1]}")
    return json.loads(r.stdout.strip().splitlines()[-1])


def conv_macs(seconds: float) -> float:
    """Multiply-adds of the four priors' convolutions in one iteration: forward plus backward to the input."""
    from flowsep.prior import PriorConfig
    c = PriorConfig.preset("cpu")
    frames = int(seconds * c.sample_rate) // c.hop + 1
    t = 2 * (frames // c.n_sqz)                     # mid and side, squeezed in time
    channels = c.channels * c.n_sqz                 # the latent's channels
    half = channels // 2
    per_frame = (half * c.hidden                                     # start (1x1)
                 + c.n_layers * c.hidden * 2 * c.hidden * c.kernel   # gates
                 + (c.n_layers - 1) * c.hidden * 2 * c.hidden        # residual and skip (1x1)
                 + c.hidden * c.hidden                               # the last layer's skip
                 + c.hidden * 2 * (channels - half))                 # end (1x1)
    return 2 * 4 * c.n_blocks * per_frame * t


def gemm_rate() -> float:
    """float32 matrix-multiply FLOP/s this machine reaches at the search's thread count."""
    import torch
    a, b = torch.randn(4096, 320), torch.randn(320, 128)
    for _ in range(5):
        a @ b
    t0 = time.perf_counter()
    for _ in range(200):
        a @ b
    return 200 * 2 * 4096 * 320 * 128 / (time.perf_counter() - t0)


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--baseline", default="ac87d76", help="git commit of the baseline (default: ac87d76)")
    parser.add_argument("--seconds", type=float, default=15.0, help="stereo mixture length (default 15 s)")
    parser.add_argument("--iterations", type=int, default=12, help="iterations per separation (default 12)")
    parser.add_argument("--compiled", action="store_true",
                        help="also time the current tree with every prior's synthesis through torch.compile")
    parser.add_argument("--out", default=str(RESULTS / "separation_iteration_cpu"))
    args = parser.parse_args(argv)
    import numpy as np

    rows = {}
    with tempfile.TemporaryDirectory() as tmp:
        tmp = Path(tmp)
        base = extract(args.baseline, tmp / "baseline")
        variants = [("baseline", base, False, False), ("current", ROOT, False, False),
                    ("current-bf16", ROOT, True, False)] + ([("current-compiled", ROOT, False, True)] if args.compiled else [])
        for name, tree, bf16, compiled in variants:
            print(f"{name} ...", flush=True)
            rows[name] = run_variant(tree, args.seconds, args.iterations, bf16, tmp / f"{name}.npy", compiled)
            rows[name]["estimates"] = np.load(tmp / f"{name}.npy")
    ref = rows["baseline"].pop("estimates")
    peak = float(np.abs(ref).max())
    for name in rows:
        est = rows[name].pop("estimates", ref)
        rows[name]["max_difference_vs_baseline"] = float(np.abs(est - ref).max() / peak)
        rows[name]["speedup"] = rows["baseline"]["seconds_per_iteration"] / rows[name]["seconds_per_iteration"]
    macs, rate = conv_macs(args.seconds), gemm_rate()
    floor = 2 * macs / rate
    import torch
    cores = f"{os.cpu_count()} CPU cores ({torch.backends.cpu.get_cpu_capability()})"
    info = {"machine": f"{platform.machine()}, {cores}", "baseline": args.baseline,
            "seconds": args.seconds, "iterations": args.iterations, "variants": rows,
            "conv_gflop_per_iteration": 2 * macs / 1e9, "gemm_gflops": rate / 1e9,
            "float32_floor_seconds": floor,
            "float32_ceiling_speedup": rows["baseline"]["seconds_per_iteration"] / floor}
    md = [f"# InstGlow's search step at the cpu profile: {args.seconds:g} s of stereo, {args.iterations} iterations",
          "", f"`python benchmarks/separation_iteration.py --baseline {args.baseline} --seconds {args.seconds:g} "
          f"--iterations {args.iterations}` on {info['machine']}.", "",
          "| variant | s / iteration | x baseline | whole separation (s) | max difference vs baseline |",
          "|---|---|---|---|---|"]
    for name, r in rows.items():
        md.append(f"| {name} | {r['seconds_per_iteration']:.3f} | {r['speedup']:.2f} | {r['total_seconds']:.1f} | "
                  f"{r['max_difference_vs_baseline']:.1e} |")
    md += ["", f"Convolutions per iteration: {info['conv_gflop_per_iteration']:.1f} GFLOP (forward and backward to "
           f"the latents); float32 matrix multiply here: {info['gemm_gflops']:.0f} GFLOP/s; so no float32 "
           f"iteration can take less than {floor:.3f} s, {info['float32_ceiling_speedup']:.2f}x the baseline's.",
           "", "Where one iteration's time goes (self CPU seconds per iteration, calls per iteration):", ""]
    for name, r in rows.items():
        if r["ops"]:
            md.append(f"- {name}: " + "; ".join(f"{k} {s:.3f} s ({n})" for k, s, n in r["ops"][:8]))
    text = "\n".join(md) + "\n"
    print(text)
    out = Path(args.out)
    out.parent.mkdir(parents=True, exist_ok=True)
    out.with_suffix(".json").write_text(json.dumps(info, indent=2) + "\n")
    out.with_suffix(".md").write_text(text)
    return 0


if __name__ == "__main__":
    sys.exit(main())
