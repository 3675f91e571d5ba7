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


def downmix(audio: np.ndarray, rate: int, new_rate: int, channel_axis: int = 0) -> np.ndarray:
    """Average the channels of ``audio`` (along ``channel_axis``; 1-D audio is mono already) and resample
    it to ``new_rate``: -> (samples,)."""
    t = torch.from_numpy(np.ascontiguousarray(audio))
    if t.dim() == 2:
        t = t.mean(dim=channel_axis)
    return resample(t, rate, new_rate).numpy()


def resample(wave: torch.Tensor, orig_rate: int, new_rate: int) -> torch.Tensor:
    """Band-limited resampling along the last axis (torchaudio.functional.resample)."""
    orig_rate, new_rate = int(orig_rate), int(new_rate)
    if orig_rate <= 0 or new_rate <= 0:
        raise FlowsepError(f"sample rates must be positive, got {orig_rate} -> {new_rate}")
    if orig_rate == new_rate:
        return wave
    g = math.gcd(orig_rate, new_rate)
    return AF.resample(wave, orig_rate // g, new_rate // g)


def resample_reach(orig_rate: int, new_rate: int) -> int:
    """Samples at ``orig_rate`` on either side of a stretch that :func:`resample` reads to compute it.

    The reach of torchaudio's windowed-sinc kernel (6 zero crossings, roll-off 0.99, its defaults) in
    samples at the original rate, doubled to be safe. Resampling samples ``a..b`` (block-aligned to
    ``orig_rate // gcd`` so that the kernel's phases match) with this many more on either side gives the
    samples of resampling the whole signal.
    """
    g = math.gcd(int(orig_rate), int(new_rate))
    orig, new = orig_rate // g, new_rate // g
    return 2 * (orig + math.ceil(6 * orig / (0.99 * min(orig, new))))


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


def oracle_fft_size(n_fft_44k: int, rate: int) -> int:
    """An STFT size of ``n_fft_44k`` samples at 44.1 kHz scaled to ``rate`` (even, at least 16)."""
    return max(16, 2 * round(n_fft_44k * rate / 44100 / 2))


def fit_length(w: torch.Tensor, n: int) -> torch.Tensor:
    """Cut or zero-pad the last dimension of ``w`` to ``n`` samples."""
    if w.shape[-1] >= n:
        return w[..., :n]
    return torch.nn.functional.pad(w, (0, n - w.shape[-1]))


# ---- segments and overlap-add ----------------------------------------------------------------------
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


def _crossfade_weights(length: int, starts: list[int], frames: int, ramp: int | None = None) -> torch.Tensor:
    """(n_segments, length) weights: linear ramps over each overlap, 1 elsewhere, 0 on padding.

    ramp: the ramps' length in frames or samples (None: the whole overlap with each neighbour).
    """
    n = len(starts)
    w = torch.ones(n, length)
    for i in range(n):
        end = starts[i] + length
        if end > frames:  # padding of a single short segment
            w[i, frames - starts[i]:] = 0
        if i + 1 < n:
            ov = end - starts[i + 1] if ramp is None else ramp
            if ov > 0:
                w[i, length - ov:] *= torch.linspace(1, 0, ov + 2)[1:-1]
        if i > 0:
            ov = starts[i - 1] + length - starts[i] if ramp is None else ramp
            if ov > 0:
                w[i, :ov] *= torch.linspace(0, 1, ov + 2)[1:-1]
    return w


class CrossFade:
    """Overlap-add: cross-fades overlapping segments into one whole, a segment (or a part of one) at a time.

    The segments of spectrograms (InstGlow's separation, in frames) and of waveforms (the supervised
    systems, in samples) are put back together here. lead: the leading shape of a whole, e.g. (items,
    bins); segments are (*lead, length) and start at ``starts`` along the last axis, which has ``frames``
    entries. ``ramp``: the cross-fades' length (None: each whole overlap). ``add(i, seg, index)`` adds
    segment ``i`` (or ``seg`` into ``whole[index]``); ``result()`` is the whole (*lead, frames), the
    weighted average of the segments that cover each position.
    """

    def __init__(self, lead: tuple, starts: list[int], length: int, frames: int,
                 device=None, dtype=torch.float32, ramp: int | None = None):
        self.starts, self.length, self.frames = starts, length, frames
        self.weights = _crossfade_weights(length, starts, frames, ramp).to(device, dtype)
        span = max(frames, starts[-1] + length)  # segments end at the last frame, or pad a short clip
        self.sum = torch.zeros(*lead, span, device=device, dtype=dtype)
        den = torch.zeros(span, device=device, dtype=dtype)
        for i, s in enumerate(starts):
            den[s:s + length] += self.weights[i]
        self.den = den[:frames].clamp_min(1e-12)

    def add(self, i: int, seg: torch.Tensor, index=()) -> None:
        s = self.starts[i]
        self.sum[index][..., s:s + self.length] += seg * self.weights[i]

    def result(self) -> torch.Tensor:
        """The whole (*lead, frames); divides in place, so call it once, after the last ``add``."""
        return self.sum[..., :self.frames].div_(self.den)


def overlap_add(segments: torch.Tensor, starts: list[int], frames: int) -> torch.Tensor:
    """Cross-fade segment spectrograms back into one: (n_seg, ..., length) -> (..., frames)."""
    fade = CrossFade(tuple(segments.shape[1:-1]), starts, segments.shape[-1], frames, segments.device,
                     segments.dtype)
    for i, seg in enumerate(segments):
        fade.add(i, seg)
    return fade.result()
