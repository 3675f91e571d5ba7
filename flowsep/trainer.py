"""The one training loop of flowsep: the source priors and every supervised comparison system go through it.

Chapter: "Training the source priors" (the loop), "Evaluation" (the comparison systems).

A model supplies only what is its own: an *objective* (an ``nn.Module`` whose ``forward(batch)`` is the
scalar loss of a batch, and whose parameters are trained), its training and validation examples, the
model's part of a checkpoint, and a data-dependent initialisation where it has one. :func:`fit` does the
rest, the same way for every model (nanoGPT-style, no framework):

* Adam (with the config's weight decay) and a step decay of the learning rate at fixed fractions of the
  run's budget (:func:`scheduled_lr`; constant when the config has no decay);
* the budget (:func:`resolve_budget`): ``steps`` (reproducible to the bit) or ``seconds`` of training time
  (validation and checkpoint writing not counted, for every model alike);
* step ``s`` always sees the same examples (:func:`flowsep.data.chunks.step_loader`) and seeds its dropout
  from (seed, step, rank), so a resumed run ends with the same weights as an uninterrupted one;
* mixed precision (:func:`flowsep.device.autocast_for`: fp16 with gradient scaling on CUDA, bf16 on CPUs
  with bf16 units), gradient-norm clipping, periodic validation, a tqdm bar;
* atomic checkpoints every ``checkpoint_every`` steps and at the end: the model's part and
  ``"train": {step, budget, optimizer, scaler, history}``; ``history`` holds per step the training seconds
  spent so far (``elapsed``) and the loss, so ``--resume`` continues within the budget;
* under ``torchrun``, each process takes a slice of every batch and DistributedDataParallel averages the
  gradients.

:func:`ensure_trained` is the cache on top: a finished checkpoint of the same model is reused, an unfinished
one resumed, anything else trained anew.
"""
from __future__ import annotations

import math
import os
import time
from fractions import Fraction
from pathlib import Path
from typing import Callable

import torch
import torch.distributed as dist
from torch import nn
from torch.utils.data import default_collate

from .data.chunks import step_loader
from .device import autocast_for, dist_info
from .errors import FlowsepError
from .io import load_torch, save_torch
from .progress import bar as progress_bar

#: steps a time-budgeted run may take at most: a bound for the step sampler, never reached in practice
UNBOUNDED_STEPS = 10 ** 12


# ---- budgets and the learning-rate schedule ------------------------------------------------------------
def decay_count(progress: float, config) -> int:
    """How many times the learning rate has decayed after ``progress`` (0..1) of a run's budget.

    The schedule of a profile is written in steps (decay by ``lr_decay`` every ``lr_decay_every`` of
    ``config.steps`` steps) and applied as fractions of whatever budget a run has: decay number k comes after
    k * lr_decay_every / steps of the budget, whether the budget is counted in steps (``--steps N``: after
    N * lr_decay_every / steps steps) or in seconds (``--seconds S``: after that fraction of S). A run of the
    profile's own ``steps`` decays every ``lr_decay_every`` steps exactly. ``progress`` may be a
    :class:`fractions.Fraction` (exact, for step budgets) or a float (time budgets). A config without
    ``lr_decay_every`` (the supervised systems) never decays.
    """
    every = getattr(config, "lr_decay_every", 0)
    if every <= 0 or config.steps <= 0:
        return 0
    return math.floor(Fraction(progress) * config.steps / every)


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


def step_seed(seed: int, step: int, rank: int) -> int:
    """The torch seed of step ``step`` on process ``rank`` (dropout and other randomness of the step)."""
    return (seed * 1_000_003 + step) * 1_009 + rank


# ---- the loop ------------------------------------------------------------------------------------------
def run_steps(loader, loss_of, params: list, opt, scaler, grad_clip: float, *, start: int, total: int | None = None,
              seconds: float | None = None, lr_at=None, step_seed, history: dict, key: str, validate=None,
              val_every: int, checkpoint_every: int, save, bar=None, postfix=None, clock=time.perf_counter,
              agree=None) -> int:
    """The optimisation loop itself (what :func:`fit` runs once everything is set up).

    The budget is ``total`` steps (``start`` counts the steps already done) or ``seconds`` of training time
    (``history["seconds"]`` counts the seconds already spent, so a resumed run continues within its
    budget). Training time is the time of the steps themselves, the loading of their batches included;
    validation and checkpoint writing are not counted. The run stops after the first step that reaches the
    budget.

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
            if seconds is None:
                bar.update(1)
            else:  # whole seconds; a finished run fills the bar (its last step may end a fraction short)
                bar.update(bar.total - bar.n if finished else int(spent) - int(before))
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
    if "seconds" in budget:
        return progress_bar(total=int(math.ceil(budget["seconds"])), initial=min(int(spent), int(budget["seconds"])),
                            desc=desc, unit="s")
    return progress_bar(total=budget["steps"], initial=start, desc=desc, unit="step")


@torch.no_grad()
def validate(objective: nn.Module, data, batches: int, batch: int, device, amp: bool) -> float:
    """Mean loss of ``objective`` on the first ``batches`` fixed batches of ``data`` (eval mode)."""
    was = objective.training
    objective.eval()
    total = 0.0
    for b in range(batches):
        items = default_collate([data[b * batch + k] for k in range(batch)])
        with autocast_for(device, amp):
            total += float(objective(_to(items, device)))
    objective.train(was)
    return total / batches


def _to(batch, device):
    if isinstance(batch, torch.Tensor):
        return batch.to(device, non_blocking=True)
    return [t.to(device, non_blocking=True) for t in batch]


def start_distributed(device: torch.device, world: int) -> torch.device:
    """Join the process group of a ``torchrun`` run (nccl on CUDA, gloo on CPU); this process's device."""
    if world > 1:
        if not dist.is_initialized():
            dist.init_process_group("nccl" if device.type == "cuda" else "gloo")
        if device.type == "cuda":
            device = torch.device("cuda", int(os.environ.get("LOCAL_RANK", 0)))
            torch.cuda.set_device(device)
    return device


def _largest_across_processes(device: torch.device):
    """seconds -> the largest seconds of any process (so that every process stops at the same step)."""
    def agree(spent: float) -> float:
        t = torch.tensor([spent], dtype=torch.float64, device=device)
        dist.all_reduce(t, op=dist.ReduceOp.MAX)
        return float(t)
    return agree


def fit(objective: nn.Module, train_set, val_set, config, *, budget: dict, device: torch.device,
        checkpoint: Callable[[], dict], out=None, state: dict | None = None,
        initialise: Callable[[], None] | None = None, key: str = "loss", desc: str = "train",
        postfix: Callable[[dict], dict] | None = None, seed_salt: int = 0, workers: int = 0,
        progress: bool = True) -> dict:
    """Train ``objective``'s parameters on ``train_set`` within ``budget``; returns the run's history.

    objective: ``forward(batch) -> scalar loss``, already on ``device``. train_set / val_set: datasets whose
    item ``i`` is fixed (a tensor or a tuple of tensors; batches are stacked by ``default_collate``).
    config: the model's settings; fit reads ``seed, lr, grad_clip, batch_size, mixed_precision, val_batches,
    val_every, checkpoint_every``, ``steps`` and the decay (:func:`scheduled_lr`) and ``weight_decay`` where
    the config has them (:class:`flowsep.prior.PriorConfig` and
    :class:`flowsep.baselines.models.SupervisedConfig` do). budget: from :func:`resolve_budget`.
    checkpoint(): the model's part of a checkpoint (its config and weights), written with the training
    state to ``out`` (atomically; None: no file). state: the checkpoint being resumed (its weights already
    loaded by the caller); fit restores the optimiser, the scaler, the history and the step from it.
    initialise(): a data-dependent initialisation (fresh runs only, under no_grad), e.g. ActNorm's on the
    run's first global batch. The caller seeds torch with ``config.seed`` and builds the model before.
    key: the loss's name in the history (``train_<key>``, ``val_<key>``). seed_salt: added to the rank in
    :func:`step_seed` (keeps each model's published stream of dropout seeds).
    """
    rank, world = dist_info()
    c = config
    opt = torch.optim.Adam(objective.parameters(), lr=c.lr, weight_decay=getattr(c, "weight_decay", 0.0))
    amp = c.mixed_precision
    scaler = torch.amp.GradScaler("cuda", enabled=amp and device.type == "cuda")
    history = {"step": [], "elapsed": [], f"train_{key}": [], "val_step": [], f"val_{key}": [], "seconds": 0.0}
    start = 0
    if state is not None:
        opt.load_state_dict(state["train"]["optimizer"])
        scaler.load_state_dict(state["train"]["scaler"])
        history = state["train"]["history"]
        start = int(state["train"]["step"])
    elif initialise is not None:
        with torch.no_grad():
            initialise()
    model = objective
    if world > 1:
        model = nn.parallel.DistributedDataParallel(objective,
                                                    device_ids=[device.index] if device.type == "cuda" else None)

    def save(step):
        if rank == 0 and out is not None:
            save_torch({**checkpoint(), "train": {"step": step, "budget": budget, "optimizer": opt.state_dict(),
                                                  "scaler": scaler.state_dict(), "history": history}}, out)

    def loss_of(batch):
        with autocast_for(device, amp):
            return model(_to(batch, device))

    agree = _largest_across_processes(device) if world > 1 and "seconds" in budget else None
    bar = training_bar(budget, start, history["seconds"], desc) if progress and rank == 0 else None
    loader = step_loader(train_set, start, budget.get("steps", UNBOUNDED_STEPS), c.batch_size, rank, world, workers)
    run_steps(loader, loss_of, list(objective.parameters()), opt, scaler, c.grad_clip, start=start,
              total=budget.get("steps"), seconds=budget.get("seconds"), lr_at=lambda p: scheduled_lr(c, p),
              agree=agree, step_seed=lambda s: step_seed(c.seed, s, rank + seed_salt), history=history, key=key,
              validate=(lambda: validate(objective, val_set, c.val_batches, c.batch_size // world, device, amp))
              if rank == 0 else None, val_every=c.val_every, checkpoint_every=c.checkpoint_every, save=save,
              bar=bar, postfix=postfix)
    if world > 1:
        dist.barrier()
        dist.destroy_process_group()
    return history


# ---- resuming and caching ------------------------------------------------------------------------------
def resume_from(out, read: Callable[[Path], dict]) -> dict | None:
    """The checkpoint at ``out`` to continue (``--resume``), read by ``read``; None when there is none yet."""
    if out is None:
        raise FlowsepError("--resume needs --out CKPT, the checkpoint to continue")
    out = Path(out)
    if not out.is_file():
        return None
    state = read(out)
    if "train" not in state:
        raise FlowsepError(f"{out} holds a finished model without training state; train anew without --resume "
                           "or give another --out")
    return state


def ensure_trained(out, config_of: Callable[[dict], object], config, budget: dict,
                   train: Callable[[bool], object], load: Callable[[dict], object],
                   what: str = "checkpoint", other_config: str = "retrain"):
    """A model trained with ``config`` to ``budget`` at ``out``: reused, resumed or trained.

    config_of(ckpt): the config a checkpoint holds. A finished checkpoint of the same config (its budget
    spent) is returned by ``load(ckpt)``; an unfinished one continues with ``train(resume=True)``; a missing
    file, or one of another config, is trained anew with ``train(resume=False)`` (``other_config="error"``
    refuses to overwrite another config's checkpoint instead).
    """
    out = Path(out)
    resume = False
    if out.is_file():
        ckpt = load_torch(out, what)
        same = config_of(ckpt) == config
        if same and budget_spent(ckpt.get("train", {}), budget):
            return load(ckpt)
        if not same and other_config == "error":
            raise FlowsepError(f"{out} holds a {what} of another configuration; give another --out")
        resume = same and "train" in ckpt  # an unfinished run of the same model continues
    return train(resume)
