"""Likelihood separation: ``stems = Separator(priors)(mixture, rate)``, a facade over three layers.

Chapter: "Likelihood separation".

A separation *method* (:class:`Method`, one of :data:`METHODS`) is a search and the settings of its
output; the :class:`Separator` runs it on a mixture in three steps, one module each:

1. :mod:`flowsep.parts`: the song as items (mid and side, or channels) at the priors' rate, cut into
   segments; the parts (segment x item) go through the priors in chunks planned from the free memory, and
   their estimates are cross-faded back together;
2. :mod:`flowsep.search`: each chunk is separated by the method's search (:class:`~flowsep.search.LatentSearch`
   is the published one, chapter 5's loop) through the frozen priors (:mod:`flowsep.frozen`);
3. :mod:`flowsep.render`: the magnitude estimates take the mixture's phase and a post-filter makes them
   add up to the mixture at the input's own rate, block by block.

``"instglow"`` (the default) is the published algorithm, kept exactly: latents from z = 0, prior term off,
lr 0.01, 150 Adam steps. The other methods go beyond the paper;
benchmarks/results/separation_methods_*cpu.md compares them.
"""
from __future__ import annotations

import dataclasses
import math
import time
from dataclasses import dataclass

import numpy as np
import torch

from .device import resolve_device
from .errors import FlowsepError
from .frozen import FrozenPriors, check_priors
from .memory import parse_size
from .parts import STEREO_MODES, plan_chunks, search_song, segment, song_bytes, to_items
from .render import POSTS, SeparationResult, block_bytes
from .search import AnnealedSearch, LatentSearch, MaskSearch, Search, generalized_kl, noise_schedule, part_bytes
from .spectral import as_channels_first

__all__ = ["Method", "METHODS", "DEFAULT_METHOD", "Separator", "SeparationResult", "POSTS", "STEREO_MODES",
           "generalized_kl", "noise_schedule"]

SILENCE_PEAK = 1e-7  # a mixture whose peak is below this (-140 dBFS) has nothing to separate
SEARCHES = (LatentSearch, MaskSearch, AnnealedSearch)
RUN_OPTIONS = ("device", "max_memory", "progress", "snapshots", "unbatched", "stack_sources")


@dataclass(frozen=True)
class Method:
    """A separation method: its search and the settings of its output.

    search: a :class:`~flowsep.search.LatentSearch`, :class:`~flowsep.search.MaskSearch` or
    :class:`~flowsep.search.AnnealedSearch` with its settings. stereo: "midside" separates mid (L+R)/2
    and side (L-R)/2 as two batch items, "mid" separates mid only and gives the side to the sources in
    the ratios found for mid (half the work), "channels" each channel; the mid signal is the mono downmix
    the priors were trained on, and midside scored slightly higher than channels on the synthetic set
    (benchmarks/results/separation_synth_cpu.md). Inputs with other channel counts are always separated
    channel by channel. segment_seconds, overlap: long inputs are cut into equal overlapping segments.
    post: the post-filter (:data:`flowsep.render.POSTS`), wiener_iterations: the Wiener filter's.

    ``method.replace(iterations=7, stereo="mid")``: the method with settings changed (of the method or
    of its search); a setting its search does not take is a one-line error.
    """

    name: str
    search: Search
    stereo: str = "midside"
    segment_seconds: float = 60.0
    overlap: float = 1.0
    post: str = "wiener"
    wiener_iterations: int = 1
    summary: str = ""

    def __post_init__(self):
        if self.stereo not in STEREO_MODES:
            raise FlowsepError(f"unknown stereo mode {self.stereo!r}; use one of: {', '.join(STEREO_MODES)}")
        if self.post not in POSTS:
            raise FlowsepError(f"unknown post-filter {self.post!r}; use one of: {', '.join(POSTS)}")
        seg, lap = self.segment_seconds, self.overlap
        if not all(isinstance(v, (int, float)) and not isinstance(v, bool) for v in (seg, lap)) \
                or not seg > 0 or not 0 <= lap < seg / 2:
            raise FlowsepError(f"need segment_seconds > 0 and 0 <= overlap < segment_seconds/2, got {seg} and {lap}")
        if isinstance(self.wiener_iterations, bool) or not isinstance(self.wiener_iterations, (int, np.integer)) \
                or self.wiener_iterations < 0:
            raise FlowsepError(f"wiener_iterations must be a non-negative integer, got {self.wiener_iterations!r}")
        if self.wiener_iterations != 1 and self.post != "wiener":
            raise FlowsepError(f"wiener_iterations applies to post='wiener', not post={self.post!r}")

    def replace(self, **settings) -> "Method":
        """This method with ``settings`` changed (None keeps a setting as it is): ``dataclasses.replace`` on
        the method and its search. One-line error for a setting the search does not take, or none knows."""
        given = {k: v for k, v in settings.items() if v is not None}
        own = {k: given.pop(k) for k in list(given) if k in METHOD_SETTINGS}
        takes = type(self.search).settings()
        for k in given:
            if k not in takes:
                if any(k in s.settings() for s in SEARCHES):
                    raise FlowsepError(f"{k} does not apply to method {self.name!r}, whose search takes "
                                       f"{', '.join(takes)}; it also takes {', '.join(METHOD_SETTINGS)}")
                raise FlowsepError(f"unknown option {k!r}; method {self.name!r} takes {', '.join(takes)}, "
                                   f"{', '.join(METHOD_SETTINGS)}; the Separator also {', '.join(RUN_OPTIONS)}")
        return dataclasses.replace(self, search=dataclasses.replace(self.search, **given), **own)


METHOD_SETTINGS = tuple(f.name for f in dataclasses.fields(Method) if f.name not in ("name", "search", "summary"))

METHODS = {
    "instglow": Method("instglow", LatentSearch(150, 0.01), summary=(
        "the published algorithm: latents from z = 0, prior term off, lr 0.01, 150 Adam steps, mid and side")),
    "consistent": Method("consistent", MaskSearch(40, 0.05, warm_iterations=30, warm_lr=0.03), stereo="mid",
                         summary=("a short latent search warm-starts ratio masks that always add up to the mixture; "
                                  "the masks then maximise the priors' likelihood of the stems; mid only")),
    "fast": Method("fast", LatentSearch(25, 0.04), summary=(
        "the published search with a 4x larger step and 25 steps instead of 150")),
    "annealed": Method("annealed", AnnealedSearch(200, 3.0), summary=(
        "BASIS: MAP through noise-conditioned priors, annealed from large noise to small; needs priors "
        "trained with --set noise_levels=N")),
    "map": Method("map", LatentSearch(100, 0.03, prior_weight=0.02), summary=(
        "the published search with its prior term switched on (MAP in latent space, weight 0.02), "
        "a 3x larger step and 100 steps")),
    "quick": Method("quick", LatentSearch(35, 0.03, prior_weight=0.02, bf16=True), summary=(
        "the map search stopped after 35 steps, its priors' networks in bfloat16 where the device computes it "
        "fast")),
}
DEFAULT_METHOD = "instglow"


def method_named(method, **settings) -> Method:
    """A :class:`Method` from a name of :data:`METHODS` or a Method, with ``settings`` changed."""
    if isinstance(method, str):
        if method not in METHODS:
            raise FlowsepError(f"unknown separation method {method!r}; use one of: {', '.join(METHODS)}")
        method = METHODS[method]
    elif not isinstance(method, Method):
        raise FlowsepError(f"method must be a name ({', '.join(METHODS)}) or a Method, got {type(method).__name__}")
    return method.replace(**settings)


class Separator:
    """Separate mixtures with frozen flow priors: ``stems = Separator(priors)(mixture, rate)``.

    priors: {name: FlowPrior}, all with the same sample rate, n_fft and hop (their architectures may
    differ). The Separator keeps frozen copies of the priors as they are when it is built.
    method: a name of :data:`METHODS` ("instglow", the published algorithm, by default) or a
    :class:`Method`; ``settings`` change its settings (``Method.replace``: iterations, lr, stereo,
    post, ...; one that does not apply to the method is a one-line error).

    Run-time options, which change how the work is done but not its result (up to float rounding):
    device ("auto", "cpu", "cuda"); max_memory: bytes (or "4G", "500M") the separation may use, by default
    a share of the memory that is free when it starts (:mod:`flowsep.parts`; if not even one part fits, a
    one-line error says what to change); progress: progress bars; snapshots: iterations at which to keep the
    estimates too; stack_sources: run all priors as one vmapped model ("auto": when their architectures
    match and the device is a GPU); unbatched: source by source and item by item (slow; for benchmarks and
    tests); compile: the priors through :func:`torch.compile` (faster per iteration after compiling once
    per input length; :mod:`flowsep.frozen`).

    mixture: (channels, samples) or (samples,) array or tensor, any rate and length (at least one STFT
    frame at the priors' rate). ``__call__`` returns {name: np.ndarray} of the mixture's shape at its rate;
    ``estimate(mixture, rate)`` returns the :class:`~flowsep.render.SeparationResult` (magnitudes, trace,
    snapshots, timings) without rendering waveforms. The Separator keeps nothing of a separation, so one
    Separator can separate many mixtures, in any order.
    """

    def __init__(self, priors: dict, method=DEFAULT_METHOD, *, device="auto", max_memory=None,
                 progress: bool = True, snapshots=None, stack_sources="auto", unbatched: bool = False,
                 compile: bool = False, **settings):
        self.method = method_named(method, **settings)
        check_priors(priors)
        self.method.search.check_priors(priors)
        self.device = resolve_device(device)
        self.max_memory = None if max_memory in (None, "auto") else parse_size(max_memory)
        self.progress = progress
        self.snapshot_at = sorted({int(i) for i in (snapshots or [])})
        if self.snapshot_at and not 0 <= self.snapshot_at[0] <= self.snapshot_at[-1] <= self.method.search.iterations:
            raise FlowsepError(f"snapshots must be iterations from 0 to {self.method.search.iterations}, "
                               f"got {self.snapshot_at}")
        self.priors = FrozenPriors(priors, self.device, stack=stack_sources, unbatched=unbatched, compile=compile)
        self.names, self.config = self.priors.names, self.priors.config

    @property
    def sample_rate(self) -> int:
        return self.config.sample_rate

    def plan(self, channels: int, samples: int, rate: int):
        """How a (channels, samples) song at ``rate`` goes through the priors (:class:`flowsep.parts.Plan`):
        its segments and chunks, with the memory they were planned from; one-line error if none fits."""
        m, c = self.method, self.config
        plan = segment(channels, samples, rate, self.priors, m.stereo, m.segment_seconds, m.overlap)
        rendering = block_bytes(len(self.names), channels, c.n_fft, c.sample_rate, rate)
        song = song_bytes(self.priors, plan, channels, samples, rate, len(self.snapshot_at), rendering)
        one = part_bytes(self.priors, m.search, plan.length)
        return plan_chunks(plan, song, one, self.device, self.max_memory, plan.length * c.hop / c.sample_rate)

    def estimate(self, mixture, sample_rate) -> SeparationResult:
        """Search for the sources' magnitudes in one mixture; returns them (see SeparationResult)."""
        t0 = time.perf_counter()
        wave, rate = self._check_input(mixture, sample_rate)
        plan = self.plan(wave.shape[0], wave.shape[-1], rate)             # fails here, before any work
        wave = wave.to(self.device)
        c = self.config
        items = to_items(wave, rate, c.sample_rate, plan.midside)
        t1 = time.perf_counter()
        found = search_song(self.method.search, self.priors, items, plan, self.snapshot_at, self.progress)
        t2 = time.perf_counter()
        return SeparationResult(
            magnitudes=found.magnitudes, items=items, mixture=wave, rate=rate, prior_rate=c.sample_rate,
            n_fft=c.n_fft, hop=c.hop, midside=plan.midside, squeeze_output=np.ndim(mixture) == 1,
            trace=found.trace, snapshots=found.snapshots, timings={"prepare": t1 - t0, "optimize": t2 - t1},
            chunks=len(plan.chunks))

    def __call__(self, mixture, sample_rate) -> dict[str, np.ndarray]:
        """Separate ``mixture`` ((channels, samples) or (samples,)) recorded at ``sample_rate`` Hz.

        Returns {name: np.ndarray} with the mixture's shape, at its rate.
        """
        return self.estimate(mixture, sample_rate).render(self.method.post, self.method.wiener_iterations)

    def _check_input(self, mixture, rate) -> tuple[torch.Tensor, int]:
        if isinstance(rate, bool) or not isinstance(rate, (int, np.integer, float, np.floating)) \
                or not math.isfinite(rate) or rate <= 0 or float(rate) != int(rate):
            raise FlowsepError(f"sample rate must be a positive integer (Hz), got {rate!r}")
        rate = int(rate)
        wave = as_channels_first(mixture, "mixture")
        c = self.config
        if wave.shape[-1] * c.sample_rate / rate < c.n_fft:
            need = c.n_fft / c.sample_rate
            raise FlowsepError(f"mixture of {wave.shape[-1] / rate * 1000:.1f} ms is shorter than one STFT frame "
                               f"({need * 1000:.1f} ms at the priors' {c.sample_rate} Hz); give a longer clip")
        lo, hi = torch.aminmax(wave)
        if max(-float(lo), float(hi)) < SILENCE_PEAK:
            raise FlowsepError("mixture is silent (all samples are zero); give a recording with sound in it")
        return wave, rate
