"""Wave-U-Net (Stoller, Ewert and Dixon, ISMIR 2018): a U-Net on the raw waveform.

Chapter: "Evaluation" (the comparison systems).

No maintained package ships Wave-U-Net, so this is a compact implementation of the paper's design:

* ``layers`` downsampling blocks, each a 1-D convolution (kernel ``down_kernel``, 15 in the paper) with
  ``features * (i + 1)`` output channels and a leaky ReLU, whose output is kept for the skip connection,
  followed by decimation (every second sample is dropped);
* a bottleneck convolution;
* ``layers`` upsampling blocks, each a linear interpolation to twice the length (the paper's "linear
  interpolation" upsampling, no transposed convolutions and so no checkerboard artefacts), concatenation
  with the skip of the same level, and a 1-D convolution (kernel ``up_kernel``, 5 in the paper);
* a final concatenation with the input mixture and a 1x1 convolution per source.

Differences from the paper, all for simplicity: convolutions are zero-padded ("same") instead of
"valid" with extra input context, the input is zero-padded to a multiple of ``2**layers`` samples and
cropped back, and the output layer is linear (the paper uses tanh, or a "difference" output for the
last source); the paper's M4 configuration is 12 layers of 24 extra features.
"""
from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn


class WaveUNet(nn.Module):
    """Waveform U-Net: mixture (batch, channels, samples) -> sources (batch, n_sources, channels, samples).

    n_sources: number of outputs; channels: audio channels in and out (1 mono, 2 stereo);
    layers: downsampling (and upsampling) blocks; features: channels added per level (F_c in the paper).
    """

    def __init__(self, n_sources: int = 4, channels: int = 2, layers: int = 12, features: int = 24,
                 down_kernel: int = 15, up_kernel: int = 5):
        super().__init__()
        self.n_sources, self.channels, self.layers = int(n_sources), int(channels), int(layers)
        widths = [features * (i + 1) for i in range(layers + 1)]
        self.down = nn.ModuleList()
        c_in = channels
        for i in range(layers):
            self.down.append(nn.Conv1d(c_in, widths[i], down_kernel, padding=down_kernel // 2))
            c_in = widths[i]
        self.bottleneck = nn.Conv1d(c_in, widths[layers], down_kernel, padding=down_kernel // 2)
        self.up = nn.ModuleList()
        c_in = widths[layers]
        for i in reversed(range(layers)):
            self.up.append(nn.Conv1d(c_in + widths[i], widths[i], up_kernel, padding=up_kernel // 2))
            c_in = widths[i]
        self.out = nn.Conv1d(c_in + channels, n_sources * channels, 1)

    @property
    def multiple(self) -> int:
        """Input lengths are padded to a multiple of this many samples."""
        return 2 ** self.layers

    def forward(self, mix: torch.Tensor) -> torch.Tensor:
        """mix: (batch, channels, samples) -> (batch, n_sources, channels, samples)."""
        batch, channels, length = mix.shape
        pad = (-length) % self.multiple
        x = F.pad(mix, (0, pad))
        inp = x
        skips = []
        for conv in self.down:
            x = F.leaky_relu(conv(x), 0.2)
            skips.append(x)
            x = x[..., ::2]                                   # decimation
        x = F.leaky_relu(self.bottleneck(x), 0.2)
        for conv in self.up:
            skip = skips.pop()
            x = F.interpolate(x, size=skip.shape[-1], mode="linear", align_corners=True)
            x = F.leaky_relu(conv(torch.cat([x, skip], dim=1)), 0.2)
        y = self.out(torch.cat([x, inp], dim=1))
        return y[..., :length].reshape(batch, self.n_sources, channels, length)
