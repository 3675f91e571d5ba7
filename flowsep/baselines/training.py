"""Training the supervised comparison systems on mixtures and their stems.

Chapter: "Evaluation" (the comparison systems).

What is a supervised system's own lives here: its objective (:class:`SupervisedLoss`, the network's
loss on a batch of mixtures and stems), its data (:class:`flowsep.data.chunks.StemChunks`, item
``s * batch + k`` at step ``s``), Open-Unmix's input statistics, its checkpoint format and the
``flowsep train-supervised`` command. The loop is the priors' (:func:`flowsep.trainer.fit`): Adam,
gradient-norm clipping, mixed precision, a tqdm bar, periodic validation, atomic checkpoints (config,
weights, optimiser and the flowsep version) every ``checkpoint_every`` steps and at the end, dropout seeded
from (seed, step), so a resumed run ends with the same weights as an uninterrupted one.

Losses: Open-Unmix an MSE on magnitude spectrograms (per target, summed); Conv-TasNet, Demucs and
Wave-U-Net an L1 on waveforms. Every model gets the same budget at a profile (see
:func:`flowsep.baselines.models.training_budget`): the same number of steps, batch size and example
length, so they all see the same number of training examples.

Training data: the ``train`` split of a MUSDB18-format root (musdb's ``valid`` split held out for the
validation loss; the train tracks when it is empty). Examples are re-mixed from independent songs and
positions with a random gain per stem (Open-Unmix's and Demucs' augmentation). A mono network (smoke
and cpu profiles) learns from each channel of the stereo tracks as its own recording.
"""
from __future__ import annotations

import math
from dataclasses import asdict
from pathlib import Path

import numpy as np
import torch
from torch import nn

from .. import __version__
from ..constants import MODEL_NAMES
from ..data.chunks import StemChunks
from ..data.musdb import is_musdb_root, resolve_root, track_stems, training_db
from ..device import resolve_device
from ..errors import FlowsepError
from ..io import check_format, load_torch
from ..trainer import Objective, ensure_trained, fit, resolve_budget, resume_from
from .models import CHECKPOINT_FORMAT, SupervisedConfig, SupervisedSeparator, build_network

#: added to the process's rank in the seed of every training step (:func:`flowsep.trainer.step_seed`)
SEED_SALT = 7


def load_stem_tracks(root, targets, rate: int, channels: int, split: str = "train") -> list[np.ndarray]:
    """The songs of ``root``'s train subset as arrays (n_targets, channels, samples) at ``rate``.

    split: musdb's "train" or "valid" split (``valid`` falls back to the train tracks when empty).
    channels 1: every channel of every song becomes its own mono recording; 2: mono songs are duplicated.
    """
    root = Path(resolve_root(root)).resolve()  # musdb joins a relative setup file onto the root a second time
    db = training_db(root, split)
    known = set(db.tracks[0].sources)
    missing = [t for t in targets if t not in known]
    if missing:
        raise FlowsepError(f"{root} has no {missing[0]!r} stems (it has {', '.join(sorted(known))}); "
                           "train on a MUSDB18-format root with vocals, drums, bass and other")
    out = []
    for track in db.tracks:
        stems, _ = track_stems(track, rate)
        arr = np.stack([stems[t] for t in targets]).astype(np.float32)  # (n_targets, C, samples)
        if channels == 1:
            out.extend(arr[:, c:c + 1] for c in range(arr.shape[1]))
        elif arr.shape[1] == 1:
            out.append(np.repeat(arr, 2, axis=1))
        else:
            out.append(arr[:, :2])
    return out


class SupervisedLoss(Objective):
    """The training objective of a supervised network: ``forward([mixture, stems]) -> net.loss(mixture, stems)``.

    mixture: (B, C, samples), stems: (B, targets, C, samples), as :class:`flowsep.data.chunks.StemChunks`
    batches them. A module, so that DistributedDataParallel can wrap it.
    """

    seed_salt = SEED_SALT

    def __init__(self, net: nn.Module, config: SupervisedConfig):
        super().__init__()
        self.net, self.config = net, config

    def forward(self, batch) -> torch.Tensor:
        mixture, stems = batch
        return self.net.loss(mixture, stems)

    def checkpoint(self) -> dict:
        return checkpoint_dict(self.net, self.config)

    def initialise(self, train_set, device) -> None:
        """Open-Unmix normalises its input with the training mixtures' per-bin mean and deviation."""
        if hasattr(self.net, "set_input_statistics"):
            n = self.config.stat_batches * self.config.batch_size
            self.net.set_input_statistics(torch.stack([train_set[k][0] for k in range(n)]).to(device))


def checkpoint_dict(net: nn.Module, config: SupervisedConfig) -> dict:
    """The model's part of a supervised checkpoint: format, flowsep version, config and weights."""
    return {"format": "flowsep-supervised", "format_version": CHECKPOINT_FORMAT, "flowsep_version": __version__,
            "model": {"config": asdict(config),
                      "state_dict": {k: v.detach().cpu() for k, v in net.state_dict().items()}}}


def _check_format(ckpt: dict, path) -> dict:
    return check_format(ckpt, "flowsep-supervised", CHECKPOINT_FORMAT, path, "checkpoint of a supervised baseline",
                        "`flowsep train-supervised`", "model")


def _read_checkpoint(path) -> dict:
    return _check_format(load_torch(path, "supervised checkpoint"), path)


def _separator(ckpt: dict, path, device) -> SupervisedSeparator:
    config = SupervisedConfig.from_dict(ckpt["model"]["config"], source=str(path))
    net = build_network(config)
    try:
        net.load_state_dict(ckpt["model"]["state_dict"])
    except RuntimeError:
        raise FlowsepError(f"{path} does not match the {config.model} architecture it names; retrain it") from None
    history = ckpt.get("train", {}).get("history")
    return SupervisedSeparator(net, config, device=device, history=history)


def load_supervised(path, device="cpu") -> SupervisedSeparator:
    """Read a checkpoint written by :func:`train_supervised` back as a ready-to-use separator."""
    return _separator(_read_checkpoint(path), path, device)


def train_supervised(name: str, data, profile: str = "cpu", out=None, steps: int | None = None, device="auto",
                     resume: bool = False, progress: bool = True, workers: int = 0,
                     config: SupervisedConfig | None = None, seconds: float | None = None,
                     **overrides) -> SupervisedSeparator:
    """Train (or resume training) one supervised baseline; returns it wrapped as a separator (eval mode).

    name: openunmix, convtasnet, demucs or waveunet. data: a MUSDB18-format root. profile: smoke, cpu, gpu
    or paper (``config`` replaces the preset; ``overrides`` change single settings of it). out: checkpoint
    path, written atomically every ``config.checkpoint_every`` steps and at the end; ``resume=True``
    continues from it (the checkpoint's config is used) within its budget. The budget, as for the priors
    (:func:`flowsep.trainer.resolve_budget`): ``steps`` (total steps) or ``seconds`` (total training seconds,
    validation and checkpoint writing not counted); by default the resumed checkpoint's, else
    ``config.train_seconds`` when set, else ``config.steps``. The learning rate is constant (as in the
    published recipes of these systems over such short runs).
    """
    if name not in MODEL_NAMES:
        raise FlowsepError(f"unknown model {name!r}; choose one of: {', '.join(MODEL_NAMES)}")
    dev = resolve_device(device)
    c = config or SupervisedConfig.preset(name, profile, **overrides)
    if c.model != name:
        raise FlowsepError(f"the config is for {c.model}, not {name}")
    out = Path(out) if out else None
    state = resume_from(out, _read_checkpoint) if resume else None
    if state is not None:
        c = SupervisedConfig.from_dict(state["model"]["config"], source=str(out))
        if c.model != name:
            raise FlowsepError(f"{out} holds a {c.model} model, not {name}; give another --out")
    budget = resolve_budget(steps, seconds, c.steps, c.train_seconds,
                            state["train"].get("budget") if state is not None else None)

    seg = c.segment_samples
    train_set = StemChunks(load_stem_tracks(data, c.targets, c.sample_rate, c.channels, "train"), seg,
                           seed=c.seed, gain=tuple(c.gain), remix=c.remix)
    val_set = StemChunks(load_stem_tracks(data, c.targets, c.sample_rate, c.channels, "valid"), seg,
                         seed=c.seed + 1, gain=(1.0, 1.0), remix=False)

    torch.manual_seed(c.seed)
    net = build_network(c).to(dev).train()
    if state is not None:
        net.load_state_dict(state["model"]["state_dict"])

    history = fit(SupervisedLoss(net, c), train_set, val_set, c, budget=budget, device=dev, out=out, state=state,
                  desc=f"train {c.display_name}", workers=workers, progress=progress)
    return SupervisedSeparator(net, c, device=dev, history=history)


def ensure_supervised(name: str, data, profile: str, out, steps: int | None = None, device="auto",
                      progress: bool = True, seconds: float | None = None) -> SupervisedSeparator:
    """A trained baseline at ``out``: reused when finished with the same config, resumed when unfinished.

    The budget: ``steps`` or ``seconds`` when given, else the profile's (see :func:`train_supervised`).
    """
    cfg = SupervisedConfig.preset(name, profile)
    budget = resolve_budget(steps, seconds, cfg.steps, cfg.train_seconds)
    return ensure_trained(out, lambda ckpt: SupervisedConfig.from_dict(_check_format(ckpt, out)["model"]["config"],
                                                                       str(out)),
                          cfg, budget, what="supervised checkpoint",
                          train=lambda resume: train_supervised(name, data, profile, out=out, device=device,
                                                                resume=resume, progress=progress, **budget),
                          load=lambda ckpt: _separator(ckpt, out, device))


# ---- command line -----------------------------------------------------------------------------------
def register_cli(sub) -> None:
    p = sub.add_parser("train-supervised", help="train a supervised comparison system (Open-Unmix, Conv-TasNet, "
                                                "Demucs, Wave-U-Net) on mixtures and stems",
                       description="Train one of the paper's fully supervised comparison systems on the train "
                                   "split of a MUSDB18-format root, with the same budget as the InstGlow priors "
                                   "of the profile.")
    p.add_argument("model", metavar="MODEL", help="openunmix, convtasnet, demucs or waveunet")
    p.add_argument("--data", required=True, metavar="ROOT",
                   help="MUSDB18-format root (wav or stems), or musdb-preview (MUSDB18's 7-second previews, "
                        "downloaded once)")
    p.add_argument("--profile", default="cpu", help="smoke, cpu, gpu or paper (default: cpu)")
    p.add_argument("--out", required=True, metavar="CKPT", help="checkpoint file to write (atomically)")
    p.add_argument("--steps", type=int, default=None,
                   help="budget in total training steps (default: the profile's budget)")
    p.add_argument("--seconds", type=float, default=None,
                   help="budget in seconds of training, validation and checkpoint writing not counted "
                        "(default: the profile's budget: seconds at gpu, steps elsewhere)")
    p.add_argument("--device", default="auto", help="auto, cpu or cuda (default: auto)")
    p.add_argument("--resume", action="store_true",
                   help="continue from the checkpoint at --out if it exists, within its budget")
    p.add_argument("--workers", type=int, default=0, help="DataLoader worker processes (default: 0)")
    p.add_argument("--quiet", action="store_true", help="no progress bar")
    p.set_defaults(func=_cli)


def _cli(args) -> int:
    if args.model not in MODEL_NAMES:
        raise FlowsepError(f"unknown model {args.model!r}; choose one of: {', '.join(MODEL_NAMES)}")
    args.data = resolve_root(args.data)  # "musdb-preview": MUSDB18's previews, fetched once
    if not Path(args.data).is_dir() or not is_musdb_root(args.data):
        raise FlowsepError(f"--data {args.data} is not a MUSDB18-format root (with train/ and test/ folders); "
                           "run `flowsep synth` or give a MUSDB18 folder")
    if args.workers < 0:
        raise FlowsepError(f"--workers must be 0 or more, got {args.workers}")
    sep = train_supervised(args.model, args.data, args.profile, out=args.out, steps=args.steps,
                           device=args.device, resume=args.resume, progress=not args.quiet, workers=args.workers,
                           seconds=args.seconds)
    h = sep.history
    last = h["val_loss"][-1] if h.get("val_loss") else math.nan
    print(f"wrote {args.out}: {sep.name}, {h['step'][-1] if h['step'] else 0} steps in {h['seconds']:.0f} s, "
          f"validation loss {last:.4g}")
    return 0
