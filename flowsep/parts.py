"""A song cut into parts for a search, and the parts' estimates put back together (the shape of demucs' apply_model).

Chapter: "Likelihood separation" (long inputs in bounded memory).

The priors see *items*: the mid (L+R)/2 and side (L-R)/2 of a stereo song, or its channels, at the
priors' rate. A long song is cut into equal overlapping segments (``segment_seconds``); every segment of
every item is a *part*, and every part is optimised on its own terms (see :mod:`flowsep.search`), so the
parts can go through the priors in chunks, each chunk searched to the end before the next starts, with
the same result as all parts at once (up to float rounding). The chunk size is a matter of memory only:
it is planned before the search starts, from the memory that is free (or ``max_memory``). The estimates of
the parts are cross-faded back into one spectrogram per source (:class:`flowsep.spectral.CrossFade`).
Nothing here depends on which search runs.
"""
from __future__ import annotations

import dataclasses
import math
from dataclasses import dataclass

import torch

from .errors import FlowsepError
from .frozen import FrozenPriors
from .memory import available_bytes, format_size
from .progress import bar as progress_bar
from .search import KL_EPS, Search
from .spectral import CrossFade, n_frames, plan_segments, resample, stft_frames

STEREO_MODES = ("midside", "mid", "channels")
# the share of the available memory a separation plans to use when no ``max_memory`` is given
MEMORY_SHARE = 0.5
# on a CPU, more parts in one batch hardly run faster (4 parts: 4% less time per part than 1, measured in
# benchmarks/results/separation_memory_cpu_chunks.md), so a chunk stops growing here
CPU_CHUNK_BYTES = 2 * 2 ** 30


# ---- items: what the priors see ----------------------------------------------------------------------
def to_items(wave: torch.Tensor, rate: int, prior_rate: int, midside: bool) -> torch.Tensor:
    """(channels, samples) at ``rate`` -> the items at the priors' rate: mid and side, or the channels."""
    items = torch.stack([(wave[0] + wave[1]) / 2, (wave[0] - wave[1]) / 2]) if midside else wave
    return resample(items, rate, prior_rate)


def to_channels(items: torch.Tensor, midside: bool) -> torch.Tensor:
    """(..., items, samples) mid/side or channels -> (..., channels, samples)."""
    if midside:
        return torch.stack([items[..., 0, :] + items[..., 1, :], items[..., 0, :] - items[..., 1, :]], dim=-2)
    return items


# ---- the plan: segments, parts, chunks ---------------------------------------------------------------
@dataclass(frozen=True)
class Plan:
    """How one song goes through the priors.

    midside: the items are mid and side; items: how many (2, or the channels); searched: how many of them
    go through the priors (1 for "mid": the side is shared in mid's ratios); length: frames per segment;
    starts: each segment's first frame; chunks: lists of part indices, where part p is
    ``parts[p] = (segment, item)``, segment-major; song_bytes, part_bytes: the memory the chunks were
    planned from (0 before :func:`plan_chunks`).
    """

    midside: bool
    items: int
    searched: int
    length: int
    starts: list
    chunks: list
    song_bytes: int = 0
    part_bytes: int = 0

    @property
    def parts(self) -> list[tuple[int, int]]:
        return [(s, i) for s in range(len(self.starts)) for i in range(self.searched)]


def segment(channels: int, samples: int, rate: int, priors: FrozenPriors, stereo: str, segment_seconds: float,
            overlap: float) -> Plan:
    """The items and segments of a (channels, samples) song at ``rate``, all parts in one chunk."""
    c = priors.config
    midside = stereo in ("midside", "mid") and channels == 2
    items = 2 if midside else channels
    fps = c.sample_rate / c.hop
    frames = n_frames(math.ceil(samples * c.sample_rate / rate) if rate != c.sample_rate else samples, c.hop)
    length, starts = plan_segments(frames, round(segment_seconds * fps), round(overlap * fps), priors.frame_multiple)
    searched = 1 if midside and stereo == "mid" else items
    return Plan(midside, items, searched, length, starts, [list(range(len(starts) * searched))])


def song_bytes(priors: FrozenPriors, plan: Plan, channels: int, samples: int, rate: int, snapshots: int = 0,
               rendering: int = 0) -> int:
    """Memory the whole-song arrays take: the items, the estimates and ``snapshots`` copies of them, the
    stems, and ``rendering`` bytes for the resynthesis (:func:`flowsep.render.block_bytes`)."""
    c, sources = priors.config, len(priors.names)
    n_p = math.ceil(samples * c.sample_rate / rate)
    frames = max(n_frames(n_p, c.hop), plan.length)
    estimates = sources * (1 + snapshots) * plan.items * c.bins * frames * 4
    stems = sources * channels * samples * 4
    return plan.items * n_p * 4 + estimates + stems + rendering


def plan_chunks(plan: Plan, song: int, one: int, device: torch.device, max_memory: int | None, seconds: float) -> Plan:
    """``plan`` with its parts in chunks that fit the memory: ``song`` bytes for the whole song and ``one``
    per part (a part is ``seconds`` long); one-line error if not even one part fits."""
    free = available_bytes(device)
    limit = max_memory if max_memory is not None else int(0.9 * free)
    if song + one > limit:
        fits = max(0.0, (limit - song) / one * seconds)
        where = ("--max-memory" if max_memory is not None else
                 "the free GPU memory" if device.type == "cuda" else "the available memory")
        advice = (f"use shorter segments (--segment-seconds {max(1, int(fits))})" if fits >= 1 else
                  "separate a shorter excerpt")
        raise FlowsepError(
            f"separating needs about {format_size(song + one)} ({format_size(one)} for one "
            f"{seconds:.0f}-s segment of one channel, {format_size(song)} for the whole song) but "
            f"{where} allows {format_size(limit)}; {advice}, or another device")
    if max_memory is not None:
        budget = max_memory
    else:
        budget = MEMORY_SHARE * free
        if device.type == "cpu":
            budget = min(budget, song + CPU_CHUNK_BYTES)
    n = len(plan.parts)
    per_chunk = max(1, min(n, int((budget - song) // one)))
    return dataclasses.replace(plan, chunks=[list(range(k, min(n, k + per_chunk))) for k in range(0, n, per_chunk)],
                               song_bytes=song, part_bytes=one)


# ---- the search over every chunk, and the estimates put back together --------------------------------
@dataclass
class Estimates:
    """What the search of a whole song found: magnitudes {name: (items, bins, frames)}, the objective
    after 0..iterations steps (mean over parts), snapshots {iteration: {name: (items, bins, frames) array}}."""

    magnitudes: dict
    trace: list
    snapshots: dict


def search_song(search: Search, priors: FrozenPriors, items: torch.Tensor, plan: Plan, snapshot_at=(),
                progress: bool = True) -> Estimates:
    """Run ``search`` over every chunk of ``plan`` and cross-fade the parts back together.

    items: (items, samples) at the priors' rate (:func:`to_items`). Snapshots: iterations at which to keep
    the estimates too.
    """
    c, names, parts, starts, length = priors.config, priors.names, plan.parts, plan.starts, plan.length
    frames = n_frames(items.shape[-1], c.hop)

    def fades():
        return {n: CrossFade((plan.items, c.bins), starts, length, frames, priors.device) for n in names}

    found, snaps = fades(), {it: fades() for it in snapshot_at}
    trace = torch.zeros(search.iterations + 1, dtype=torch.float64)
    song_bar = progress_bar(total=len(parts), show=progress and len(plan.chunks) > 1, desc="song", unit="part",
                            leave=False)
    for k, chunk in enumerate(plan.chunks):
        mag, f0 = _chunk_magnitudes(items, plan, chunk, c.n_fft, c.hop, frames)
        target = _cut(mag, f0, plan, chunk)                                          # (P, bins, length)
        segs = torch.tensor([starts[parts[p][0]] for p in chunk], device=priors.device)
        valid = (torch.arange(length, device=priors.device)[None] + segs[:, None] < frames).float()

        def on_step(it, per_part, est, chunk=chunk):
            trace[it] += float(per_part.double().sum())
            if it in snaps:
                _add(snaps[it], names, plan, chunk, [x.detach() for x in est])

        desc = "separating" if len(plan.chunks) == 1 else f"separating {k + 1}/{len(plan.chunks)}"
        est = search(priors, target, valid, chunk, on_step,
                     lambda r, desc=desc: progress_bar(r, show=progress, desc=desc, unit="it", leave=False))
        _add(found, names, plan, chunk, est)
        if plan.searched < plan.items:  # "mid": the side is shared in the ratios found for mid
            total = torch.stack(est).sum(0) + KL_EPS
            side = _cut(mag, f0, plan, chunk, item=1)
            _add(found, names, plan, chunk, [x / total * side for x in est], item=1)
        song_bar.update(len(chunk))
    song_bar.close()
    return Estimates({n: f.result() for n, f in found.items()}, (trace / len(parts)).tolist(),
                     {it: {n: f.result().cpu().numpy() for n, f in fs.items()} for it, fs in snaps.items()})


def _chunk_magnitudes(items, plan: Plan, chunk: list, n_fft: int, hop: int, frames: int):
    """The items' magnitudes over the frames of a chunk's segments, zero past the song's end: ((items, bins,
    T), first frame)."""
    parts = plan.parts
    f0, f1 = plan.starts[parts[chunk[0]][0]], plan.starts[parts[chunk[-1]][0]] + plan.length
    mag = stft_frames(items, n_fft, hop, f0, min(f1, frames)).abs()
    return torch.nn.functional.pad(mag, (0, f1 - min(f1, frames))), f0


def _cut(mag: torch.Tensor, f0: int, plan: Plan, chunk: list, item: int | None = None) -> torch.Tensor:
    """Each part of the chunk cut from ``mag`` (the chunk's magnitudes from frame f0): (P, bins, length).
    item: take that item instead of each part's own (the side, for "mid")."""
    parts = plan.parts
    return torch.stack([mag[parts[p][1] if item is None else item, :, plan.starts[parts[p][0]] - f0:]
                        [..., :plan.length] for p in chunk])


def _add(fades: dict, names: list, plan: Plan, chunk: list, est: list, item: int | None = None) -> None:
    """Add each source's estimate of each part of the chunk ((P, bins, length) per source) into its
    cross-fade, at the part's segment and item (or at ``item``)."""
    parts = plan.parts
    for n, x in zip(names, est):
        for p, x_p in zip(chunk, x):
            segment_, own = parts[p]
            fades[n].add(segment_, x_p, own if item is None else item)
