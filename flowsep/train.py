"""Training a source prior: maximum likelihood on clean stems of one instrument.

Chapter: "Training the source priors".

The loop (nanoGPT-style, no framework): Adam with a step decay of the learning rate at fixed fractions
of the run's budget (steps, or seconds of training time), gradient-norm clipping, mixed precision
(fp16 + gradient scaling on CUDA, bf16 autocast on CPUs with bf16 units), a tqdm bar with the loss and
bits/dim, periodic validation, and atomic checkpoints every ``checkpoint_every`` steps and at the end.
Step ``s`` always sees the same examples (see :mod:`flowsep.data.chunks`) and seeds its dropout from
(seed, step, rank), so a resumed run ends with the same weights as an uninterrupted one. Under
``torchrun`` each process takes a slice of every batch and gradients are averaged with
DistributedDataParallel.

Budgets: ``steps`` (reproducible to the bit) or ``seconds`` of training (validation and checkpoint
writing not counted); the checkpoint stores the budget, the step, and per step the training seconds
spent so far (``history["elapsed"]``), so ``--resume`` continues within the budget.
"""
from __future__ import annotations

import math
import os
import time
from fractions import Fraction
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


def decay_count(progress: float, config) -> int:
    """How many times the learning rate has decayed after ``progress`` (0..1) of a run's budget.

    The schedule of a profile is written in steps (decay by ``lr_decay`` every ``lr_decay_every`` of
    ``config.steps`` steps) and applied as fractions of whatever budget a run has: decay number k comes after
    k * lr_decay_every / steps of the budget, whether the budget is counted in steps (``--steps N``: after
    N * lr_decay_every / steps steps) or in seconds (``--seconds S``: after that fraction of S). A run of the
    profile's own ``steps`` decays every ``lr_decay_every`` steps exactly. ``progress`` may be a
    :class:`fractions.Fraction` (exact, for step budgets) or a float (time budgets).
    """
    if config.lr_decay_every <= 0 or config.steps <= 0:
        return 0
    return math.floor(Fraction(progress) * config.steps / config.lr_decay_every)


def scheduled_lr(config, progress: float) -> float:
    """The learning rate after ``progress`` (0..1) of the budget: ``lr * lr_decay ** decay_count``.

    Multiplied out one decay at a time, as :class:`torch.optim.lr_scheduler.StepLR` does, so that a run of the
    profile's own length gets bit for bit the rates StepLR gave it.
    """
    lr = config.lr
    for _ in range(decay_count(progress, config)):
        lr = lr * config.lr_decay
    return lr


def resolve_budget(steps: int | None, seconds: float | None, config_steps: int, config_seconds: float | None = None,
                   stored: dict | None = None) -> dict:
    """The budget of a run: {"steps": N} or {"seconds": S}.

    An explicit ``steps`` or ``seconds`` wins (giving both is an error); else the budget stored in the
    checkpoint being resumed (``stored``); else the profile's: ``config_seconds`` when it is set (the ``gpu``
    profile trains to a wall-clock budget), otherwise ``config_steps``.
    """
    if steps is not None and seconds is not None:
        raise FlowsepError("give a budget in --steps or in --seconds, not both")
    if steps is None and seconds is None and stored:
        return dict(stored)
    if seconds is None and steps is None and config_seconds:
        seconds = config_seconds
    if seconds is not None:
        if not seconds > 0 or not math.isfinite(seconds):
            raise FlowsepError(f"--seconds must be positive, got {seconds}")
        return {"seconds": float(seconds)}
    total = int(steps if steps is not None else config_steps)
    if total <= 0:
        raise FlowsepError(f"--steps must be positive, got {total}")
    return {"steps": total}


def budget_spent(train_state: dict, budget: dict) -> bool:
    """True when a checkpoint's training state (its ``"train"`` entry) has used up ``budget``."""
    if "seconds" in budget:
        return float(train_state.get("history", {}).get("seconds", 0.0)) >= budget["seconds"]
    return int(train_state.get("step", 0)) >= budget["steps"]


#: steps a time-budgeted run may take at most: a bound for the step sampler, never reached in practice
UNBOUNDED_STEPS = 10 ** 12


def run_steps(loader, loss_of, params: list, opt, scaler, grad_clip: float, *, start: int, total: int | None = None,
              seconds: float | None = None, lr_at=None, step_seed, history: dict, key: str, validate=None,
              val_every: int, checkpoint_every: int, save, bar=None, postfix=None, clock=time.perf_counter,
              agree=None) -> int:
    """The optimisation loop of every model flowsep trains (the priors here, the baselines too).

    The budget is ``total`` steps (``start`` counts the steps already done) or ``seconds`` of training time
    (``history["seconds"]`` counts the seconds already spent, so a resumed run continues within its
    budget). Training time is the time of the steps themselves, the loading of their batches included;
    validation and checkpoint writing are not counted, for every model alike. The run stops after the first
    step that reaches the budget.

    For each batch of ``loader``: set the learning rate to ``lr_at(progress)`` (progress: the fraction of
    the budget already used, a Fraction of steps or a float of seconds; None keeps the optimiser's rate),
    seed torch with ``step_seed(step)``, ``loss_of(batch)`` (a scalar, already under the model's autocast),
    a scaled backward pass, gradient-norm clipping at ``grad_clip``, the optimiser step. ``history`` gets
    ``step``, ``elapsed`` (training seconds after that step) and ``train_<key>`` every step, ``val_step``
    and ``val_<key>`` (from ``validate()``, None to skip) every ``val_every`` steps and at the end, and the
    training seconds in ``seconds``. ``save(step)`` writes a checkpoint every ``checkpoint_every`` steps, at
    the end, and before a non-finite loss stops the run with a :class:`FlowsepError`. ``clock`` reads the
    time (tests pass a fake one); ``agree(seconds)`` makes the processes of a distributed run agree on the
    seconds spent (their maximum), so they stop at the same step and use the same learning rate.
    Returns the last step.
    """
    if (total is None) == (seconds is None):
        raise ValueError("run_steps needs exactly one budget: total steps or seconds")
    history.setdefault("elapsed", [math.nan] * len(history["step"]))  # checkpoints written before it existed
    spent = float(history["seconds"])
    step = start

    def progress():
        if seconds is None:
            return Fraction(step, total)
        return min(spent / seconds, 1.0)

    def done():
        return step >= total if seconds is None else spent >= seconds

    if done():
        if bar is not None:
            bar.close()
        save(step)
        return step
    t0 = clock()
    for batch in loader:
        if lr_at is not None:
            lr = lr_at(progress())
            for group in opt.param_groups:
                group["lr"] = lr
        torch.manual_seed(step_seed(step))
        loss = loss_of(batch)
        if not torch.isfinite(loss):
            history["seconds"] = spent
            save(step)
            raise FlowsepError(f"training diverged at step {step} (loss {float(loss.detach())}); lower the "
                               "learning rate or resume from the last checkpoint")
        opt.zero_grad(set_to_none=True)
        scaler.scale(loss).backward()
        scaler.unscale_(opt)
        nn.utils.clip_grad_norm_(params, grad_clip)
        scaler.step(opt)
        scaler.update()
        step += 1
        before = spent
        spent += clock() - t0
        if agree is not None:
            spent = agree(spent)
        history["step"].append(step)
        history["elapsed"].append(spent)
        history[f"train_{key}"].append(float(loss.detach()))
        finished = done()
        if validate is not None and (step % val_every == 0 or finished):
            history["val_step"].append(step)
            history[f"val_{key}"].append(validate())
        if bar is not None:
            if postfix is not None:
                bar.set_postfix(postfix(history), refresh=False)
            bar.update(1 if seconds is None else int(spent) - int(before))
        if finished:
            break
        if step % checkpoint_every == 0:
            history["seconds"] = spent
            save(step)
        t0 = clock()
    if bar is not None:
        bar.close()
    history["seconds"] = spent
    save(step)
    return step


def training_bar(budget: dict, start: int, spent: float, desc: str):
    """A progress bar over a run's budget: steps, or whole seconds of training time."""
    from .progress import bar as progress_bar

    if "seconds" in budget:
        return progress_bar(total=int(math.ceil(budget["seconds"])), initial=min(int(spent), int(budget["seconds"])),
                            desc=desc, unit="s")
    return progress_bar(total=budget["steps"], initial=start, desc=desc, unit="step")


def train_prior(config: PriorConfig, data, source: str | None = None, out=None, steps: int | None = None,
                device="auto", resume: bool = False, progress: bool = True, workers: int = 0,
                seconds: float | None = None) -> FlowPrior:
    """Train (or resume training) a prior on one instrument; returns the trained prior in eval mode.

    data: a MUSDB18-format root (then ``source`` names the stem) or a folder of audio files of one
    instrument (any rate, mono or stereo). out: checkpoint path, written atomically every
    ``config.checkpoint_every`` steps and at the end; ``resume=True`` continues from it.
    The budget (see :func:`resolve_budget`): ``steps`` (total steps of the run) or ``seconds`` (total
    training seconds, validation and checkpoint writing not counted); by default the budget of the
    checkpoint being resumed, else ``config.train_seconds`` when set, else ``config.steps``. The learning
    rate decays at fixed fractions of the budget (:func:`scheduled_lr`). A step budget is reproducible to
    the bit (step ``s`` sees the same batch and dropout whatever happens around it); a time budget is not:
    how many steps fit, and when the rate decays, depend on the machine.
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
    budget = resolve_budget(steps, seconds, config.steps, config.train_seconds,
                            state["train"].get("budget") if state is not None else None)
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
    amp = c.mixed_precision
    scaler = torch.amp.GradScaler("cuda", enabled=amp and dev.type == "cuda")
    history = {"step": [], "elapsed": [], "train_nll": [], "val_step": [], "val_nll": [], "seconds": 0.0}
    start = 0
    if state is not None:
        prior.load_state_dict(state["prior"]["state_dict"])
        opt.load_state_dict(state["train"]["optimizer"])
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
                    "train": {"step": step, "budget": budget, "optimizer": opt.state_dict(),
                              "scaler": scaler.state_dict(), "history": history}}
            save_torch(ckpt, out)

    bar = None
    if progress and rank == 0:
        bar = training_bar(budget, start, history["seconds"], f"train {source or Path(str(data)).name}")
    loader = step_loader(train_set, start, budget.get("steps", UNBOUNDED_STEPS), c.batch_size, rank, world, workers)
    bits = 1.0 / math.log(2)

    def loss_of(wave):
        with autocast_for(dev, amp):
            return model(wave.to(dev, non_blocking=True))

    def postfix(h):
        post = {"nll": f"{h['train_nll'][-1]:.3f}", "bits/dim": f"{h['train_nll'][-1] * bits:.3f}"}
        if h["val_nll"]:
            post["val bits/dim"] = f"{h['val_nll'][-1] * bits:.3f}"
        return post

    agree = None
    if world > 1 and "seconds" in budget:
        import torch.distributed as dist

        def agree(spent):  # every process stops at the same step and uses the same learning rate
            t = torch.tensor([spent], dtype=torch.float64, device=dev)
            dist.all_reduce(t, op=dist.ReduceOp.MAX)
            return float(t)

    run_steps(loader, loss_of, list(prior.parameters()), opt, scaler, c.grad_clip, start=start,
              total=budget.get("steps"), seconds=budget.get("seconds"), lr_at=lambda p: scheduled_lr(c, p),
              agree=agree, step_seed=lambda s: _step_seed(c.seed, s, rank), history=history,
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
    p.add_argument("--data", required=True, help="MUSDB18-format root, musdb-preview (MUSDB18's 7-second previews, "
                                                 "downloaded once), or a folder of audio files of one instrument")
    p.add_argument("--source", default=None, help="stem to learn (vocals, drums, bass, other, ...); "
                                                  "required with a MUSDB18-format root")
    p.add_argument("--profile", default="cpu", help="smoke, cpu, gpu or paper (default: cpu)")
    p.add_argument("--out", required=True, help="checkpoint file to write (atomically)")
    p.add_argument("--steps", type=int, default=None,
                   help="budget in total training steps (default: the profile's budget)")
    p.add_argument("--seconds", type=float, default=None,
                   help="budget in seconds of training, validation and checkpoint writing not counted; "
                        "the learning rate decays at the same fractions of it (default: the profile's budget: "
                        "seconds at gpu, steps elsewhere)")
    p.add_argument("--device", default="auto", help="auto, cpu or cuda (default: auto)")
    p.add_argument("--resume", action="store_true",
                   help="continue from the checkpoint at --out if it exists, within its budget")
    p.add_argument("--seed", type=int, default=None, help="random seed (default: the profile's)")
    p.add_argument("--workers", type=int, default=0, help="DataLoader worker processes (default: 0)")
    p.add_argument("--set", action="append", default=[], metavar="KEY=VALUE",
                   help="override one setting of the profile, e.g. --set lr=3e-4 --set mixed_precision=false")
    p.add_argument("--quiet", action="store_true", help="no progress bar")
    p.set_defaults(func=_cli)


def _cli(args) -> int:
    from .data.musdb import is_musdb_root, resolve_root
    overrides = {} if args.seed is None else {"seed": args.seed}
    overrides.update(parse_overrides(args.set))
    cfg = PriorConfig.preset(args.profile, **overrides)
    data = resolve_root(args.data)  # "musdb-preview": MUSDB18's previews, fetched once
    if is_musdb_root(data) and not args.source:
        raise FlowsepError("--source is required with a MUSDB18-format root (e.g. --source vocals)")
    prior = train_prior(cfg, data, args.source, out=args.out, steps=args.steps, device=args.device,
                        resume=args.resume, workers=args.workers, seconds=args.seconds, progress=not args.quiet)
    if _dist_info()[0] == 0:
        h = prior.history
        last = h["val_nll"][-1] / math.log(2) if h["val_nll"] else float("nan")
        print(f"wrote {args.out}: {h['step'][-1] if h['step'] else 0} steps in {h['seconds']:.0f} s of training, "
              f"validation {last:.3f} bits/dim")
    return 0
