"""Likelihood separation: search, under every frozen source prior at once, for stems that add up to the mix.

Chapter: "Likelihood separation".

Each source j has a trained flow prior f_j that maps a magnitude spectrogram x_j to a standard-normal
latent z_j. Separation optimises one latent per source so that the decoded magnitudes explain the
mixture's magnitude |X|::

    x_j = decode_j(f_j^-1(z_j))                          (batch, bins, frames), one per source
    loss = D(|X| || sum_j x_j) + prior_weight * R(z)     D = generalized KL (I-divergence)
    R = 0.5*||z||^2 ("z" space)  or  -log p_j(x_j) ("x" space), per dimension

with Adam on the z's, starting from z = 0, the mode of every prior. The defaults are the settings of
the published 4-stem results: z space, zero init, prior_weight 0 (the prior acts only through the
reparametrisation and the start point), lr 0.01, 150 iterations. The magnitude estimates get the
mixture's phase; a post-filter (ratio mask or multichannel Wiener filter, :mod:`openunmix.filtering`)
makes them add up to the mixture at the input's own sample rate.

Engineering on top of the published method: stereo (each channel, or mid and side, is one batch item),
inputs of any length (overlapping segments, cross-faded), and one batched pass per prior per iteration
for every segment and channel, with the sources themselves batched by :func:`torch.func.vmap` when all
priors share one architecture.
"""
from __future__ import annotations

import copy
import math
import re
import time
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import torch
from torch import nn

from .errors import FlowsepError
from .prior import FlowPrior
from .spectral import as_channels_first, istft, magphase, resample, stft

POSTS = ("wiener", "mask", "none")
STEREO_MODES = ("midside", "channels")
PRIOR_SPACES = ("z", "x")
KL_EPS = 1e-8
SILENCE_PEAK = 1e-7  # a mixture whose peak is below this (-140 dBFS) has nothing to separate
WIENER_WINDOW = 300  # frames per multichannel Wiener call, as in open-unmix


# ---- the objective --------------------------------------------------------------------------------
def generalized_kl(m: torch.Tensor, s: torch.Tensor, valid: torch.Tensor | None = None,
                   eps: float = KL_EPS) -> torch.Tensor:
    """I-divergence m*log(m/s) - m + s, averaged over bins and (valid) frames, one value per item.

    m, s: (batch, bins, frames) non-negative; valid: (batch, frames) of 0/1 or None -> (batch,).
    Zero-safe: m = 0 gives s, and s = 0 is floored at ``eps``.
    """
    d = m * (torch.log(m + eps) - torch.log(s + eps)) - m + s
    if valid is None:
        return d.mean(dim=(1, 2))
    w = valid[:, None, :].to(d.dtype)
    return (d * w).sum(dim=(1, 2)) / (w.sum(dim=(1, 2)) * d.shape[1]).clamp_min(1)


# ---- frozen copies of the priors -------------------------------------------------------------------
def _frozen_copy(prior: FlowPrior, device: torch.device) -> FlowPrior:
    """An eval-mode copy with plain (weight-norm folded) weights that need no gradient.

    The user's prior is left as it is; weight normalisation is computed once here instead of at
    every iteration.
    """
    from torch.nn.utils import parametrize

    copy = type(prior)(prior.config)
    copy.load_state_dict(prior.state_dict())
    for module in copy.modules():
        if parametrize.is_parametrized(module):
            for name in list(module.parametrizations.keys()):
                parametrize.remove_parametrizations(module, name, leave_parametrized=True)
    return copy.eval().requires_grad_(False).to(device)


class _Synthesis(nn.Module):
    """z -> magnitudes through one prior: decode(inverse(z)), (B, C*n_sqz, T/n_sqz) -> (B, bins, T)."""

    def __init__(self, prior: FlowPrior):
        super().__init__()
        self.prior = prior

    def forward(self, z):
        return self.prior.decode(self.prior.inverse(z))


def _architecture(prior: FlowPrior) -> tuple:
    c = prior.config
    shapes = tuple((k, tuple(v.shape)) for k, v in prior.state_dict().items())
    return (c.transform, c.scale, c.log_eps, shapes)


# ---- segments ---------------------------------------------------------------------------------------
def plan_segments(frames: int, seg_frames: int, overlap_frames: int, multiple: int) -> tuple[int, list[int]]:
    """Equal-length overlapping segments that cover ``frames`` frames.

    Returns (length, starts): every segment is ``length`` frames (a multiple of ``multiple``); a clip
    that fits in one segment gives one segment starting at 0, padded at the end up to ``length``.
    """
    seg_frames = max(multiple, seg_frames // multiple * multiple)
    if frames <= seg_frames:
        return math.ceil(frames / multiple) * multiple, [0]
    overlap_frames = min(overlap_frames, seg_frames // 2)
    n = math.ceil((frames - overlap_frames) / (seg_frames - overlap_frames))
    length = math.ceil((frames + (n - 1) * overlap_frames) / n / multiple) * multiple  # <= seg_frames
    starts = [round(i * (frames - length) / (n - 1)) for i in range(n)] if n > 1 else [0]
    return length, starts


def _crossfade_weights(length: int, starts: list[int], frames: int) -> torch.Tensor:
    """(n_segments, length) weights: linear ramps over each overlap, 1 elsewhere, 0 on padding."""
    n = len(starts)
    w = torch.ones(n, length)
    for i in range(n):
        end = starts[i] + length
        if end > frames:  # padding of a single short segment
            w[i, frames - starts[i]:] = 0
        if i + 1 < n:
            ov = end - starts[i + 1]
            if ov > 0:
                w[i, length - ov:] *= torch.linspace(1, 0, ov + 2)[1:-1]
        if i > 0:
            ov = starts[i - 1] + length - starts[i]
            if ov > 0:
                w[i, :ov] *= torch.linspace(0, 1, ov + 2)[1:-1]
    return w


def overlap_add(segments: torch.Tensor, starts: list[int], frames: int) -> torch.Tensor:
    """Cross-fade segment spectrograms back into one: (n_seg, ..., length) -> (..., frames)."""
    length = segments.shape[-1]
    w = _crossfade_weights(length, starts, frames).to(segments.device, segments.dtype)
    out = segments.new_zeros(*segments.shape[1:-1], frames + length)
    den = segments.new_zeros(frames + length)
    for i, s in enumerate(starts):
        out[..., s:s + length] += segments[i] * w[i]
        den[s:s + length] += w[i]
    return out[..., :frames] / den[:frames].clamp_min(1e-12)


# ---- the result of one separation ------------------------------------------------------------------
@dataclass
class SeparationResult:
    """Magnitude estimates of one mixture, before they are turned into waveforms.

    ``magnitudes[name]``: (items, bins, frames) at the priors' STFT, where items are the input's channels
    (stereo="channels") or mid and side (stereo="midside"); ``phase``: the mixture phase, same shape.
    ``render(post)`` gives the waveforms {name: (channels, samples)} at the input rate.
    """

    magnitudes: dict[str, torch.Tensor]
    phase: torch.Tensor
    mixture: torch.Tensor           # (channels, samples) at the input rate
    rate: int                       # input rate
    prior_rate: int
    n_fft: int
    hop: int
    midside: bool
    squeeze_output: bool            # the input was 1-D
    timings: dict = field(default_factory=dict)

    def _to_channels(self, items: torch.Tensor) -> torch.Tensor:
        """(items, samples) mid/side or channels -> (channels, samples)."""
        if self.midside:
            return torch.stack([items[0] + items[1], items[0] - items[1]])
        return items

    def waveforms(self) -> dict[str, torch.Tensor]:
        """Magnitudes with the mixture phase, inverse STFT, back at the input rate: {name: (channels, samples)}."""
        n = self.mixture.shape[-1]
        n_p = round(n * self.prior_rate / self.rate)
        out = {}
        for name, mag in self.magnitudes.items():
            w = istft(mag * self.phase, self.n_fft, self.hop, n_p)
            w = resample(self._to_channels(w), self.prior_rate, self.rate)
            out[name] = _fit_length(w, n)
        return out

    def render(self, post: str = "wiener", wiener_iterations: int = 1) -> dict[str, np.ndarray]:
        """Waveform estimates {name: (channels, samples) float32} with the post-filter ``post``."""
        if post not in POSTS:
            raise FlowsepError(f"unknown post-filter {post!r}; use one of: {', '.join(POSTS)}")
        t0 = time.perf_counter()
        if post == "none":
            est = self.waveforms()
        else:
            est = self._filtered(post, wiener_iterations)
        self.timings["post"] = time.perf_counter() - t0
        return {k: (v[0] if self.squeeze_output else v).cpu().numpy().astype(np.float32)
                for k, v in est.items()}

    # ---- post-filters at the input rate ----
    def _input_stft_params(self) -> tuple[int, int]:
        r = self.rate / self.prior_rate
        return max(4, 2 * round(self.n_fft * r / 2)), max(1, round(self.hop * r))

    def _input_magnitudes(self, n_fft: int, hop: int, mix_mag: torch.Tensor) -> torch.Tensor:
        """Source magnitudes on the input-rate STFT grid: (sources, channels, bins, frames).

        When the input is at the priors' rate and the channels were separated as they are, these are the
        estimates themselves; otherwise each estimate is resynthesised (mixture phase, input rate) and
        analysed again. Above the priors' band (inputs at a higher rate) each source takes the share of
        the mixture it has in the top half of that band, frame by frame.
        """
        if self.rate == self.prior_rate and not self.midside:
            return torch.stack(list(self.magnitudes.values()))
        v = torch.stack([stft(w, n_fft, hop).abs() for w in self.waveforms().values()])
        if self.rate > self.prior_rate:
            freqs = torch.arange(v.shape[-2], device=v.device) * self.rate / n_fft
            nyq = self.prior_rate / 2
            top = (freqs >= 0.5 * nyq) & (freqs < 0.9 * nyq)
            above = freqs >= 0.9 * nyq
            energy = v[..., top, :].sum(dim=-2, keepdim=True)                 # (J, C, 1, T)
            share = (energy + 1e-12) / (energy + 1e-12).sum(dim=0, keepdim=True)
            v[..., above, :] = share * mix_mag[..., above, :]
        return v

    def _filtered(self, post: str, wiener_iterations: int) -> dict[str, torch.Tensor]:
        n = self.mixture.shape[-1]
        n_fft, hop = self._input_stft_params()
        mix = stft(self.mixture, n_fft, hop)                                   # (C, F, T) complex
        v = self._input_magnitudes(n_fft, hop, mix.abs())                        # (J, C, F, T)
        floor = 1e-5 * float(mix.abs().max())
        mask = (v + floor) / (v + floor).sum(dim=0, keepdim=True)             # ratio masks, sum to 1
        if post == "mask":
            y = mask * mix
        else:
            y = multichannel_wiener(v + floor, mix, iterations=wiener_iterations)
            # where every estimate is near zero the filter's regularisation keeps nothing; the ratio
            # masks share what is left, so that the stems add up to the mixture exactly
            y = y + mask * (mix - y.sum(dim=0))
        waves = istft(y, n_fft, hop, n)
        return dict(zip(self.magnitudes, waves))


def _fit_length(w: torch.Tensor, n: int) -> torch.Tensor:
    if w.shape[-1] >= n:
        return w[..., :n]
    return torch.nn.functional.pad(w, (0, n - w.shape[-1]))


def multichannel_wiener(v: torch.Tensor, mix: torch.Tensor, iterations: int = 1,
                        window: int = WIENER_WINDOW) -> torch.Tensor:
    """Multichannel Wiener filter (open-unmix's EM implementation) in windows of ``window`` frames.

    v: (sources, channels, bins, frames) magnitude estimates; mix: (channels, bins, frames) complex
    -> (sources, channels, bins, frames) complex source images that add up to ``mix`` (up to the
    filter's regularisation). More than two channels are filtered one by one.
    """
    from openunmix.filtering import wiener

    if mix.shape[0] > 2:  # open-unmix inverts 1x1 and 2x2 covariances only: filter each channel alone
        return torch.cat([multichannel_wiener(v[:, c:c + 1], mix[c:c + 1], iterations, window)
                          for c in range(mix.shape[0])], dim=1)
    frames = mix.shape[-1]
    out = torch.zeros((v.shape[0], *mix.shape), dtype=torch.complex128, device=mix.device)
    for t0 in range(0, frames, window):
        sl = slice(t0, min(frames, t0 + window))
        m = torch.view_as_real(mix[..., sl].to(torch.complex128).permute(2, 1, 0))  # (T, F, C, 2)
        tgt = v[..., sl].to(torch.float64).permute(3, 2, 1, 0)                        # (T, F, C, J)
        y = wiener(tgt, m, iterations=iterations)                                    # (T, F, C, 2, J)
        out[..., sl] = torch.view_as_complex(y.permute(4, 2, 1, 0, 3).contiguous())
    return out.to(mix.dtype)


# ---- the separator ----------------------------------------------------------------------------------
class Separator:
    """Separate mixtures with frozen flow priors: ``stems = Separator(priors)(mixture, rate)``.

    priors: {name: FlowPrior}, all with the same sample rate, n_fft and hop (their architectures may
    differ). The Separator keeps frozen copies of the priors as they are when it is built.

    mixture: (channels, samples) or (samples,) array or tensor, any rate and length (at least one STFT
    frame at the priors' rate). Returns {name: np.ndarray} of the mixture's shape at its rate.

    After a call: ``trace`` (loss after 0, 1, ..., iterations Adam steps: iterations+1 values),
    ``snapshots`` ({iteration: {name: (items, bins, frames) magnitudes}} for the iterations listed in
    ``snapshots=``), ``timings`` (seconds: prepare, optimize, post) and ``result`` (a SeparationResult,
    to render other post-filters without optimising again).

    Options: ``stereo`` "midside" (the default) separates mid (L+R)/2 and side (L-R)/2 as two batch
    items, "channels" each channel; the mid signal is the mono downmix the priors were trained on, and
    midside scored slightly higher on the synthetic set (benchmarks/results/separation_synth_cpu.md).
    Inputs with other channel counts are always separated channel by channel.
    ``segment_seconds``/``overlap``: long inputs are cut into equal overlapping segments that all go
    through each prior as one batch. ``stack_sources``: run all priors as one vmapped model ("auto": when
    their architectures match and the device is a GPU). ``unbatched=True``: the same computation
    source by source and item by item (slow; for benchmarks and tests).
    """

    def __init__(self, priors: dict, iterations: int = 150, lr: float = 0.01, prior_weight: float = 0.0,
                 prior_space: str = "z", init="zeros", post: str = "wiener", stereo: str = "midside",
                 segment_seconds: float = 60.0, overlap: float = 1.0, device="auto", progress: bool = True,
                 unbatched: bool = False, stack_sources="auto", wiener_iterations: int = 1,
                 snapshots=None, seed: int = 0):
        if not isinstance(priors, dict) or not priors:
            raise FlowsepError("no priors given; pass a dict {name: FlowPrior} with at least one prior")
        for name, p in priors.items():
            if not isinstance(name, str) or not name:
                raise FlowsepError(f"prior names must be non-empty strings, got {name!r}")
            if not isinstance(p, FlowPrior):
                raise FlowsepError(f"prior {name!r} is a {type(p).__name__}, not a FlowPrior; "
                                   "load it with flowsep.FlowPrior.load")
        names = list(priors)
        first = priors[names[0]].config
        for name in names[1:]:
            c = priors[name].config
            if (c.sample_rate, c.n_fft, c.hop) != (first.sample_rate, first.n_fft, first.hop):
                raise FlowsepError(
                    f"priors {names[0]!r} ({first.sample_rate} Hz, n_fft {first.n_fft}, hop {first.hop}) and "
                    f"{name!r} ({c.sample_rate} Hz, n_fft {c.n_fft}, hop {c.hop}) use different STFT settings; "
                    "use priors trained at the same profile")
        if not (isinstance(iterations, (int, np.integer)) and iterations >= 0):
            raise FlowsepError(f"iterations must be a non-negative integer, got {iterations!r}")
        if not isinstance(lr, (int, float)) or not lr > 0:
            raise FlowsepError(f"lr must be positive, got {lr}")
        if not isinstance(prior_weight, (int, float)) or not prior_weight >= 0:
            raise FlowsepError(f"prior_weight must be >= 0, got {prior_weight}")
        if prior_space not in PRIOR_SPACES:
            raise FlowsepError(f"unknown prior_space {prior_space!r}; use 'z' or 'x'")
        if not (init == "zeros" or (isinstance(init, (int, float)) and not isinstance(init, bool) and init >= 0)):
            raise FlowsepError(f"init must be 'zeros' or a noise standard deviation >= 0, got {init!r}")
        if post not in POSTS:
            raise FlowsepError(f"unknown post-filter {post!r}; use one of: {', '.join(POSTS)}")
        if stereo not in STEREO_MODES:
            raise FlowsepError(f"unknown stereo mode {stereo!r}; use 'midside' or 'channels'")
        if not all(isinstance(v, (int, float)) for v in (segment_seconds, overlap)) \
                or not segment_seconds > 0 or not 0 <= overlap < segment_seconds / 2:
            raise FlowsepError(f"need segment_seconds > 0 and 0 <= overlap < segment_seconds/2, "
                               f"got {segment_seconds} and {overlap}")
        if stack_sources not in ("auto", True, False):
            raise FlowsepError(f"stack_sources must be 'auto', True or False, got {stack_sources!r}")
        from .train import resolve_device
        self.device = resolve_device(device)
        self.names = names
        self.config = first
        self.iterations, self.lr = int(iterations), float(lr)
        self.prior_weight, self.prior_space, self.init = float(prior_weight), prior_space, init
        self.post, self.stereo = post, stereo
        self.segment_seconds, self.overlap = float(segment_seconds), float(overlap)
        self.progress, self.unbatched = progress, bool(unbatched)
        self.wiener_iterations, self.seed = int(wiener_iterations), int(seed)
        self.snapshot_at = sorted({int(i) for i in (snapshots or [])})
        self.priors = {n: _frozen_copy(p, self.device) for n, p in priors.items()}
        same = len({_architecture(p) for p in self.priors.values()}) == 1
        if stack_sources is True and not same:
            raise FlowsepError("stack_sources=True needs priors of one architecture (same profile); "
                               "use stack_sources='auto'")
        if stack_sources == "auto":
            stack_sources = same and len(self.priors) > 1 and self.device.type == "cuda"
        self.stacked = bool(stack_sources) and not self.unbatched
        self._stack = None
        self.trace: list[float] = []
        self.snapshots: dict[int, dict[str, np.ndarray]] = {}
        self.timings: dict[str, float] = {}
        self.result: SeparationResult | None = None

    @property
    def sample_rate(self) -> int:
        return self.config.sample_rate

    @property
    def frame_multiple(self) -> int:
        return math.lcm(*(p.frame_multiple for p in self.priors.values()))

    # ---- input checks and analysis ----
    def _prepare(self, mixture, rate):
        if isinstance(rate, bool) or not isinstance(rate, (int, np.integer, float, np.floating)) \
                or not math.isfinite(rate) or rate <= 0 or float(rate) != int(rate):
            raise FlowsepError(f"sample rate must be a positive integer (Hz), got {rate!r}")
        rate = int(rate)
        squeeze = np.ndim(mixture) == 1
        wave = as_channels_first(mixture, "mixture")
        c = self.config
        if wave.shape[-1] * c.sample_rate / rate < c.n_fft:
            need = c.n_fft / c.sample_rate
            raise FlowsepError(f"mixture of {wave.shape[-1] / rate * 1000:.1f} ms is shorter than one STFT frame "
                               f"({need * 1000:.1f} ms at the priors' {c.sample_rate} Hz); give a longer clip")
        if float(wave.abs().max()) < SILENCE_PEAK:
            raise FlowsepError("mixture is silent (all samples are zero); give a recording with sound in it")
        wave = wave.to(self.device)
        midside = self.stereo == "midside" and wave.shape[0] == 2
        items = torch.stack([(wave[0] + wave[1]) / 2, (wave[0] - wave[1]) / 2]) if midside else wave
        items = resample(items, rate, c.sample_rate)
        mag, phase = magphase(stft(items, c.n_fft, c.hop))          # (items, bins, frames)
        return wave, rate, squeeze, midside, mag, phase

    # ---- synthesis through the priors ----
    def _stacked_synthesis(self):
        if self._stack is None:
            from torch.func import stack_module_state
            mods = [_Synthesis(self.priors[n]) for n in self.names]
            params, buffers = stack_module_state(mods)
            base = copy.deepcopy(mods[0]).to("meta")
            self._stack = (params, buffers, base)
        return self._stack

    def _synthesize(self, zs: list[torch.Tensor]) -> list[torch.Tensor]:
        """Latents (one (B, C', T') per source) -> magnitudes (one (B, bins, T) per source)."""
        if self.unbatched:
            return [torch.cat([_Synthesis(self.priors[n])(z[b:b + 1]) for b in range(z.shape[0])])
                    for n, z in zip(self.names, zs)]
        if self.stacked:
            from torch.func import functional_call, vmap
            params, buffers, base = self._stacked_synthesis()
            mags = vmap(lambda p, b, z: functional_call(base, (p, b), (z,)))(params, buffers, torch.stack(zs))
            return list(mags.unbind(0))
        return [_Synthesis(self.priors[n])(z) for n, z in zip(self.names, zs)]

    def _prior_term(self, zs, mags) -> torch.Tensor:
        """(B,) prior term per item, per dimension, summed over sources."""
        total = 0
        for n, z, x in zip(self.names, zs, mags):
            if self.prior_space == "z":
                total = total + 0.5 * z.pow(2).mean(dim=(1, 2))
            else:
                p = self.priors[n]
                if self.unbatched:
                    lp = torch.cat([p.log_prob(x[b:b + 1]) for b in range(x.shape[0])])
                else:
                    lp = p.log_prob(x)
                total = total - lp / (x.shape[1] * x.shape[2])
        return total

    def _objective(self, zs, target, valid):
        mags = self._synthesize(zs)
        total = torch.stack(mags).sum(0)
        per_item = generalized_kl(target, total, valid)
        if self.prior_weight > 0:
            per_item = per_item + self.prior_weight * self._prior_term(zs, mags)
        return per_item, mags

    # ---- the separation itself ----
    def estimate(self, mixture, sample_rate) -> SeparationResult:
        """Optimise the latents for one mixture; returns the magnitude estimates (see SeparationResult)."""
        from .progress import bar as progress_bar

        t0 = time.perf_counter()
        wave, rate, squeeze, midside, mag, phase = self._prepare(mixture, sample_rate)
        c = self.config
        n_items, bins, frames = mag.shape
        fps = c.sample_rate / c.hop
        length, starts = plan_segments(frames, round(self.segment_seconds * fps), round(self.overlap * fps),
                                       self.frame_multiple)
        padded = torch.nn.functional.pad(mag, (0, max(0, starts[-1] + length - frames)))
        target = torch.stack([padded[..., s:s + length] for s in starts])     # (n_seg, items, bins, L)
        target = target.reshape(-1, bins, length)                              # segment-major batch
        valid = (torch.arange(length, device=self.device)[None] + torch.tensor(starts, device=self.device)[:, None]
                 < frames).float().repeat_interleave(n_items, dim=0)            # (B, L)
        gen = torch.Generator().manual_seed(self.seed)
        zs = []
        for n in self.names:
            shape = (target.shape[0], *self.priors[n].latent_shape(length))
            z = torch.zeros(shape) if self.init == "zeros" else float(self.init) * torch.randn(shape, generator=gen)
            zs.append(z.to(self.device).requires_grad_(True))
        opt = torch.optim.Adam(zs, lr=self.lr)
        self.trace, self.snapshots = [], {}
        t1 = time.perf_counter()

        def whole(mags):  # (B, bins, L) per source -> (items, bins, frames) per source
            return {n: overlap_add(m.detach().reshape(len(starts), n_items, bins, length), starts, frames)
                    for n, m in zip(self.names, mags)}

        bar = progress_bar(range(self.iterations), show=self.progress, desc="separating", unit="it", leave=False)
        for it in bar:
            per_item, mags = self._objective(zs, target, valid)
            loss = per_item.sum()
            self.trace.append(float(per_item.detach().mean()))
            if it in self.snapshot_at:
                self.snapshots[it] = {k: v.cpu().numpy() for k, v in whole(mags).items()}
            opt.zero_grad(set_to_none=True)
            loss.backward()
            opt.step()
            if it % 10 == 0:
                bar.set_postfix(loss=f"{self.trace[-1]:.4g}")
        with torch.no_grad():
            per_item, mags = self._objective(zs, target, valid)
        self.trace.append(float(per_item.mean()))
        estimates = whole(mags)
        if self.iterations in self.snapshot_at:
            self.snapshots[self.iterations] = {k: v.cpu().numpy() for k, v in estimates.items()}
        t2 = time.perf_counter()
        self.timings = {"prepare": t1 - t0, "optimize": t2 - t1}
        self.result = SeparationResult(estimates, phase, wave, rate, c.sample_rate, c.n_fft, c.hop, midside,
                                       squeeze, self.timings)
        return self.result

    def __call__(self, mixture, sample_rate) -> dict[str, np.ndarray]:
        """Separate ``mixture`` ((channels, samples) or (samples,)) recorded at ``sample_rate`` Hz.

        Returns {name: np.ndarray} with the mixture's shape, at its rate.
        """
        result = self.estimate(mixture, sample_rate)
        return result.render(self.post, self.wiener_iterations)


# ---- files and the command line -----------------------------------------------------------------------
_NAME = re.compile(r"^[A-Za-z0-9_][A-Za-z0-9_.+-]*$")


def parse_prior_specs(specs: list[str]) -> dict[str, Path]:
    """["vocals=ckpt/vocals.pt", ...] -> {"vocals": Path(...)}; one-line errors for bad syntax."""
    if not specs:
        raise FlowsepError("no priors given; pass --prior NAME=CKPT once per source")
    out: dict[str, Path] = {}
    for spec in specs:
        name, sep, path = spec.partition("=")
        name = name.strip()
        if not sep or not path.strip():
            raise FlowsepError(f"--prior {spec!r} is not NAME=CKPT; write e.g. --prior vocals=priors/vocals.pt")
        if not _NAME.match(name):
            raise FlowsepError(f"--prior name {name!r} is not usable as a file name; "
                               "use letters, digits, '_', '-', '.' (e.g. vocals)")
        if name in out:
            raise FlowsepError(f"--prior {name} given twice; give each source once")
        out[name] = Path(path.strip())
    return out


def load_priors(specs: list[str]) -> dict[str, FlowPrior]:
    """Parse NAME=CKPT specs and load every checkpoint (one-line errors for missing or bad files)."""
    return {name: FlowPrior.load(path) for name, path in parse_prior_specs(specs).items()}


def check_writable_dir(path) -> Path:
    """Fail early (one line) if ``path`` cannot become a writable folder; creates nothing."""
    path = Path(path)
    if path.exists() and not path.is_dir():
        raise FlowsepError(f"--out {path} exists and is not a folder; give a folder path")
    probe = path
    while not probe.exists():
        if probe.parent == probe:
            break
        probe = probe.parent
    import os
    if not probe.is_dir() or not os.access(probe, os.W_OK | os.X_OK):
        raise FlowsepError(f"cannot write to {path} ({probe} is not a writable folder); choose another --out")
    return path


def write_stems(stems: dict[str, np.ndarray], rate: int, out_dir) -> list[Path]:
    """Write {name: (channels, samples)} as out_dir/name.wav (16-bit), all files or none."""
    import contextlib

    import soundfile as sf

    from .io import atomic_path

    out_dir = Path(out_dir)
    paths = [out_dir / f"{name}.wav" for name in stems]
    with contextlib.ExitStack() as stack:
        for path, audio in zip(paths, stems.values()):
            tmp = stack.enter_context(atomic_path(path, suffix=".wav"))
            a = np.atleast_2d(np.asarray(audio, dtype=np.float32))
            try:
                sf.write(str(tmp), np.clip(a.T, -1.0, 1.0), int(rate), subtype="PCM_16", format="WAV")
            except (OSError, RuntimeError) as e:
                raise FlowsepError(f"cannot write {path}: {e}; choose another --out") from None
    return paths


def register_cli(subparsers) -> None:
    p = subparsers.add_parser(
        "separate", help="separate a mixture into stems with trained flow priors",
        description="Separate MIX (wav/flac/ogg, any rate and channel count) with one trained prior per source; "
                    "writes OUT/NAME.wav for every --prior NAME=CKPT, 16-bit, at the input's rate, channels "
                    "and length.")
    p.add_argument("mixture", metavar="MIX", help="the mixture audio file")
    p.add_argument("--prior", action="append", metavar="NAME=CKPT", default=[],
                   help="a source name and its prior checkpoint (repeat once per source)")
    p.add_argument("--out", required=True, metavar="DIR", help="folder for NAME.wav files")
    p.add_argument("--iterations", type=int, default=150, help="Adam iterations (default 150)")
    p.add_argument("--lr", type=float, default=0.01, help="Adam learning rate (default 0.01)")
    p.add_argument("--post", choices=POSTS, default="wiener",
                   help="post-filter: multichannel Wiener (default), ratio mask, or none (mixture phase only)")
    p.add_argument("--stereo", choices=STEREO_MODES, default="midside",
                   help="separate mid and side (default) or each channel")
    p.add_argument("--prior-weight", type=float, default=0.0, help="weight of the prior term (default 0)")
    p.add_argument("--segment-seconds", type=float, default=60.0,
                   help="longest stretch optimised as one segment (default 60)")
    p.add_argument("--device", default="auto", help="auto (default), cpu or cuda")
    p.add_argument("--quiet", action="store_true", help="no progress bar")
    p.set_defaults(func=_cli)


def _cli(args) -> int:
    from .io import read_audio

    out = check_writable_dir(args.out)
    specs = parse_prior_specs(args.prior)
    mixture, rate = read_audio(args.mixture)
    priors = {name: FlowPrior.load(path) for name, path in specs.items()}
    sep = Separator(priors, iterations=args.iterations, lr=args.lr, prior_weight=args.prior_weight,
                    post=args.post, stereo=args.stereo, segment_seconds=args.segment_seconds,
                    device=args.device, progress=not args.quiet)
    stems = sep(mixture, rate)
    for path in write_stems(stems, rate, out):
        print(path)
    return 0
