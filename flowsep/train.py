"""Training a source prior: maximum likelihood on clean stems of one instrument.

Chapter: "Training the source priors".

What is the prior's own lives here: its loss (:class:`NLL`, the negative log-likelihood of a batch of
waveforms in nats per magnitude value, with the transform's Jacobian), its data (chunks of one instrument's
recordings, :class:`flowsep.data.chunks.SourceChunks`, silent stretches skipped), ActNorm's data-dependent
initialisation, and the ``flowsep train`` command. The loop itself (Adam, the learning-rate schedule over
the budget, mixed precision, clipping, validation, atomic checkpoints, exact resume, DDP) is
:func:`flowsep.trainer.fit`, the same for every model flowsep trains.
"""
from __future__ import annotations

import dataclasses
import math
from pathlib import Path

import torch

from .data.chunks import SourceChunks
from .data.musdb import is_musdb_root, load_source_signals, resolve_root
from .device import dist_info, resolve_device
from .errors import FlowsepError
from .io import load_torch
from .prior import FlowPrior, PriorConfig
from .spectral import stft
from .trainer import Objective, fit, resolve_budget, resume_from, start_distributed


class NLL(Objective):
    """Negative log-likelihood per magnitude value (nats) of a batch of waveforms: (B, samples) -> scalar.

    The same number as ``-prior.log_prob(mag).mean() / (bins * frames)``
    (:meth:`flowsep.prior.FlowPrior.log_prob`), computed from the waveforms. For a noise-conditioned prior,
    each item gets a noise level sigma drawn from the prior's levels, its flow input (the magnitude bins,
    not the padding) gets Gaussian noise of that sigma, and the loss is -log p_sigma of the noisy input,
    in flow space (no transform Jacobian: the noisy input is not a transform of magnitudes). In eval mode
    the levels and the noise are drawn from a fixed seed, so the same batch always gets the same loss.
    """

    key = "nll"

    def __init__(self, prior: FlowPrior):
        super().__init__()
        self.prior = prior

    def checkpoint(self) -> dict:
        return {"prior": self.prior.checkpoint()}

    def initialise(self, train_set, device) -> None:
        """ActNorm's data-dependent initialisation, on the run's first global batch."""
        self(torch.stack([train_set[k] for k in range(self.prior.config.batch_size)]).to(device))

    def postfix(self, history: dict) -> dict:
        bits = 1.0 / math.log(2)
        post = {"nll": f"{history['train_nll'][-1]:.3f}", "bits/dim": f"{history['train_nll'][-1] * bits:.3f}"}
        if history["val_nll"]:
            post["val bits/dim"] = f"{history['val_nll'][-1] * bits:.3f}"
        return post

    def forward(self, wave: torch.Tensor) -> torch.Tensor:
        c = self.prior.config
        mag = stft(wave, c.n_fft, c.hop).abs()
        dims = mag.shape[1] * mag.shape[2]
        if not self.prior.noise_conditioned:
            return -self.prior.log_prob(mag).mean() / dims
        x = self.prior.encode(mag)[0]
        sigmas = self.prior.noise_sigmas.to(x.device)
        # in eval mode (validation) the same levels and noise every time, so that validation losses compare
        gen = None if self.training else torch.Generator(x.device).manual_seed(0)
        sigma = sigmas[torch.randint(len(sigmas), (x.shape[0],), device=x.device, generator=gen)]
        noise = torch.randn(mag.shape, device=mag.device, dtype=mag.dtype, generator=gen) * sigma[:, None, None]
        x = x + torch.nn.functional.pad(noise, (0, 0, 0, x.shape[1] - mag.shape[1]))
        return -self.prior.flow_log_prob(x, sigma).mean() / dims


def train_prior(config: PriorConfig, data, source: str | None = None, out=None, steps: int | None = None,
                device="auto", resume: bool = False, progress: bool = True, workers: int = 0,
                seconds: float | None = None) -> FlowPrior:
    """Train (or resume training) a prior on one instrument; returns the trained prior in eval mode.

    data: a MUSDB18-format root (then ``source`` names the stem) or a folder of audio files of one
    instrument (any rate, mono or stereo). out: checkpoint path, written atomically every
    ``config.checkpoint_every`` steps and at the end; ``resume=True`` continues from it.
    The budget (see :func:`flowsep.trainer.resolve_budget`): ``steps`` (total steps of the run) or
    ``seconds`` (total training seconds, validation and checkpoint writing not counted); by default the
    budget of the checkpoint being resumed, else ``config.train_seconds`` when set, else ``config.steps``.
    The learning rate decays at fixed fractions of the budget (:func:`flowsep.trainer.scheduled_lr`). A step
    budget is reproducible to the bit (step ``s`` sees the same batch and dropout whatever happens around
    it); a time budget is not: how many steps fit, and when the rate decays, depend on the machine.
    """
    rank, world = dist_info()
    dev = start_distributed(resolve_device(device), world)
    out = Path(out) if out else None
    state = resume_from(out, lambda path: load_torch(path, "training checkpoint")) if resume else None
    if state is not None:
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
    if state is not None:
        prior.load_state_dict(state["prior"]["state_dict"])

    prior.history = fit(nll, train_set, val_set, c, budget=budget, device=dev, out=out, state=state,
                        desc=f"train {source or Path(str(data)).name}", workers=workers, progress=progress)
    return prior.eval()


def parse_overrides(items: list[str]) -> dict:
    """["lr=3e-4", "mixed_precision=false"] -> {"lr": 0.0003, "mixed_precision": False}, typed by PriorConfig."""
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
                        "30 s per prior at cpu, 180 s at gpu, steps at smoke and paper)")
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
    overrides = {} if args.seed is None else {"seed": args.seed}
    overrides.update(parse_overrides(args.set))
    cfg = PriorConfig.preset(args.profile, **overrides)
    data = resolve_root(args.data)  # "musdb-preview": MUSDB18's previews, fetched once
    if is_musdb_root(data) and not args.source:
        raise FlowsepError("--source is required with a MUSDB18-format root (e.g. --source vocals)")
    prior = train_prior(cfg, data, args.source, out=args.out, steps=args.steps, device=args.device,
                        resume=args.resume, workers=args.workers, seconds=args.seconds, progress=not args.quiet)
    if dist_info()[0] == 0:
        h = prior.history
        last = h["val_nll"][-1] / math.log(2) if h["val_nll"] else float("nan")
        print(f"wrote {args.out}: {h['step'][-1] if h['step'] else 0} steps in {h['seconds']:.0f} s of training, "
              f"validation {last:.3f} bits/dim")
    return 0
