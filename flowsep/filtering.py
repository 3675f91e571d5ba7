"""Filters that turn magnitude estimates into complex source images adding up to the mixture.

Chapter: "Likelihood separation" (the post-filter) and "Evaluation" (the oracles, Open-Unmix).

* :func:`ratio_masks`: each source's share v_j / sum_k v_k of every time-frequency bin, applied to the
  mixture's STFT (InstGlow's ``post="mask"``; with |S_j|^2 of the true stems, the oracle IRM);
* :func:`multichannel_wiener`: the multichannel Wiener filter of open-unmix
  (:func:`openunmix.filtering.wiener`) in windows of frames: InstGlow's default post-filter and
  Open-Unmix's own;
* :func:`wiener_from_images`: the same filter's EM from complex source images (the oracle MWF, built from
  the true stems' STFTs).
"""
from __future__ import annotations

import torch
from openunmix.filtering import expectation_maximization, wiener

WIENER_WINDOW = 300  # frames per multichannel Wiener call, as in open-unmix


def ratio_masks(v: torch.Tensor, eps: float = 0.0) -> torch.Tensor:
    """Ratio masks v_j / (sum_k v_k + eps) along the first dimension: (sources, ...) -> (sources, ...).

    v: non-negative (magnitudes, or powers for the IRM2); where every v_j is 0 a positive ``eps`` keeps
    the masks finite (they are then 0).
    """
    return v / (v.sum(dim=0, keepdim=True) + eps)


def multichannel_wiener(v: torch.Tensor, mix: torch.Tensor, iterations: int = 1,
                        window: int = WIENER_WINDOW) -> torch.Tensor:
    """Multichannel Wiener filter (open-unmix's EM implementation) in windows of ``window`` frames.

    v: (sources, channels, bins, frames) magnitude estimates; mix: (channels, bins, frames) complex
    -> (sources, channels, bins, frames) complex source images that add up to ``mix`` (up to the
    filter's regularisation). More than two channels are filtered one by one. Works in float64 inside
    each window: the filter inverts 2x2 covariances regularised by 1e-10, and in float32 the stems of
    the test clip moved by up to 1% of their peak; the memory stays bounded by the window.
    """
    if mix.shape[0] > 2:  # open-unmix inverts 1x1 and 2x2 covariances only: filter each channel alone
        return torch.cat([multichannel_wiener(v[:, c:c + 1], mix[c:c + 1], iterations, window)
                          for c in range(mix.shape[0])], dim=1)
    frames = mix.shape[-1]
    out = torch.zeros((v.shape[0], *mix.shape), dtype=mix.dtype, device=mix.device)
    for t0 in range(0, frames, window):
        sl = slice(t0, min(frames, t0 + window))
        m = torch.view_as_real(mix[..., sl].to(torch.complex128).permute(2, 1, 0))   # (T, F, C, 2)
        tgt = v[..., sl].to(torch.float64).permute(3, 2, 1, 0)                       # (T, F, C, J)
        y = wiener(tgt, m, iterations=iterations)                                    # (T, F, C, 2, J)
        out[..., sl] = torch.view_as_complex(y.permute(4, 2, 1, 0, 3).contiguous()).to(mix.dtype)
    return out


def wiener_from_images(images: torch.Tensor, mix: torch.Tensor, iterations: int = 1) -> torch.Tensor:
    """The multichannel Wiener filter built from complex source images: the oracle MWF.

    images: (sources, channels, bins, frames) complex (e.g. the true stems' STFTs); mix: (channels, bins,
    frames) complex -> (sources, channels, bins, frames) complex. Each source's power spectral density and
    spatial covariance come from its image; ``iterations`` EM iterations (1: the SiSEC oracle). More than
    two channels are filtered one by one.
    """
    if mix.shape[0] > 2:  # open-unmix inverts 1x1 and 2x2 covariances: filter each channel alone
        return torch.cat([wiener_from_images(images[:, c:c + 1], mix[c:c + 1], iterations)
                          for c in range(mix.shape[0])], 1)
    x = torch.view_as_real(mix.permute(2, 1, 0))                          # (T, F, C, 2)
    y = torch.view_as_real(images.permute(3, 2, 1, 0)).transpose(-1, -2)  # (T, F, C, 2, J)
    scale = max(1.0, float(mix.abs().max()) / 10.0)                        # as openunmix.filtering.wiener
    y, _, _ = expectation_maximization(y.contiguous() / scale, x.contiguous() / scale, iterations)
    return torch.view_as_complex(y.permute(4, 2, 1, 0, 3).contiguous()) * scale
