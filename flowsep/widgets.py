"""What a reader hears: audio players, spectrogram-with-player views and grids of players.

Chapter: every chapter that plays audio ("The separation problem", "Training the source priors",
"Evaluation"). Everything here renders as plain HTML (``<audio>`` elements holding the sound as a
``data:`` URI, spectrograms as embedded PNG images), so it plays in Jupyter, on Colab and in the
static book alike, with no kernel behind it. In the rendered book, flowsep.book_build moves each sound
to an MP3 file beside its page (and each image to a PNG file), so that pages stay light.

Levels are never normalised (``IPython.display.Audio(..., normalize=False)``): a quiet stem sounds
quiet next to its mixture, as it does in the song. A signal whose peak exceeds full scale is the one
exception: it is turned down just enough to play, and the player says by how much.

Audio arrays are ``(samples,)`` or ``(channels, samples)`` (numpy or torch); long signals can be cut
to ``seconds`` and high sample rates are resampled to ``max_rate`` to keep a page light.
"""
from __future__ import annotations

import base64
import html
import math
import os
from collections.abc import Mapping

import ipywidgets as w
import matplotlib.pyplot as plt
import numpy as np
import torch
from IPython.display import HTML, Audio, display, display as show

from .errors import FlowsepError
from .evaluate import score_track, summarize
from .plots import figure_png, spectrogram
from .separate import Separator
from .spectral import resample

MAX_RATE = 22050      # players resample down to this rate: enough for listening, half the page size
PLAYER_WIDTH = 170    # pixels of one player in a row of players
MIN_PLAYER_WIDTH = 110  # a grid's players share the text width, down to this
GRID_COLUMNS = 4      # a grid with more target columns wraps: tables of at most this many, one under another


def listenable(audio, rate: int, seconds: float | None = None, max_rate: int | None = MAX_RATE):
    """Prepare a signal for a player.

    audio: (samples,) or (channels, samples). Returns (audio (channels, samples) float32 numpy, rate,
    gain_db) where the signal is cut to its first ``seconds``, resampled to at most ``max_rate`` and,
    only if its peak exceeds 1, scaled down by ``gain_db`` (< 0) so that it can be played unclipped.
    """
    t = audio.detach().cpu() if isinstance(audio, torch.Tensor) else torch.as_tensor(np.asarray(audio))
    t = t.to(torch.float32)
    if t.dim() == 1:
        t = t[None]
    if t.dim() != 2 or t.shape[-1] == 0:
        raise FlowsepError(f"audio to play must be (samples,) or (channels, samples), got shape {tuple(t.shape)}")
    if t.shape[0] > 8 and t.shape[1] <= 8:
        t = t.T  # a soundfile-style (samples, channels) array
    if not torch.isfinite(t).all():
        raise FlowsepError("audio to play contains NaN or Inf samples")
    rate = int(rate)
    if seconds is not None:
        t = t[:, :max(1, int(round(seconds * rate)))]
    if max_rate and rate > max_rate:
        t = resample(t, rate, int(max_rate))
        rate = int(max_rate)
    peak = float(t.abs().max())
    gain_db = 0.0
    if peak > 1.0:
        t = t * (0.99 / peak)
        gain_db = 20 * math.log10(0.99 / peak)
    return t.numpy(), rate, gain_db


def audio(audio, rate: int, seconds: float | None = None, max_rate: int | None = MAX_RATE):
    """An ``IPython.display.Audio`` player (levels kept: ``normalize=False``)."""
    a, r, _ = listenable(audio, rate, seconds, max_rate)
    return _player(a, r)


def _player(a: np.ndarray, rate: int):
    return Audio(a if a.shape[0] > 1 else a[0], rate=rate, normalize=False)


def audio_tag(audio_, rate: int, seconds: float | None = None, max_rate: int | None = MAX_RATE,
              width: int | str | None = PLAYER_WIDTH) -> str:
    """One ``<audio>`` element as an HTML string (the sound embedded as a wav ``data:`` URI).

    width: pixels, or a CSS width such as ``"100%"`` (None: the browser's default).
    """
    a, r, gain_db = listenable(audio_, rate, seconds, max_rate)
    player = _player(a, r)
    css = width if isinstance(width, str) else f"{int(width)}px" if width else None
    style = f' style="width:{css};min-width:{MIN_PLAYER_WIDTH}px"' if css else ""
    tag = f'<audio controls preload="metadata"{style} src="{player.src_attr()}"></audio>'
    if gain_db < 0:
        tag += f'<br><small>(turned down {-gain_db:.1f} dB to avoid clipping)</small>'
    return tag


def _png_data_uri(fig) -> str:
    return "data:image/png;base64," + base64.b64encode(figure_png(fig)).decode("ascii")


def _thumbnail(audio_, rate: int, seconds, width_px: int, height_px: int = 110, max_freq=None) -> str:
    a, r, _ = listenable(audio_, rate, seconds, max_rate=None)
    fig, ax = plt.subplots(figsize=(width_px / 100, height_px / 100), dpi=100)
    spectrogram(a, r, ax=ax, colorbar=False, max_freq=max_freq)
    ax.set_axis_off()
    fig.subplots_adjust(0, 0, 1, 1)
    return (f'<img alt="spectrogram" src="{_png_data_uri(fig)}" '
            f'style="width:100%;max-width:{width_px}px;display:block;margin:auto">')


def spectrogram_player(audio_, rate: int, title: str | None = None, seconds: float | None = None,
                       max_freq: float | None = None, width: int = 640):
    """A spectrogram above its player, as one HTML block (``IPython.display.HTML``)."""
    a, r, _ = listenable(audio_, rate, seconds, max_rate=None)
    fig, ax = plt.subplots(figsize=(width / 100, 2.4), dpi=100)
    spectrogram(a, r, ax=ax, title=title, max_freq=max_freq)
    fig.tight_layout()
    img = f'<img alt="{html.escape(title or "spectrogram")}" src="{_png_data_uri(fig)}" style="max-width:100%">'
    player = audio_tag(audio_, rate, seconds, width=width)
    return HTML(f'<figure class="flowsep-player" style="margin:0.5em 0">{img}<br>{player}</figure>')


def audio_grid(rows: Mapping, rate: int | None = None, columns=None, seconds: float | None = None,
               spectrograms: bool = False, caption: str | None = None, max_freq: float | None = None):
    """A table of players: one row per system (or version), one column per target.

    rows: {row name: {column name: audio or (audio, rate) or None}}; ``rate`` applies to plain arrays.
    columns: the column order (default: first-seen order). A missing or None cell shows a dash (a
    system that has no output for that target). With ``spectrograms=True`` every cell also shows a
    small spectrogram above its player. More than :data:`GRID_COLUMNS` columns wrap: the grid becomes
    tables of at most that many columns, one under the other, so that every player fits the text width.
    Returns an ``IPython.display.HTML``.
    """
    if not isinstance(rows, Mapping) or not rows:
        raise FlowsepError("audio_grid needs {row: {column: audio}} with at least one row")
    if columns is None:
        columns = []
        for cells in rows.values():
            for c in cells:
                if c not in columns:
                    columns.append(c)
    if len(columns) > GRID_COLUMNS:
        parts = [audio_grid(rows, rate, columns[k:k + GRID_COLUMNS], seconds, spectrograms,
                            caption if k == 0 else None, max_freq).data
                 for k in range(0, len(columns), GRID_COLUMNS)]
        return HTML("".join(parts))
    cell_style = "padding:3px 4px;border:1px solid #ddd;vertical-align:top;text-align:center"
    head = "".join(f'<th style="{cell_style}">{html.escape(str(c))}</th>' for c in columns)
    show_names = any(str(r) for r in rows)
    parts = ['<div style="overflow-x:auto"><table class="flowsep-audio-grid" '
             'style="border-collapse:collapse;margin:0.5em 0;width:100%">']
    if caption:
        parts.append(f'<caption style="caption-side:top;text-align:left">{html.escape(caption)}</caption>')
    parts.append(f"<thead><tr>{'<th></th>' if show_names else ''}{head}</tr></thead><tbody>")
    for name, cells in rows.items():
        tds = []
        for c in columns:
            item = cells.get(c) if isinstance(cells, Mapping) else None
            if item is None:
                tds.append(f'<td style="{cell_style}">&ndash;</td>')
                continue
            sig, r = item if isinstance(item, tuple) else (item, rate)
            if r is None:
                raise FlowsepError(f"audio_grid: no sample rate for cell ({name}, {c}); pass rate= or (audio, rate)")
            body = _thumbnail(sig, r, seconds, PLAYER_WIDTH, max_freq=max_freq) if spectrograms else ""
            tds.append(f'<td style="{cell_style}">{body}{audio_tag(sig, r, seconds, width="100%")}</td>')
        label = f'<th style="{cell_style};text-align:left">{html.escape(str(name))}</th>' if show_names else ""
        parts.append(f"<tr>{label}{''.join(tds)}</tr>")
    parts.append("</tbody></table></div>")
    return HTML("".join(parts))


CAPTION_STYLE = [("caption-side", "top"), ("text-align", "left"), ("font-weight", "bold")]


def table(frame, caption: str, precision: int = 2):
    """A table as the book shows it: its caption above it, numbers to ``precision`` decimals (a pandas
    Styler; the data are not rounded)."""
    if not caption:
        raise FlowsepError("every table of the book has a caption")
    styled = frame.style.format(precision=precision).set_table_attributes('class="dataframe"')  # the book's style
    return styled.set_caption(caption).set_table_styles([{"selector": "caption", "props": CAPTION_STYLE}])


def text_table(frame, max_width: str = "24em", caption: str | None = None):
    """A table of sentences that fits the page: every cell wraps at ``max_width`` (a pandas Styler; numbers
    with two decimals).

    Long text cells (the ledger's reasons, the deviations) otherwise keep a table wider than the text
    column of the rendered book. caption: a title above the table.
    """
    cell = [("white-space", "normal"), ("max-width", max_width), ("vertical-align", "top"),
            ("text-align", "left")]
    styled = table(frame, caption) if caption else frame.style.format(precision=2).set_table_attributes(
        'class="dataframe"')
    return styled.set_table_styles([{"selector": "td", "props": cell}, {"selector": "th", "props": cell}],
                                   overwrite=False)


#: peak amplitude (full scale 1) below which a player is labelled silent: -80 dBFS
SILENT_PEAK = 1e-4


def players(stems: Mapping, rate: int, seconds: float | None = None, spectrograms: bool = False,
            caption: str | None = None):
    """Labelled players side by side, wrapping onto new lines as needed: ``{name: audio}`` -> HTML.

    Values may also be ``(audio, rate)``. With ``spectrograms=True`` each player has a small
    spectrogram above it. A player whose audio is silent (peak below :data:`SILENT_PEAK`) over the part
    it plays says so under its name, so that a reader does not take an empty stem for a broken player.
    """
    items = []
    for name, item in stems.items():
        sig, r = item if isinstance(item, tuple) else (item, rate)
        body = _thumbnail(sig, r, seconds, PLAYER_WIDTH) if spectrograms else ""
        played = np.asarray(sig)[..., :int(seconds * r)] if seconds else np.asarray(sig)
        silent = not played.size or float(np.abs(played).max()) < SILENT_PEAK
        label = html.escape(str(name)) + ("<br><small>(silent here)</small>" if silent else "")
        items.append(f'<div style="text-align:center"><div><b>{label}</b></div>'
                     f'{body}{audio_tag(sig, r, seconds)}</div>')
    head = f'<div style="margin-bottom:0.3em">{html.escape(caption)}</div>' if caption else ""
    return HTML(f'<div class="flowsep-players" style="margin:0.5em 0">{head}'
                f'<div style="display:flex;flex-wrap:wrap;gap:0.6em 1em">{"".join(items)}</div></div>')


def separation_panel(priors: Mapping, mixture, rate: int, references: Mapping | None = None,
                     device="auto", iterations: int = 150):
    """Controls to run a likelihood separation of ``mixture`` with chosen settings (ipywidgets).

    priors: {name: FlowPrior}; mixture: (channels, samples) at ``rate``; references: the true stems
    {name: (channels, samples)}, to score the estimates with museval (standard protocol). Pressing
    *Separate* runs :class:`flowsep.separate.Separator` (the published search, ``method="instglow"``) with
    the settings of the controls and shows the loss curve, the SDR table (when references are given) and a
    player per estimate. It needs a live kernel: a static page shows no controls. Returns the panel (an
    ``ipywidgets.VBox``).
    """
    style = {"description_width": "initial"}
    controls = {
        "iterations": w.IntSlider(value=iterations, min=0, max=600, step=10, description="iterations",
                                  style=style),
        "lr": w.FloatLogSlider(value=0.01, base=10, min=-3, max=-1, step=0.25, description="learning rate",
                               readout_format=".4f", style=style),
        "use_prior": w.Checkbox(value=False, description="use a prior term", style=style),
        "prior_weight": w.FloatLogSlider(value=1e-3, base=10, min=-5, max=0, step=0.5,
                                         description="prior weight", style=style),
        "prior_space": w.Dropdown(options=["z", "x"], value="z", description="prior space", style=style),
        "init": w.Dropdown(options=[("zeros (the mode)", "zeros"), ("noise 0.1", 0.1)], value="zeros",
                           description="start", style=style),
        "post": w.Dropdown(options=["wiener", "mask", "none"], value="wiener", description="post-filter",
                           style=style),
    }
    button = w.Button(description="Separate", button_style="primary", icon="play")
    out = w.Output()

    def run(_):
        settings = {k: c.value for k, c in controls.items()}
        if not settings.pop("use_prior"):
            settings["prior_weight"] = 0.0
        button.disabled = True
        out.clear_output()
        with out:
            try:
                sep = Separator(dict(priors), method="instglow", device=device, progress=True, **settings)
                result = sep.estimate(mixture, rate)
                stems = result.render(sep.method.post, sep.method.wiener_iterations)
                fig, ax = plt.subplots(figsize=(6, 2.5))
                ax.plot(result.trace)
                ax.set(xlabel="iteration", ylabel="loss", title="the separation objective")
                fig.tight_layout()
                plt.show()
                if references:
                    common = {k: references[k] for k in stems if k in references}
                    display(summarize([score_track(common, {k: stems[k] for k in common}, rate)]).round(2))
                display(players(stems, rate, caption="estimates"))
            except FlowsepError as e:
                print(f"error: {e}")
            finally:
                button.disabled = False

    button.on_click(run)
    grid = w.GridBox(list(controls.values()), layout=w.Layout(grid_template_columns="repeat(2, 360px)"))
    return w.VBox([grid, button, out])


def glue(name: str, value, display: bool = False) -> None:
    """Store a result under ``name`` for the book's text (myst-nb ``glue``), or show it where no text can.

    The text of a chapter quotes numbers as ``{glue:text}`name:.2f```, so the rendered page shows the
    numbers of its own run. That markup is MyST: on Colab or in Jupyter it stays as it is written. So
    the value is stored for the text only while ``make book`` executes the chapter (flowsep.book_build
    sets ``$FLOWSEP_BOOK_BUILD``); anywhere else it is printed (``name = value``), or shown when
    ``display`` is true (a table, a figure), so that a reader of the notebook gets the number the text
    quotes. numpy and torch scalars are stored as plain Python numbers.
    """
    if isinstance(value, torch.Tensor) and value.numel() == 1:
        value = value.item()
    if isinstance(value, np.generic):
        value = value.item()
    if os.environ.get("FLOWSEP_BOOK_BUILD") == "1":
        try:
            from myst_nb import glue as myst_glue
        except ImportError:
            pass
        else:
            myst_glue(name, value, display=display)
            return
    if display and not isinstance(value, (int, float, str)):
        show(value)
    else:
        print(f"{name} = {readable(value)}")


def readable(value) -> str:
    """A value as the text would quote it: floats to 4 significant digits, anything else as ``str``."""
    if isinstance(value, float) and math.isfinite(value):
        return f"{value:.4g}"
    return str(value)
