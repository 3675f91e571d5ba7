"""Training examples: random chunks of one source (for a prior) or of all stems (for supervised systems).

Chapter: "Training the source priors".

Item ``i`` of a dataset is a pure function of (seed, i): which recording, where in it, the gain
and the dequantisation noise all come from ``numpy.random.default_rng([seed, i])``. A training run
that asks for items ``step * batch + k`` therefore sees the same examples whether or not it was
interrupted and resumed, with any number of DataLoader workers or DDP processes.
"""
from __future__ import annotations

import numpy as np
import torch
from torch.utils.data import DataLoader, Dataset, Sampler

from ..errors import FlowsepError


def chunk_levels(signal: np.ndarray, length: int, stride: int) -> tuple[np.ndarray, np.ndarray]:
    """RMS level (dBFS) of every chunk of ``length`` samples starting at multiples of ``stride``:
    (start positions (n,), levels (n,)), the quantity :class:`SourceChunks` compares with its silence threshold."""
    n = len(signal) - length
    if n < 0:
        return np.zeros(0, dtype=np.int64), np.zeros(0)
    starts = np.arange(0, n + 1, stride, dtype=np.int64)
    power = np.concatenate([[0.0], np.cumsum(np.asarray(signal, dtype=np.float64) ** 2)])
    rms = np.sqrt(np.maximum(power[starts + length] - power[starts], 0) / length)
    return starts, 20 * np.log10(rms + 1e-12)


def _active_starts(signal: np.ndarray, length: int, stride: int, silence_db: float) -> np.ndarray:
    """Start positions (multiples of ``stride``) whose chunk of ``length`` samples is louder than ``silence_db``."""
    starts, levels = chunk_levels(signal, length, stride)
    return starts[levels > silence_db]


class SourceChunks(Dataset):
    """Chunks of one instrument's mono recordings: item i -> float32 tensor (segment_samples,).

    Near-silent chunks (RMS below ``silence_db`` dBFS) are never drawn; each chunk gets a random gain in
    ``gain`` (a factor, uniform) and uniform dequantisation noise of ``dequantize`` (one 16-bit step).
    """

    def __init__(self, signals: list[np.ndarray], segment_samples: int, seed: int = 0,
                 silence_db: float = -50.0, gain: tuple[float, float] = (0.5, 1.0),
                 dequantize: float = 1.0 / 32768, length: int = 10 ** 12):
        self.signals = [np.ascontiguousarray(s, dtype=np.float32) for s in signals]
        self.segment, self.seed, self.gain, self.dequantize, self.length = (
            int(segment_samples), int(seed), gain, float(dequantize), int(length))
        stride = max(1, self.segment // 8)
        starts = [_active_starts(s, self.segment, stride, silence_db) for s in self.signals]
        self.index = np.concatenate([np.stack([np.full(len(st), k), st], 1) for k, st in enumerate(starts)]
                                    or [np.zeros((0, 2), np.int64)]).astype(np.int64)
        self.stride = stride
        if len(self.index) == 0:
            longest = max((len(s) for s in self.signals), default=0)
            raise FlowsepError(f"no training chunk of {self.segment} samples louder than {silence_db} dBFS "
                               f"(longest recording: {longest} samples); give longer or louder audio")

    def __len__(self) -> int:
        return self.length

    def __getitem__(self, i: int) -> torch.Tensor:
        rng = np.random.default_rng([self.seed, int(i)])
        k, start = self.index[rng.integers(len(self.index))]
        sig = self.signals[k]
        start = min(start + int(rng.integers(self.stride)), len(sig) - self.segment)
        x = sig[start:start + self.segment] * rng.uniform(*self.gain)
        if self.dequantize:
            x = x + (rng.random(self.segment, dtype=np.float32) - 0.5) * self.dequantize
        return torch.from_numpy(x.astype(np.float32))


class StemChunks(Dataset):
    """Aligned chunks of every stem of multitrack songs, for supervised training.

    tracks: list of arrays (n_stems, channels, samples). Item i -> (mixture (channels, S), stems
    (n_stems, channels, S)), the mixture being the sum of the (gain-scaled) stems. With
    ``remix=True`` each stem is taken from an independently drawn track and position (the usual
    augmentation of Open-Unmix and Demucs); otherwise all stems come from one place of one song.
    """

    def __init__(self, tracks: list[np.ndarray], segment_samples: int, seed: int = 0,
                 gain: tuple[float, float] = (0.5, 1.25), remix: bool = False, length: int = 10 ** 12):
        self.tracks = [np.ascontiguousarray(t, dtype=np.float32) for t in tracks]
        self.segment, self.seed, self.gain, self.remix, self.length = (
            int(segment_samples), int(seed), gain, bool(remix), int(length))
        if not self.tracks or min(t.shape[-1] for t in self.tracks) < self.segment:
            raise FlowsepError(f"every track must be longer than one training chunk ({self.segment} samples)")

    def __len__(self) -> int:
        return self.length

    def __getitem__(self, i: int):
        rng = np.random.default_rng([self.seed, int(i)])
        n_stems = self.tracks[0].shape[0]
        picks = rng.integers(len(self.tracks), size=n_stems if self.remix else 1)
        stems = []
        for j in range(n_stems):
            t = self.tracks[picks[j] if self.remix else picks[0]]
            if self.remix or j == 0:
                start = int(rng.integers(t.shape[-1] - self.segment + 1))
            stems.append(t[j, :, start:start + self.segment] * rng.uniform(*self.gain))
        stems = torch.from_numpy(np.stack(stems).astype(np.float32))
        return stems.sum(0), stems


class StepSampler(Sampler):
    """Indices ``first, first+1, ...`` for this process: global batch b of a run covers items
    [b*batch, (b+1)*batch); DDP rank r of w takes the r-th slice of each global batch."""

    def __init__(self, first_step: int, total_steps: int, batch: int, rank: int = 0, world: int = 1):
        self.first, self.total, self.batch, self.rank, self.world = first_step, total_steps, batch, rank, world
        self.per_rank = batch // world

    def __iter__(self):
        for step in range(self.first, self.total):
            base = step * self.batch + self.rank * self.per_rank
            yield from range(base, base + self.per_rank)

    def __len__(self) -> int:
        return max(0, self.total - self.first) * self.per_rank


def step_loader(dataset: Dataset, first_step: int, total_steps: int, batch: int, rank: int = 0,
                world: int = 1, workers: int = 0) -> DataLoader:
    """A DataLoader that yields the batches of steps ``first_step .. total_steps-1`` of a run."""
    if batch % world:
        raise FlowsepError(f"batch size {batch} must be divisible by the number of processes ({world})")
    return DataLoader(dataset, batch_size=batch // world,
                      sampler=StepSampler(first_step, total_steps, batch, rank, world),
                      num_workers=workers, persistent_workers=False, drop_last=False)
