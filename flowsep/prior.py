"""FlowPrior: a normalizing-flow density over one instrument's magnitude spectrograms.

Chapter: "Glow over spectrograms" and "Training the source priors".

A magnitude spectrogram ``mag`` of shape (batch, n_fft//2+1, frames) is mapped to flow space by
a fixed transform (``linear``: scale; ``log``: log(mag + eps)), padded with zero-valued bins to
``prior.channels`` so that channel groups divide evenly, then through :class:`flowsep.flows.Glow`
to a latent z with a standard-normal density. ``log_prob`` adds the log-Jacobian of the transform,
so it is a density over the magnitudes themselves (the zero padding bins are held fixed at 0 and
their density there is included, as in the published model).

A noise-conditioned prior (``noise_levels > 0``, for the annealed search of BASIS, Jayaram & Thickstun
2020) is a density p_sigma over noisy flow inputs x + sigma * eps, one for every noise level sigma of a
geometric schedule (:attr:`FlowPrior.noise_sigmas`); its coupling networks see log sigma. It is trained on
clean stems with the noise added (:class:`flowsep.train.NLL`). Where no sigma is given (``log_prob``,
``inverse``, ``sample``, so in every search that does not anneal), it is the density at the smallest level.
"""
from __future__ import annotations

import dataclasses
import math
from dataclasses import asdict, dataclass

import torch
from torch import nn

from . import __version__
from .errors import FlowsepError
from .flows import Glow, standard_normal_logpdf
from .io import check_format, load_torch, save_torch
from .trainer import TrainingSettings

CHECKPOINT_FORMAT = 1


@dataclass
class PriorConfig(TrainingSettings):
    """Everything that defines a prior and how it is trained; saved inside every checkpoint.

    The training settings (:class:`flowsep.trainer.TrainingSettings`) are given again below with a prior's
    defaults; ``weight_decay`` keeps the shared default (none).
    """

    profile: str = "custom"
    # signal
    sample_rate: int = 22050
    n_fft: int = 1024
    hop: int = 256
    transform: str = "linear"      # "linear" (the paper) or "log"
    scale: float = 1.0             # multiplies magnitudes (linear) or log-magnitudes (log)
    log_eps: float = 1e-3          # floor of log(mag + eps) for the log transform
    # flow (Glow-TTS decoder)
    n_blocks: int = 12
    hidden: int = 128
    kernel: int = 5
    dilation_rate: int = 1
    n_layers: int = 4
    dropout: float = 0.05
    n_split: int = 4
    n_sqz: int = 2
    # noise conditioning (0: a plain prior): the flow learns p_sigma for `noise_levels` levels sigma, geometric
    # from noise_max down to noise_min, in flow-space units (log-magnitudes times `scale` for "log")
    noise_levels: int = 0
    noise_max: float = 2.0
    noise_min: float = 0.05
    # training
    batch_size: int = 32
    segment_frames: int = 640      # frames per training example (multiple of n_sqz)
    steps: int = 240_000           # the step budget, and the length the lr schedule below is written for
    train_seconds: float = 0.0     # > 0: a wall-clock budget (seconds of training) used instead of `steps`
    lr: float = 1e-4
    lr_decay: float = 0.3
    lr_decay_every: int = 80_000   # every this many of `steps` steps; any budget: same fractions (train.scheduled_lr)
    grad_clip: float = 4.0
    dequantize: float = 1.0 / 32768  # uniform noise added to magnitudes: one 16-bit step
    silence_db: float = -50.0      # training chunks quieter than this (dB re full scale) are skipped
    mixed_precision: bool = True   # fp16 autocast + grad scaling on CUDA, bf16 autocast on capable CPUs
    val_fraction: float = 0.02
    val_every: int = 2000
    val_batches: int = 4
    checkpoint_every: int = 2000
    seed: int = 0

    @classmethod
    def preset(cls, name: str, **overrides) -> "PriorConfig":
        """``smoke`` (seconds on CPU), ``cpu`` (minutes on a laptop), ``gpu`` (the published flow trained to a
        wall-clock budget that fits a Colab session), ``paper`` (the published model and training).

        ``paper`` is the published configuration: linear magnitudes at 22.05 kHz, n_fft 1024, 12 blocks of
        128 hidden channels. The small profiles model log-magnitudes instead: with a few minutes of
        training, a log-magnitude prior generalises to held-out clips where a linear one does not
        (the silent bins, scaled up by ActNorm, dominate a linear prior's likelihood).
        """
        presets = {
            "smoke": dict(transform="log", sample_rate=8000, n_fft=128, hop=64, n_blocks=2, hidden=16, kernel=3,
                          n_layers=2, batch_size=8, segment_frames=32, steps=60, lr=1e-3,
                          lr_decay_every=10_000, val_every=20, val_batches=1, checkpoint_every=20),
            # cpu: 30 s of training per prior (a wall-clock budget, so training takes the same time on any
            # machine; a faster machine takes more steps in it: a 2-core Xeon with bf16 units took about 300
            # steps in 30 s, a slow 2-core AVX2 machine 141 to 220 in 45 s). The four priors are then InstGlow's
            # entry in chapter 6's race at 120 s per system.
            # `steps` (what --steps defaults to) and the decay at 70% serve a step budget.
            "cpu": dict(transform="log", sample_rate=16000, n_fft=512, hop=128, n_blocks=6, hidden=64, kernel=5,
                        n_layers=3, batch_size=16, segment_frames=128, steps=1000, train_seconds=30.0, lr=1e-3,
                        lr_decay_every=700, val_every=50, val_batches=2, checkpoint_every=250),
            # gpu: the published flow (22.05 kHz, n_fft 1024, 12 blocks of 128 channels, batch 32, fp16 on CUDA)
            # over log magnitudes, trained 3 minutes per prior, so that chapters 4-7 fit about an hour on a
            # Colab T4. Sizes and budget estimated from a FLOP count (benchmarks/gpu_estimate.py), not yet
            # measured on a GPU; `steps` is the estimated number of steps in the budget (what --steps
            # defaults to when a step budget is asked for) and places the decay at 70% of the budget.
            # Log, not linear, magnitudes for the same reason as the small profiles: short training.
            "gpu": dict(transform="log", train_seconds=180.0, steps=4000, lr=5e-4, lr_decay_every=2800,
                        val_every=500, val_batches=4, checkpoint_every=1000),
            "paper": dict(),
        }
        if name not in presets:
            raise FlowsepError(f"unknown profile {name!r}; choose one of: {', '.join(presets)}")
        return cls(profile=name, **{**presets[name], **overrides})

    @classmethod
    def from_dict(cls, d: dict, source: str = "config") -> "PriorConfig":
        known = {f.name for f in dataclasses.fields(cls)}
        unknown = sorted(set(d) - known)
        if unknown:
            raise FlowsepError(f"{source} has settings this flowsep does not know ({', '.join(unknown)}); "
                               "upgrade flowsep")
        return cls(**d)

    @property
    def bins(self) -> int:
        return self.n_fft // 2 + 1

    @property
    def channels(self) -> int:
        """Flow input channels: ``bins`` padded so that the squeezed channels split into groups."""
        c = self.bins
        while (c * self.n_sqz) % self.n_split or (c * self.n_sqz) % 2:
            c += 1
        return c


class FlowPrior(nn.Module):
    """Glow prior over magnitude spectrograms (see the module docstring).

    ``z, logdet = prior(x)`` works in flow space: x is (batch, prior.channels, frames) with frames a
    multiple of ``prior.frame_multiple``; z is (batch, channels*n_sqz, frames//n_sqz).
    """

    def __init__(self, config: PriorConfig | None = None):
        super().__init__()
        self.config = config or PriorConfig()
        c = self.config
        if c.transform not in ("linear", "log"):
            raise FlowsepError(f"unknown transform {c.transform!r}; use 'linear' or 'log'")
        if c.n_sqz < 1 or c.n_fft < 4 or c.hop < 1:
            raise FlowsepError("n_sqz, n_fft and hop must be positive (n_fft >= 4)")
        if c.noise_levels < 0 or (c.noise_levels and not 0 < c.noise_min <= c.noise_max):
            raise FlowsepError(f"noise conditioning needs noise_levels >= 0 and 0 < noise_min <= noise_max, got "
                               f"{c.noise_levels}, {c.noise_min} and {c.noise_max}")
        self.flow = Glow(c.channels, c.n_blocks, c.hidden, c.kernel, c.dilation_rate, c.n_layers,
                         c.dropout, c.n_split, c.n_sqz, cond_channels=1 if c.noise_levels else 0)

    # ---- shapes -------------------------------------------------------------------------------
    @property
    def channels(self) -> int:
        return self.config.channels

    @property
    def bins(self) -> int:
        return self.config.bins

    @property
    def frame_multiple(self) -> int:
        return self.config.n_sqz

    @property
    def sample_rate(self) -> int:
        return self.config.sample_rate

    @property
    def noise_conditioned(self) -> bool:
        return self.config.noise_levels > 0

    @property
    def noise_sigmas(self) -> torch.Tensor:
        """The noise levels of a noise-conditioned prior, largest first: (noise_levels,); empty for a plain one."""
        c = self.config
        if not c.noise_levels:
            return torch.zeros(0)
        return torch.logspace(math.log10(c.noise_max), math.log10(c.noise_min), c.noise_levels, dtype=torch.float64
                              ).float()

    def _condition(self, sigma, batch: int, device) -> torch.Tensor | None:
        """The coupling networks' condition, log sigma as (batch, 1, 1); None for a plain prior.

        sigma: a float or a (batch,) tensor; None means the smallest level (the near-clean density).
        """
        if not self.noise_conditioned:
            if sigma is not None:
                raise FlowsepError("this prior is not noise-conditioned, so it takes no noise level; train one "
                                   "with --set noise_levels=N or leave sigma out")
            return None
        if sigma is None:
            sigma = self.config.noise_min
        sigma = torch.as_tensor(sigma, dtype=torch.float32, device=device).expand(batch)
        return torch.log(sigma)[:, None, None]

    def latent_shape(self, frames: int) -> tuple[int, int]:
        return self.channels * self.config.n_sqz, frames // self.config.n_sqz

    def _check(self, t: torch.Tensor, rows: int, what: str) -> None:
        if not isinstance(t, torch.Tensor) or t.dim() != 3:
            shape = tuple(t.shape) if hasattr(t, "shape") else type(t).__name__
            raise FlowsepError(f"{what} must have shape (batch, {rows}, frames), got {shape}")
        if t.shape[1] != rows:
            raise FlowsepError(f"{what} has {t.shape[1]} channels but this prior expects {rows} "
                               f"(n_fft={self.config.n_fft}); compute it with the prior's STFT settings")
        if t.shape[2] == 0 or t.shape[2] % self.frame_multiple:
            raise FlowsepError(f"{what} has {t.shape[2]} frames; use a positive multiple of "
                               f"{self.frame_multiple} (crop or pad the spectrogram)")
        if not torch.isfinite(t).all():
            raise FlowsepError(f"{what} contains NaN or Inf values; check the input audio")

    # ---- magnitude <-> flow space ---------------------------------------------------------------
    def encode(self, mag: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """Magnitudes (B, bins, T) -> flow input (B, channels, T) and the transform's log|det| (B,)."""
        c = self.config
        n = mag.shape[1] * mag.shape[2]
        if c.transform == "linear":
            x = mag * c.scale
            logdet = torch.full((mag.shape[0],), n * math.log(c.scale), device=mag.device, dtype=x.dtype)
        else:
            y = torch.log(mag.clamp_min(0) + c.log_eps)
            x = y * c.scale
            logdet = n * math.log(c.scale) - y.flatten(1).sum(1)
        pad = self.channels - mag.shape[1]
        if pad:
            x = torch.nn.functional.pad(x, (0, 0, 0, pad))
        return x, logdet

    def decode(self, x: torch.Tensor) -> torch.Tensor:
        """Flow space (B, channels, T) -> magnitudes (B, bins, T), clamped to be non-negative."""
        c = self.config
        x = x[:, :self.bins]
        if c.transform == "linear":
            return (x / c.scale).clamp_min(0)
        return (torch.exp(x / c.scale) - c.log_eps).clamp_min(0)

    # ---- the flow -------------------------------------------------------------------------------
    def forward(self, x: torch.Tensor, sigma=None) -> tuple[torch.Tensor, torch.Tensor]:
        """Flow space -> (z, log|det dz/dx|) with z of shape (B, channels*n_sqz, T//n_sqz).

        sigma: the noise level of x (noise-conditioned priors only; default the smallest).
        """
        self._check(x, self.channels, "flow input")
        return self.flow(x, self._condition(sigma, x.shape[0], x.device))

    def inverse(self, z: torch.Tensor, sigma=None) -> torch.Tensor:
        """Exact inverse of :meth:`forward`: z -> flow-space x."""
        rows = self.channels * self.config.n_sqz
        if not isinstance(z, torch.Tensor) or z.dim() != 3 or z.shape[1] != rows:
            shape = tuple(z.shape) if hasattr(z, "shape") else type(z).__name__
            raise FlowsepError(f"latent must have shape (batch, {rows}, frames/{self.config.n_sqz}), got {shape}")
        return self.flow.inverse(z, self._condition(sigma, z.shape[0], z.device))

    def flow_log_prob(self, x: torch.Tensor, sigma=None) -> torch.Tensor:
        """log p_sigma(x) in nats of a flow-space input, (B, channels, T) -> (B,) (no transform Jacobian).

        Unchecked (it runs at every step of a search); :meth:`forward` checks its input.
        """
        z, ld = self.flow(x, self._condition(sigma, x.shape[0], x.device))
        return standard_normal_logpdf(z) + ld.float()

    def log_prob(self, mag: torch.Tensor) -> torch.Tensor:
        """log p(mag) in nats, (B, bins, T) -> (B,), including the transform's Jacobian.

        A noise-conditioned prior gives its density at the smallest noise level.
        """
        self._check(mag, self.bins, "magnitude spectrogram")
        x, ld_t = self.encode(mag)
        return self.flow_log_prob(x) + ld_t.float()

    def bits_per_dim(self, mag: torch.Tensor) -> torch.Tensor:
        """Negative log-likelihood in bits per magnitude value: (B, bins, T) -> (B,)."""
        return -self.log_prob(mag) / (mag.shape[1] * mag.shape[2] * math.log(2))

    @torch.no_grad()
    def sample(self, n: int = 1, frames: int = 128, temperature: float = 1.0,
               generator: torch.Generator | None = None) -> torch.Tensor:
        """Draw ``n`` magnitude spectrograms of ``frames`` frames: (n, bins, frames)."""
        if frames % self.frame_multiple or frames <= 0:
            raise FlowsepError(f"frames must be a positive multiple of {self.frame_multiple}, got {frames}")
        p = next(self.parameters())
        z = torch.randn(n, *self.latent_shape(frames), generator=generator, device=p.device, dtype=p.dtype)
        return self.decode(self.inverse(z * temperature))

    # ---- files ----------------------------------------------------------------------------------
    def checkpoint(self) -> dict:
        return {"format": "flowsep-prior", "format_version": CHECKPOINT_FORMAT,
                "flowsep_version": __version__, "config": asdict(self.config),
                "state_dict": {k: v.detach().cpu() for k, v in self.state_dict().items()}}

    def save(self, path) -> None:
        """Write config, weights and flowsep version to ``path`` atomically."""
        save_torch(self.checkpoint(), path)

    @classmethod
    def from_checkpoint(cls, ckpt: dict, path) -> "FlowPrior":
        check_format(ckpt, "flowsep-prior", CHECKPOINT_FORMAT, path, "flowsep prior checkpoint",
                     "`flowsep train` or FlowPrior.save", "state_dict")
        prior = cls(PriorConfig.from_dict(ckpt["config"], source=str(path)))
        try:
            prior.load_state_dict(ckpt["state_dict"])
        except RuntimeError as e:
            raise FlowsepError(f"{path}: weights do not match its config ({str(e).splitlines()[0][:100]}); "
                               "retrain it") from None
        return prior.eval()

    @classmethod
    def load(cls, path, map_location="cpu") -> "FlowPrior":
        """Read a prior written by :meth:`save` or by training (in eval mode)."""
        ckpt = load_torch(path, "prior checkpoint")
        ckpt = ckpt.get("prior", ckpt)
        return cls.from_checkpoint(ckpt, path).to(map_location)
