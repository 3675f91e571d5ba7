"""Estimated GPU time of the gpu and paper profiles, from a FLOP count (no GPU needed, none measured).

    python benchmarks/gpu_estimate.py [--tflops 65] [--utilisation 0.25] [--budget-batch 2]

For one training step of the flow prior (STFT, forward, backward) at the ``gpu`` and ``paper`` profiles,
and of each supervised system at ``gpu``, counts the floating-point operations with
:class:`torch.utils.flop_counter.FlopCounterMode` (matrix products and convolutions, forward and backward)
on the CPU at a small batch, scaled linearly to the profile's batch. It also sums the bytes of the tensors
that autograd keeps for the backward pass (float32 on the CPU: an upper bound of the activation memory;
under fp16 autocast most of them take half) and the weights, gradients and Adam state (16 bytes per
parameter).

Conversion to seconds, stated assumptions:
- a Colab T4's published fp16 tensor-core peak, 65 TFLOP/s, and its float32 peak, 8.1 TFLOP/s, for a model
  trained without mixed precision (Demucs: its spectrogram branch needs full-precision complex tensors);
- an assumed utilisation of that peak (default 25%: these are small 1-D convolutions with kernel 5 and
  128 channels, memory-bound layers and normalising flows' element-wise work; nobody has measured it yet);
- operations FlopCounterMode does not count (element-wise, STFT, optimiser, and LSTMs: Open-Unmix's estimate
  is a lower bound) are not added.
So a step's estimated time is flops / (peak x utilisation). Results: benchmarks/results/gpu_estimate.{json,md}.
"""
from __future__ import annotations

import argparse
import json
import platform
from pathlib import Path

RESULTS = Path(__file__).resolve().parent / "results"


def _count(step, params) -> tuple[float, float]:
    """(FLOPs, bytes saved for backward) of one call of ``step()`` (forward and backward)."""
    import torch
    from torch.utils.flop_counter import FlopCounterMode

    saved = [0]

    def pack(t):
        saved[0] += t.numel() * t.element_size()
        return t

    counter = FlopCounterMode(display=False)
    with counter, torch.autograd.graph.saved_tensors_hooks(pack, lambda t: t):
        step()
    return float(counter.get_total_flops()), float(saved[0])


def prior_step(profile: str, batch: int) -> dict:
    import torch

    from flowsep import FlowPrior, PriorConfig
    from flowsep.train import NLL

    cfg = PriorConfig.preset(profile)
    torch.manual_seed(0)
    prior = FlowPrior(cfg)
    nll = NLL(prior).train()
    wave = torch.randn(batch, (cfg.segment_frames - 1) * cfg.hop) * 0.1
    with torch.no_grad():
        nll(wave)  # data-dependent initialisation, not part of a step
    flops, saved = _count(lambda: nll(wave).backward(), list(prior.parameters()))
    scale = cfg.batch_size / batch
    n_params = sum(p.numel() for p in prior.parameters())
    return {"model": "InstGlow prior", "profile": profile, "batch_size": cfg.batch_size,
            "example_seconds": round((cfg.segment_frames - 1) * cfg.hop / cfg.sample_rate, 3),
            "flops_per_step": flops * scale, "activation_bytes_fp32": saved * scale, "fp16": cfg.mixed_precision,
            "parameters": n_params, "train_seconds": cfg.train_seconds or None, "steps": cfg.steps}


def supervised_step(name: str, profile: str, batch: int) -> dict:
    import torch

    from flowsep.baselines import SupervisedConfig, build_network

    cfg = SupervisedConfig.preset(name, profile)
    torch.manual_seed(0)
    net = build_network(cfg).train()
    mix = torch.randn(batch, cfg.channels, cfg.segment_samples) * 0.1
    stems = torch.randn(batch, len(cfg.targets), cfg.channels, cfg.segment_samples) * 0.1
    if hasattr(net, "set_input_statistics"):
        net.set_input_statistics(mix)
    flops, saved = _count(lambda: net.loss(mix, stems).backward(), list(net.parameters()))
    scale = cfg.batch_size / batch
    n_params = sum(p.numel() for p in net.parameters())
    return {"model": cfg.display_name, "profile": profile, "batch_size": cfg.batch_size,
            "example_seconds": cfg.segment_seconds, "flops_per_step": flops * scale,
            "activation_bytes_fp32": saved * scale, "parameters": n_params, "fp16": cfg.mixed_precision,
            "train_seconds": cfg.train_seconds or None, "steps": cfg.steps}


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--tflops", type=float, default=65.0, help="GPU peak, TFLOP/s (T4 fp16 tensor: 65)")
    parser.add_argument("--fp32-tflops", type=float, default=8.1, help="GPU float32 peak, TFLOP/s (T4: 8.1)")
    parser.add_argument("--utilisation", type=float, default=0.25, help="assumed fraction of the peak reached")
    parser.add_argument("--budget-batch", type=int, default=2, help="batch counted on the CPU (scaled up)")
    parser.add_argument("--supervised", nargs="*", default=["openunmix", "convtasnet", "demucs", "waveunet"])
    args = parser.parse_args(argv)
    import torch
    torch.set_num_threads(1)

    rows = [prior_step("gpu", args.budget_batch), prior_step("paper", args.budget_batch)]
    rows += [supervised_step(name, "gpu", args.budget_batch) for name in args.supervised]
    for r in rows:
        rate = (args.tflops if r["fp16"] else args.fp32_tflops) * 1e12 * args.utilisation
        r["estimated_seconds_per_step"] = r["flops_per_step"] / rate
        r["estimated_memory_gb"] = (r["activation_bytes_fp32"] + 16 * r["parameters"]) / 1e9
        if r["train_seconds"]:
            r["estimated_steps_in_budget"] = int(r["train_seconds"] / r["estimated_seconds_per_step"])
        r["estimated_seconds_for_profile_steps"] = r["steps"] * r["estimated_seconds_per_step"]
    result = {"what": "estimated, from a FLOP count; no GPU measurement", "gpu": "Tesla T4 (Colab)",
              "peak_tflops": args.tflops, "peak_tflops_fp32": args.fp32_tflops,
              "assumed_utilisation": args.utilisation, "torch": torch.__version__,
              "machine": platform.processor() or platform.machine(), "rows": rows}
    RESULTS.mkdir(exist_ok=True)
    (RESULTS / "gpu_estimate.json").write_text(json.dumps(result, indent=1) + "\n")
    lines = ["# Estimated training-step times on a T4 (FLOP count, no GPU measurement yet)", "",
             f"Peak {args.tflops:g} TFLOP/s (fp16 tensor cores; {args.fp32_tflops:g} for a model trained in float32) "
             f"at an assumed {args.utilisation:.0%} utilisation (not measured); "
             "FLOPs of one training step (forward and backward) counted with torch's FlopCounterMode; memory = "
             "activations kept for the backward pass (float32, an upper bound) + 16 bytes per parameter. LSTMs are "
             "not counted (Open-Unmix: a lower bound).", "",
             "| model | profile | batch x seconds | parameters | GFLOP/step | est. s/step | est. memory (GB) | "
             "budget | est. steps in budget | est. time of the profile's steps |",
             "|---|---|---|---|---|---|---|---|---|---|"]
    for r in rows:
        budget = f"{r['train_seconds']:.0f} s" if r["train_seconds"] else f"{r['steps']} steps"
        in_budget = r.get("estimated_steps_in_budget", "")
        lines.append(f"| {r['model']} | {r['profile']} | {r['batch_size']} x {r['example_seconds']:.2f} | "
                     f"{r['parameters'] / 1e6:.1f} M | {r['flops_per_step'] / 1e9:.0f} | "
                     f"{r['estimated_seconds_per_step']:.3f} | {r['estimated_memory_gb']:.1f} | {budget} | "
                     f"{in_budget} | "
                     f"{r['estimated_seconds_for_profile_steps'] / 3600:.2f} h |")
    (RESULTS / "gpu_estimate.md").write_text("\n".join(lines) + "\n")
    print("\n".join(lines))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
