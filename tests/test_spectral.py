"""STFT round trips, resampling and channel handling."""
import numpy as np
import pytest
import torch

from flowsep import FlowsepError
from flowsep.spectral import as_channels_first, istft, magphase, n_frames, resample, stft, to_mono


@pytest.mark.parametrize("n_fft, hop", [(1024, 256), (512, 128), (128, 64)])
def test_stft_roundtrip(n_fft, hop):
    torch.manual_seed(0)
    x = torch.rand(2, 22050) * 2 - 1
    spec = stft(x, n_fft, hop)
    assert spec.shape == (2, n_fft // 2 + 1, n_frames(22050, hop))
    mag, phase = magphase(spec)
    y = istft(mag * phase, n_fft, hop, length=x.shape[-1])
    assert (y - x).abs().max() < 1e-5


def test_magnitude_of_a_sine_peaks_at_its_bin():
    sr, n_fft = 8000, 256
    t = torch.arange(sr) / sr
    mag = stft(torch.sin(2 * np.pi * 1000 * t), n_fft, 64).abs()
    assert mag[:, 10].argmax().item() == round(1000 * n_fft / sr)


def test_resample_keeps_a_tone_and_length():
    t = torch.arange(44100) / 44100
    y = resample(torch.sin(2 * np.pi * 440 * t), 44100, 22050)
    assert y.shape[-1] == 22050
    spec = torch.fft.rfft(y)
    assert abs(spec.abs().argmax().item() - 440) <= 1
    with pytest.raises(FlowsepError):
        resample(y, 0, 100)


def test_channels():
    a = np.zeros((1000, 2), np.float32)
    assert as_channels_first(a).shape == (2, 1000)
    assert as_channels_first(np.zeros(1000)).shape == (1, 1000)
    assert to_mono(torch.ones(2, 5) * torch.tensor([[1.], [3.]])).tolist() == [2.0] * 5
    with pytest.raises(FlowsepError, match="NaN"):
        as_channels_first(np.array([0.0, np.nan]))
    with pytest.raises(FlowsepError, match="shape"):
        as_channels_first(np.zeros((2, 2, 2)))
