"""The one training loop of flowsep: the source priors and every supervised comparison system go through it.

Chapter: "Training the source priors" (the loop), "Evaluation" (the comparison systems).

A model supplies only what is its own, as an :class:`Objective` (an ``nn.Module`` whose ``forward(batch)``
is the scalar loss of a batch, and whose parameters are trained, with the model's part of a checkpoint and
a data-dependent initialisation where it has one), its training and validation examples, and its settings
(a :class:`TrainingSettings`: :class:`flowsep.prior.PriorConfig` and
:class:`flowsep.baselines.models.SupervisedConfig` both are one). :func:`fit`, one loop a reader can follow
top to bottom, does the rest, the same way for every model (nanoGPT-style, no framework):

* Adam (with the settings' weight decay) and a step decay of the learning rate at fixed fractions of the
  run's budget (:func:`scheduled_lr`; constant without a decay);
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
from dataclasses import dataclass
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
from .worklog import making, reusing

#: steps a time-budgeted run may take at most: a bound for the step sampler, never reached in practice
UNBOUNDED_STEPS = 10 ** 12


@dataclass
class TrainingSettings:
    """The settings the loop reads, shared by :class:`flowsep.prior.PriorConfig` and
    :class:`flowsep.baselines.models.SupervisedConfig` (each gives its own defaults).

    steps: the step budget (and the length the decay is written for); train_seconds: > 0, a wall-clock
    budget used instead; Adam at ``lr`` with ``weight_decay``, decayed by ``lr_decay`` every
    ``lr_decay_every`` of ``steps`` steps (0: constant; :func:`scheduled_lr`); gradient norms clipped at
    ``grad_clip``; mixed_precision: fp16 autocast with gradient scaling on CUDA, bf16 on CPUs with bf16 units;
    validation on ``val_batches`` fixed batches every ``val_every`` steps; a checkpoint every
    ``checkpoint_every`` steps; ``seed``: the data, the initialisation and each step's dropout.
    """

    steps: int = 1000
    train_seconds: float = 0.0
    batch_size: int = 16
    lr: float = 1e-3
    lr_decay: float = 1.0
    lr_decay_every: int = 0
    weight_decay: float = 0.0
    grad_clip: float = 5.0
    mixed_precision: bool = True
    val_every: int = 250
    val_batches: int = 2
    checkpoint_every: int = 250
    seed: int = 0


# ---- budgets and the learning-rate schedule ------------------------------------------------------------
def decay_count(progress: float, config: TrainingSettings) -> int:
    """How many times the learning rate has decayed after ``progress`` (0..1) of a run's budget.

    The schedule of a profile is written in steps (decay by ``lr_decay`` every ``lr_decay_every`` of
    ``config.steps`` steps) and applied as fractions of whatever budget a run has: decay number k comes after
    k * lr_decay_every / steps of the budget, whether the budget is counted in steps (``--steps N``: after
    N * lr_decay_every / steps steps) or in seconds (``--seconds S``: after that fraction of S). A run of the
    profile's own ``steps`` decays every ``lr_decay_every`` steps exactly. ``progress`` may be a
    :class:`fractions.Fraction` (exact, for step budgets) or a float (time budgets). ``lr_decay_every`` 0
    (the supervised systems) never decays.
    """
    if config.lr_decay_every <= 0 or config.steps <= 0:
        return 0
    return math.floor(Fraction(progress) * config.steps / config.lr_decay_every)


def scheduled_lr(config: TrainingSettings, progress: float) -> float:
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


# ---- what a model brings, and the run's state -----------------------------------------------------------
class Objective(nn.Module):
    """What a model brings to the loop; the rest is the same for every model.

    ``forward(batch)`` is the scalar loss of a batch (the module's parameters are what is trained);
    :meth:`checkpoint` is the model's part of a checkpoint (its config and weights); :meth:`initialise` is a
    data-dependent initialisation, run once at the start of a fresh run (under no_grad); :meth:`postfix` is
    what the progress bar shows. ``key`` names the loss in the history (``train_<key>``, ``val_<key>``);
    ``seed_salt`` is added to the rank in :func:`step_seed` (it keeps each model's stream of dropout seeds).
    """

    key = "loss"
    seed_salt = 0

    def checkpoint(self) -> dict:
        raise NotImplementedError

    def initialise(self, train_set, device) -> None:
        """No data-dependent initialisation by default."""

    def postfix(self, history: dict) -> dict:
        post = {self.key: f"{history[f'train_{self.key}'][-1]:.4g}"}
        if history[f"val_{self.key}"]:
            post["val"] = f"{history[f'val_{self.key}'][-1]:.4g}"
        return post


class Run:
    """The state of one training run: Adam, the gradient scaler, the step, the training seconds spent and
    the history (per step: ``step``, ``elapsed`` seconds, ``train_<key>``; per validation: ``val_step``,
    ``val_<key>``; ``seconds`` in all). ``state`` (a checkpoint's) resumes one."""

    def __init__(self, objective: Objective, config: TrainingSettings, budget: dict, device, state=None):
        self.budget, key = budget, objective.key
        self.opt = torch.optim.Adam(objective.parameters(), lr=config.lr, weight_decay=config.weight_decay)
        self.scaler = torch.amp.GradScaler("cuda", enabled=config.mixed_precision and device.type == "cuda")
        self.history = {"step": [], "elapsed": [], f"train_{key}": [], "val_step": [], f"val_{key}": [],
                        "seconds": 0.0}
        self.step = 0
        if state is not None:
            self.opt.load_state_dict(state["train"]["optimizer"])
            self.scaler.load_state_dict(state["train"]["scaler"])
            self.history, self.step = state["train"]["history"], int(state["train"]["step"])
        # checkpoints written before ``elapsed`` existed
        self.history.setdefault("elapsed", [math.nan] * len(self.history["step"]))
        self.spent = float(self.history["seconds"])

    def progress(self):
        """The fraction of the budget used: a Fraction of steps, or a float of seconds."""
        if "seconds" in self.budget:
            return min(self.spent / self.budget["seconds"], 1.0)
        return Fraction(self.step, self.budget["steps"])

    def done(self) -> bool:
        if "seconds" in self.budget:
            return self.spent >= self.budget["seconds"]
        return self.step >= self.budget["steps"]

    def set_lr(self, lr: float) -> None:
        for group in self.opt.param_groups:
            group["lr"] = lr

    def record(self, loss: float, seconds: float, key: str) -> None:
        """One step done: it took ``seconds`` of training time (all processes agreed) and had ``loss``."""
        self.step += 1
        self.spent = seconds
        self.history["step"].append(self.step)
        self.history["elapsed"].append(seconds)
        self.history[f"train_{key}"].append(loss)

    def record_validation(self, loss: float, key: str) -> None:
        self.history["val_step"].append(self.step)
        self.history[f"val_{key}"].append(loss)

    def state(self) -> dict:
        """The training state of a checkpoint (its ``"train"`` entry)."""
        self.history["seconds"] = self.spent
        return {"step": self.step, "budget": self.budget, "optimizer": self.opt.state_dict(),
                "scaler": self.scaler.state_dict(), "history": self.history}


# ---- the loop ------------------------------------------------------------------------------------------
def fit(objective: Objective, train_set, val_set, config: TrainingSettings, *, budget: dict, device: torch.device,
        out=None, state: dict | None = None, desc: str = "train", workers: int = 0, progress: bool = True,
        clock=time.perf_counter) -> dict:
    """Train ``objective``'s parameters on ``train_set`` within ``budget``; returns the run's history.

    objective: an :class:`Objective`, already on ``device`` (the caller seeds torch with ``config.seed``
    and builds the model before). train_set / val_set: datasets whose item ``i`` is fixed (a tensor or a
    tuple of tensors, stacked by ``default_collate``). budget: from :func:`resolve_budget`. out: the
    checkpoint (None: no file). state: the checkpoint being resumed (its weights already loaded by the
    caller). clock: reads the time (tests pass a fake one).
    """
    rank, world = dist_info()
    c, key = config, objective.key
    run = Run(objective, c, budget, device, state)
    if state is None:
        with torch.no_grad():
            objective.initialise(train_set, device)
    model, agree = _parallel(objective, device, world, budget)
    bar = training_bar(budget, run.step, run.spent, desc) if progress and rank == 0 else None
    loader = step_loader(train_set, run.step, budget.get("steps", UNBOUNDED_STEPS), c.batch_size, rank, world, workers)

    def save():  # the history's seconds are brought up to date even without a file
        train = run.state()
        if rank == 0 and out is not None:
            save_torch({**objective.checkpoint(), "train": train}, out)

    t0 = clock()
    for batch in (() if run.done() else loader):
        run.set_lr(scheduled_lr(c, run.progress()))
        torch.manual_seed(step_seed(c.seed, run.step, rank + objective.seed_salt))
        with autocast_for(device, c.mixed_precision):
            loss = model(_to(batch, device))
        if not torch.isfinite(loss):
            save()
            raise FlowsepError(f"training diverged at step {run.step} (loss {float(loss.detach())}); lower the "
                               "learning rate or resume from the last checkpoint")
        run.opt.zero_grad(set_to_none=True)
        run.scaler.scale(loss).backward()
        run.scaler.unscale_(run.opt)
        nn.utils.clip_grad_norm_(list(objective.parameters()), c.grad_clip)
        run.scaler.step(run.opt)
        run.scaler.update()
        before = run.spent
        run.record(float(loss.detach()), agree(run.spent + clock() - t0), key)
        if rank == 0 and (run.step % c.val_every == 0 or run.done()):
            run.record_validation(validate(objective, val_set, c.val_batches, c.batch_size // world, device,
                                           c.mixed_precision), key)
        _advance(bar, run, before, objective)
        if run.done():
            break
        if run.step % c.checkpoint_every == 0:
            save()
        t0 = clock()
    if bar is not None:
        bar.close()
    save()
    end_distributed(world)
    return run.history


def _advance(bar, run: Run, before: float, objective: Objective) -> None:
    """Move the progress bar on by one step (steps) or by the whole seconds it took (a time budget)."""
    if bar is None:
        return
    bar.set_postfix(objective.postfix(run.history), refresh=False)
    if "seconds" not in run.budget:
        bar.update(1)
    else:  # whole seconds; a finished run fills the bar (its last step may end a fraction short)
        bar.update(bar.total - bar.n if run.done() else int(run.spent) - int(before))


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


def end_distributed(world: int) -> None:
    """Leave the process group of a ``torchrun`` run, once every process is there."""
    if world > 1:
        dist.barrier()
        dist.destroy_process_group()


def _parallel(objective: Objective, device: torch.device, world: int, budget: dict):
    """(the model to call: ``objective``, or its DistributedDataParallel wrapper in a run of ``world`` > 1
    processes; agree(seconds) -> the largest seconds of any process, so that under a time budget every
    process stops at the same step and uses the same learning rate)."""
    if world == 1:
        return objective, lambda spent: spent
    model = nn.parallel.DistributedDataParallel(objective, device_ids=[device.index] if device.type == "cuda" else None)
    if "seconds" not in budget:
        return model, lambda spent: spent

    def agree(spent: float) -> float:
        t = torch.tensor([spent], dtype=torch.float64, device=device)
        dist.all_reduce(t, op=dist.ReduceOp.MAX)
        return float(t)
    return model, agree


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
            reusing(out)
            return load(ckpt)
        if not same and other_config == "error":
            raise FlowsepError(f"{out} holds a {what} of another configuration; give another --out")
        resume = same and "train" in ckpt  # an unfinished run of the same model continues
    with making(out):
        return train(resume)
