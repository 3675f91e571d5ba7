"""The searches of likelihood separation: how one chunk of parts is separated through the frozen priors.

Chapter: "Likelihood separation" (its loop ``instglow`` is :class:`LatentSearch`, line for line where it can).

Each source j has a trained flow prior f_j that maps a magnitude spectrogram x_j to a standard-normal
latent z_j. The published search optimises one latent per source so that the decoded magnitudes explain
the mixture's magnitude |X|::

    x_j = decode_j(f_j^-1(z_j))                          (parts, bins, frames), one per source
    loss = D(|X| || sum_j x_j) + prior_weight * R(z)     D = generalized KL (I-divergence)
    R = 0.5*||z||^2 ("z" space)  or  -log p_j(x_j) ("x" space), per dimension

with Adam on the z's, from z = 0, the mode of every prior's base density. Two other searches go beyond the
paper: :class:`MaskSearch` (ratio masks that always add up to the mixture, scored by the priors'
likelihood) and :class:`AnnealedSearch` (MAP through noise-conditioned priors, from large noise to small,
as in BASIS).

A search is a frozen dataclass of the settings that apply to it and nothing else; calling it separates
one chunk: ``search(priors, target, valid, parts, on_step, bar) -> [magnitudes per source]`` with

- priors: :class:`flowsep.frozen.FrozenPriors`;
- target: (P, bins, T) the mixture magnitudes of P parts; valid: (P, T) 1 where a frame is in the song
  (padding past its end does not count), or None;
- parts: the P parts' indices in the whole song (a noise start is drawn per part, so any chunking gives
  the same start);
- on_step(iteration, per_part_objective (P,), magnitudes): called before each Adam step and once after
  the last; bar(range) -> iterable: a progress bar, or ``lambda r: r``.

Every part is optimised on its own terms (the loss is a sum over parts, and Adam updates each element from
its own gradient), which is what lets :mod:`flowsep.parts` cut a song into chunks.
"""
from __future__ import annotations

from dataclasses import dataclass, fields

import numpy as np
import torch

from .device import bf16_autocast
from .errors import FlowsepError
from .frozen import FrozenPriors
from .memory import saved_for_backward_bytes

KL_EPS = 1e-8
PRIOR_SPACES = ("z", "x")
# what a part takes, per byte autograd saves for it (the forward's transients, the backward's gradients,
# Adam's state), on the safe side: a 60-s part at the cpu profile is planned at 1.43 GB, and the whole
# separation of it (with the post-filter) grew the process by 0.9 GB
WORKSPACE_FACTOR = 2.0


def generalized_kl(m: torch.Tensor, s: torch.Tensor, valid: torch.Tensor | None = None,
                   eps: float = KL_EPS) -> torch.Tensor:
    """I-divergence m*log(m/s) - m + s, averaged over bins and (valid) frames, one value per item.

    m, s: (batch, bins, frames) non-negative; valid: (batch, frames) of 0/1 or None -> (batch,).
    Zero-safe: m = 0 gives s, and s = 0 is floored at ``eps``.
    """
    d = m * (torch.log(m + eps) - torch.log(s + eps)) - m + s
    if valid is None:
        return d.mean(dim=(1, 2))
    w = valid[:, None, :].to(d.dtype)
    return (d * w).sum(dim=(1, 2)) / (w.sum(dim=(1, 2)) * d.shape[1]).clamp_min(1)


def _check_steps(iterations, lr, what: str = "") -> None:
    if isinstance(iterations, bool) or not (isinstance(iterations, (int, np.integer)) and iterations >= 0):
        raise FlowsepError(f"{what}iterations must be a non-negative integer, got {iterations!r}")
    if isinstance(lr, bool) or not isinstance(lr, (int, float)) or not lr > 0:
        raise FlowsepError(f"{what}lr must be positive, got {lr!r}")


class Search:
    """What every search has: ``iterations`` Adam steps (the trace has one more value), ``bf16``."""

    iterations: int
    bf16: bool

    @classmethod
    def settings(cls) -> list[str]:
        """The names of the settings that apply to this search."""
        return [f.name for f in fields(cls)]

    def check_priors(self, priors: dict) -> None:
        """One-line error if this search cannot use ``priors`` ({name: FlowPrior}); any prior will do here."""


@dataclass(frozen=True)
class LatentSearch(Search):
    """Adam on one latent per source, decoded through the priors: the published search (chapter 5's loop).

    prior_weight: weight of the prior term R (0: the prior acts only through the reparametrisation and the
    start); prior_space: "z" (R = 0.5 ||z||^2) or "x" (R = -log p(x)), per dimension; init: "zeros" (the
    mode) or the standard deviation of a noise start, drawn per part from ``seed``.
    bf16: the priors' networks in bfloat16 where the device computes it fast; the loss stays in float32.
    """

    iterations: int = 150
    lr: float = 0.01
    prior_weight: float = 0.0
    prior_space: str = "z"
    init: object = "zeros"
    seed: int = 0
    bf16: bool = False

    def __post_init__(self):
        _check_steps(self.iterations, self.lr)
        if isinstance(self.prior_weight, bool) or not isinstance(self.prior_weight, (int, float)) \
                or not self.prior_weight >= 0:
            raise FlowsepError(f"prior_weight must be >= 0, got {self.prior_weight!r}")
        if self.prior_space not in PRIOR_SPACES:
            raise FlowsepError(f"unknown prior_space {self.prior_space!r}; use 'z' or 'x'")
        init = self.init
        if not (init == "zeros" or (isinstance(init, (int, float)) and not isinstance(init, bool) and init >= 0)):
            raise FlowsepError(f"init must be 'zeros' or a noise standard deviation >= 0, got {init!r}")
        if self.seed != 0 and init == "zeros":
            raise FlowsepError(f"seed {self.seed} does nothing with init='zeros'; it seeds a noise start (init=0.1)")

    def start(self, priors: FrozenPriors, parts: list[int], frames: int) -> list[torch.Tensor]:
        """One latent per source for the given parts, each (len(parts), C', T'): zeros, or noise per part."""
        zs = []
        for k, shape in enumerate(priors.latent_shapes(frames)):
            if self.init == "zeros":
                z = torch.zeros(len(parts), *shape)
            else:
                z = torch.stack([float(self.init) * torch.randn(
                    shape, generator=torch.Generator().manual_seed(self.seed * 1_000_003 + 101 * p + k))
                    for p in parts])
            zs.append(z.to(priors.device).requires_grad_(True))
        return zs

    def objective(self, priors: FrozenPriors, zs, target, valid):
        """(the objective per part (P,), the decoded magnitudes [(P, bins, T) per source])."""
        est = priors.synthesize(zs, self.bf16)                     # x_j = f_j^-1(z_j)
        loss = generalized_kl(target, torch.stack(est).sum(0), valid)
        if self.prior_weight > 0:
            loss = loss + self.prior_weight * self.prior_term(priors, zs, est)
        return loss, est

    def prior_term(self, priors: FrozenPriors, zs, est) -> torch.Tensor:
        """(P,) the prior term per part, per dimension, summed over sources."""
        total = 0
        for name, z, x in zip(priors.names, zs, est):
            if self.prior_space == "z":
                total = total + 0.5 * z.pow(2).mean(dim=(1, 2))
            else:
                total = total - priors.log_prob(name, x) / (x.shape[1] * x.shape[2])
        return total

    def __call__(self, priors: FrozenPriors, target, valid, parts, on_step=None, bar=None) -> list[torch.Tensor]:
        on_step, bar = on_step or (lambda *a: None), bar or (lambda r: r)
        zs = self.start(priors, parts, target.shape[-1])
        opt = torch.optim.Adam(zs, lr=self.lr)
        for it in bar(range(self.iterations)):
            loss, est = self.objective(priors, zs, target, valid)
            on_step(it, loss.detach(), est)
            opt.zero_grad(set_to_none=True)
            loss.sum().backward()
            opt.step()
        with torch.no_grad():
            loss, est = self.objective(priors, zs, target, valid)
        on_step(self.iterations, loss, est)
        return [x.detach() for x in est]


@dataclass(frozen=True)
class MaskSearch(Search):
    """Mixture-consistent search: s_j = softmax_j(logits) * |X|, minimising sum_j -log p_j(s_j) per dimension.

    The estimates add up to the mixture magnitude at every step (a Dirac likelihood), so the priors'
    densities alone decide how the mixture is shared. The logits start from a short latent search
    (``warm_iterations`` at ``warm_lr``, from z = 0, no prior term): the log of its estimates.
    bf16 applies to that warm start.
    """

    iterations: int = 40
    lr: float = 0.05
    warm_iterations: int = 30
    warm_lr: float = 0.03
    bf16: bool = False

    def __post_init__(self):
        _check_steps(self.iterations, self.lr)
        _check_steps(self.warm_iterations, self.warm_lr, "warm_")

    def __call__(self, priors: FrozenPriors, target, valid, parts, on_step=None, bar=None) -> list[torch.Tensor]:
        on_step, bar = on_step or (lambda *a: None), bar or (lambda r: r)
        warm = LatentSearch(iterations=self.warm_iterations, lr=self.warm_lr, bf16=self.bf16)
        logits = torch.log(torch.stack(warm(priors, target, valid, parts)) + KL_EPS).requires_grad_(True)
        opt = torch.optim.Adam([logits], lr=self.lr)
        dims = target.shape[1] * target.shape[2]

        def objective():
            s = torch.softmax(logits, dim=0) * target
            return sum(-priors.log_prob(n, s_j) for n, s_j in zip(priors.names, s)) / dims, s

        for it in bar(range(self.iterations)):
            nll, s = objective()
            on_step(it, nll.detach(), s.detach())
            opt.zero_grad(set_to_none=True)
            nll.sum().backward()
            opt.step()
        with torch.no_grad():
            nll, s = objective()
        on_step(self.iterations, nll, s)
        return list(s)


def noise_schedule(sigmas: list[float], iterations: int) -> list[float]:
    """The noise level of each of ``iterations`` annealed steps, for levels ``sigmas`` (largest first).

    The iterations are shared out over the levels, in order (the first levels get one more when they do
    not divide); with fewer iterations than levels, one step at each of evenly spaced levels, so that the
    last step is always at the smallest level.
    """
    if iterations < len(sigmas):
        return [sigmas[k] for k in np.linspace(len(sigmas) - 1, 0, iterations)[::-1].round().astype(int)]
    steps = [iterations // len(sigmas) + (k < iterations % len(sigmas)) for k in range(len(sigmas))]
    return [sigma for sigma, n in zip(sigmas, steps) for _ in range(n)]


@dataclass(frozen=True)
class AnnealedSearch(Search):
    """Noise-annealed MAP through noise-conditioned priors (BASIS): Adam on the sources' flow inputs.

    Variables: y_j, the flow-space magnitude bins of every source (P, bins, T), starting from an equal
    share of the mixture. For each noise level sigma of the priors, largest first, ``iterations / levels``
    Adam steps (a fresh Adam at lr * sigma, so that steps shrink with the noise; with fewer iterations
    than levels, one step at each of evenly spaced levels, ending at the smallest: :func:`noise_schedule`) on

        sum_j -log p_sigma,j(y_j) + |f(|X|) - f(sum_j s_j)|^2 / (2 sigma^2),   s_j = decode(y_j)

    where f maps magnitudes to flow units (log(. + eps) * scale for log priors): the mixture may miss by
    about the noise the priors are at, and must fit closer as the noise shrinks. The objective reported to
    ``on_step`` is per dimension. bf16: the priors' networks in bfloat16 where the device computes it fast.
    """

    iterations: int = 200
    lr: float = 3.0
    bf16: bool = False

    def __post_init__(self):
        _check_steps(self.iterations, self.lr)

    def check_priors(self, priors: dict) -> None:
        plain = [n for n, p in priors.items() if not p.noise_conditioned]
        if plain:
            raise FlowsepError(f"the annealed search needs noise-conditioned priors, and {', '.join(plain)} "
                               f"{'is a plain prior' if len(plain) == 1 else 'are plain priors'}; train them "
                               "with `flowsep train --set noise_levels=10`, or choose another method")
        if len({tuple(p.noise_sigmas.tolist()) for p in priors.values()}) > 1:
            raise FlowsepError("the annealed search needs priors with the same noise levels; train them with "
                               "the same noise_levels, noise_max and noise_min")

    def __call__(self, priors: FrozenPriors, target, valid, parts, on_step=None, bar=None) -> list[torch.Tensor]:
        on_step, bar = on_step or (lambda *a: None), bar or (lambda r: r)
        first, c = priors.first, priors.config
        sigmas = first.noise_sigmas.tolist()
        dims = target.shape[1] * target.shape[2]
        w = valid[:, None, :] if valid is not None else 1.0

        def flow_units(mag):
            return c.scale * (torch.log(mag + c.log_eps) if c.transform == "log" else mag)

        mix = flow_units(target)
        ys = [flow_units(target / len(priors.names)).requires_grad_(True) for _ in priors.names]

        def objective(sigma):
            xs = [torch.nn.functional.pad(y, (0, 0, 0, first.channels - first.bins)) for y in ys]
            est = [priors.priors[n].decode(x) for n, x in zip(priors.names, xs)]
            misfit = ((flow_units(torch.stack(est).sum(0)) - mix) ** 2 * w).sum(dim=(1, 2)) / (2 * sigma ** 2)
            with bf16_autocast(priors.device, self.bf16):
                nll = sum(-priors.priors[n].flow_log_prob(x, sigma) for n, x in zip(priors.names, xs))
            return nll + misfit, est

        schedule = noise_schedule(sigmas, self.iterations)
        opt, level = None, None
        for it in bar(range(self.iterations)):
            if schedule[it] != level:
                level = schedule[it]
                opt = torch.optim.Adam(ys, lr=self.lr * level)
            loss, est = objective(level)
            on_step(it, loss.detach() / dims, est)
            opt.zero_grad(set_to_none=True)
            loss.sum().backward()
            opt.step()
        with torch.no_grad():
            loss, est = objective(sigmas[-1])
        on_step(self.iterations, loss / dims, est)
        return [x.detach() for x in est]


def part_bytes(priors: FrozenPriors, search: Search, frames: int) -> int:
    """Memory one part of ``frames`` frames takes while it is optimised (estimated, in bytes).

    What autograd saves for a forward pass of the latent search's objective, measured on two short parts
    and extended to ``frames`` along the line through them (the weights are saved once, the activations
    per frame), times :data:`WORKSPACE_FACTOR` (transients, gradients and Adam's state). Every search is
    planned with the latent search's measure (its own settings when it is one; otherwise the defaults, in
    its bf16); the annealed search's measured peak stays flat with the song's length all the same
    (benchmarks/results/separation_memory_annealed_cpu.md).
    """
    probe = search if isinstance(search, LatentSearch) else LatentSearch(bf16=search.bf16)

    def saved(n):
        zs = [torch.zeros(1, *shape, device=priors.device, requires_grad=True) for shape in priors.latent_shapes(n)]
        target = torch.ones(1, priors.config.bins, n, device=priors.device)
        return saved_for_backward_bytes(lambda: probe.objective(priors, zs, target, None)[0].sum())

    short = 8 * priors.frame_multiple
    with priors.eager():   # compiled priors would compile again for each probe's length
        a, b = saved(short), saved(2 * short)
    per_frame = (b - a) / short
    return int(WORKSPACE_FACTOR * (a + per_frame * (frames - short)))
