"""The paper's fully supervised comparison systems, at the book's three profiles.

Chapter: "Evaluation" (InstGlow against the systems of the published table).

Each system learns mixture -> stems from paired data. The networks come from maintained packages where
one exists:

* **Open-Unmix** (Stöter et al. 2019): one :class:`openunmix.model.OpenUnmix` per target (a bidirectional
  LSTM that predicts a magnitude spectrogram), trained with an MSE on magnitudes; at separation time the
  four magnitude estimates go through open-unmix's multichannel Wiener filter (one EM iteration, as the
  published models do).
* **Conv-TasNet** (Luo and Mesgarani 2019): :class:`torchaudio.models.ConvTasNet`, a learned filterbank
  with a temporal-convolution mask network. torchaudio's model is single-channel, so each audio channel is
  separated on its own (the channels are batch items).
* **Demucs**: :class:`torchaudio.models.HDemucs`, Hybrid Demucs (Défossez 2021, "Demucs v3"), the
  maintained successor of the waveform Demucs v2 of the published table: the same U-Net on the waveform
  with a second, spectrogram branch. No package ships the v2 architecture any more.
* **Wave-U-Net** (Stoller et al. 2018): :class:`flowsep.baselines.waveunet.WaveUNet`.

Every network here maps a batch of mixtures (batch, channels, samples) to source waveforms
(batch, n_sources, channels, samples) and has a ``loss(mixture, stems)`` for training.
:class:`SupervisedSeparator` wraps a trained network with the call of :class:`flowsep.separate.Separator`:
``stems = model(mixture, rate)`` with any rate, length and channel count.

Profiles (:meth:`SupervisedConfig.preset`): ``smoke`` (8 kHz mono, tiny networks: proves the code path),
``cpu`` (16 kHz mono, small networks that train in minutes on a laptop), ``gpu`` (22.05 kHz mono, mid-sized
networks trained for the gpu prior's wall-clock budget, ``train_seconds``) and ``paper`` (44.1 kHz stereo,
the published sizes). At smoke and cpu the networks are mono and each channel of a stereo input is
separated on its own, as InstGlow does. The training budget (steps x batch x seconds per example) is the
same for all four systems and equal to the InstGlow prior's of the same profile: see
:func:`training_budget`.
"""
from __future__ import annotations

import dataclasses
import math
from dataclasses import dataclass, field

import numpy as np
import torch
import torch.nn.functional as F
from openunmix.model import OpenUnmix
from openunmix.utils import bandwidth_to_max_bin
from torch import nn
from torchaudio.models import ConvTasNet, HDemucs

from ..constants import DISPLAY_NAMES, MODEL_NAMES, PROFILES, TARGETS
from ..device import resolve_device
from ..errors import FlowsepError
from ..filtering import multichannel_wiener
from ..prior import PriorConfig
from ..trainer import TrainingSettings
from ..spectral import CrossFade, as_channels_first, fit_length, istft, resample, stft
from .waveunet import WaveUNet

CHECKPOINT_FORMAT = 1

#: Profile-wide signal settings: sample rate, model channels, chunk length used at separation time.
SIGNAL = {
    "smoke": dict(sample_rate=8000, channels=1, chunk_seconds=4.0),
    "cpu": dict(sample_rate=16000, channels=1, chunk_seconds=10.0),
    "gpu": dict(sample_rate=22050, channels=1, chunk_seconds=10.0),   # what the gpu priors hear
    "paper": dict(sample_rate=44100, channels=2, chunk_seconds=10.0),
}

#: Architecture per model and profile. ``paper`` is the published size of each system.
ARCH = {
    "openunmix": {
        "smoke": dict(n_fft=256, hop=64, hidden=16, layers=1, bandwidth=None, wiener_iterations=1),
        "cpu": dict(n_fft=1024, hop=256, hidden=128, layers=3, bandwidth=None, wiener_iterations=1),
        "gpu": dict(n_fft=2048, hop=512, hidden=256, layers=3, bandwidth=None, wiener_iterations=1),
        "paper": dict(n_fft=4096, hop=1024, hidden=512, layers=3, bandwidth=16000, wiener_iterations=1),
    },
    "convtasnet": {  # torchaudio's names: N = enc_num_feats, L = enc_kernel_size, B, H, X, R
        "smoke": dict(enc_kernel_size=16, enc_num_feats=16, msk_kernel_size=3, msk_num_feats=8,
                      msk_num_hidden_feats=16, msk_num_layers=2, msk_num_stacks=1),
        "cpu": dict(enc_kernel_size=32, enc_num_feats=64, msk_kernel_size=3, msk_num_feats=32,
                    msk_num_hidden_feats=64, msk_num_layers=4, msk_num_stacks=2),
        "gpu": dict(enc_kernel_size=32, enc_num_feats=256, msk_kernel_size=3, msk_num_feats=128,
                    msk_num_hidden_feats=256, msk_num_layers=8, msk_num_stacks=2),
        "paper": dict(enc_kernel_size=16, enc_num_feats=512, msk_kernel_size=3, msk_num_feats=128,
                      msk_num_hidden_feats=512, msk_num_layers=8, msk_num_stacks=3),
    },
    "demucs": {  # HDemucs: the frequency branch must reach <= kernel_size bins within `depth` layers
        "smoke": dict(channels=4, depth=3, nfft=256),
        "cpu": dict(channels=8, depth=4, nfft=1024),
        "gpu": dict(channels=32, depth=5, nfft=2048),
        "paper": dict(channels=48, depth=6, nfft=4096),
    },
    "waveunet": {
        "smoke": dict(layers=3, features=4, down_kernel=15, up_kernel=5),
        "cpu": dict(layers=8, features=8, down_kernel=15, up_kernel=5),
        "gpu": dict(layers=10, features=16, down_kernel=15, up_kernel=5),
        "paper": dict(layers=12, features=24, down_kernel=15, up_kernel=5),
    },
}

#: Adam learning rate per model and profile (paper: the published value of each system).
LEARNING_RATE = {
    "openunmix": {"smoke": 1e-3, "cpu": 1e-3, "gpu": 1e-3, "paper": 1e-3},
    "convtasnet": {"smoke": 1e-3, "cpu": 1e-3, "gpu": 1e-3, "paper": 1e-3},
    "demucs": {"smoke": 1e-3, "cpu": 1e-3, "gpu": 3e-4, "paper": 3e-4},
    "waveunet": {"smoke": 1e-3, "cpu": 1e-3, "gpu": 3e-4, "paper": 1e-4},
}
#: Example batches where a profile's budget is time, not examples: the prior's batch (32 x 7.4 s) would not fit
#: the waveform models in a 16 GB GPU (activation memory from benchmarks/gpu_estimate.py), so they see shorter,
#: fewer examples per step for the same seconds of training.
TIME_BUDGET_BATCH = {"gpu": dict(batch_size=8, segment_seconds=4.0)}
WEIGHT_DECAY = {"openunmix": 1e-5, "convtasnet": 0.0, "demucs": 0.0, "waveunet": 0.0}
#: fp16 autocast on CUDA; off for HDemucs, whose spectrogram branch needs full-precision complex tensors
MIXED_PRECISION = {"openunmix": True, "convtasnet": True, "demucs": False, "waveunet": True}


def training_budget(profile: str) -> dict:
    """The budget every learned system of ``profile`` gets: the InstGlow prior's of the same profile.

    Returns {"steps", "batch_size", "segment_seconds", "examples", "audio_seconds"}, read from
    :meth:`flowsep.prior.PriorConfig.preset`: ``steps`` optimisation steps on batches of ``batch_size``
    examples of ``segment_seconds`` each (the prior's ``segment_frames`` STFT frames), so every system sees
    ``examples = steps * batch_size`` training examples, ``audio_seconds`` of audio in all (a prior sees that
    much of its one source; a supervised model that much of mixtures with their stems). At ``paper`` this is
    the published prior training: 240,000 steps x 32 examples x 7.42 s, about 15,800 hours of audio.
    """
    if profile not in PROFILES:
        raise FlowsepError(f"unknown profile {profile!r}; choose one of: {', '.join(PROFILES)}")
    p = PriorConfig.preset(profile)
    seconds = (p.segment_frames - 1) * p.hop / p.sample_rate
    return {"steps": p.steps, "train_seconds": p.train_seconds, "batch_size": p.batch_size,
            "segment_seconds": seconds,
            "examples": p.steps * p.batch_size, "audio_seconds": p.steps * p.batch_size * seconds}


@dataclass
class SupervisedConfig(TrainingSettings):
    """Everything that defines a supervised baseline and its training; saved inside every checkpoint.

    The training settings are :class:`flowsep.trainer.TrainingSettings`' (steps, train_seconds, batch_size,
    lr, weight_decay, grad_clip, mixed_precision, val_every, val_batches, checkpoint_every, seed; the
    learning rate is constant: no decay).
    """

    model: str = "openunmix"
    profile: str = "custom"
    targets: tuple = TARGETS
    sample_rate: int = 44100
    channels: int = 2               # audio channels of the network (1: each input channel on its own)
    arch: dict = field(default_factory=dict)
    # training (the budget: steps x batch_size examples of segment_seconds each)
    segment_seconds: float = 1.0
    remix: bool = True              # stems of an example drawn from independent songs and positions
    gain: tuple = (0.5, 1.25)       # random gain per stem
    stat_batches: int = 4           # Open-Unmix: batches of mixtures for the input normalisation
    # separation
    chunk_seconds: float = 10.0     # long inputs are separated in overlapping chunks of this length

    @classmethod
    def preset(cls, model: str, profile: str, **overrides) -> "SupervisedConfig":
        """The configuration of ``model`` (openunmix, convtasnet, demucs, waveunet) at ``profile``."""
        if model not in MODEL_NAMES:
            raise FlowsepError(f"unknown model {model!r}; choose one of: {', '.join(MODEL_NAMES)}")
        if profile not in PROFILES:
            raise FlowsepError(f"unknown profile {profile!r}; choose one of: {', '.join(PROFILES)}")
        budget = training_budget(profile)
        small = profile != "paper"
        values = dict(model=model, profile=profile, arch=dict(ARCH[model][profile]), **SIGNAL[profile],
                      steps=budget["steps"], train_seconds=budget["train_seconds"],
                      batch_size=budget["batch_size"],
                      segment_seconds=budget["segment_seconds"], lr=LEARNING_RATE[model][profile],
                      weight_decay=WEIGHT_DECAY[model], mixed_precision=MIXED_PRECISION[model],
                      val_every=20 if profile == "smoke" else (250 if small else 2000),
                      val_batches=1 if profile == "smoke" else (2 if small else 8),
                      checkpoint_every=20 if profile == "smoke" else (250 if small else 2000),
                      stat_batches=1 if profile == "smoke" else 4)
        known = {f.name for f in dataclasses.fields(cls)}
        unknown = sorted(set(overrides) - known)
        if unknown:
            raise FlowsepError(f"unknown setting(s) {', '.join(unknown)}; choose from: {', '.join(sorted(known))}")
        values.update(TIME_BUDGET_BATCH.get(profile, {}))
        if "arch" in overrides:
            values["arch"].update(overrides.pop("arch"))
        values.update(overrides)
        return cls(**values)

    @classmethod
    def from_dict(cls, d: dict, source: str = "config") -> "SupervisedConfig":
        known = {f.name for f in dataclasses.fields(cls)}
        unknown = sorted(set(d) - known)
        if unknown:
            raise FlowsepError(f"{source} has settings this flowsep does not know ({', '.join(unknown)}); "
                               "upgrade flowsep")
        d = dict(d)
        for k in ("targets", "gain"):
            if k in d:
                d[k] = tuple(d[k])
        return cls(**d)

    @property
    def segment_samples(self) -> int:
        return int(round(self.segment_seconds * self.sample_rate))

    @property
    def display_name(self) -> str:
        return DISPLAY_NAMES.get(self.model, self.model)


# ---- the networks -------------------------------------------------------------------------------
class _WaveformLoss:
    """L1 between estimated and true source waveforms (Demucs' loss; used for every waveform model)."""

    def loss(self, mixture: torch.Tensor, stems: torch.Tensor) -> torch.Tensor:
        """mixture (B, C, S), stems (B, n_sources, C, S) -> scalar."""
        return F.l1_loss(self(mixture), stems)


class OpenUnmixModels(nn.Module):
    """Open-Unmix: one :class:`openunmix.model.OpenUnmix` per target on magnitude spectrograms.

    forward: mixture (B, C, S) -> waveforms (B, n_sources, C, S) through the multichannel Wiener filter;
    :meth:`magnitudes`: mixture (B, C, S) -> (B, n_sources, C, bins, frames) magnitude estimates.
    """

    def __init__(self, targets, channels: int, sample_rate: int, n_fft: int, hop: int, hidden: int,
                 layers: int, bandwidth=None, wiener_iterations: int = 1):
        super().__init__()
        self.targets, self.n_fft, self.hop = tuple(targets), int(n_fft), int(hop)
        self.wiener_iterations = int(wiener_iterations)
        max_bin = int(bandwidth_to_max_bin(sample_rate, n_fft, bandwidth)) if bandwidth else None
        self.models = nn.ModuleDict({t: OpenUnmix(nb_bins=n_fft // 2 + 1, nb_channels=channels, hidden_size=hidden,
                                                  nb_layers=layers, max_bin=max_bin) for t in self.targets})

    @torch.no_grad()
    def set_input_statistics(self, mixtures: torch.Tensor) -> None:
        """Open-Unmix's input normalisation from a batch of training mixtures (B, C, S): per-bin mean and
        standard deviation of the channel-averaged magnitudes (floored at 1e-4 of the largest std)."""
        mag = stft(mixtures, self.n_fft, self.hop).abs().mean(1)          # (B, bins, frames)
        frames = mag.permute(0, 2, 1).reshape(-1, mag.shape[1]).double()
        mean, std = frames.mean(0), frames.std(0)
        std = torch.maximum(std, 1e-4 * std.max())
        for m in self.models.values():
            m.input_mean.copy_(-mean[:m.nb_bins].float())
            m.input_scale.copy_(1.0 / std[:m.nb_bins].float())

    def magnitudes(self, mixture: torch.Tensor) -> torch.Tensor:
        mag = stft(mixture, self.n_fft, self.hop).abs()
        return torch.stack([self.models[t](mag) for t in self.targets], dim=1)

    def loss(self, mixture: torch.Tensor, stems: torch.Tensor) -> torch.Tensor:
        """MSE on magnitudes, summed over the targets (each target's model has its own MSE, as published)."""
        est = self.magnitudes(mixture)
        ref = stft(stems, self.n_fft, self.hop).abs()
        return F.mse_loss(est.float(), ref, reduction="none").mean(dim=(0, 2, 3, 4)).sum()

    def forward(self, mixture: torch.Tensor) -> torch.Tensor:
        spec = stft(mixture, self.n_fft, self.hop)                         # (B, C, bins, frames)
        mags = self.magnitudes(mixture).float()                             # (B, S, C, bins, frames)
        out = []
        for b in range(mixture.shape[0]):
            if self.wiener_iterations > 0:
                y = multichannel_wiener(mags[b], spec[b], iterations=self.wiener_iterations)
            else:
                y = mags[b] * torch.exp(1j * torch.angle(spec[b]))[None]
            out.append(istft(y, self.n_fft, self.hop, mixture.shape[-1]))
        return torch.stack(out).to(mixture.dtype)


class ConvTasNetModel(_WaveformLoss, nn.Module):
    """Conv-TasNet (:class:`torchaudio.models.ConvTasNet`); each audio channel is separated on its own.

    forward: mixture (B, C, S) -> (B, n_sources, C, S).
    """

    def __init__(self, targets, audio_channels: int, **arch):
        super().__init__()
        self.targets = tuple(targets)
        self.net = ConvTasNet(num_sources=len(self.targets), **arch)

    def forward(self, mixture: torch.Tensor) -> torch.Tensor:
        b, c, s = mixture.shape
        y = self.net(mixture.reshape(b * c, 1, s))[..., :s]                 # (B*C, n_sources, S)
        return y.reshape(b, c, len(self.targets), s).transpose(1, 2)


class HDemucsModel(_WaveformLoss, nn.Module):
    """Demucs: :class:`torchaudio.models.HDemucs` (Hybrid Demucs, the successor of Demucs v2).

    forward: mixture (B, C, S) -> (B, n_sources, C, S).
    """

    def __init__(self, targets, audio_channels: int, **arch):
        super().__init__()
        self.targets = tuple(targets)
        self.net = HDemucs(list(self.targets), audio_channels=audio_channels, **arch)

    def forward(self, mixture: torch.Tensor) -> torch.Tensor:
        return self.net(mixture)


class WaveUNetModel(_WaveformLoss, WaveUNet):
    """Wave-U-Net (:class:`flowsep.baselines.waveunet.WaveUNet`): mixture (B, C, S) -> (B, n_sources, C, S)."""

    def __init__(self, targets, audio_channels: int, **arch):
        super().__init__(n_sources=len(tuple(targets)), channels=audio_channels, **arch)
        self.targets = tuple(targets)


def build_network(config: SupervisedConfig) -> nn.Module:
    """The untrained network of ``config`` (weights drawn from torch's current random state)."""
    c = config
    if c.channels not in (1, 2):
        raise FlowsepError(f"channels must be 1 or 2, got {c.channels}")
    try:
        if c.model == "openunmix":
            return OpenUnmixModels(c.targets, c.channels, c.sample_rate, **c.arch)
        if c.model == "convtasnet":
            return ConvTasNetModel(c.targets, c.channels, **c.arch)
        if c.model == "demucs":
            net = HDemucsModel(c.targets, c.channels, **c.arch)
            with torch.no_grad():  # HDemucs fails late (in forward) when depth and nfft do not fit
                net.eval()(torch.zeros(1, c.channels, 2 * c.arch.get("nfft", 4096)))
            return net.train()
        if c.model == "waveunet":
            return WaveUNetModel(c.targets, c.channels, **c.arch)
    except TypeError as e:
        raise FlowsepError(f"bad architecture settings for {c.model}: {e}") from None
    except RuntimeError as e:
        raise FlowsepError(f"the {c.model} architecture {c.arch} does not fit together "
                           f"({str(e).splitlines()[0][:80]}); change depth or nfft") from None
    raise FlowsepError(f"unknown model {c.model!r}; choose one of: {', '.join(MODEL_NAMES)}")


# ---- separating audio ---------------------------------------------------------------------------
def _chunk_starts(length: int, chunk: int, overlap: int) -> list[int]:
    """Starts of chunks of ``chunk`` samples covering ``length`` with at least ``overlap`` shared samples."""
    if length <= chunk:
        return [0]
    hop = chunk - overlap
    starts = list(range(0, length - chunk, hop))
    return starts + [length - chunk]


class SupervisedSeparator:
    """A trained supervised network with the Separator's call: ``stems = model(mixture, rate)``.

    mixture: (channels, samples) or (samples,) array or tensor at any rate; returns {target: np.ndarray}
    of the mixture's shape at its rate. The mixture is resampled to the network's rate, separated in
    overlapping chunks of ``config.chunk_seconds`` (linear cross-fades over a quarter of a chunk) and
    resampled back. A mono network separates each channel on its own; a stereo network gets a mono input
    on both channels (the two outputs are averaged).

    ``history`` holds the training history (step, train_loss, val_step, val_loss, seconds) when known.
    """

    needs_sources = False

    def __init__(self, network: nn.Module, config: SupervisedConfig, device="cpu", history=None):
        self.config = config
        self.device = resolve_device(device)
        self.network = network.to(self.device).eval()
        self.history = history or {}

    @property
    def targets(self) -> tuple:
        return tuple(self.config.targets)

    @property
    def sample_rate(self) -> int:
        return self.config.sample_rate

    @property
    def name(self) -> str:
        return self.config.display_name

    @property
    def train_seconds(self) -> float:
        return float(self.history.get("seconds", math.nan))

    @torch.no_grad()
    def separate_tensor(self, items: torch.Tensor) -> torch.Tensor:
        """items (B, network channels, S) at the network's rate -> (B, n_sources, channels, S), chunked."""
        c = self.config
        b, ch, n = items.shape
        chunk = max(int(round(c.chunk_seconds * c.sample_rate)), c.segment_samples)
        overlap = chunk // 4
        starts = _chunk_starts(n, chunk, overlap)
        length = min(chunk, n)
        fade = CrossFade((b, len(c.targets), ch), starts, length, n, ramp=overlap)
        for i, s in enumerate(starts):
            seg = items[..., s:s + length]
            short = max(0, c.segment_samples - length)    # pad very short inputs to one training example
            fade.add(i, self.network(F.pad(seg, (0, short)).to(self.device)).float().cpu()[..., :length])
        return fade.result()

    def __call__(self, mixture, rate) -> dict[str, np.ndarray]:
        c = self.config
        mix = as_channels_first(mixture, "mixture")
        n_in, length = mix.shape
        if length == 0:
            raise FlowsepError("the mixture holds no samples; give a non-empty recording")
        x = resample(mix, int(rate), c.sample_rate)
        if c.channels == 1:
            est = self.separate_tensor(x[:, None])[:, :, 0]                  # (C_in, S, samples)
            est = est.transpose(0, 1)
        elif n_in == 2:
            est = self.separate_tensor(x[None])[0]                          # (S, 2, samples)
        else:
            pairs = x[:, None].expand(-1, 2, -1)                            # each channel as a stereo pair
            est = self.separate_tensor(pairs).mean(2).transpose(0, 1)       # (S, C_in, samples)
        est = resample(est.contiguous(), c.sample_rate, int(rate))
        est = fit_length(est, length)
        return {t: est[j].numpy().astype(np.float32) for j, t in enumerate(c.targets)}
