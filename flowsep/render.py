"""From magnitude estimates to waveforms: the mixture's phase, a post-filter, block by block.

Chapter: "Likelihood separation" (post-filters; the filters themselves are in :mod:`flowsep.filtering`).

A search gives each source's magnitudes at the priors' STFT (:class:`SeparationResult`). They take the
phase of the mixture's items and are resynthesised (:func:`source_waves`), then resampled to the input's
rate; a post-filter (:data:`POSTS`: a multichannel Wiener filter, ratio masks, or none) then shares the
mixture itself out among the sources in proportion to them, so that the stems add up to the mixture at the
input's own rate. For songs of any length in bounded memory it all runs block by block
(:func:`render_blocks`): every block is computed from the samples and frames it depends on, so it is the
exact stretch of what rendering the whole song at once gives (up to float rounding).
"""
from __future__ import annotations

import math
from dataclasses import dataclass, field

import numpy as np
import torch

from .errors import FlowsepError
from .filtering import WIENER_WINDOW, multichannel_wiener, ratio_masks
from .parts import to_channels
from .spectral import fit_length, frames_span, istft, magphase, n_frames, resample, resample_reach, stft, stft_frames

POSTS = ("wiener", "mask", "none")
RENDER_WINDOWS = 4   # Wiener windows per block of the post-filter


@dataclass
class SeparationResult:
    """Magnitude estimates of one mixture, before they are turned into waveforms.

    ``magnitudes[name]``: (items, bins, frames) at the priors' STFT (``prior_rate``, ``n_fft``, ``hop``),
    where items are the input's channels or its mid and side (``midside``); ``items``: those items'
    waveforms at the priors' rate, (items, samples), whose STFT phase the estimates take; ``mixture``:
    (channels, samples) at the input's ``rate``; ``squeeze_output``: the input was 1-D.
    ``render(post)`` gives the waveforms {name: (channels, samples)} at the input rate; ``render_blocks(post)``
    gives them block by block (see :func:`render_blocks`).

    ``trace``: the search's objective (:mod:`flowsep.search`), mean over parts, after 0, 1, ..., iterations
    Adam steps; ``snapshots``: {iteration: {name: (items, bins, frames)}}; ``timings``: seconds (prepare,
    optimize); ``chunks``: how many chunks the parts went through the priors in.
    """

    magnitudes: dict[str, torch.Tensor]
    items: torch.Tensor
    mixture: torch.Tensor
    rate: int
    prior_rate: int
    n_fft: int
    hop: int
    midside: bool
    squeeze_output: bool = False
    trace: list = field(default_factory=list)
    snapshots: dict = field(default_factory=dict)
    timings: dict = field(default_factory=dict)
    chunks: int = 1

    def render_blocks(self, post: str = "wiener", wiener_iterations: int = 1, block_frames: int | None = None):
        """Yield ``(start, {name: (channels, n) float32 array})`` in order: see :func:`render_blocks`."""
        return render_blocks(self, post, wiener_iterations, block_frames)

    def render(self, post: str = "wiener", wiener_iterations: int = 1) -> dict[str, np.ndarray]:
        """Waveform estimates {name: (channels, samples) float32} (1-D for a 1-D input): see :func:`render`."""
        return render(self, post, wiener_iterations)


# ---- resynthesis with the mixture's phase --------------------------------------------------------------
def _item_waves(r: SeparationResult, a: int, b: int) -> torch.Tensor:
    """Samples a..b-1 (priors' rate) of every estimate with the mixture phase: (sources, items, b-a)."""
    n_p = round(r.mixture.shape[-1] * r.prior_rate / r.rate)
    frames = next(iter(r.magnitudes.values())).shape[-1]
    margin = -(-r.n_fft // r.hop) + 1
    fa, fb = max(0, a // r.hop - margin), min(frames, -(-b // r.hop) + margin)
    phase = magphase(stft_frames(r.items, r.n_fft, r.hop, fa, fb))[1]
    length = n_p - fa * r.hop if fb == frames else (fb - fa - 1) * r.hop
    mags = torch.stack([m[..., fa:fb] for m in r.magnitudes.values()])
    waves = istft(mags * phase, r.n_fft, r.hop, length)
    return waves[..., a - fa * r.hop:b - fa * r.hop]


def source_waves(r: SeparationResult, a: int, b: int) -> torch.Tensor:
    """Samples a..b-1 (input rate) of the estimates with the mixture phase: (sources, channels, b-a).

    The same samples as resynthesising the whole song and cutting them out (up to float rounding):
    each stretch is computed from the frames and samples it depends on.
    """
    if r.rate == r.prior_rate:
        return to_channels(_item_waves(r, a, b), r.midside)
    g = math.gcd(r.prior_rate, r.rate)
    orig, new = r.prior_rate // g, r.rate // g
    reach = resample_reach(r.prior_rate, r.rate)
    pa = max(0, a * orig // new - reach) // orig * orig   # block-aligned, so the kernel phases match
    pb = min(round(r.mixture.shape[-1] * r.prior_rate / r.rate), -(-b * orig // new) + reach)
    up = resample(to_channels(_item_waves(r, pa, pb), r.midside), r.prior_rate, r.rate)
    return fit_length(up[..., a - pa // orig * new:], b - a)


# ---- post-filters ----------------------------------------------------------------------------------------
def input_stft(r: SeparationResult) -> tuple[int, int]:
    """(n_fft, hop) at the input's rate: the priors' STFT, scaled to it."""
    s = r.rate / r.prior_rate
    return max(4, 2 * round(r.n_fft * s / 2)), max(1, round(r.hop * s))


def peak_magnitude(mixture: torch.Tensor, n_fft: int, hop: int) -> float:
    """The largest magnitude of the STFT of ``mixture`` (channels, samples), computed in blocks."""
    total, step = n_frames(mixture.shape[-1], hop), 4 * WIENER_WINDOW
    return max(float(stft_frames(mixture, n_fft, hop, f, min(total, f + step)).abs().max())
               for f in range(0, total, step))


def _magnitudes_at_input(r: SeparationResult, mix: torch.Tensor, fa: int, fb: int, n_fft: int, hop: int):
    """The estimates' magnitudes on frames fa..fb-1 of the input's STFT: (sources, channels, bins, fb-fa)."""
    if r.rate == r.prior_rate and not r.midside:                   # the estimates' own grid
        return torch.stack([m[..., fa:fb] for m in r.magnitudes.values()])
    a, b = frames_span(fa, fb, n_fft, hop, r.mixture.shape[-1])  # resynthesise, analyse again
    v = stft(source_waves(r, a, b), n_fft, hop)[..., fa - a // hop:fb - a // hop].abs()
    if r.rate > r.prior_rate:
        # above the priors' band each source takes its share of the mixture in the band's top half
        freqs = torch.arange(v.shape[-2], device=v.device) * r.rate / n_fft
        nyq = r.prior_rate / 2
        top = (freqs >= 0.5 * nyq) & (freqs < 0.9 * nyq)
        above = freqs >= 0.9 * nyq
        energy = v[..., top, :].sum(dim=-2, keepdim=True)                 # (J, C, 1, T)
        share = (energy + 1e-12) / (energy + 1e-12).sum(dim=0, keepdim=True)
        v[..., above, :] = share * mix.abs()[..., above, :]
    return v


def filtered(r: SeparationResult, post: str, wiener_iterations: int, s0: int, s1: int, peak: float) -> torch.Tensor:
    """Samples s0..s1-1 of the post-filtered sources: (sources, channels, s1-s0).

    peak: :func:`peak_magnitude` of the mixture at the input's STFT (the filter's floor is relative to it).
    """
    n = r.mixture.shape[-1]
    n_fft, hop = input_stft(r)
    total = n_frames(n, hop)
    # the frames these samples depend on, widened to whole Wiener windows (the filter's statistics
    # are per window, so a block's windows must be the windows of the whole song)
    fa = max(0, (s0 - n_fft // 2) // hop - 1) // WIENER_WINDOW * WIENER_WINDOW
    fb = min(total, -(-((s1 + n_fft // 2) // hop + 2) // WIENER_WINDOW) * WIENER_WINDOW)
    mix = stft_frames(r.mixture, n_fft, hop, fa, fb)                      # (C, F, T) complex
    v = _magnitudes_at_input(r, mix, fa, fb, n_fft, hop) + 1e-5 * peak
    mask = ratio_masks(v)                                                  # they sum to 1
    if post == "mask":
        y = mask * mix
    else:
        y = multichannel_wiener(v, mix, iterations=wiener_iterations)
        # where every estimate is near zero the filter's regularisation keeps nothing; the ratio
        # masks share what is left, so that the stems add up to the mixture exactly
        y = y + mask * (mix - y.sum(dim=0))
    length = n - fa * hop if fb == total else (fb - fa - 1) * hop
    return istft(y, n_fft, hop, length)[..., s0 - fa * hop:s1 - fa * hop]


# ---- the song, block by block --------------------------------------------------------------------------
def render_blocks(r: SeparationResult, post: str = "wiener", wiener_iterations: int = 1,
                  block_frames: int | None = None):
    """Yield ``(start, {name: (channels, n) float32 array})``: the rendered song, block by block, in order.

    The blocks are ``block_frames`` STFT frames at the input rate (a multiple of the Wiener window;
    default :data:`RENDER_WINDOWS` windows); each is the exact stretch of what rendering the whole song at
    once would give.
    """
    if post not in POSTS:
        raise FlowsepError(f"unknown post-filter {post!r}; use one of: {', '.join(POSTS)}")
    n = r.mixture.shape[-1]
    n_fft, hop = input_stft(r)
    total = n_frames(n, hop)
    step = max(1, (block_frames or RENDER_WINDOWS * WIENER_WINDOW) // WIENER_WINDOW) * WIENER_WINDOW
    peak = None if post == "none" else peak_magnitude(r.mixture, n_fft, hop)
    for f0 in range(0, total, step):
        s0, s1 = f0 * hop, (n if f0 + step >= total else (f0 + step) * hop)
        waves = source_waves(r, s0, s1) if post == "none" else filtered(r, post, wiener_iterations, s0, s1, peak)
        yield s0, {k: w.cpu().numpy().astype(np.float32, copy=False) for k, w in zip(r.magnitudes, waves)}


def render(r: SeparationResult, post: str = "wiener", wiener_iterations: int = 1) -> dict[str, np.ndarray]:
    """Waveform estimates {name: (channels, samples) float32} with the post-filter ``post`` (1-D for 1-D input)."""
    n, channels = r.mixture.shape[-1], r.mixture.shape[0]
    out = {k: np.empty((channels, n), dtype=np.float32) for k in r.magnitudes}
    for start, block in render_blocks(r, post, wiener_iterations):
        for k, w in block.items():
            out[k][:, start:start + w.shape[-1]] = w
    return {k: v[0] if r.squeeze_output else v for k, v in out.items()}


def block_bytes(sources: int, channels: int, n_fft: int, prior_rate: int, rate: int) -> int:
    """Memory the rendering of one block takes (a few complex STFT blocks per source), in bytes."""
    n_fft_in = max(4, round(n_fft * rate / prior_rate))
    block = (RENDER_WINDOWS + 2) * WIENER_WINDOW * (n_fft_in // 2 + 1) * channels * 8
    return 4 * (sources + 2) * block
