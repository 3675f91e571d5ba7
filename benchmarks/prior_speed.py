"""Training-step throughput, peak memory and size of the flow prior, against plain eager float32.

    python benchmarks/prior_speed.py [--profiles cpu paper] [--device cpu|cuda] [--steps 5]

For each profile and variant, one child process runs warm-up steps then timed full training steps
(STFT, forward, backward, clipping, Adam) on random audio and reports spectrogram frames per second
and its peak memory (resident set on CPU, allocated on CUDA). Variants: ``fp32`` (plain eager float32,
the baseline) and ``amp`` (flowsep's default: bf16 autocast on CPUs with bf16 units, fp16 with gradient
scaling on CUDA). Results are printed and saved to benchmarks/results/prior_speed_<device>.{json,md}.
"""
from __future__ import annotations

import argparse
import json
import platform
import resource
import subprocess
import sys
import time
from pathlib import Path

RESULTS = Path(__file__).resolve().parent / "results"


def child(profile: str, variant: str, device: str, steps: int, batch: int | None, frames: int | None) -> dict:
    import torch

    from flowsep import FlowPrior, PriorConfig
    from flowsep.device import autocast_for
    from flowsep.train import NLL

    cfg = PriorConfig.preset(profile)
    batch = batch or cfg.batch_size
    frames = frames or cfg.segment_frames
    dev = torch.device(device)
    torch.manual_seed(0)
    prior = FlowPrior(cfg).to(dev)
    nll = NLL(prior).train()
    opt = torch.optim.Adam(prior.parameters(), lr=cfg.lr)
    amp = variant == "amp"
    scaler = torch.amp.GradScaler("cuda", enabled=amp and dev.type == "cuda")
    wave = torch.randn(batch, (frames - 1) * cfg.hop, device=dev) * 0.1

    def step():
        with autocast_for(dev, amp):
            loss = nll(wave)
        opt.zero_grad(set_to_none=True)
        scaler.scale(loss).backward()
        scaler.unscale_(opt)
        torch.nn.utils.clip_grad_norm_(prior.parameters(), cfg.grad_clip)
        scaler.step(opt)
        scaler.update()

    def sync():
        if dev.type == "cuda":
            torch.cuda.synchronize()

    for _ in range(2):
        step()
    sync()
    if dev.type == "cuda":
        torch.cuda.reset_peak_memory_stats()
    t0 = time.perf_counter()
    for _ in range(steps):
        step()
    sync()
    seconds = (time.perf_counter() - t0) / steps
    peak = (torch.cuda.max_memory_allocated() if dev.type == "cuda"
            else resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024)
    return {"profile": profile, "variant": variant, "device": device, "batch": batch, "frames": frames,
            "params": sum(p.numel() for p in prior.parameters()), "step_seconds": seconds,
            "frames_per_second": batch * frames / seconds, "peak_memory_mb": peak / 2 ** 20,
            "threads": torch.get_num_threads()}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--profiles", nargs="+", default=["cpu", "paper"])
    ap.add_argument("--device", default=None, help="cpu or cuda (default: cuda if available, else cpu)")
    ap.add_argument("--steps", type=int, default=5, help="timed steps per variant")
    ap.add_argument("--batch", type=int, default=None, help="batch size (default: the profile's)")
    ap.add_argument("--frames", type=int, default=None, help="frames per example (default: the profile's)")
    ap.add_argument("--threads", type=int, default=None, help="torch threads per run (default: torch's)")
    ap.add_argument("--child", nargs=2, metavar=("PROFILE", "VARIANT"), help=argparse.SUPPRESS)
    args = ap.parse_args()
    if args.device is None:
        import torch
        args.device = "cuda" if torch.cuda.is_available() else "cpu"
    if args.threads:
        import torch
        torch.set_num_threads(args.threads)
    if args.child:
        print(json.dumps(child(*args.child, args.device, args.steps, args.batch, args.frames)))
        return
    rows = []
    for profile in args.profiles:
        for variant in ("fp32", "amp"):
            cmd = [sys.executable, __file__, "--child", profile, variant, "--device", args.device,
                   "--steps", str(args.steps)]
            cmd += ["--batch", str(args.batch)] if args.batch else []
            cmd += ["--frames", str(args.frames)] if args.frames else []
            cmd += ["--threads", str(args.threads)] if args.threads else []
            out = subprocess.run(cmd, check=True, capture_output=True, text=True).stdout
            rows.append(json.loads(out.strip().splitlines()[-1]))
            print(f"  measured {profile}/{variant}: {rows[-1]['frames_per_second']:.0f} frames/s", flush=True)
    base = {r["profile"]: r["frames_per_second"] for r in rows if r["variant"] == "fp32"}
    for r in rows:
        r["speedup_vs_fp32"] = r["frames_per_second"] / base[r["profile"]]
    lines = [f"# Prior training-step speed on {args.device} ({platform.processor() or platform.machine()}, "
             f"{rows[0]['threads']} threads)", "",
             "| profile | variant | params | batch x frames | frames/s | x fp32 | peak memory (MB) |",
             "|---|---|---|---|---|---|---|"]
    for r in rows:
        lines.append(f"| {r['profile']} | {r['variant']} | {r['params']:,} | {r['batch']} x {r['frames']} | "
                     f"{r['frames_per_second']:.0f} | {r['speedup_vs_fp32']:.2f} | {r['peak_memory_mb']:.0f} |")
    table = "\n".join(lines)
    print(table)
    RESULTS.mkdir(parents=True, exist_ok=True)
    (RESULTS / f"prior_speed_{args.device}.json").write_text(json.dumps(rows, indent=2))
    (RESULTS / f"prior_speed_{args.device}.md").write_text(table + "\n")


if __name__ == "__main__":
    main()
