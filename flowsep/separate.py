"""Likelihood separation: search, under every frozen source prior at once, for stems that add up to the mix.

Chapter: "Likelihood separation".

Each source j has a trained flow prior f_j that maps a magnitude spectrogram x_j to a standard-normal
latent z_j. Separation optimises one latent per source so that the decoded magnitudes explain the
mixture's magnitude |X|::

    x_j = decode_j(f_j^-1(z_j))                          (batch, bins, frames), one per source
    loss = D(|X| || sum_j x_j) + prior_weight * R(z)     D = generalized KL (I-divergence)
    R = 0.5*||z||^2 ("z" space)  or  -log p_j(x_j) ("x" space), per dimension

with Adam on the z's, starting from z = 0, the mode of every prior's base density. The method
``"instglow"`` (the default) has the settings of the published 4-stem results: z space, zero init,
prior_weight 0 (the prior acts only through the reparametrisation and the start point), lr 0.01, 150
iterations. The other :data:`METHODS` go beyond the paper (a shorter search; a search with the latent
prior term switched on and a larger step, and that search cut short in bfloat16; a mixture-consistent
search over ratio masks; a noise-annealed search through noise-conditioned priors, as in BASIS);
benchmarks/results/separation_methods_*cpu.md compares them. The magnitude estimates get the mixture's
phase; a post-filter (ratio mask or multichannel Wiener filter, :mod:`openunmix.filtering`) makes them
add up to the mixture at the input's own sample rate.

Engineering on top of the published method: stereo (each channel, or mid and side, is one batch item),
inputs of any length in bounded memory, and one batched pass per prior per iteration for the segments
and channels of a chunk, with the sources themselves batched by :func:`torch.func.vmap` when all priors
share one architecture.

Long inputs. The song is cut into equal overlapping segments (``segment_seconds``); every segment of
every channel (a *part*) is optimised on its own terms, since the loss is a sum over parts and Adam
updates each latent element from its own gradient. So the parts can go through the priors in chunks,
each chunk optimised to the end before the next starts, with the same result as all parts at once
(up to float rounding): the chunk size is a matter of memory, chosen before the search starts from
the memory that is free (``max_memory`` overrides it). Only the magnitude estimates of the whole song
are kept; the post-filter and the resynthesis then run block by block (:meth:`SeparationResult.render_blocks`),
each block computed from the samples and frames it needs.
"""
from __future__ import annotations

import copy
import math
import time
from dataclasses import dataclass, field

import numpy as np
import torch
from torch import nn
from torch.func import functional_call, stack_module_state, vmap
from torch.nn.utils import parametrize

from .device import bf16_autocast, resolve_device
from .errors import FlowsepError
from .filtering import WIENER_WINDOW, multichannel_wiener, ratio_masks
from .memory import available_bytes, format_size, parse_size, saved_for_backward_bytes
from .prior import FlowPrior
from .progress import bar as progress_bar
from .spectral import (CrossFade, as_channels_first, fit_length, frames_span, istft, magphase, n_frames, plan_segments,
                       resample, stft, stft_frames)

POSTS = ("wiener", "mask", "none")
STEREO_MODES = ("midside", "mid", "channels")
PRIOR_SPACES = ("z", "x")
KL_EPS = 1e-8
SILENCE_PEAK = 1e-7  # a mixture whose peak is below this (-140 dBFS) has nothing to separate
RENDER_WINDOWS = 4   # Wiener windows per block of the post-filter
# the share of the available memory a separation plans to use when no ``max_memory`` is given
MEMORY_SHARE = 0.5
# on a CPU, more parts in one batch hardly run faster (4 parts: 4% less time per part than 1, measured in
# benchmarks/results/separation_memory_cpu_chunks.md), so a chunk stops growing here
CPU_CHUNK_BYTES = 2 * 2 ** 30
# what a part takes, per byte autograd saves for it (the forward's transients, the backward's gradients,
# Adam's state), on the safe side: a 60-s part at the cpu profile is planned at 1.43 GB, and the whole
# separation of it (with the post-filter) grew the process by 0.9 GB
WORKSPACE_FACTOR = 2.0


@dataclass(frozen=True)
class Method:
    """The settings of one separation method (``Separator(priors, method=NAME)``).

    search: "latents" (Adam on one latent per source, decoded through the priors; the published search)
    or "masks" (Adam on ratio-mask logits, so the sources always add up to the mixture, scored by the
    priors' likelihood of them: MAP with a Dirac likelihood; warm_iterations: latent-search steps (at
    warm_lr) that give the masks their start) or "annealed" (Adam on the sources' flow inputs through
    noise-conditioned priors, from their largest noise level to their smallest; lr is the step at noise 1;
    prior_weight, prior_space and init do not apply). stereo: see :class:`Separator`. bf16: the priors'
    networks run in bfloat16 on devices that compute it fast (CPUs with bf16 units, most CUDA GPUs;
    elsewhere float32); the invertible layers and the loss stay in float32.
    """

    name: str
    search: str
    iterations: int
    lr: float
    prior_weight: float = 0.0
    prior_space: str = "z"
    init: object = "zeros"
    stereo: str = "midside"
    warm_iterations: int = 0
    warm_lr: float = 0.01
    bf16: bool = False
    summary: str = ""


METHODS = {
    "instglow": Method("instglow", "latents", 150, 0.01, summary=(
        "the published algorithm: latents from z = 0, prior term off, lr 0.01, 150 Adam steps, mid and side")),
    "consistent": Method("consistent", "masks", 40, 0.05, stereo="mid", warm_iterations=30, warm_lr=0.03,
                         summary=("a short latent search warm-starts ratio masks that always add up to the mixture; "
                                  "the masks then maximise the priors' likelihood of the stems; mid only")),
    "fast": Method("fast", "latents", 25, 0.04, summary=(
        "the published search with a 4x larger step and 25 steps instead of 150")),
    "annealed": Method("annealed", "annealed", 200, 3.0, summary=(
        "BASIS: MAP through noise-conditioned priors, annealed from large noise to small; needs priors "
        "trained with --set noise_levels=N")),
    "map": Method("map", "latents", 100, 0.03, prior_weight=0.02, summary=(
        "the published search with its prior term switched on (MAP in latent space, weight 0.02), "
        "a 3x larger step and 100 steps")),
    "quick": Method("quick", "latents", 35, 0.03, prior_weight=0.02, bf16=True, summary=(
        "the map search stopped after 35 steps, its priors' networks in bfloat16 where the device computes it "
        "fast")),
}
DEFAULT_METHOD = "instglow"


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
    frozen = type(prior)(prior.config)
    frozen.load_state_dict(prior.state_dict())
    for module in frozen.modules():
        if parametrize.is_parametrized(module):
            for name in list(module.parametrizations.keys()):
                parametrize.remove_parametrizations(module, name, leave_parametrized=True)
    return frozen.eval().requires_grad_(False).to(device)


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


@dataclass
class SeparationResult:
    """Magnitude estimates of one mixture, before they are turned into waveforms.

    ``magnitudes[name]``: (items, bins, frames) at the priors' STFT, where items are the input's channels
    (stereo="channels") or mid and side (stereo="midside"); ``items``: those items' waveforms at the
    priors' rate, (items, samples), whose STFT phase the estimates take. ``render(post)`` gives the
    waveforms {name: (channels, samples)} at the input rate; ``render_blocks(post)`` gives them block by
    block, in bounded memory, for songs of any length.

    ``trace``: the method's objective (the I-divergence, plus the prior term, for a latent search; the
    priors' negative log-likelihood per dimension for a mask search; that at the current noise level plus
    the mixture misfit, per dimension, for the annealed search), mean over parts, after 0, 1, ...,
    iterations Adam steps; ``snapshots``:
    {iteration: {name: (items, bins, frames)}}; ``timings``: seconds (prepare, optimize, post);
    ``chunks``: how many chunks the parts went through the priors in.
    """

    magnitudes: dict[str, torch.Tensor]
    items: torch.Tensor
    mixture: torch.Tensor           # (channels, samples) at the input rate
    rate: int                       # input rate
    prior_rate: int
    n_fft: int
    hop: int
    midside: bool
    squeeze_output: bool            # the input was 1-D
    trace: list = field(default_factory=list)
    snapshots: dict = field(default_factory=dict)
    timings: dict = field(default_factory=dict)
    chunks: int = 1
    _peaks: dict = field(default_factory=dict, init=False, repr=False)

    def _to_channels(self, items: torch.Tensor) -> torch.Tensor:
        """(..., items, samples) mid/side or channels -> (..., channels, samples)."""
        if self.midside:
            return torch.stack([items[..., 0, :] + items[..., 1, :], items[..., 0, :] - items[..., 1, :]], dim=-2)
        return items

    # ---- waveforms of a stretch of the song ----
    @property
    def prior_samples(self) -> int:
        """Length of the song at the priors' rate."""
        return round(self.mixture.shape[-1] * self.prior_rate / self.rate)

    def _item_waves(self, a: int, b: int) -> torch.Tensor:
        """Samples a..b-1 (priors' rate) of every estimate with the mixture phase: (sources, items, b-a)."""
        n_p, frames = self.prior_samples, next(iter(self.magnitudes.values())).shape[-1]
        margin = -(-self.n_fft // self.hop) + 1
        fa, fb = max(0, a // self.hop - margin), min(frames, -(-b // self.hop) + margin)
        phase = magphase(stft_frames(self.items, self.n_fft, self.hop, fa, fb))[1]
        length = n_p - fa * self.hop if fb == frames else (fb - fa - 1) * self.hop
        mags = torch.stack([m[..., fa:fb] for m in self.magnitudes.values()])
        waves = istft(mags * phase, self.n_fft, self.hop, length)
        return waves[..., a - fa * self.hop:b - fa * self.hop]

    def source_waves(self, a: int, b: int) -> torch.Tensor:
        """Samples a..b-1 (input rate) of the estimates with the mixture phase: (sources, channels, b-a).

        The same samples as resynthesising the whole song and cutting them out (up to float rounding):
        each stretch is computed from the frames and samples it depends on.
        """
        n_p = self.prior_samples
        if self.rate == self.prior_rate:
            return self._to_channels(self._item_waves(a, b))
        g = math.gcd(self.prior_rate, self.rate)
        orig, new = self.prior_rate // g, self.rate // g
        # reach of torchaudio's windowed-sinc kernel (6 zero crossings), in samples at the priors' rate
        reach = 2 * (orig + math.ceil(6 * orig / (0.99 * min(orig, new))))
        pa = max(0, a * orig // new - reach) // orig * orig   # block-aligned, so the kernel phases match
        pb = min(n_p, -(-b * orig // new) + reach)
        up = resample(self._to_channels(self._item_waves(pa, pb)), self.prior_rate, self.rate)
        m0 = pa // orig * new
        return fit_length(up[..., a - m0:], b - a)

    # ---- rendering ----
    def _input_stft_params(self) -> tuple[int, int]:
        r = self.rate / self.prior_rate
        return max(4, 2 * round(self.n_fft * r / 2)), max(1, round(self.hop * r))

    def render_blocks(self, post: str = "wiener", wiener_iterations: int = 1, block_frames: int | None = None):
        """Yield ``(start, {name: (channels, n) float32 array})``: the rendered song, block by block, in order.

        The blocks are ``block_frames`` STFT frames at the input rate (a multiple of the Wiener window;
        default 4 windows); each is the exact stretch of what rendering the whole song at once would give.
        """
        if post not in POSTS:
            raise FlowsepError(f"unknown post-filter {post!r}; use one of: {', '.join(POSTS)}")
        n = self.mixture.shape[-1]
        n_fft, hop = self._input_stft_params()
        total = n_frames(n, hop)
        step = max(1, (block_frames or RENDER_WINDOWS * WIENER_WINDOW) // WIENER_WINDOW) * WIENER_WINDOW
        for f0 in range(0, total, step):
            s0, s1 = f0 * hop, (n if f0 + step >= total else (f0 + step) * hop)
            t0 = time.perf_counter()
            if post == "none":
                waves = self.source_waves(s0, s1)
            else:
                waves = self._filtered(post, wiener_iterations, s0, s1)
            self.timings["post"] = self.timings.get("post", 0.0) + time.perf_counter() - t0
            yield s0, {k: w.cpu().numpy().astype(np.float32, copy=False)
                       for k, w in zip(self.magnitudes, waves)}

    def render(self, post: str = "wiener", wiener_iterations: int = 1) -> dict[str, np.ndarray]:
        """Waveform estimates {name: (channels, samples) float32} with the post-filter ``post``."""
        n, channels = self.mixture.shape[-1], self.mixture.shape[0]
        out = {k: np.empty((channels, n), dtype=np.float32) for k in self.magnitudes}
        self.timings["post"] = 0.0
        for start, block in self.render_blocks(post, wiener_iterations):
            for k, w in block.items():
                out[k][:, start:start + w.shape[-1]] = w
        return {k: v[0] if self.squeeze_output else v for k, v in out.items()}

    def _filtered(self, post: str, wiener_iterations: int, s0: int, s1: int) -> torch.Tensor:
        """Samples s0..s1-1 of the post-filtered sources: (sources, channels, s1-s0)."""
        n = self.mixture.shape[-1]
        n_fft, hop = self._input_stft_params()
        total = n_frames(n, hop)
        # the frames these samples depend on, widened to whole Wiener windows (the filter's statistics
        # are per window, so a block's windows must be the windows of the whole song)
        fa = max(0, (s0 - n_fft // 2) // hop - 1) // WIENER_WINDOW * WIENER_WINDOW
        fb = min(total, -(-((s1 + n_fft // 2) // hop + 2) // WIENER_WINDOW) * WIENER_WINDOW)
        mix = stft_frames(self.mixture, n_fft, hop, fa, fb)                      # (C, F, T) complex
        if self.rate == self.prior_rate and not self.midside:                   # the estimates' own grid
            v = torch.stack([m[..., fa:fb] for m in self.magnitudes.values()])
        else:                                                                   # resynthesise, analyse again
            a, b = frames_span(fa, fb, n_fft, hop, n)
            v = stft(self.source_waves(a, b), n_fft, hop)[..., fa - a // hop:fb - a // hop].abs()
            if self.rate > self.prior_rate:
                # above the priors' band each source takes its share of the mixture in the band's top half
                freqs = torch.arange(v.shape[-2], device=v.device) * self.rate / n_fft
                nyq = self.prior_rate / 2
                top = (freqs >= 0.5 * nyq) & (freqs < 0.9 * nyq)
                above = freqs >= 0.9 * nyq
                energy = v[..., top, :].sum(dim=-2, keepdim=True)                 # (J, C, 1, T)
                share = (energy + 1e-12) / (energy + 1e-12).sum(dim=0, keepdim=True)
                v[..., above, :] = share * mix.abs()[..., above, :]
        floor = 1e-5 * self.peak_magnitude(n_fft, hop)
        mask = ratio_masks(v + floor)                                          # they sum to 1
        if post == "mask":
            y = mask * mix
        else:
            y = multichannel_wiener(v + floor, mix, iterations=wiener_iterations)
            # where every estimate is near zero the filter's regularisation keeps nothing; the ratio
            # masks share what is left, so that the stems add up to the mixture exactly
            y = y + mask * (mix - y.sum(dim=0))
        length = n - fa * hop if fb == total else (fb - fa - 1) * hop
        return istft(y, n_fft, hop, length)[..., s0 - fa * hop:s1 - fa * hop]

    def peak_magnitude(self, n_fft: int, hop: int) -> float:
        """The largest magnitude of the mixture's STFT at the input rate (computed once, in blocks)."""
        key = (n_fft, hop)
        if key not in self._peaks:
            total, step = n_frames(self.mixture.shape[-1], hop), 4 * WIENER_WINDOW
            self._peaks[key] = max(float(stft_frames(self.mixture, n_fft, hop, f, min(total, f + step)).abs().max())
                                   for f in range(0, total, step))
        return self._peaks[key]


def noise_schedule(sigmas: list[float], iterations: int) -> list[float]:
    """The noise level of each of ``iterations`` annealed steps, for levels ``sigmas`` (largest first).

    The iterations are shared out over the levels, in order (the first levels get one more when they do
    not divide); with fewer iterations than levels, one step at each of evenly spaced levels, so that the
    last step is always at the smallest level.
    """
    if iterations < len(sigmas):
        return [sigmas[k] for k in np.linspace(len(sigmas) - 1, 0, iterations)[::-1].round().astype(int)]
    steps = [iterations // len(sigmas) + (k < iterations % len(sigmas)) for k in range(len(sigmas))]
    return [sigma for sigma, n in zip(sigmas, steps) for _ in range(n)]


# ---- the separator ----------------------------------------------------------------------------------
class Separator:
    """Separate mixtures with frozen flow priors: ``stems = Separator(priors)(mixture, rate)``.

    priors: {name: FlowPrior}, all with the same sample rate, n_fft and hop (their architectures may
    differ). The Separator keeps frozen copies of the priors as they are when it is built.

    mixture: (channels, samples) or (samples,) array or tensor, any rate and length (at least one STFT
    frame at the priors' rate). Returns {name: np.ndarray} of the mixture's shape at its rate.
    ``estimate(mixture, rate)`` returns the :class:`SeparationResult` (magnitudes, trace, snapshots,
    timings) without rendering waveforms. The Separator keeps nothing of a separation: everything a
    separation records is in its result, so one Separator can separate many mixtures, in any order.

    ``method``: one of :data:`METHODS` ("instglow" is the published algorithm); it sets the search and
    the defaults of ``iterations``, ``lr``, ``prior_weight``, ``prior_space``, ``init``, ``stereo`` and
    ``bf16``, which can each be given to override it.

    Options: ``stereo`` "midside" separates mid (L+R)/2 and side (L-R)/2 as two batch items, "mid"
    separates mid only and gives the side to the sources in the ratios found for mid (half the work),
    "channels" each channel; the mid signal is the mono downmix the priors were trained on, and
    midside scored slightly higher than channels on the synthetic set
    (benchmarks/results/separation_synth_cpu.md). Inputs with other channel counts are always separated
    channel by channel.
    ``segment_seconds``/``overlap``: long inputs are cut into equal overlapping segments.
    ``max_memory``: bytes (or "4G", "500M") the separation may use; by default a share of the memory
    that is free when it starts (see the module docstring). The parts go through the priors in chunks
    that fit; if not even one part fits, a one-line error says what to change.
    ``stack_sources``: run all priors as one vmapped model ("auto": when their architectures match and
    the device is a GPU). ``unbatched=True``: the same computation source by source and item by item
    (slow; for benchmarks and tests). ``snapshots``: iterations at which to keep the estimates.
    """

    def __init__(self, priors: dict, method: str = DEFAULT_METHOD, iterations: int | None = None,
                 lr: float | None = None, prior_weight: float | None = None, prior_space: str | None = None,
                 init=None, post: str = "wiener", stereo: str | None = None,
                 segment_seconds: float = 60.0, overlap: float = 1.0, device="auto", progress: bool = True,
                 unbatched: bool = False, stack_sources="auto", wiener_iterations: int = 1,
                 snapshots=None, seed: int = 0, max_memory=None, bf16: bool | None = None):
        if method not in METHODS:
            raise FlowsepError(f"unknown separation method {method!r}; use one of: {', '.join(METHODS)}")
        self.method = m = METHODS[method]
        iterations = m.iterations if iterations is None else iterations
        lr = m.lr if lr is None else lr
        prior_weight = m.prior_weight if prior_weight is None else prior_weight
        prior_space = m.prior_space if prior_space is None else prior_space
        init = m.init if init is None else init
        stereo = m.stereo if stereo is None else stereo
        bf16 = m.bf16 if bf16 is None else bf16
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
        if m.search == "annealed":
            plain = [n for n, p in priors.items() if not p.noise_conditioned]
            if plain:
                raise FlowsepError(f"method {method!r} needs noise-conditioned priors, and {', '.join(plain)} "
                                   f"{'is a plain prior' if len(plain) == 1 else 'are plain priors'}; train them "
                                   "with `flowsep train --set noise_levels=10`, or choose another method")
            levels = {tuple(p.noise_sigmas.tolist()) for p in priors.values()}
            if len(levels) > 1:
                raise FlowsepError(f"method {method!r} needs priors with the same noise levels; train them with "
                                   "the same noise_levels, noise_max and noise_min")
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
            raise FlowsepError(f"unknown stereo mode {stereo!r}; use one of: {', '.join(STEREO_MODES)}")
        if not all(isinstance(v, (int, float)) for v in (segment_seconds, overlap)) \
                or not segment_seconds > 0 or not 0 <= overlap < segment_seconds / 2:
            raise FlowsepError(f"need segment_seconds > 0 and 0 <= overlap < segment_seconds/2, "
                               f"got {segment_seconds} and {overlap}")
        if stack_sources not in ("auto", True, False):
            raise FlowsepError(f"stack_sources must be 'auto', True or False, got {stack_sources!r}")
        self.device = resolve_device(device)
        self.names = names
        self.config = first
        self.iterations, self.lr = int(iterations), float(lr)
        self.prior_weight, self.prior_space, self.init = float(prior_weight), prior_space, init
        self.post, self.stereo, self.bf16 = post, stereo, bool(bf16)
        self.segment_seconds, self.overlap = float(segment_seconds), float(overlap)
        self.max_memory = None if max_memory in (None, "auto") else parse_size(max_memory)
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
        self._stack = None  # the vmapped priors, built on first use

    @property
    def sample_rate(self) -> int:
        return self.config.sample_rate

    @property
    def frame_multiple(self) -> int:
        return math.lcm(*(p.frame_multiple for p in self.priors.values()))

    # ---- input checks and analysis ----
    def _check_input(self, mixture, rate):
        if isinstance(rate, bool) or not isinstance(rate, (int, np.integer, float, np.floating)) \
                or not math.isfinite(rate) or rate <= 0 or float(rate) != int(rate):
            raise FlowsepError(f"sample rate must be a positive integer (Hz), got {rate!r}")
        rate = int(rate)
        wave = as_channels_first(mixture, "mixture")
        c = self.config
        if wave.shape[-1] * c.sample_rate / rate < c.n_fft:
            need = c.n_fft / c.sample_rate
            raise FlowsepError(f"mixture of {wave.shape[-1] / rate * 1000:.1f} ms is shorter than one STFT frame "
                               f"({need * 1000:.1f} ms at the priors' {c.sample_rate} Hz); give a longer clip")
        lo, hi = torch.aminmax(wave)
        if max(-float(lo), float(hi)) < SILENCE_PEAK:
            raise FlowsepError("mixture is silent (all samples are zero); give a recording with sound in it")
        return wave, rate

    def _items(self, wave: torch.Tensor, rate: int, midside: bool) -> torch.Tensor:
        """The waveforms the priors see, at their rate: mid and side, or the channels. (items, samples)."""
        wave = wave.to(self.device)
        items = torch.stack([(wave[0] + wave[1]) / 2, (wave[0] - wave[1]) / 2]) if midside else wave
        return resample(items, rate, self.config.sample_rate)

    # ---- memory ----
    def part_bytes(self, length: int) -> int:
        """Memory one part of ``length`` frames takes while it is optimised (estimated, in bytes).

        What autograd saves for a forward pass, measured on two short parts and extended to ``length``
        frames along the line through them (the weights are saved once, the activations per frame),
        times the workspace factor (transients, gradients and Adam's state). Every method is planned with
        the latent search's measure; the annealed search's measured peak stays flat with the song's length
        all the same (benchmarks/results/separation_memory_annealed_cpu.md).
        """
        def saved(frames):
            zs = [torch.zeros(1, *self.priors[n].latent_shape(frames), device=self.device, requires_grad=True)
                  for n in self.names]
            target = torch.ones(1, self.config.bins, frames, device=self.device)
            return saved_for_backward_bytes(lambda: self._objective(zs, target, None)[0].sum())

        short = 8 * self.frame_multiple
        a, b = saved(short), saved(2 * short)
        per_frame = (b - a) / short
        return int(WORKSPACE_FACTOR * (a + per_frame * (length - short)))

    def song_bytes(self, channels: int, samples: int, rate: int, midside: bool, length: int) -> int:
        """Memory the whole-song arrays take (the items, the estimates, snapshots, the rendered stems)."""
        c = self.config
        items = 2 if midside else channels
        n_p = math.ceil(samples * c.sample_rate / rate)
        frames = max(n_frames(n_p, c.hop), length)
        estimates = len(self.names) * (1 + len(self.snapshot_at)) * items * c.bins * frames * 4
        stems = len(self.names) * channels * samples * 4
        n_fft_in = max(4, round(c.n_fft * rate / c.sample_rate))
        block = (RENDER_WINDOWS + 2) * WIENER_WINDOW * (n_fft_in // 2 + 1) * channels * 8  # one complex STFT block
        return items * n_p * 4 + estimates + stems + 4 * (len(self.names) + 2) * block

    def plan_chunks(self, parts: int, length: int, song: int) -> int:
        """How many parts go through the priors at once, given the memory; one-line error if none fits."""
        one = self.part_bytes(length)
        free = available_bytes(self.device)
        limit = self.max_memory if self.max_memory is not None else int(0.9 * free)
        if song + one > limit:
            seconds = length * self.config.hop / self.config.sample_rate
            fits = max(0.0, (limit - song) / one * seconds)
            where = ("--max-memory" if self.max_memory is not None else
                     "the free GPU memory" if self.device.type == "cuda" else "the available memory")
            advice = (f"use shorter segments (--segment-seconds {max(1, int(fits))})" if fits >= 1 else
                      "separate a shorter excerpt")
            raise FlowsepError(
                f"separating needs about {format_size(song + one)} ({format_size(one)} for one "
                f"{seconds:.0f}-s segment of one channel, {format_size(song)} for the whole song) but "
                f"{where} allows {format_size(limit)}; {advice}, or another device")
        if self.max_memory is not None:
            budget = self.max_memory
        else:
            budget = MEMORY_SHARE * free
            if self.device.type == "cpu":
                budget = min(budget, song + CPU_CHUNK_BYTES)
        return max(1, min(parts, int((budget - song) // one)))

    # ---- synthesis through the priors ----
    def _stacked_synthesis(self):
        if self._stack is None:
            mods = [_Synthesis(self.priors[n]) for n in self.names]
            params, buffers = stack_module_state(mods)
            base = copy.deepcopy(mods[0]).to("meta")
            self._stack = (params, buffers, base)
        return self._stack

    def _synthesize(self, zs: list[torch.Tensor]) -> list[torch.Tensor]:
        """Latents (one (B, C', T') per source) -> magnitudes (one (B, bins, T) per source, float32)."""
        with bf16_autocast(self.device, self.bf16):
            return [m.float() for m in self._synthesize_all(zs)]

    def _synthesize_all(self, zs: list[torch.Tensor]) -> list[torch.Tensor]:
        if self.unbatched:
            return [torch.cat([_Synthesis(self.priors[n])(z[b:b + 1]) for b in range(z.shape[0])])
                    for n, z in zip(self.names, zs)]
        if self.stacked:
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
    def _initial_latents(self, parts: list[int], length: int) -> list[torch.Tensor]:
        """One latent per source for the given parts: zeros, or noise drawn per part (so any chunking
        gives the same start): one (len(parts), C', T') tensor per source."""
        zs = []
        for k, n in enumerate(self.names):
            shape = self.priors[n].latent_shape(length)
            if self.init == "zeros":
                z = torch.zeros(len(parts), *shape)
            else:
                z = torch.stack([float(self.init) * torch.randn(
                    shape, generator=torch.Generator().manual_seed(self.seed * 1_000_003 + 101 * p + k))
                    for p in parts])
            zs.append(z.to(self.device).requires_grad_(True))
        return zs

    def _search(self, zs, target, valid, on_step, bar):
        """Adam on the latents ``zs`` for ``self.iterations`` steps; returns the final magnitudes.

        on_step(it, per_part_loss, magnitudes) is called before each step and once after the last.
        """
        opt = torch.optim.Adam(zs, lr=self.lr)
        for it in bar(range(self.iterations)):
            per_item, mags = self._objective(zs, target, valid)
            on_step(it, per_item.detach(), mags)
            opt.zero_grad(set_to_none=True)
            per_item.sum().backward()
            opt.step()
        with torch.no_grad():
            per_item, mags = self._objective(zs, target, valid)
        on_step(self.iterations, per_item, mags)
        return [m.detach() for m in mags]

    def _search_masks(self, chunk, length, target, valid, on_step, bar):
        """Mixture-consistent search: s_j = softmax_j(logits) * |X|, minimising sum_j -log p_j(s_j) per dimension.

        The estimates add up to the mixture magnitude at every step (a Dirac likelihood), so the priors'
        densities alone decide how the mixture is shared. The logits start from a short latent search
        (``warm_iterations`` at ``warm_lr``): log of its magnitude estimates. Returns the estimates.
        """
        m = self.method
        zs = self._initial_latents(chunk, length)
        opt = torch.optim.Adam(zs, lr=m.warm_lr)
        for _ in range(m.warm_iterations):
            per_item = self._objective(zs, target, valid)[0]
            opt.zero_grad(set_to_none=True)
            per_item.sum().backward()
            opt.step()
        with torch.no_grad():
            logits = torch.log(torch.stack(self._synthesize(zs)) + KL_EPS)
        del zs, opt
        logits.requires_grad_(True)
        opt = torch.optim.Adam([logits], lr=self.lr)
        dims = target.shape[1] * target.shape[2]

        def objective():
            s = torch.softmax(logits, dim=0) * target
            nll = sum(-self.priors[n].log_prob(s_j) for n, s_j in zip(self.names, s)) / dims
            return nll, s

        for it in bar(range(self.iterations)):
            nll, s = objective()
            on_step(it, nll.detach(), s.detach())
            opt.zero_grad(set_to_none=True)
            nll.sum().backward()
            opt.step()
        with torch.no_grad():
            nll, s = objective()
        on_step(self.iterations, nll, s)
        return list(s)

    def _search_annealed(self, chunk, target, valid, on_step, bar):
        """Noise-annealed MAP through noise-conditioned priors (BASIS): Adam on the sources' flow inputs.

        Variables: y_j, the flow-space magnitude bins of every source (B, bins, T), starting from an equal
        share of the mixture. For each noise level sigma of the priors, largest first, ``iterations / levels``
        Adam steps (a fresh Adam at lr * sigma, so that steps shrink with the noise; with fewer iterations
        than levels, one step at each of evenly spaced levels, ending at the smallest) on

            sum_j -log p_sigma,j(y_j) + |f(|X|) - f(sum_j s_j)|^2 / (2 sigma^2),   s_j = decode(y_j)

        where f maps magnitudes to flow units (log(. + eps) * scale for log priors): the mixture may miss by
        about the noise the priors are at, and must fit closer as the noise shrinks. Returns the estimates
        s_j after the last step.
        """
        first = self.priors[self.names[0]]
        c = first.config
        sigmas = first.noise_sigmas.tolist()
        dims = target.shape[1] * target.shape[2]
        w = valid[:, None, :] if valid is not None else 1.0

        def flow_units(mag):
            return c.scale * (torch.log(mag + c.log_eps) if c.transform == "log" else mag)

        mix = flow_units(target)
        ys = [flow_units(target / len(self.names)).requires_grad_(True) for _ in self.names]

        def objective(sigma):
            xs = [torch.nn.functional.pad(y, (0, 0, 0, first.channels - first.bins)) for y in ys]
            mags = [self.priors[n].decode(x) for n, x in zip(self.names, xs)]
            misfit = ((flow_units(torch.stack(mags).sum(0)) - mix) ** 2 * w).sum(dim=(1, 2)) / (2 * sigma ** 2)
            with bf16_autocast(self.device, self.bf16):
                nll = sum(-self.priors[n].flow_log_prob(x, sigma) for n, x in zip(self.names, xs))
            return nll + misfit, mags

        schedule = noise_schedule(sigmas, self.iterations)
        opt, level = None, None
        for it in bar(range(self.iterations)):
            sigma = schedule[it]
            if sigma != level:
                opt, level = torch.optim.Adam(ys, lr=self.lr * sigma), sigma
            loss, mags = objective(sigma)
            on_step(it, loss.detach() / dims, mags)
            opt.zero_grad(set_to_none=True)
            loss.sum().backward()
            opt.step()
        with torch.no_grad():
            loss, mags = objective(sigmas[-1])
        on_step(self.iterations, loss / dims, mags)
        return [m.detach() for m in mags]

    def estimate(self, mixture, sample_rate) -> SeparationResult:
        """Optimise the latents for one mixture; returns the magnitude estimates (see SeparationResult)."""
        t0 = time.perf_counter()
        wave, rate = self._check_input(mixture, sample_rate)
        squeeze = np.ndim(mixture) == 1
        midside = self.stereo in ("midside", "mid") and wave.shape[0] == 2
        c = self.config
        fps = c.sample_rate / c.hop
        n_items = 2 if midside else wave.shape[0]
        searched = 1 if midside and self.stereo == "mid" else n_items   # items that go through the priors
        frames = n_frames(math.ceil(wave.shape[-1] * c.sample_rate / rate) if rate != c.sample_rate
                          else wave.shape[-1], c.hop)
        length, starts = plan_segments(frames, round(self.segment_seconds * fps), round(self.overlap * fps),
                                       self.frame_multiple)
        parts = [(s, i) for s in range(len(starts)) for i in range(searched)]  # segment-major
        song = self.song_bytes(wave.shape[0], wave.shape[-1], rate, midside, length)
        per_chunk = self.plan_chunks(len(parts), length, song)                  # fails here, before any work
        chunks = [list(range(k, min(len(parts), k + per_chunk))) for k in range(0, len(parts), per_chunk)]

        items = self._items(wave, rate, midside)
        frames = n_frames(items.shape[-1], c.hop)
        fades = {n: CrossFade((n_items, c.bins), starts, length, frames, self.device) for n in self.names}
        snap_fades = {it: {n: CrossFade((n_items, c.bins), starts, length, frames, self.device) for n in self.names}
                      for it in self.snapshot_at if it <= self.iterations}
        trace = torch.zeros(self.iterations + 1, dtype=torch.float64)
        t1 = time.perf_counter()

        song_bar = progress_bar(total=len(parts), show=self.progress and len(chunks) > 1, desc="song",
                                unit="part", leave=False)
        for k, chunk in enumerate(chunks):
            segs = [parts[p][0] for p in chunk]
            f0, f1 = starts[segs[0]], starts[segs[-1]] + length
            mag = stft_frames(items, c.n_fft, c.hop, f0, min(f1, frames)).abs()         # (items, bins, T)
            mag = torch.nn.functional.pad(mag, (0, f1 - min(f1, frames)))
            target = torch.stack([mag[parts[p][1], :, starts[parts[p][0]] - f0:][..., :length] for p in chunk])
            valid = (torch.arange(length, device=self.device)[None]
                     + torch.tensor([starts[s] for s in segs], device=self.device)[:, None] < frames).float()

            def on_step(it, per_item, mags, chunk=chunk):
                trace[it] += float(per_item.double().sum())
                if it in snap_fades:
                    for n, m in zip(self.names, mags):
                        for p, m_p in zip(chunk, m.detach()):
                            snap_fades[it][n].add(parts[p][0], m_p, parts[p][1])

            desc = "separating" if len(chunks) == 1 else f"separating {k + 1}/{len(chunks)}"
            bar = (lambda r, desc=desc: progress_bar(r, show=self.progress, desc=desc, unit="it", leave=False))
            if self.method.search == "masks":
                mags = self._search_masks(chunk, length, target, valid, on_step, bar)
            elif self.method.search == "annealed":
                mags = self._search_annealed(chunk, target, valid, on_step, bar)
            else:
                mags = self._search(self._initial_latents(chunk, length), target, valid, on_step, bar)
            for n, m in zip(self.names, mags):
                for p, m_p in zip(chunk, m):
                    fades[n].add(parts[p][0], m_p, parts[p][1])
            if searched < n_items:  # "mid": the side is shared in the ratios found for mid
                total = torch.stack(mags).sum(0) + KL_EPS
                side = torch.stack([mag[1, :, starts[parts[p][0]] - f0:][..., :length] for p in chunk])
                for n, m in zip(self.names, mags):
                    for p, share in zip(chunk, m / total * side):
                        fades[n].add(parts[p][0], share, 1)
            song_bar.update(len(chunk))
        song_bar.close()
        t2 = time.perf_counter()
        return SeparationResult(
            {n: f.result() for n, f in fades.items()}, items, wave.to(self.device), rate, c.sample_rate, c.n_fft,
            c.hop, midside, squeeze, trace=(trace / len(parts)).tolist(),
            snapshots={it: {n: f.result().cpu().numpy() for n, f in fs.items()} for it, fs in snap_fades.items()},
            timings={"prepare": t1 - t0, "optimize": t2 - t1}, chunks=len(chunks))

    def __call__(self, mixture, sample_rate) -> dict[str, np.ndarray]:
        """Separate ``mixture`` ((channels, samples) or (samples,)) recorded at ``sample_rate`` Hz.

        Returns {name: np.ndarray} with the mixture's shape, at its rate.
        """
        result = self.estimate(mixture, sample_rate)
        return result.render(self.post, self.wiener_iterations)
