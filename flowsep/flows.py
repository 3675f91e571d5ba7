"""Invertible layers of the Glow-TTS-style decoder that InstGlow uses as a source prior.

Chapter: "Normalizing flows from scratch" and "Glow over spectrograms".

Every layer maps x -> (y, logdet) in ``forward`` and y -> x in ``inverse``; ``logdet`` has shape
(batch,) and is log|det dy/dx| for each item. Tensors are (batch, channels, time).

A flow can be conditioned (``cond_channels > 0``): ``forward(x, cond)`` and ``inverse(z, cond)`` take a
global condition of shape (batch, cond_channels, 1) that the coupling networks see (a noise-conditioned
prior passes log sigma, the noise level of its input); for a fixed condition the map stays invertible.
"""
from __future__ import annotations

import math

import torch
from torch import nn
from torch.nn.utils.parametrizations import weight_norm


def squeeze(x: torch.Tensor, factor: int = 2) -> torch.Tensor:
    """Fold time into channels: (B, C, T) -> (B, C*factor, T//factor).

    Output channel ``k*C + c`` holds input channel ``c`` at times ``t*factor + k``.
    """
    b, c, t = x.shape
    return x.reshape(b, c, t // factor, factor).permute(0, 3, 1, 2).reshape(b, c * factor, t // factor)


def unsqueeze(x: torch.Tensor, factor: int = 2) -> torch.Tensor:
    """Inverse of :func:`squeeze`: (B, C*factor, T) -> (B, C, T*factor)."""
    b, cf, t = x.shape
    return x.reshape(b, factor, cf // factor, t).permute(0, 2, 3, 1).reshape(b, cf // factor, t * factor)


class ActNorm(nn.Module):
    """Per-channel affine map y = loc + exp(log_scale) * x with data-dependent initialisation.

    The first forward pass in training mode sets loc and log_scale so that the batch leaves
    the layer with zero mean and unit variance per channel (Kingma & Dhariwal, 2018).
    """

    def __init__(self, channels: int):
        super().__init__()
        self.loc = nn.Parameter(torch.zeros(1, channels, 1))
        self.log_scale = nn.Parameter(torch.zeros(1, channels, 1))
        self.register_buffer("initialized", torch.tensor(False))

    @torch.no_grad()
    def initialize(self, x: torch.Tensor) -> None:
        mean = x.mean(dim=(0, 2), keepdim=True)
        std = x.std(dim=(0, 2), keepdim=True, unbiased=False).clamp_min(1e-6)
        self.loc.copy_(-mean / std)
        self.log_scale.copy_(-torch.log(std))
        self.initialized.fill_(True)

    def forward(self, x):
        if self.training and not bool(self.initialized):
            self.initialize(x)
        y = self.loc + torch.exp(self.log_scale) * x
        logdet = self.log_scale.sum() * x.shape[2]
        return y, logdet.expand(x.shape[0])

    def inverse(self, y):
        return (y - self.loc) * torch.exp(-self.log_scale)


class GroupedInvConv(nn.Module):
    """Invertible 1x1 convolution applied to groups of ``n_split`` channels.

    The channels are split into the two coupling halves; a group takes ``n_split//2``
    neighbouring channels from each half, so that the mixing moves information between the half
    that conditions the next coupling and the half it transforms. The same ``n_split x n_split``
    matrix W (orthogonal at start) mixes every group at every time step, so
    log|det| = (C / n_split) * T * log|det W|.
    """

    def __init__(self, channels: int, n_split: int = 4):
        super().__init__()
        if n_split % 2 or channels % n_split:
            raise ValueError(f"channels ({channels}) must be a multiple of an even n_split ({n_split})")
        self.channels, self.n_split = channels, n_split
        w = torch.linalg.qr(torch.randn(n_split, n_split))[0]
        if torch.det(w) < 0:
            w[:, 0] = -w[:, 0]
        self.weight = nn.Parameter(w)
        # W^-1, kept by :meth:`freeze` for a flow whose weights no longer change (a buffer, so that stacked
        # priors each keep their own; not saved in checkpoints)
        self.register_buffer("frozen_inverse", None, persistent=False)

    def _groups(self, x):
        b, c, t = x.shape
        n = self.n_split
        # channel index = half * C/2 + g * n/2 + k  ->  (B, n = (half, k), C/n, T)
        return x.reshape(b, 2, c // n, n // 2, t).permute(0, 1, 3, 2, 4).reshape(b, n, c // n, t)

    def _ungroups(self, x):
        b, n, g, t = x.shape
        return x.reshape(b, 2, n // 2, g, t).permute(0, 1, 3, 2, 4).reshape(b, n * g, t)

    def _w(self):
        # determinants and inverses in at least float32, also under mixed precision
        return self.weight if self.weight.dtype == torch.float64 else self.weight.float()

    def forward(self, x):
        with torch.autocast(x.device.type, enabled=False):  # the invertible parts stay in full precision
            y = self._ungroups(torch.einsum("ij,bjgt->bigt", self.weight.to(x.dtype), self._groups(x)))
        logdet = torch.linalg.slogdet(self._w())[1] * (self.channels // self.n_split) * x.shape[2]
        return y, logdet.to(x.dtype).expand(x.shape[0])

    @torch.no_grad()
    def freeze(self) -> None:
        """Compute W^-1 once, for a flow whose weights will not change (a frozen prior in a search)."""
        self.frozen_inverse = torch.linalg.inv(self._w())

    def inverse(self, y):
        w_inv = (self.frozen_inverse if self.frozen_inverse is not None else torch.linalg.inv(self._w())).to(y.dtype)
        with torch.autocast(y.device.type, enabled=False):
            return self._ungroups(torch.einsum("ij,bjgt->bigt", w_inv, self._groups(y)))


class WaveNet(nn.Module):
    """Non-causal WaveNet stack: dilated convolutions, gated tanh*sigmoid units, residual and skip paths.

    (B, hidden, T) -> (B, hidden, T), the sum of every layer's skip output.
    """

    def __init__(self, hidden: int, kernel: int, dilation_rate: int, n_layers: int, dropout: float):
        super().__init__()
        if kernel % 2 == 0:
            raise ValueError(f"kernel must be odd to keep the length, got {kernel}")
        self.hidden = hidden
        self.gates = nn.ModuleList()
        self.res_skip = nn.ModuleList()
        for i in range(n_layers):
            d = dilation_rate ** i
            self.gates.append(weight_norm(nn.Conv1d(hidden, 2 * hidden, kernel, dilation=d,
                                                    padding=d * (kernel - 1) // 2)))
            out = 2 * hidden if i < n_layers - 1 else hidden
            self.res_skip.append(weight_norm(nn.Conv1d(hidden, out, 1)))
        self.drop = nn.Dropout(dropout)

    def forward(self, x):
        h = self.hidden
        skip = 0
        for i, (gate, rs) in enumerate(zip(self.gates, self.res_skip)):
            filt, gate_in = gate(x).split(h, dim=1)   # split, not two slices: one cheap backward
            r = rs(self.drop(torch.tanh(filt) * torch.sigmoid(gate_in)))
            if i < len(self.gates) - 1:
                res, sk = r.split(h, dim=1)
                x = x + res
                skip = skip + sk
            else:
                skip = skip + r
        return skip


class AffineCoupling(nn.Module):
    """Affine coupling: the first half of the channels sets a shift and log-scale for the second.

    z = [x_a, m(x_a, c) + exp(s(x_a, c)) * x_b]; log|det| = sum of s. The output convolution starts at
    zero, so a new coupling is the identity. A condition c (B, cond_channels, 1), if the coupling has
    one, is projected to the hidden channels and added to the network's input at every time step.
    """

    def __init__(self, channels: int, hidden: int, kernel: int, dilation_rate: int, n_layers: int,
                 dropout: float, cond_channels: int = 0):
        super().__init__()
        self.half = channels // 2
        self.start = weight_norm(nn.Conv1d(self.half, hidden, 1))
        self.cond = nn.Conv1d(cond_channels, hidden, 1) if cond_channels else None
        self.net = WaveNet(hidden, kernel, dilation_rate, n_layers, dropout)
        self.end = nn.Conv1d(hidden, 2 * (channels - self.half), 1)
        nn.init.zeros_(self.end.weight)
        nn.init.zeros_(self.end.bias)

    def _shift_logscale(self, xa, cond=None):
        h = self.start(xa)
        if self.cond is not None:
            if cond is None:
                raise ValueError("this coupling is conditioned: pass its condition (batch, cond_channels, 1)")
            h = h + self.cond(cond.to(h.dtype))
        # under autocast the network runs in half precision; the affine map itself does not
        m, logs = self.end(self.net(h)).to(xa.dtype).chunk(2, dim=1)
        return m, logs

    def forward(self, x, cond=None):
        xa, xb = x.split([self.half, x.shape[1] - self.half], dim=1)
        m, logs = self._shift_logscale(xa, cond)
        zb = m + torch.exp(logs) * xb
        return torch.cat([xa, zb], 1), logs.sum(dim=(1, 2))

    def inverse(self, z, cond=None):
        za, zb = z.split([self.half, z.shape[1] - self.half], dim=1)
        m, logs = self._shift_logscale(za, cond)
        return torch.cat([za, (zb - m) * torch.exp(-logs)], 1)


class FlowStep(nn.Sequential):
    """One block of the decoder: ActNorm -> grouped invertible 1x1 conv -> affine coupling."""

    def __init__(self, channels, hidden, kernel, dilation_rate, n_layers, dropout, n_split, cond_channels=0):
        super().__init__(ActNorm(channels), GroupedInvConv(channels, n_split),
                         AffineCoupling(channels, hidden, kernel, dilation_rate, n_layers, dropout, cond_channels))

    def forward(self, x, cond=None):
        total = 0
        for layer in self:
            x, ld = layer(x, cond) if isinstance(layer, AffineCoupling) else layer(x)
            total = total + ld
        return x, total

    def inverse(self, z, cond=None):
        for layer in reversed(self):
            z = layer.inverse(z, cond) if isinstance(layer, AffineCoupling) else layer.inverse(z)
        return z


class Glow(nn.Module):
    """Single-scale Glow: squeeze time by ``n_sqz``, then ``n_blocks`` flow steps.

    (B, C, T) -> z of shape (B, C*n_sqz, T//n_sqz) and log|det dz/dx| of shape (B,); with
    ``cond_channels > 0``, every coupling also sees a condition of shape (B, cond_channels, 1).
    """

    def __init__(self, channels, n_blocks, hidden, kernel, dilation_rate, n_layers, dropout, n_split, n_sqz,
                 cond_channels=0):
        super().__init__()
        self.n_sqz = n_sqz
        self.steps = nn.ModuleList(
            FlowStep(channels * n_sqz, hidden, kernel, dilation_rate, n_layers, dropout, n_split, cond_channels)
            for _ in range(n_blocks))

    def forward(self, x, cond=None):
        z = squeeze(x, self.n_sqz)
        logdet = torch.zeros(x.shape[0], device=x.device, dtype=x.dtype)
        for step in self.steps:
            z, ld = step(z, cond)
            logdet = logdet + ld
        return z, logdet

    def inverse(self, z, cond=None):
        for step in reversed(self.steps):
            z = step.inverse(z, cond)
        return unsqueeze(z, self.n_sqz)


def standard_normal_logpdf(z: torch.Tensor) -> torch.Tensor:
    """Sum over all but the batch axis of log N(z; 0, 1): (B, ...) -> (B,)."""
    return (-0.5 * (z.float() ** 2 + math.log(2 * math.pi))).flatten(1).sum(1)
