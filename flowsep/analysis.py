"""Looking inside priors: Jacobians checked by autograd, test clips, likelihood matrices, audible samples.

Chapter: "Normalizing flows from scratch" (:func:`autograd_logdet`), "Glow over spectrograms"
(:func:`profile_table`, :func:`griffin_lim`) and "Training the source priors" (:func:`source_clips`,
:func:`likelihood_matrix`, :func:`vote_matrix`, :func:`sample_audio`).

A likelihood matrix scores the test clips of every source under every prior: entry (p, s) is the mean
negative log-likelihood, in bits per magnitude value, that prior p gives to clips of source s. If the
priors have learned what sets their instrument apart, each column is lowest on its own prior's row.
A vote matrix counts instead, for each source, how many of its clips each prior scores best.
"""
from __future__ import annotations

from collections.abc import Mapping

import numpy as np
import pandas as pd
import torch
import torchaudio

from .data.chunks import SourceChunks
from .data.musdb import open_db, stream_audio
from .errors import FlowsepError
from .prior import FlowPrior, PriorConfig
from .spectral import resample, stft


# ---- change of variables, checked ------------------------------------------------------------------------
def autograd_logdet(fn, x: torch.Tensor) -> torch.Tensor:
    """log|det J| of ``fn`` at every item of ``x``, from the full Jacobian that autograd builds.

    fn: maps (B, C, T) -> (B, C', T') with C*T == C'*T' (a flow layer's forward pass, returning only y);
    x: (B, C, T). Returns (B,). Costs one Jacobian of size (C*T)^2 per item: for small inputs only.
    """
    out = []
    for i in range(x.shape[0]):
        xi = x[i:i + 1]
        jac = torch.autograd.functional.jacobian(lambda v: fn(v).reshape(-1), xi)
        jac = jac.reshape(jac.shape[0], -1)
        if jac.shape[0] != jac.shape[1]:
            raise FlowsepError(f"the map changes the number of values ({jac.shape[1]} -> {jac.shape[0]}); "
                               "a flow layer must keep it")
        out.append(torch.linalg.slogdet(jac)[1])
    return torch.stack(out)


# ---- the profiles ------------------------------------------------------------------------------------------
def count_parameters(module: torch.nn.Module) -> int:
    """Number of trainable values of a module."""
    return sum(p.numel() for p in module.parameters() if p.requires_grad)


def profile_table(profiles=("smoke", "cpu", "paper")):
    """The priors of each profile side by side: signal, flow and training settings and the size.

    Returns a pandas DataFrame with one column per profile.
    """
    rows = {}
    for name in profiles:
        c = PriorConfig.preset(name)
        prior = FlowPrior(c)
        seg = (c.segment_frames - 1) * c.hop / c.sample_rate
        rows[name] = {
            "sample rate (Hz)": c.sample_rate, "n_fft / hop": f"{c.n_fft} / {c.hop}",
            "magnitude transform": c.transform, "bins -> flow channels": f"{c.bins} -> {c.channels}",
            "squeezed channels": c.channels * c.n_sqz, "flow blocks": c.n_blocks,
            "WaveNet layers x hidden": f"{c.n_layers} x {c.hidden}", "kernel": c.kernel,
            "training clip (s)": round(seg, 2), "batch": c.batch_size,
            "training budget": f"{c.train_seconds:g} s" if c.train_seconds else f"{c.steps:,} steps",
            "parameters": count_parameters(prior),
        }
    return pd.DataFrame(rows)


# ---- test clips and the likelihood matrix ---------------------------------------------------------------
def source_clips(root, source: str, config: PriorConfig, n: int = 8, subset: str = "test", seed: int = 0,
                 silence_db: float | None = None) -> torch.Tensor:
    """``n`` non-silent mono clips of one source from a MUSDB18-format root: (n, samples) at the prior's rate.

    Each clip is one training example long (``config.segment_frames`` STFT frames), drawn without gain
    or dequantisation noise by :class:`flowsep.data.chunks.SourceChunks` from the tracks of ``subset``
    ("test": songs no prior was trained on). The same (root, source, config, seed) gives the same clips.
    """
    db = open_db(root, subset)
    if not db.tracks:
        raise FlowsepError(f"{root} has no {subset} tracks; generate or download some first")
    known = set(db.tracks[0].sources)
    if source not in known:
        raise FlowsepError(f"unknown source {source!r} in {root}; choose one of: {', '.join(sorted(known))}")
    signals = []
    for t in db.tracks:
        a = torch.from_numpy(np.asarray(stream_audio(t, t.sources[source]), dtype=np.float32).T).mean(0)
        signals.append(resample(a, int(t.rate), config.sample_rate).numpy())
    segment = (config.segment_frames - 1) * config.hop
    chunks = SourceChunks(signals, segment, seed=seed,
                          silence_db=config.silence_db if silence_db is None else silence_db,
                          gain=(1.0, 1.0), dequantize=0.0)
    return torch.stack([chunks[i] for i in range(n)])


def chunk_coverage(chunks) -> tuple[int, int]:
    """(chunk positions kept, chunk positions in total) of a :class:`~flowsep.data.chunks.SourceChunks`:
    how much of the recordings the silence threshold leaves for training."""
    total = sum(max(0, (len(s) - chunks.segment) // chunks.stride + 1) for s in chunks.signals)
    return len(chunks.index), total


def magnitudes(waves: torch.Tensor, config: PriorConfig) -> torch.Tensor:
    """(n, samples) -> (n, bins, frames) STFT magnitudes with a prior's settings, frames cut to its multiple."""
    mag = stft(waves, config.n_fft, config.hop).abs()
    keep = mag.shape[-1] - mag.shape[-1] % config.n_sqz
    if keep <= 0:
        raise FlowsepError(f"clips of {waves.shape[-1]} samples are too short for this prior")
    return mag[..., :keep]


@torch.no_grad()
def wave_bits_per_dim(prior: FlowPrior, waves: torch.Tensor, rate: int | None = None, batch: int = 8) -> torch.Tensor:
    """Negative log-likelihood in bits per magnitude value of every clip: (n, samples) -> (n,).

    ``rate``: the clips' sample rate (default: the prior's); other rates are resampled first.
    """
    c = prior.config
    if rate is not None and rate != c.sample_rate:
        waves = resample(waves, rate, c.sample_rate)
    p = next(prior.parameters())
    out = []
    was = prior.training
    prior.eval()
    for i in range(0, waves.shape[0], batch):
        mag = magnitudes(waves[i:i + batch].to(p.device, p.dtype), c)
        out.append(prior.bits_per_dim(mag).float().cpu())
    prior.train(was)
    return torch.cat(out)


def clip_scores(priors: Mapping, clips: Mapping, rate: int | None = None, batch: int = 8) -> dict:
    """Bits per dimension of every clip under every prior: {source: (n_priors, n_clips) tensor}.

    priors: {name: FlowPrior}; clips: {source: (n, samples) waves at ``rate`` (default: each prior's
    rate)}. Rows follow the order of ``priors``.
    """
    if not priors or not clips:
        raise FlowsepError("scoring needs at least one prior and one set of clips")
    return {s: torch.stack([wave_bits_per_dim(p, w, rate, batch) for p in priors.values()]) for s, w in clips.items()}


def _frame(priors: Mapping, table: dict):
    df = pd.DataFrame({s: dict(zip(priors, v)) for s, v in table.items()}).loc[list(priors), list(table)]
    df.index.name, df.columns.name = "prior", "source"
    return df


def likelihood_matrix(priors: Mapping, clips: Mapping, rate: int | None = None, batch: int = 8,
                      scores: dict | None = None):
    """Every prior scoring every source's clips: mean bits per dimension (lower: more likely).

    priors: {name: FlowPrior}; clips: {source: (n, samples) waves} (see :func:`clip_scores`, whose
    result can be passed as ``scores`` to avoid scoring twice). Returns a pandas DataFrame, index =
    prior names, columns = sources.
    """
    scores = scores if scores is not None else clip_scores(priors, clips, rate, batch)
    return _frame(priors, {s: [float(v) for v in b.mean(1)] for s, b in scores.items()})


def vote_matrix(priors: Mapping, clips: Mapping, rate: int | None = None, batch: int = 8,
                scores: dict | None = None):
    """For every source, the share of its clips that each prior scores best (higher: more often the best).

    Each clip votes for the prior that gives it the lowest bits/dim; a column sums to 1. Unlike the
    mean of :func:`likelihood_matrix`, a few atypical clips cannot swing the result. Same arguments;
    returns a DataFrame, index = priors, columns = sources.
    """
    scores = scores if scores is not None else clip_scores(priors, clips, rate, batch)
    n = len(priors)
    return _frame(priors, {s: [float(v) for v in torch.bincount(b.argmin(0), minlength=n).float() / b.shape[1]]
                           for s, b in scores.items()})


def best_prior(matrix, higher_is_better: bool = False) -> dict:
    """For every source (column), the prior (row) with the best entry: {source: prior name}."""
    return {s: (matrix[s].idxmax() if higher_is_better else matrix[s].idxmin()) for s in matrix.columns}


def diagonal_wins(matrix, higher_is_better: bool = False) -> dict:
    """For every source that has a prior of its own name: is that prior the best one for its clips?"""
    best = best_prior(matrix, higher_is_better)
    return {s: best[s] == s for s in matrix.columns if s in matrix.index}


# ---- hearing a prior -------------------------------------------------------------------------------------
def griffin_lim(mag: torch.Tensor, n_fft: int, hop: int, n_iter: int = 64, length: int | None = None) -> torch.Tensor:
    """A waveform whose STFT magnitude approximates ``mag``: (..., bins, frames) -> (..., samples).

    Griffin-Lim phase retrieval (torchaudio), started from zero phase so that the result is deterministic;
    a prior models magnitudes only, so its samples need a phase before we can listen to them.
    """
    gl = torchaudio.transforms.GriffinLim(n_fft=n_fft, hop_length=hop, win_length=n_fft, power=1.0,
                                          n_iter=n_iter, momentum=0.99, length=length, rand_init=False)
    return gl.to(mag.device)(mag.float())


def sample_audio(prior: FlowPrior, n: int = 1, seconds: float = 4.0, temperature: float = 0.8, seed: int = 0,
                 n_iter: int = 64) -> tuple[np.ndarray, torch.Tensor, int]:
    """Draw ``n`` magnitude spectrograms from a prior and give them a Griffin-Lim phase.

    Returns (waves (n, samples) numpy, magnitudes (n, bins, frames), sample rate). ``temperature`` < 1
    samples nearer the mode (z ~ N(0, temperature^2 I)), which usually sounds cleaner.
    """
    c = prior.config
    frames = max(c.n_sqz, int(seconds * c.sample_rate / c.hop) // c.n_sqz * c.n_sqz)
    g = torch.Generator(device=next(prior.parameters()).device).manual_seed(int(seed))
    was = prior.training
    prior.eval()
    mag = prior.sample(n, frames, temperature=temperature, generator=g).float()
    prior.train(was)
    waves = griffin_lim(mag, c.n_fft, c.hop, n_iter=n_iter)
    return waves.cpu().numpy(), mag.cpu(), c.sample_rate
