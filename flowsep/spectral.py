"""Short-time Fourier transforms, magnitudes and phases, resampling and channel handling.

Chapter: "Glow over spectrograms". Every function works on torch tensors whose last axis
is time (samples for waveforms, frames for spectrograms); leading axes are batch/channel axes
and are kept as they are.
"""
from __future__ import annotations

import math

import numpy as np
import torch
import torchaudio.functional as AF

from .errors import FlowsepError


def _window(n_fft: int, device, dtype) -> torch.Tensor:
    return torch.hann_window(n_fft, periodic=True, device=device, dtype=dtype)


def stft(wave: torch.Tensor, n_fft: int, hop: int) -> torch.Tensor:
    """Complex STFT with a Hann window of ``n_fft`` samples, centred frames.

    wave: (..., samples) real -> (..., n_fft//2+1, 1 + samples//hop) complex.
    """
    wave = torch.as_tensor(wave)
    if not torch.is_floating_point(wave):
        wave = wave.float()
    lead = wave.shape[:-1]
    flat = wave.reshape(-1, wave.shape[-1])
    spec = torch.stft(flat, n_fft, hop_length=hop, win_length=n_fft,
                      window=_window(n_fft, flat.device, flat.dtype),
                      center=True, pad_mode="reflect" if flat.shape[-1] > n_fft // 2 else "constant",
                      return_complex=True)
    return spec.reshape(*lead, *spec.shape[-2:])


def frames_span(start: int, stop: int, n_fft: int, hop: int, samples: int) -> tuple[int, int]:
    """The samples [a, b) that frames start..stop-1 of a centred STFT need, with a a multiple of ``hop``.

    ``stft(wave[..., a:b])`` then holds those frames, identical to the frames of ``stft(wave)``:
    frame ``t`` of the whole signal is frame ``t - a // hop`` of the slice.
    """
    margin = -(-n_fft // hop) + 1
    return max(0, (start - margin) * hop), min(samples, (stop - 1) * hop + n_fft)


def stft_frames(wave: torch.Tensor, n_fft: int, hop: int, start: int, stop: int) -> torch.Tensor:
    """Frames start..stop-1 of ``stft(wave, n_fft, hop)``, computed from only the samples they need.

    wave: (..., samples) -> (..., n_fft//2+1, stop - start) complex. For long signals: the cost and the
    memory are those of the frames asked for, not of the whole signal.
    """
    a, b = frames_span(start, stop, n_fft, hop, wave.shape[-1])
    if wave.shape[-1] <= n_fft // 2:  # so short that the whole-signal STFT pads with zeros: use it
        return stft(wave, n_fft, hop)[..., start:stop]
    return stft(wave[..., a:b], n_fft, hop)[..., start - a // hop:stop - a // hop]


def istft(spec: torch.Tensor, n_fft: int, hop: int, length: int) -> torch.Tensor:
    """Inverse of :func:`stft`: (..., bins, frames) complex -> (..., length) real."""
    lead = spec.shape[:-2]
    flat = spec.reshape(-1, *spec.shape[-2:])
    real_dtype = flat.real.dtype if flat.is_complex() else flat.dtype
    wave = torch.istft(flat, n_fft, hop_length=hop, win_length=n_fft,
                       window=_window(n_fft, flat.device, real_dtype),
                       center=True, length=length)
    return wave.reshape(*lead, length)


def magphase(spec: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """Split a complex spectrogram into magnitude and unit-modulus phase."""
    mag = spec.abs()
    phase = torch.where(mag > 0, spec / mag.clamp_min(1e-30), torch.ones_like(spec))
    return mag, phase


def n_frames(samples: int, hop: int) -> int:
    """Number of centred STFT frames of a signal of ``samples`` samples."""
    return 1 + samples // hop


def to_mono(wave: torch.Tensor) -> torch.Tensor:
    """(channels, samples) -> (samples,) by averaging channels; (samples,) is returned as is."""
    return wave if wave.dim() == 1 else wave.mean(dim=0)


def resample(wave: torch.Tensor, orig_rate: int, new_rate: int) -> torch.Tensor:
    """Band-limited resampling along the last axis (torchaudio.functional.resample)."""
    orig_rate, new_rate = int(orig_rate), int(new_rate)
    if orig_rate <= 0 or new_rate <= 0:
        raise FlowsepError(f"sample rates must be positive, got {orig_rate} -> {new_rate}")
    if orig_rate == new_rate:
        return wave
    g = math.gcd(orig_rate, new_rate)
    return AF.resample(wave, orig_rate // g, new_rate // g)


def as_channels_first(audio, what: str = "audio") -> torch.Tensor:
    """Accept (samples,), (channels, samples) or a soundfile-style (samples, channels) array.

    Returns a float32 tensor of shape (channels, samples). Arrays with more rows than columns
    and at most 8 columns are taken to be (samples, channels), as soundfile returns them.
    """
    t = torch.as_tensor(np.asarray(audio) if not isinstance(audio, torch.Tensor) else audio)
    if t.dim() == 1:
        t = t[None]
    elif t.dim() == 2:
        if t.shape[0] > t.shape[1] and t.shape[1] <= 8:
            t = t.T
    else:
        raise FlowsepError(f"{what} must be 1-D (samples) or 2-D (channels, samples), got shape {tuple(t.shape)}")
    t = t.to(torch.float32).contiguous()
    if not torch.isfinite(t).all():
        raise FlowsepError(f"{what} contains NaN or Inf samples; clean the audio before using it")
    return t
