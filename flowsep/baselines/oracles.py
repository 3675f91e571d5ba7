"""Oracles and trivial bounds: what separation scores look like with the answer in hand, and with nothing.

Chapter: "Evaluation".

All have the call of every other system, ``f(mixture, rate) -> {target: (channels, samples)}``; the
oracles also need the true stems, given per track as ``f(mixture, rate, sources={stem: audio})`` (the
attribute ``needs_sources = True`` tells :func:`flowsep.evaluate.evaluate_separator` to pass them) or,
for :class:`OracleWiener`, once at construction.

* :class:`MixtureAsEstimate`: every estimate is the mixture (a lower bound;
  1.07 dB average SDR on MUSDB18).
* :class:`OracleRatioMask`: ideal ratio mask |S_j|^2 / sum_k |S_k|^2 on the
  mixture STFT ("IRM2", 8.22 dB on MUSDB18).
* :class:`OracleWiener`: the oracle multichannel Wiener filter ("MWF", 7.88 dB on MUSDB18): each source's
  power spectral density and spatial covariance matrix estimated from its true STFT, then the mixture
  filtered once (:func:`flowsep.filtering.wiener_from_images`).
"""
from __future__ import annotations

import numpy as np
import torch

from ..constants import TARGETS
from ..errors import FlowsepError
from ..filtering import ratio_masks, wiener_from_images
from ..spectral import as_channels_first, istft, oracle_fft_size, stft


class OracleWiener:
    """Oracle multichannel Wiener filter from the true stems.

    sources: {stem: (channels, samples)} of one track, or None to receive them per call. Every stem of the
    track should be given (they make up the mixture model); ``targets`` picks the ones returned (default:
    all). The STFT has ``n_fft`` samples at 44.1 kHz (scaled with the rate) and a quarter of it as hop.
    ``iterations``: EM iterations (1: the filter built from the true sources, the SiSEC oracle).
    """

    needs_sources = True

    def __init__(self, targets=None, sources: dict | None = None, n_fft: int = 4096, iterations: int = 1):
        if iterations < 1:
            raise FlowsepError(f"iterations must be at least 1, got {iterations}")
        self.targets = tuple(targets) if targets else None
        self.sources, self.n_fft, self.iterations = sources, int(n_fft), int(iterations)

    def __call__(self, mixture, rate, sources: dict | None = None) -> dict[str, np.ndarray]:
        sources = sources if sources is not None else self.sources
        if not sources:
            raise FlowsepError("the oracle Wiener filter needs the true stems: pass sources={stem: audio}")
        mix = as_channels_first(mixture, "mixture").double()
        n_fft = oracle_fft_size(self.n_fft, rate)
        hop = n_fft // 4
        names = list(sources)
        stems = [as_channels_first(sources[k], k).double() for k in names]
        for k, s in zip(names, stems):
            if s.shape != mix.shape:
                raise FlowsepError(f"stem {k!r} has shape {tuple(s.shape)} but the mixture {tuple(mix.shape)}; "
                                   "give the stems of this mixture")
        x = stft(mix, n_fft, hop)
        y = wiener_from_images(torch.stack([stft(s, n_fft, hop) for s in stems]), x, self.iterations)
        targets = self.targets or tuple(names)
        missing = [t for t in targets if t not in names]
        if missing:
            raise FlowsepError(f"no stem {missing[0]!r} among the sources ({', '.join(names)})")
        return {t: istft(y[names.index(t)], n_fft, hop, mix.shape[-1]).float().numpy() for t in targets}


# ---- bounds: systems that need no training ---------------------------------------------------------
class MixtureAsEstimate:
    """The trivial bound: every target's estimate is the mixture itself."""

    def __init__(self, targets=TARGETS):
        self.targets = tuple(targets)

    def __call__(self, mixture, rate):
        mix = np.asarray(as_channels_first(mixture, "mixture"))
        return {t: mix.copy() for t in self.targets}


class OracleRatioMask:
    """Oracle ideal ratio mask from the true stems: |S_j|^p / sum_k |S_k|^p applied to the mixture STFT.

    ``power`` 2 is "IRM2" and 1 is "IRM1" of the SiSEC oracles. The STFT has ``n_fft`` samples at 44.1 kHz
    (scaled with the rate) and a quarter of that as hop. Called as ``f(mixture, rate, sources=...)`` with
    every stem of the track (the mask's denominator); returns the ``targets`` (default: all stems).
    """

    needs_sources = True

    def __init__(self, targets=None, power: float = 2.0, n_fft: int = 4096):
        self.targets, self.power, self.n_fft = (tuple(targets) if targets else None), float(power), int(n_fft)

    def __call__(self, mixture, rate, sources: dict):
        mix = as_channels_first(mixture, "mixture").double()
        n_fft = oracle_fft_size(self.n_fft, rate)
        hop = n_fft // 4
        spec = {k: stft(as_channels_first(v, k).double(), n_fft, hop) for k, v in sources.items()}
        names = list(spec)
        masks = ratio_masks(torch.stack([spec[k].abs() ** self.power for k in names]), eps=1e-20)
        x = stft(mix, n_fft, hop)
        targets = self.targets or tuple(sources)
        return {t: istft(masks[names.index(t)] * x, n_fft, hop, mix.shape[-1]).float().numpy() for t in targets}
