"""How long the command line takes to start, against the time of ``import torch`` alone.

    python benchmarks/cli_startup.py [--runs 9]

Each run starts a fresh Python process: the baseline ``python -c "import torch"``, then
``python -m flowsep.cli VERB --help`` for every verb, interleaved so that a busy machine slows all of
them alike. The ratio of the medians says what flowsep adds to starting torch (the CLI imports the module
of the verb being run, nothing else). Results are printed and saved to
benchmarks/results/cli_startup_<machine>.{json,md}.
"""
from __future__ import annotations

import argparse
import json
import os
import platform
import statistics
import subprocess
import sys
import time
from pathlib import Path

RESULTS = Path(__file__).resolve().parent / "results"
VERBS = ("separate", "train", "priors", "evaluate", "train-supervised", "benchmark", "synth")


def seconds(cmd: list[str]) -> float:
    t0 = time.perf_counter()
    subprocess.run(cmd, check=True, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    return time.perf_counter() - t0


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--runs", type=int, default=9)
    ap.add_argument("--out", default=str(RESULTS / "cli_startup_cpu"))
    args = ap.parse_args()
    commands = {"import torch": [sys.executable, "-c", "import torch"]}
    commands.update({f"flowsep {v} --help": [sys.executable, "-m", "flowsep.cli", v, "--help"] for v in VERBS})
    times = {k: [] for k in commands}
    for _ in range(args.runs):
        for name, cmd in commands.items():
            times[name].append(seconds(cmd))
    base = statistics.median(times["import torch"])
    rows = [{"command": k, "median_s": statistics.median(v), "min_s": min(v),
             "ratio_to_import_torch": statistics.median(v) / base} for k, v in times.items()]
    result = {"machine": platform.processor() or platform.machine(), "cpus": os.cpu_count(), "runs": args.runs,
              "python": platform.python_version(), "rows": rows}
    lines = [f"# Command-line start-up ({args.runs} runs each, interleaved; {os.cpu_count()} CPUs)", "",
             "| command | median (s) | fastest (s) | median / `import torch` |", "|---|---|---|---|"]
    lines += [f"| `{r['command']}` | {r['median_s']:.2f} | {r['min_s']:.2f} | {r['ratio_to_import_torch']:.2f}x |"
              for r in rows]
    text = "\n".join(lines) + "\n"
    print(text)
    out = Path(args.out)
    out.parent.mkdir(parents=True, exist_ok=True)
    out.with_suffix(".json").write_text(json.dumps(result, indent=2) + "\n")
    out.with_suffix(".md").write_text(text)


if __name__ == "__main__":
    main()
