"""Training a source prior: maximum likelihood on clean stems of one instrument.

Chapter: "Training the source priors".

The loop (nanoGPT-style, no framework): Adam with a step decay of the learning rate, gradient-norm
clipping, mixed precision (fp16 + gradient scaling on CUDA, bf16 autocast on CPUs with bf16 units),
a tqdm bar with the loss and bits/dim, periodic validation, and atomic checkpoints every
``checkpoint_every`` steps and at the end. Step ``s`` always sees the same examples (see
:mod:`flowsep.data.chunks`) and seeds its dropout from (seed, step, rank), so a resumed run ends with the
same weights as an uninterrupted one. Under ``torchrun`` each process takes a slice of every batch and
gradients are averaged with DistributedDataParallel.
"""
from __future__ import annotations

import math
import os
import time
from pathlib import Path

import torch
from torch import nn

from .data.chunks import SourceChunks, step_loader
from .data.musdb import load_source_signals
from .errors import FlowsepError
from .flows import standard_normal_logpdf
from .io import load_torch, save_torch
from .prior import FlowPrior, PriorConfig
from .spectral import stft


def resolve_device(device: str | torch.device = "auto") -> torch.device:
    """"auto" -> cuda if available, else cpu; "cuda" without a GPU is a user error."""
    if str(device) == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    try:
        dev = torch.device(device)
    except RuntimeError:
        raise FlowsepError(f"unknown device {device!r}; use auto, cpu or cuda") from None
    if dev.type == "cuda" and not torch.cuda.is_available():
        raise FlowsepError("device cuda asked for but no CUDA GPU is available; use --device cpu or auto")
    return dev


def cpu_bf16_supported() -> bool:
    try:
        return bool(torch.ops.mkldnn._is_mkldnn_bf16_supported())
    except (AttributeError, RuntimeError):
        return False


def autocast_for(device: torch.device, enabled: bool):
    """The mixed-precision context of a training step on ``device`` (a no-op when disabled)."""
    if enabled and device.type == "cuda":
        return torch.autocast("cuda", dtype=torch.float16)
    if enabled and device.type == "cpu" and cpu_bf16_supported():
        return torch.autocast("cpu", dtype=torch.bfloat16)
    return torch.autocast(device.type, enabled=False)


class NLL(nn.Module):
    """Negative log-likelihood per magnitude value (nats) of a batch of waveforms: (B, samples) -> scalar."""

    def __init__(self, prior: FlowPrior):
        super().__init__()
        self.prior = prior

    def forward(self, wave: torch.Tensor) -> torch.Tensor:
        c = self.prior.config
        mag = stft(wave, c.n_fft, c.hop).abs()
        x, ld_t = self.prior.encode(mag)
        z, ld = self.prior.flow(x)
        log_p = standard_normal_logpdf(z) + ld.float() + ld_t.float()
        return -log_p.mean() / (mag.shape[1] * mag.shape[2])


def _dist_info() -> tuple[int, int]:
    return int(os.environ.get("RANK", 0)), int(os.environ.get("WORLD_SIZE", 1))


def _step_seed(seed: int, step: int, rank: int) -> int:
    return (seed * 1_000_003 + step) * 1_009 + rank


@torch.no_grad()
def validate(nll: NLL, data: SourceChunks, batches: int, batch: int, device, amp: bool) -> float:
    """Mean NLL (nats per value) on the first ``batches`` fixed batches of the validation chunks."""
    was = nll.training
    nll.eval()
    total = 0.0
    for b in range(batches):
        wave = torch.stack([data[b * batch + k] for k in range(batch)]).to(device)
        with autocast_for(device, amp):
            total += float(nll(wave))
    nll.train(was)
    return total / batches


def run_steps(loader, loss_of, params: list, opt, scaler, grad_clip: float, *, sched=None, start: int, total: int,
              step_seed, history: dict, key: str, validate=None, val_every: int, checkpoint_every: int, save,
              bar=None, postfix=None) -> int:
    """The optimisation loop of every model flowsep trains (the priors here, the baselines too).

    For each batch of ``loader`` (steps ``start`` to ``total``): seed torch with ``step_seed(step)``,
    ``loss_of(batch)`` (a scalar, already under the model's autocast), a scaled backward pass, gradient-norm
    clipping at ``grad_clip``, the optimiser and scheduler steps. ``history`` gets ``step`` and
    ``train_<key>`` every step, ``val_step`` and ``val_<key>`` (from ``validate()``, None to skip) every
    ``val_every`` steps and at the end, and the training seconds. ``save(step)`` writes a checkpoint every
    ``checkpoint_every`` steps, at the end, and before a non-finite loss stops the run with a
    :class:`FlowsepError`. Returns the last step.
    """
    t0 = time.perf_counter()
    step = start
    for batch in loader:
        torch.manual_seed(step_seed(step))
        loss = loss_of(batch)
        if not torch.isfinite(loss):
            save(step)
            raise FlowsepError(f"training diverged at step {step} (loss {float(loss.detach())}); lower the "
                               "learning rate or resume from the last checkpoint")
        opt.zero_grad(set_to_none=True)
        scaler.scale(loss).backward()
        scaler.unscale_(opt)
        nn.utils.clip_grad_norm_(params, grad_clip)
        scaler.step(opt)
        scaler.update()
        if sched is not None:
            sched.step()
        step += 1
        history["step"].append(step)
        history[f"train_{key}"].append(float(loss.detach()))
        if validate is not None and (step % val_every == 0 or step == total):
            history["val_step"].append(step)
            history[f"val_{key}"].append(validate())
        if bar is not None:
            if postfix is not None:
                bar.set_postfix(postfix(history), refresh=False)
            bar.update(1)
        if step % checkpoint_every == 0 and step != total:
            history["seconds"] += time.perf_counter() - t0
            t0 = time.perf_counter()
            save(step)
    if bar is not None:
        bar.close()
    history["seconds"] += time.perf_counter() - t0
    save(step)
    return step


def train_prior(config: PriorConfig, data, source: str | None = None, out=None, steps: int | None = None,
                device="auto", resume: bool = False, progress: bool = True, workers: int = 0) -> FlowPrior:
    """Train (or resume training) a prior on one instrument; returns the trained prior in eval mode.

    data: a MUSDB18-format root (then ``source`` names the stem) or a folder of audio files of one
    instrument (any rate, mono or stereo). out: checkpoint path, written atomically every
    ``config.checkpoint_every`` steps and at the end; ``resume=True`` continues from it.
    steps: total number of steps of the run (default ``config.steps``).
    """
    rank, world = _dist_info()
    dev = resolve_device(device)
    if world > 1:
        import torch.distributed as dist
        if not dist.is_initialized():
            dist.init_process_group("nccl" if dev.type == "cuda" else "gloo")
        if dev.type == "cuda":
            dev = torch.device("cuda", int(os.environ.get("LOCAL_RANK", 0)))
            torch.cuda.set_device(dev)
    out = Path(out) if out else None
    state = None
    if resume:
        if out is None:
            raise FlowsepError("--resume needs --out CKPT, the checkpoint to continue")
        if out.is_file():
            state = load_torch(out, "training checkpoint")
            if "train" not in state:
                raise FlowsepError(f"{out} holds a finished prior without training state; train anew "
                                   "without --resume or give another --out")
            config = PriorConfig.from_dict(state["prior"]["config"], source=str(out))
    total = int(steps if steps is not None else config.steps)
    if total <= 0:
        raise FlowsepError(f"--steps must be positive, got {total}")
    c = config

    segment = (c.segment_frames - 1) * c.hop
    train_set = SourceChunks(load_source_signals(data, source, c.sample_rate, "train", c.val_fraction),
                             segment, seed=c.seed, silence_db=c.silence_db, dequantize=c.dequantize)
    val_set = SourceChunks(load_source_signals(data, source, c.sample_rate, "valid", c.val_fraction),
                           segment, seed=c.seed + 1, silence_db=c.silence_db, dequantize=c.dequantize)

    torch.manual_seed(c.seed)
    prior = FlowPrior(c).to(dev)
    nll = NLL(prior).train()
    opt = torch.optim.Adam(prior.parameters(), lr=c.lr)
    sched = torch.optim.lr_scheduler.StepLR(opt, step_size=c.lr_decay_every, gamma=c.lr_decay)
    amp = c.mixed_precision
    scaler = torch.amp.GradScaler("cuda", enabled=amp and dev.type == "cuda")
    history = {"step": [], "train_nll": [], "val_step": [], "val_nll": [], "seconds": 0.0}
    start = 0
    if state is not None:
        prior.load_state_dict(state["prior"]["state_dict"])
        opt.load_state_dict(state["train"]["optimizer"])
        sched.load_state_dict(state["train"]["scheduler"])
        scaler.load_state_dict(state["train"]["scaler"])
        history = state["train"]["history"]
        start = int(state["train"]["step"])
    else:
        # data-dependent ActNorm initialisation on the run's first global batch (same on every process)
        with torch.no_grad():
            nll(torch.stack([train_set[k] for k in range(c.batch_size)]).to(dev))
    model = nll
    if world > 1:
        model = nn.parallel.DistributedDataParallel(nll, device_ids=[dev.index] if dev.type == "cuda" else None)

    def save(step):
        if rank == 0 and out is not None:
            ckpt = {"prior": prior.checkpoint(),
                    "train": {"step": step, "optimizer": opt.state_dict(), "scheduler": sched.state_dict(),
                              "scaler": scaler.state_dict(), "history": history}}
            save_torch(ckpt, out)

    bar = None
    if progress and rank == 0:
        from .progress import bar as progress_bar
        bar = progress_bar(total=total, initial=start, desc=f"train {source or Path(str(data)).name}", unit="step")
    loader = step_loader(train_set, start, total, c.batch_size, rank, world, workers)
    bits = 1.0 / math.log(2)

    def loss_of(wave):
        with autocast_for(dev, amp):
            return model(wave.to(dev, non_blocking=True))

    def postfix(h):
        post = {"nll": f"{h['train_nll'][-1]:.3f}", "bits/dim": f"{h['train_nll'][-1] * bits:.3f}"}
        if h["val_nll"]:
            post["val bits/dim"] = f"{h['val_nll'][-1] * bits:.3f}"
        return post

    run_steps(loader, loss_of, list(prior.parameters()), opt, scaler, c.grad_clip, sched=sched,
              start=start, total=total, step_seed=lambda s: _step_seed(c.seed, s, rank), history=history,
              key="nll", validate=(lambda: validate(nll, val_set, c.val_batches, c.batch_size // world, dev, amp))
              if rank == 0 else None, val_every=c.val_every, checkpoint_every=c.checkpoint_every, save=save,
              bar=bar, postfix=postfix)
    if world > 1:
        import torch.distributed as dist
        dist.barrier()
        dist.destroy_process_group()
    prior.history = history
    return prior.eval()


def parse_overrides(items: list[str]) -> dict:
    """["lr=3e-4", "mixed_precision=false"] -> {"lr": 0.0003, "mixed_precision": False}, typed by PriorConfig."""
    import dataclasses
    types = {f.name: type(f.default) for f in dataclasses.fields(PriorConfig)}
    out = {}
    for item in items:
        key, sep, value = item.partition("=")
        if not sep or key not in types:
            raise FlowsepError(f"--set {item!r}: expected KEY=VALUE with KEY one of {', '.join(types)}")
        kind = types[key]
        try:
            if kind is bool:
                if value.lower() not in ("true", "false", "1", "0", "yes", "no"):
                    raise ValueError(value)
                out[key] = value.lower() in ("true", "1", "yes")
            else:
                out[key] = kind(value)
        except ValueError:
            raise FlowsepError(f"--set {item!r}: {value!r} is not a valid {kind.__name__}") from None
    return out


def register_cli(sub) -> None:
    p = sub.add_parser("train", help="train a flow prior on one instrument's clean recordings",
                       description="Train a source prior (Glow over magnitude spectrograms) on one stem of a "
                                   "MUSDB18-format root, or on a folder of one instrument's audio files.")
    p.add_argument("--data", required=True, help="MUSDB18-format root, or a folder of audio files of one instrument")
    p.add_argument("--source", default=None, help="stem to learn (vocals, drums, bass, other, ...); "
                                                  "required with a MUSDB18-format root")
    p.add_argument("--profile", default="cpu", help="smoke, cpu or paper (default: cpu)")
    p.add_argument("--out", required=True, help="checkpoint file to write (atomically)")
    p.add_argument("--steps", type=int, default=None, help="total training steps (default: the profile's)")
    p.add_argument("--device", default="auto", help="auto, cpu or cuda (default: auto)")
    p.add_argument("--resume", action="store_true", help="continue from the checkpoint at --out if it exists")
    p.add_argument("--seed", type=int, default=None, help="random seed (default: the profile's)")
    p.add_argument("--workers", type=int, default=0, help="DataLoader worker processes (default: 0)")
    p.add_argument("--set", action="append", default=[], metavar="KEY=VALUE",
                   help="override one setting of the profile, e.g. --set lr=3e-4 --set mixed_precision=false")
    p.set_defaults(func=_cli)


def _cli(args) -> int:
    from .data.musdb import is_musdb_root
    overrides = {} if args.seed is None else {"seed": args.seed}
    overrides.update(parse_overrides(args.set))
    cfg = PriorConfig.preset(args.profile, **overrides)
    if is_musdb_root(args.data) and not args.source:
        raise FlowsepError("--source is required with a MUSDB18-format root (e.g. --source vocals)")
    prior = train_prior(cfg, args.data, args.source, out=args.out, steps=args.steps, device=args.device,
                        resume=args.resume, workers=args.workers)
    if _dist_info()[0] == 0:
        h = prior.history
        last = h["val_nll"][-1] / math.log(2) if h["val_nll"] else float("nan")
        print(f"wrote {args.out}: {h['step'][-1] if h['step'] else 0} steps, validation {last:.3f} bits/dim")
    return 0
