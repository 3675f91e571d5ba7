"""Oracles and trivial bounds: what separation scores look like with the answer in hand, and with nothing.

Chapter: "Evaluation".

All have the call of every other system, ``f(mixture, rate) -> {target: (channels, samples)}``; the
oracles also need the true stems, given per track as ``f(mixture, rate, sources={stem: audio})`` (the
attribute ``needs_sources = True`` tells :func:`flowsep.evaluate.evaluate_separator` to pass them) or,
for :class:`OracleWiener`, once at construction.

* :class:`MixtureAsEstimate` (from :mod:`flowsep.evaluate`): every estimate is the mixture (a lower bound;
  1.07 dB average SDR on MUSDB18).
* :class:`OracleRatioMask` (from :mod:`flowsep.evaluate`): ideal ratio mask |S_j|^2 / sum_k |S_k|^2 on the
  mixture STFT ("IRM2", 8.22 dB on MUSDB18).
* :class:`OracleWiener`: the oracle multichannel Wiener filter ("MWF", 7.88 dB on MUSDB18): each source's
  power spectral density and spatial covariance matrix estimated from its true STFT, then the mixture
  filtered once with open-unmix's :func:`openunmix.filtering.expectation_maximization`.
"""
from __future__ import annotations

import numpy as np
import torch

from ..errors import FlowsepError
from ..evaluate import MixtureAsEstimate, OracleRatioMask
from ..spectral import as_channels_first, istft, stft

__all__ = ["MixtureAsEstimate", "OracleRatioMask", "OracleWiener"]


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

    def _filter(self, mix: torch.Tensor, specs: torch.Tensor) -> torch.Tensor:
        """mix (C, F, T) complex128, specs (J, C, F, T) complex128 -> filtered (J, C, F, T)."""
        from openunmix.filtering import expectation_maximization

        if mix.shape[0] > 2:  # open-unmix inverts 1x1 and 2x2 covariances: filter each channel alone
            return torch.cat([self._filter(mix[c:c + 1], specs[:, c:c + 1]) for c in range(mix.shape[0])], 1)
        x = torch.view_as_real(mix.permute(2, 1, 0))                       # (T, F, C, 2)
        y = torch.view_as_real(specs.permute(3, 2, 1, 0)).transpose(-1, -2)  # (T, F, C, 2, J)
        scale = max(1.0, float(mix.abs().max()) / 10.0)                     # as openunmix.filtering.wiener
        y, _, _ = expectation_maximization(y.contiguous() / scale, x.contiguous() / scale, self.iterations)
        return torch.view_as_complex(y.permute(4, 2, 1, 0, 3).contiguous()) * scale

    def __call__(self, mixture, rate, sources: dict | None = None) -> dict[str, np.ndarray]:
        sources = sources if sources is not None else self.sources
        if not sources:
            raise FlowsepError("the oracle Wiener filter needs the true stems: pass sources={stem: audio}")
        mix = as_channels_first(mixture, "mixture").double()
        n_fft = max(16, 2 * round(self.n_fft * rate / 44100 / 2))
        hop = n_fft // 4
        names = list(sources)
        stems = [as_channels_first(sources[k], k).double() for k in names]
        for k, s in zip(names, stems):
            if s.shape != mix.shape:
                raise FlowsepError(f"stem {k!r} has shape {tuple(s.shape)} but the mixture {tuple(mix.shape)}; "
                                   "give the stems of this mixture")
        x = stft(mix, n_fft, hop)
        y = self._filter(x, torch.stack([stft(s, n_fft, hop) for s in stems]))
        targets = self.targets or tuple(names)
        missing = [t for t in targets if t not in names]
        if missing:
            raise FlowsepError(f"no stem {missing[0]!r} among the sources ({', '.join(names)})")
        return {t: istft(y[names.index(t)], n_fft, hop, mix.shape[-1]).float().numpy() for t in targets}
