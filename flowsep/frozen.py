"""The priors of one separation, frozen and run together: latents -> magnitudes, magnitudes -> log-densities.

Chapter: "Likelihood separation" (its ``fold``: a frozen copy with the weight normalisation computed once).

A search (:mod:`flowsep.search`) asks the priors the same two questions at every step, for every source
at once: what magnitudes do these latents decode to, and how likely are these magnitudes. This module
answers them in one of three ways, with the same numbers (up to float rounding):

- batched (the default): one pass per prior over all the parts of a chunk;
- stacked: all priors as one model, vectorised over the sources by :func:`torch.func.vmap` (when their
  architectures match: on a GPU, one large kernel instead of one per source);
- unbatched: source by source and item by item (slow; the reference for benchmarks and tests).

Batched, the priors can also run compiled (``compile=True``: :func:`torch.compile`, the elementwise work of
every layer fused; the same numbers within float rounding, 1.50x faster per iteration on 2 CPU cores at
the cpu profile in benchmarks/results/separation_iteration_cpu.md, after compiling once for each new
input length: about 12 s there). A prior that cannot be compiled on this machine (no C++ compiler,
an unsupported operation) runs as it is, and says so once.
"""
from __future__ import annotations

import copy
import math
import sys
from contextlib import contextmanager

import torch
from torch import nn
from torch.func import functional_call, stack_module_state, vmap
from torch.nn.utils import parametrize

from .device import bf16_autocast
from .errors import FlowsepError
from .flows import GroupedInvConv
from .prior import FlowPrior


def check_priors(priors) -> None:
    """One-line error unless ``priors`` is a non-empty {name: FlowPrior} whose priors share one STFT."""
    if not isinstance(priors, dict) or not priors:
        raise FlowsepError("no priors given; pass a dict {name: FlowPrior} with at least one prior")
    for name, p in priors.items():
        if not isinstance(name, str) or not name:
            raise FlowsepError(f"prior names must be non-empty strings, got {name!r}")
        if not isinstance(p, FlowPrior):
            raise FlowsepError(f"prior {name!r} is a {type(p).__name__}, not a FlowPrior; "
                               "load it with flowsep.FlowPrior.load")
    names = list(priors)
    first = priors[names[0]].config
    for name in names[1:]:
        c = priors[name].config
        if (c.sample_rate, c.n_fft, c.hop) != (first.sample_rate, first.n_fft, first.hop):
            raise FlowsepError(
                f"priors {names[0]!r} ({first.sample_rate} Hz, n_fft {first.n_fft}, hop {first.hop}) and "
                f"{name!r} ({c.sample_rate} Hz, n_fft {c.n_fft}, hop {c.hop}) use different STFT settings; "
                "use priors trained at the same profile")


def frozen_copy(prior: FlowPrior, device: torch.device) -> FlowPrior:
    """An eval-mode copy with plain (weight-norm folded) weights that need no gradient.

    The user's prior is left as it is; weight normalisation and the inverses of the invertible 1x1
    convolutions are computed once here instead of at every iteration.
    """
    frozen = type(prior)(prior.config)
    frozen.load_state_dict(prior.state_dict())
    for module in frozen.modules():
        if parametrize.is_parametrized(module):
            for name in list(module.parametrizations.keys()):
                parametrize.remove_parametrizations(module, name, leave_parametrized=True)
    frozen = frozen.eval().requires_grad_(False).to(device)
    for module in frozen.modules():
        if isinstance(module, GroupedInvConv):
            module.freeze()
    return frozen


class Synthesis(nn.Module):
    """z -> magnitudes through one prior: decode(inverse(z)), (B, C*n_sqz, T/n_sqz) -> (B, bins, T)."""

    def __init__(self, prior: FlowPrior):
        super().__init__()
        self.prior = prior

    def forward(self, z):
        return self.prior.decode(self.prior.inverse(z))


def architecture(prior: FlowPrior) -> tuple:
    """What two priors must share to be stacked into one vmapped model."""
    c = prior.config
    shapes = tuple((k, tuple(v.shape)) for k, v in prior.state_dict().items())
    return (c.transform, c.scale, c.log_eps, shapes)


class FrozenPriors:
    """Frozen copies of {name: FlowPrior} on ``device``, run together for a search.

    stack: "auto" (stacked when the architectures match, there are several priors and the device is a
    GPU), True (one-line error if the architectures differ) or False. unbatched: every source and item
    on its own (never stacked). compile: the batched priors through :func:`torch.compile` (never stacked).
    """

    def __init__(self, priors: dict, device: torch.device, stack="auto", unbatched: bool = False,
                 compile: bool = False):
        check_priors(priors)
        if stack not in ("auto", True, False):
            raise FlowsepError(f"stack_sources must be 'auto', True or False, got {stack!r}")
        if stack is True and unbatched:
            raise FlowsepError("stack_sources=True and unbatched=True contradict each other; choose one")
        if compile and (unbatched or stack is True):
            raise FlowsepError("compile=True runs the priors batched; leave out unbatched and stack_sources=True")
        self.device, self.unbatched = device, bool(unbatched)
        self.names = list(priors)
        self.priors = {n: frozen_copy(p, device) for n, p in priors.items()}
        same = len({architecture(p) for p in self.priors.values()}) == 1
        if stack is True and not same:
            raise FlowsepError("stack_sources=True needs priors of one architecture (same profile); "
                               "use stack_sources='auto'")
        if stack == "auto":
            stack = same and len(self.priors) > 1 and device.type == "cuda"
        self.stacked = bool(stack) and not self.unbatched and not compile
        self._stack = None  # the vmapped priors, built on first use
        # the compiled syntheses (one per prior; priors of one architecture share the compiled code)
        self._compiled = {n: torch.compile(Synthesis(p), dynamic=False) for n, p in self.priors.items()} \
            if compile else None
        self._eager = False

    @property
    def first(self) -> FlowPrior:
        return self.priors[self.names[0]]

    @property
    def config(self):
        """The first prior's config (every prior shares its sample rate, n_fft and hop)."""
        return self.first.config

    @property
    def frame_multiple(self) -> int:
        """Segment lengths (frames) every prior takes: the least common multiple of theirs."""
        return math.lcm(*(p.frame_multiple for p in self.priors.values()))

    def latent_shapes(self, frames: int) -> list[tuple[int, int]]:
        """(channels, frames) of each source's latent for ``frames`` spectrogram frames."""
        return [self.priors[n].latent_shape(frames) for n in self.names]

    def synthesize(self, zs: list[torch.Tensor], bf16: bool = False) -> list[torch.Tensor]:
        """Latents (one (B, C', T') per source) -> magnitudes (one (B, bins, T) per source, float32).

        bf16: the networks in bfloat16 where the device computes it fast (:func:`flowsep.device.bf16_autocast`).
        """
        with bf16_autocast(self.device, bf16):
            return [m.float() for m in self._synthesize(zs)]

    @contextmanager
    def eager(self):
        """Run the priors as they are (not compiled) inside this block: for short probes of another input
        length, which would each be compiled anew."""
        before, self._eager = self._eager, True
        try:
            yield
        finally:
            self._eager = before

    def _run_compiled(self, zs):
        try:
            return [self._compiled[n](z) for n, z in zip(self.names, zs)]
        except Exception as e:  # compiling failed here: the priors run as they are, with the same result
            print(f"flowsep: the priors could not be compiled ({type(e).__name__}); they run uncompiled",
                  file=sys.stderr)
            self._compiled = None
            return [Synthesis(self.priors[n])(z) for n, z in zip(self.names, zs)]

    def _synthesize(self, zs):
        if self._compiled is not None and not self._eager:
            return self._run_compiled(zs)
        if self.unbatched:
            return [torch.cat([Synthesis(self.priors[n])(z[b:b + 1]) for b in range(z.shape[0])])
                    for n, z in zip(self.names, zs)]
        if self.stacked:
            if self._stack is None:
                mods = [Synthesis(self.priors[n]) for n in self.names]
                params, buffers = stack_module_state(mods)
                self._stack = (params, buffers, copy.deepcopy(mods[0]).to("meta"))
            params, buffers, base = self._stack
            mags = vmap(lambda p, b, z: functional_call(base, (p, b), (z,)))(params, buffers, torch.stack(zs))
            return list(mags.unbind(0))
        return [Synthesis(self.priors[n])(z) for n, z in zip(self.names, zs)]

    def log_prob(self, name: str, mag: torch.Tensor) -> torch.Tensor:
        """log p(mag) in nats under prior ``name``: (B, bins, T) -> (B,)."""
        p = self.priors[name]
        if self.unbatched:
            return torch.cat([p.log_prob(mag[b:b + 1]) for b in range(mag.shape[0])])
        return p.log_prob(mag)
