"""What a reader sees: spectrograms, loss curves, likelihood matrices and 2-D flow densities.

Chapter: every chapter. Each function draws with matplotlib and returns the ``Figure`` (or draws
into the ``ax`` it is given), so a notebook shows it inline and the book renders it as an image.

Spectrograms are drawn in dB relative to full scale: 0 dB is the STFT peak of a full-scale sine
(magnitude ``n_fft / 4`` under a Hann window), so stems drawn side by side keep their true levels.
"""
from __future__ import annotations

import io
import math
from collections.abc import Mapping

import matplotlib.pyplot as plt
import numpy as np
import torch
from matplotlib.patches import Rectangle

from .data.chunks import chunk_levels
from .errors import FlowsepError
from .spectral import stft

FLOOR_DB = 90.0  # dynamic range shown by a spectrogram (dB below full scale)

#: text sizes of the book's figures: a figure as wide as the page (about 10 inches) is scaled down to the
#: text column, so matplotlib's default 10 pt would read as 6 to 7 pt there. No figure of the book sets
#: a smaller size (tests/test_browser.py checks the rendered pages against these).
BOOK_STYLE = {"font.size": 12, "axes.titlesize": 12, "axes.labelsize": 12, "xtick.labelsize": 11,
              "ytick.labelsize": 11, "legend.fontsize": 11, "figure.titlesize": 13}
#: the rendered book's text column (pixels at 100% zoom), the figures' resolution (the inline backend's),
#: and the smallest text a figure may show once scaled to that column
COLUMN_PX, FIGURE_DPI, MIN_TEXT_PX = 690, 100, 9.0
#: spectrograms start here on their logarithmic frequency axis (below it music has little to show)
LOW_HZ = 30.0


def widest_figure_px() -> int:
    """The widest PNG (pixels) whose smallest text (BOOK_STYLE's) still reads at ``MIN_TEXT_PX`` once
    scaled down to the column: about 1170 px, an 11.7-inch figure."""
    smallest_pt = min(v for k, v in BOOK_STYLE.items() if k.endswith("size"))
    return int(COLUMN_PX * smallest_pt * FIGURE_DPI / 72 / MIN_TEXT_PX)


def book_style() -> None:
    """Use :data:`BOOK_STYLE` for every figure drawn after this call (each chapter calls it once)."""
    plt.rcParams.update(BOOK_STYLE)


def _np(x) -> np.ndarray:
    if isinstance(x, torch.Tensor):
        return x.detach().cpu().float().numpy()
    return np.asarray(x, dtype=np.float32)


def figure_png(fig, dpi: int = 100) -> bytes:
    """Render a figure to PNG bytes and close it (so a notebook does not show it a second time)."""
    buf = io.BytesIO()
    fig.savefig(buf, format="png", dpi=dpi)
    plt.close(fig)
    return buf.getvalue()


def display_fft(rate: int) -> tuple[int, int]:
    """An STFT size of about 46 ms at ``rate`` (2048 at 44.1 kHz) and a hop of a quarter of it."""
    n_fft = 2 ** int(round(math.log2(max(64, rate * 0.0464))))
    return n_fft, n_fft // 4


def magnitude_image(mag, rate: int, hop: int, ax=None, title: str | None = None, floor_db: float = FLOOR_DB,
                    max_freq: float | None = None, colorbar: bool = True, n_fft: int | None = None,
                    log_freq: bool = True):
    """Draw a magnitude spectrogram (bins, frames) in dB re full scale; returns the image.

    rate, hop: the STFT's sample rate and hop (for the axes); n_fft defaults to 2*(bins-1). log_freq: a
    logarithmic frequency axis from :data:`LOW_HZ` (each octave the same height, so a bass line and a
    hi-hat both get room), else linear from 0 Hz.
    """
    m = _np(mag)
    if m.ndim != 2:
        raise FlowsepError(f"a magnitude spectrogram must be (bins, frames), got shape {m.shape}")
    n_fft = n_fft or 2 * (m.shape[0] - 1)
    db = 20 * np.log10(np.maximum(m / (n_fft / 4), 1e-10))
    if ax is None:
        _, ax = plt.subplots(figsize=(8, 3))
    top = min(rate / 2, max_freq) if max_freq else rate / 2
    if log_freq:
        freqs = np.arange(m.shape[0]) * rate / n_fft
        times = (np.arange(m.shape[1]) + 0.5) * hop / rate
        im = ax.pcolormesh(times, freqs[1:], db[1:], shading="nearest", cmap="magma", vmin=-floor_db, vmax=0,
                           rasterized=True)
        ax.set_yscale("log")
        ax.set_ylim(min(LOW_HZ, top / 2), top)
        ticks = [t for t in (50, 100, 200, 500, 1000, 2000, 5000, 10000) if LOW_HZ <= t <= top]
        ax.set_yticks(ticks, [f"{t // 1000}k" if t >= 1000 else str(t) for t in ticks])
        ax.minorticks_off()
    else:
        extent = (0, m.shape[1] * hop / rate, 0, rate / 2)
        im = ax.imshow(db, origin="lower", aspect="auto", extent=extent, cmap="magma", vmin=-floor_db, vmax=0)
        ax.set_ylim(0, top)
    ax.set_xlabel("time (s)")
    ax.set_ylabel("frequency (Hz)")
    if title:
        ax.set_title(title)
    if colorbar:
        ax.figure.colorbar(im, ax=ax, label="dB re full scale", pad=0.01)
    return im


def spectrogram(audio, rate: int, ax=None, n_fft: int | None = None, hop: int | None = None,
                title: str | None = None, floor_db: float = FLOOR_DB, max_freq: float | None = None,
                colorbar: bool = True):
    """Draw the spectrogram of a signal, (samples,) or (channels, samples) (downmixed to mono)."""
    a = torch.as_tensor(_np(audio))
    if a.dim() == 2:
        a = a.mean(0)
    d_fft, d_hop = display_fft(rate)
    n_fft, hop = n_fft or d_fft, hop or d_hop
    mag = stft(a, n_fft, hop).abs()
    return magnitude_image(mag, rate, hop, ax=ax, title=title, floor_db=floor_db, max_freq=max_freq,
                           colorbar=colorbar, n_fft=n_fft)


def stem_spectrograms(stems: Mapping, rate: int, seconds: float | None = None, max_freq: float | None = None,
                      width: float = 10.0, row_height: float = 1.7):
    """One spectrogram per stem, stacked, with shared axes and colour scale: {name: audio} -> Figure."""
    if not stems:
        raise FlowsepError("stem_spectrograms needs at least one stem")
    fig, axes = plt.subplots(len(stems), 1, figsize=(width, row_height * len(stems) + 0.6), sharex=True,
                             squeeze=False)
    im = None
    for ax, (name, sig) in zip(axes[:, 0], stems.items()):
        a = _np(sig)
        if seconds is not None:
            a = a[..., :int(seconds * rate)]
        im = spectrogram(a, rate, ax=ax, max_freq=max_freq, colorbar=False)
        ax.set_title(name, loc="left")
        ax.set_xlabel("")
    axes[-1, 0].set_xlabel("time (s)")
    fig.tight_layout()
    fig.colorbar(im, ax=axes[:, 0].tolist(), label="dB re full scale", pad=0.01, fraction=0.03)
    return fig


def _ema(values, weight: float) -> np.ndarray:
    out, acc = [], None
    for v in values:
        acc = v if acc is None else weight * acc + (1 - weight) * v
        out.append(acc)
    return np.asarray(out)


def loss_curves(histories: Mapping, bits: bool = True, smooth: float = 0.9, title: str | None = None):
    """Training and validation loss of several runs: {name: history} -> Figure with two panels.

    history: the ``prior.history`` dict of :func:`flowsep.train.train_prior` (step, train_nll, val_step,
    val_nll in nats per value). ``bits=True`` shows bits per dimension; the training curve is drawn
    raw (faint) and smoothed with an exponential moving average of weight ``smooth``.
    """
    scale = 1 / math.log(2) if bits else 1.0
    unit = "bits/dim" if bits else "nats/dim"
    fig, (a_train, a_val) = plt.subplots(1, 2, figsize=(11, 3.6), sharey=True)
    for i, (name, h) in enumerate(histories.items()):
        color = f"C{i}"
        steps = np.asarray(h.get("step", []))
        train = np.asarray(h.get("train_nll", [])) * scale
        if len(steps):
            a_train.plot(steps, train, color=color, alpha=0.2, lw=0.8)
            a_train.plot(steps, _ema(train, smooth), color=color, lw=1.6, label=name)
        if len(h.get("val_step", [])):
            a_val.plot(h["val_step"], np.asarray(h["val_nll"]) * scale, "o-", color=color, label=name)
    a_train.set_title("training batches")
    a_val.set_title("validation clips")
    for ax in (a_train, a_val):
        ax.set_xlabel("step")
        ax.grid(alpha=0.3)
    a_train.set_ylabel(f"negative log-likelihood ({unit})")
    a_val.legend(loc="upper left", bbox_to_anchor=(1.01, 1.0), frameon=False)   # beside the curves, off them
    if title:
        fig.suptitle(title)
    fig.tight_layout()
    return fig


def likelihood_heatmap(matrix, ax=None, title: str | None = None, unit: str = "bits/dim", fmt: str = "{:.2f}",
                      higher_is_better: bool = False):
    """Heat map of a likelihood matrix: rows are priors, columns the sources whose clips they scored.

    matrix: a pandas DataFrame (index = priors, columns = sources), e.g. the mean bits/dim of
    :func:`flowsep.analysis.likelihood_matrix` (lower is better) or the shares of
    :func:`flowsep.analysis.vote_matrix` (``higher_is_better=True``, ``unit="share of clips"``,
    ``fmt="{:.0%}"``). The best entry of every column is framed; better is brighter. Returns the Figure.
    """
    values = np.asarray(matrix, dtype=float)
    rows = list(getattr(matrix, "index", range(values.shape[0])))
    cols = list(getattr(matrix, "columns", range(values.shape[1])))
    if ax is None:
        fig, ax = plt.subplots(figsize=(1.3 * len(cols) + 2.5, 1.0 * len(rows) + 1.4))
    else:
        fig = ax.figure
    im = ax.imshow(values, cmap="viridis" if higher_is_better else "viridis_r")
    ax.set_xticks(range(len(cols)), [str(c) for c in cols])
    ax.set_yticks(range(len(rows)), [str(r) for r in rows])
    ax.set_xlabel("test clips of")
    ax.set_ylabel("prior")
    lo, hi = np.nanmin(values), np.nanmax(values)
    for i in range(values.shape[0]):
        for j in range(values.shape[1]):
            bright = (values[i, j] - lo) / (hi - lo + 1e-12)
            bright = bright if higher_is_better else 1 - bright
            ax.text(j, i, fmt.format(values[i, j]), ha="center", va="center", fontsize=11,
                    color="black" if bright > 0.5 else "white")
    for j in range(values.shape[1]):
        i = int(np.nanargmax(values[:, j]) if higher_is_better else np.nanargmin(values[:, j]))
        ax.add_patch(Rectangle((j - 0.5, i - 0.5), 1, 1, fill=False, edgecolor="red", lw=2.5))
    fig.colorbar(im, ax=ax, label=unit, pad=0.02)
    better = "higher" if higher_is_better else "lower"
    ax.set_title(title or f"{unit} ({better} is better; red: best prior for each source)")
    fig.tight_layout()
    return fig


def flow_2d(data, log_prob=None, samples=None, latent=None, lim: float = 3.0, grid: int = 160,
            titles=("data", "learned density", "samples", "data in latent space")):
    """Panels of a 2-D flow: the data, its density exp(log_prob) on a grid, samples, and the latent codes.

    data, samples, latent: (N, 2) arrays; log_prob: a function (M, 2) tensor -> (M,) tensor of log p.
    Panels whose input is None are left out. Returns the Figure.
    """
    panels = [p for p in (("data", data), ("density", log_prob), ("samples", samples), ("latent", latent))
              if p[1] is not None]
    fig, axes = plt.subplots(1, len(panels), figsize=(2.7 * len(panels), 2.9), squeeze=False)
    names = dict(zip(("data", "density", "samples", "latent"), titles))
    for ax, (kind, value) in zip(axes[0], panels):
        if kind == "density":
            g = np.linspace(-lim, lim, grid, dtype=np.float32)
            xx, yy = np.meshgrid(g, g)
            pts = torch.from_numpy(np.stack([xx.ravel(), yy.ravel()], 1))
            with torch.no_grad():
                dens = torch.exp(value(pts)).reshape(grid, grid).numpy()
            ax.imshow(dens, origin="lower", extent=(-lim, lim, -lim, lim), cmap="viridis")
        else:
            v = _np(value)
            ax.scatter(v[:, 0], v[:, 1], s=3, alpha=0.4, color="C1" if kind == "samples" else "C0")
            if kind == "latent":
                circle = plt.Circle((0, 0), 2.0, fill=False, ls="--", color="gray")
                ax.add_patch(circle)
        ax.set_xlim(-lim, lim)
        ax.set_ylim(-lim, lim)
        ax.set_aspect("equal")
        ax.set_title(names[kind])
    fig.tight_layout()
    return fig


def chunk_activity(signal, rate: int, segment: int, stride: int, silence_db: float, ax=None,
                   title: str | None = None):
    """The level of every training chunk of one recording against the silence threshold.

    signal: (samples,) mono. Chunks of ``segment`` samples start every ``stride`` samples; those whose
    RMS is below ``silence_db`` dBFS are never drawn for training (shaded). Returns the Figure.
    """

    starts, levels = chunk_levels(_np(signal), segment, stride)
    if ax is None:
        fig, ax = plt.subplots(figsize=(10, 2.6))
    else:
        fig = ax.figure
    t = starts / rate
    ax.plot(t, levels, color="C0", lw=1.2, label="chunk RMS")
    ax.axhline(silence_db, color="C3", ls="--", lw=1, label=f"silence threshold ({silence_db:.0f} dBFS)")
    quiet = levels <= silence_db
    ax.fill_between(t, levels.min(initial=silence_db) - 5, silence_db, where=quiet, step="post",
                    color="C3", alpha=0.15, label="skipped")
    ax.set_xlabel("chunk start (s)")
    ax.set_ylabel("dBFS")
    ax.legend(loc="lower right")
    if title:
        ax.set_title(title)
    fig.tight_layout()
    return fig
