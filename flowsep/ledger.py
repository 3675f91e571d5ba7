"""The reproduction ledger: every claim of the InstGlow paper beside what this run measured, and every deviation.

Chapter: "Evaluation".

:func:`claims` turns one benchmark run (the table of :func:`flowsep.comparison.run_benchmark`) into one row
per claim of the paper (:mod:`flowsep.paper`): every number of its 4-stem MUSDB18 table, every number of its
Slakh new-source table, "competitive with Open-Unmix", the ordering of the systems, "new sources without
retraining", and every separation setting. Each row holds the paper's value, this run's value and a status:

* ``reproduced``: this run measured the claim and agrees (a number within :data:`TOLERANCE_DB` of the paper's,
  a setting equal to the paper's, a relative claim that holds);
* ``differs``: this run measured it and does not agree;
* ``not attempted at this profile``: what the paper measured is not what this run can measure (synthetic songs
  instead of MUSDB18, small models, another protocol, no Slakh data); this run's value is shown where there
  is one, for orientation only.

:func:`deviations` lists every way flowsep departs from the paper at a profile, read from the code that
runs (:meth:`flowsep.prior.PriorConfig.preset`, :data:`flowsep.separate.METHODS`, the baselines' configs),
not typed in. :func:`write_ledger` writes both as ``ledger.csv`` (claims and deviations in one file, column
``part``) and ``ledger.md``.
"""
from __future__ import annotations

import math
from pathlib import Path

import pandas as pd

from . import paper
from .baselines.models import SupervisedConfig
from .constants import counted
from .io import atomic_path
from .prior import PriorConfig
from .separate import METHODS

STATUSES = ("reproduced", "differs", "not attempted at this profile")
REPRODUCED, DIFFERS, NOT_ATTEMPTED = STATUSES
#: a number of the paper counts as reproduced when this run is this close to it (dB)
TOLERANCE_DB = 0.5
#: "competitive with Open-Unmix": InstGlow's mean SDR at most this far below Open-Unmix's (dB); the paper's
#: own table has it 2.31 dB behind
COMPETITIVE_DB = 3.0
STEREO_WORDS = {"midside": "mid and side, each a batch item of the search",
                "mid": "mid only, the side split in the ratios found for mid",
                "channels": "each channel a batch item"}
CLAIM_COLUMNS = ["part", "claim", "source", "paper", "this_run", "status", "reason"]
DEVIATION_COLUMNS = ["part", "aspect", "paper", "flowsep", "where"]


def _fmt(v, digits=2) -> str:
    if v is None or (isinstance(v, float) and math.isnan(v)):
        return "-"
    if isinstance(v, float):
        return f"{v:.{digits}f}"
    return str(v)


def comparable(profile: str, protocol: str, synthetic: bool) -> tuple[bool, str]:
    """Whether this run's absolute SDRs can be set against the paper's, and if not, why (one line)."""
    why = []
    if synthetic:
        why.append("synthetic songs, not MUSDB18")
    if profile != "paper":
        why.append(f"profile {profile}: small models, short training")
    if protocol != "paper":
        why.append(f"{protocol} protocol, not the paper's")
    return not why, "; ".join(why)


def claims(table: pd.DataFrame, *, profile: str, protocol: str, synthetic: bool, settings: dict,
           paired: pd.DataFrame | None = None) -> pd.DataFrame:
    """One row per claim of the paper (columns :data:`CLAIM_COLUMNS`).

    table: the benchmark table (columns key, vocals, drums, bass, other, mean). settings: flowsep's value of
    each :data:`flowsep.paper.SEPARATION_SETTINGS` name, as the run used them (:func:`flowsep_settings`).
    paired: the paired differences to InstGlow (index: system key; columns diff, diff_ci_low, diff_ci_high).
    """
    ours = table.set_index("key") if "key" in table.columns else table
    rows = (_musdb_claims(ours, *comparable(profile, protocol, synthetic)) + _slakh_claims()
            + _relative_claims(ours, paired) + _settings_claims(settings))
    return pd.DataFrame(rows, columns=CLAIM_COLUMNS)


def _musdb_claims(ours: pd.DataFrame, ok: bool, why: str) -> list[dict]:
    """Every number of the paper's 4-stem table beside this run's."""
    rows = []
    for prow in paper.MUSDB_TABLE:
        for target in paper.TARGETS:
            value = float(ours.loc[prow.key, target]) if prow.key in ours.index else math.nan
            if prow.key not in ours.index:
                status = NOT_ATTEMPTED
                reason = ("flowsep has no SpecGAN prior" if prow.key == "specgan"
                          else f"{prow.system} was not among the systems of this run")
            elif not ok:
                status, reason = NOT_ATTEMPTED, why
            elif math.isfinite(value) and abs(value - prow.sdr[target]) <= TOLERANCE_DB:
                status, reason = REPRODUCED, f"within {TOLERANCE_DB} dB of the paper"
            else:
                status, reason = DIFFERS, f"{value - prow.sdr[target]:+.2f} dB from the paper"
            rows.append({"part": "4-stem MUSDB18", "claim": f"{prow.system}, {target} SDR (dB)",
                         "source": prow.source + (f" [{prow.cite}]" if prow.cite != paper.PAPER["key"] else ""),
                         "paper": prow.sdr[target], "this_run": round(value, 2) if math.isfinite(value) else value,
                         "status": status, "reason": reason})
    return rows


def _slakh_claims() -> list[dict]:
    """Every number of the Slakh new-source table: not attempted here (no Slakh2100)."""
    return [{"part": "Slakh new sources", "claim": f"{prow.system}, {target} SDR (dB)",
             "source": prow.source, "paper": prow.sdr[target], "this_run": math.nan, "status": NOT_ATTEMPTED,
             "reason": "no Slakh2100 data here; chapter 7 adds guitar and piano priors on synthetic songs"}
            for prow in paper.SLAKH_TABLE for target in paper.SLAKH_TARGETS if prow.sdr[target] is not None]


def _relative_claims(ours: pd.DataFrame, paired: pd.DataFrame | None) -> list[dict]:
    """The relative claims, which a run at any profile can test: InstGlow against Open-Unmix, the order of
    the systems, new sources without retraining."""
    rows = []
    p_gap = paper.gap("instglow", "openunmix")
    if {"instglow", "openunmix"} <= set(ours.index):
        gap = float(ours.loc["instglow", "mean"] - ours.loc["openunmix", "mean"])
        ci = ""
        if paired is not None and "openunmix" in paired.index:
            d = paired.loc["openunmix"]
            ci = (f"; InstGlow minus Open-Unmix in the mean over songs: {-d['diff']:+.2f} dB "
                  f"[{-d['diff_ci_high']:+.2f}, {-d['diff_ci_low']:+.2f}]")
        rows.append({"part": "claims", "claim": f"InstGlow competitive with Open-Unmix (mean SDR at most "
                                                f"{COMPETITIVE_DB:g} dB below)",
                     "source": paper.CLAIMS[0].source, "paper": f"{p_gap:+.2f} dB", "this_run": f"{gap:+.2f} dB",
                     "status": REPRODUCED if gap >= -COMPETITIVE_DB else DIFFERS,
                     "reason": f"InstGlow {'ahead of' if gap > 0 else 'behind'} Open-Unmix by {abs(gap):.2f} dB in "
                               f"the mean of per-target medians{ci}"})
    else:
        rows.append({"part": "claims", "claim": "InstGlow competitive with Open-Unmix",
                     "source": paper.CLAIMS[0].source,
                     "paper": f"{p_gap:+.2f} dB", "this_run": "-", "status": NOT_ATTEMPTED,
                     "reason": "InstGlow or Open-Unmix not among the systems of this run"})
    run_keys = [r.key for r in paper.MUSDB_TABLE if r.key in ours.index]
    p_order = sorted(run_keys, key=lambda k: -paper.musdb_row(k).mean)
    names = {r.key: r.system for r in paper.MUSDB_TABLE}
    if len(run_keys) >= 2:
        our_order = sorted(run_keys, key=lambda k: -float(ours.loc[k, "mean"]))
        rows.append({"part": "claims", "claim": "ordering of the systems by mean SDR",
                     "source": paper.MUSDB_SOURCE, "paper": " > ".join(names[k] for k in p_order),
                     "this_run": " > ".join(names[k] for k in our_order),
                     "status": REPRODUCED if our_order == p_order else DIFFERS,
                     "reason": "same order" if our_order == p_order else
                               f"{sum(a != b for a, b in zip(our_order, p_order))} of {len(p_order)} places differ"})
    rows.append({"part": "claims", "claim": paper.CLAIMS[1].text, "source": paper.CLAIMS[1].source,
                 "paper": "InstGlow adds guitar and piano priors; supervised systems need retraining",
                 "this_run": "-", "status": NOT_ATTEMPTED,
                 "reason": "the benchmark separates the 4 MUSDB18 stems; chapter 7 tests this claim"})
    return rows


def _settings_claims(settings: dict) -> list[dict]:
    """Each separation setting of the paper beside the one this run used."""
    rows = []
    for s in paper.SEPARATION_SETTINGS:
        value = settings.get(s.name, "-")
        same = _same(s.value, value)
        note = "" if s.certain else " (paper's value read from its reference code)"
        rows.append({"part": "separation settings", "claim": s.name, "source": s.source,
                     "paper": _setting(s.value), "this_run": _setting(value),
                     "status": REPRODUCED if same else DIFFERS,
                     "reason": ("same setting" if same else "flowsep uses another setting") + note})
    return rows


def _setting(v) -> str:
    return f"{v:g}" if isinstance(v, (int, float)) and not isinstance(v, bool) else str(v)


def _same(a, b) -> bool:
    if isinstance(a, (int, float)) and isinstance(b, (int, float)):
        return math.isclose(float(a), float(b), rel_tol=1e-9, abs_tol=1e-12)
    return str(a) == str(b)


def flowsep_settings(profile: str, separator=None) -> dict:
    """flowsep's value of every :data:`flowsep.paper.SEPARATION_SETTINGS` name, for the InstGlow separator of
    the run (a :class:`flowsep.separate.Separator`), else for the ``instglow`` method's defaults at ``profile``."""
    m = separator.method if separator is not None else METHODS["instglow"]
    cfg = separator.config if separator is not None else PriorConfig.preset(profile)
    search, post, stereo, init = m.search, m.post, m.stereo, m.search.init   # a latent search, as instglow's
    return {
        "domain": f"{cfg.transform} magnitude STFT, {stereo} stereo, mixture phase for resynthesis",
        "sample_rate": cfg.sample_rate, "n_fft": cfg.n_fft, "hop": cfg.hop, "window": f"hann {cfg.n_fft}",
        "loss": "a1 * generalized KL(|X| || sum_j x_j) + a2 * prior term",
        "prior_space": search.prior_space,
        "z_init": 0.0 if init == "zeros" else f"noise {init}",
        "a1": 1.0, "a2": float(search.prior_weight), "optimizer": "Adam",
        "lr": float(search.lr), "iterations": int(search.iterations),
        "segment_seconds": float(m.segment_seconds),
        "post_processing": {"wiener": "multichannel Wiener filter", "mask": "ratio mask"}.get(post, post),
        "annealing": "none",
        # not settings of the paper's table: what the deviations name
        "stereo": stereo, "transform": cfg.transform,
    }


def deviations(profile: str, *, data: str, synthetic: bool, protocol: str, tracks: int, budget: str,
               settings: dict, excerpt=None) -> pd.DataFrame:
    """Every way flowsep at ``profile`` departs from the paper (columns :data:`DEVIATION_COLUMNS`), read from
    the configs the run used. budget: the run's training budget in words; excerpt: the (offset, seconds) of
    every test song that was scored, or None for whole songs."""
    p = PriorConfig.preset(profile)
    pub = PriorConfig.preset("paper")
    seg = (p.segment_frames - 1) * p.hop / p.sample_rate
    sup = SupervisedConfig.preset("openunmix", profile)
    rows = [
        ("Demucs", "Demucs v2 (waveform U-Net with LSTM)",
         "torchaudio HDemucs (Hybrid Demucs, v3), trained here", "flowsep/baselines/models.py"),
        ("supervised systems", "published models, trained by their authors on MUSDB18",
         "small versions trained here on the same data and budget as the priors", "flowsep/baselines/models.py"),
        ("GAN prior (SpecGAN)", "cited from Narayanaswamy et al. 2020", "not implemented", "-"),
        ("post-filter", "none (a ratio rescale x_j / sum_k x_k * |X| exists in the code, off by default)",
         settings.get("post_processing", "-"), "flowsep/render.py, Separator(post=...)"),
        ("stereo", "mono downmix",
         STEREO_WORDS.get(settings.get("stereo"), str(settings.get("stereo"))),
         "flowsep/separate.py METHODS['instglow']"),
        ("magnitudes", "linear", f"{p.transform}" + (" (small profiles: log generalises after short training)"
                                                   if p.transform != pub.transform else ""),
         "flowsep/prior.py PriorConfig.preset"),
        ("sample rate and STFT", f"{pub.sample_rate} Hz, n_fft {pub.n_fft}, hop {pub.hop}",
         f"{p.sample_rate} Hz, n_fft {p.n_fft}, hop {p.hop}", "flowsep/prior.py PriorConfig.preset"),
        ("flow size", f"{pub.n_blocks} blocks, {pub.hidden} channels, {pub.n_layers} layers",
         f"{p.n_blocks} blocks, {p.hidden} channels, {p.n_layers} layers", "flowsep/prior.py PriorConfig.preset"),
        ("training data", "MUSDB18 train (Slakh2100, GuitarSet for new sources)",
         ("synthetic songs in MUSDB18 layout" if synthetic else "MUSDB18-format folder") + f": {data}",
         "flowsep/data/synth.py, flowsep/cache.py"),
        ("training budget", f"1000 epochs per prior (flowsep's paper profile: {pub.steps} steps x batch "
                            f"{pub.batch_size})",
         budget, "flowsep/comparison.py run_benchmark"),
        ("training segments", "random 7-10 s pieces",
         f"priors {seg:.2f} s ({p.segment_frames} frames), supervised {sup.segment_seconds:.2f} s",
         "flowsep/prior.py, flowsep/baselines/models.py"),
        ("separation segments", "up to 60 s, processed whole",
         f"{settings.get('segment_seconds', 60.0):g} s with overlap and crossfade", "flowsep/parts.py"),
        ("evaluation protocol", paper.PROTOCOL,
         "standard MUSDB18 protocol (1 s windows, median over windows then tracks)" if protocol == "standard"
         else "the paper's protocol (flowsep.evaluate, protocol='paper')", "flowsep/evaluate.py"),
        ("test songs", "MUSDB18 test (50 songs)",
         counted(tracks, "test song") + (f", {excerpt[1]:g} s of each from {excerpt[0]:g} s" if excerpt else ""),
         "flowsep/comparison.py"),
        ("mixed precision", "fp16 (apex) on GPU", "fp16 autocast on CUDA, bf16 on capable CPUs, else fp32",
         "flowsep/train.py"),
    ]
    return pd.DataFrame([{"part": "deviation", "aspect": a, "paper": pv, "flowsep": fv, "where": w}
                         for a, pv, fv, w in rows], columns=DEVIATION_COLUMNS)


def counts(claim_rows: pd.DataFrame) -> dict:
    """How many claims have each status."""
    return {s: int((claim_rows["status"] == s).sum()) for s in STATUSES}


def markdown(claim_rows: pd.DataFrame, deviation_rows: pd.DataFrame, title: str) -> str:
    """ledger.md: the claims, then the deviations."""
    c = counts(claim_rows)
    lines = [f"# {title}", "",
             "Status counts: " + ", ".join(f"{s}: {n}" for s, n in c.items()) + ".", "",
             "## Claims of the paper", "",
             "| part | claim | paper | this run | status | reason |", "|---|---|---|---|---|---|"]
    for _, r in claim_rows.iterrows():
        lines.append(f"| {r['part']} | {r['claim']} | {_fmt(r['paper'])} | {_fmt(r['this_run'])} | {r['status']} | "
                     f"{r['reason']} |")
    lines += ["", f"Sources: {paper.PAPER['authors']}, \"{paper.PAPER['title']}\", {paper.PAPER['venue']}, "
                  f"doi:{paper.PAPER['doi']}; the SpecGAN-prior row: {paper.SPECGAN_PAPER['authors']}, "
                  f"\"{paper.SPECGAN_PAPER['title']}\", {paper.SPECGAN_PAPER['venue']}.", "",
              "## How flowsep departs from the paper", "",
              "| aspect | paper | flowsep | where |", "|---|---|---|---|"]
    for _, r in deviation_rows.iterrows():
        lines.append(f"| {r['aspect']} | {r['paper']} | {r['flowsep']} | {r['where']} |")
    return "\n".join(lines) + "\n"


def write_ledger(out, claim_rows: pd.DataFrame, deviation_rows: pd.DataFrame, title: str) -> tuple[Path, Path]:
    """Write ``out/ledger.csv`` (claims and deviations, column ``part``) and ``out/ledger.md``."""
    out = Path(out)
    both = pd.concat([claim_rows, deviation_rows], ignore_index=True)
    with atomic_path(out / "ledger.csv") as tmp:
        both.to_csv(tmp, index=False, float_format="%.4f")
    with atomic_path(out / "ledger.md") as tmp:
        tmp.write_text(markdown(claim_rows, deviation_rows, title))
    return out / "ledger.csv", out / "ledger.md"
