"""The reproduction ledger: every claim of the InstGlow paper beside what this run measured, every setting of its
separation beside flowsep's, and every deviation.

Chapters: "Evaluation" (the ledger of a benchmark run) and "New sources without retraining" (the new-source
claim, which that chapter runs: :func:`new_sources_claim`).

:func:`claims` turns one benchmark run (the table of :func:`flowsep.comparison.run_benchmark`, with the paired
differences over its songs) into one row per claim of the paper (:mod:`flowsep.paper`): every number of its
4-stem MUSDB18 table, every number of its Slakh new-source table, and its relational claims ("competitive with
Open-Unmix", the ordering of the systems, "new sources without retraining"). Each row holds the paper's value,
this run's value, a status, what it was judged on, and the reason. The statuses (:data:`STATUSES`):

* ``reproduced``: this run measured the claim and agrees (a number within :data:`TOLERANCE_DB` of the paper's,
  a relation that the paired interval confirms);
* ``differs``: this run measured it and does not agree (a paired interval that points the other way);
* ``undecided``: a relation this run measured, but whose paired 95% interval includes zero, so that the run
  cannot tell the systems apart (the book's one rule, :func:`flowsep.verdict.relation`: a system is ahead only
  when the paired interval of the difference over songs excludes zero);
* ``not attempted at this profile``: what the paper measured is not what this run can measure (synthetic songs
  instead of MUSDB18, small models, another protocol, no Slakh data); this run's value is shown where there
  is one, for orientation only;
* ``judged in chapter 7``: the new-source claim, which the benchmark does not run and the book's chapter 7
  does (:func:`new_sources_claim` gives the row from its numbers).

Relational claims are judged on what ran, whatever the profile, and say so in ``judged_on`` ("synthetic data
at cpu (standard protocol, 6 songs)"): they hold *there*, not on MUSDB18. The settings of the paper's separation
are not claims: :func:`settings_rows` sets each beside flowsep's in a table of their own. :func:`deviations`
lists every way flowsep departs from the paper at a profile, read from the code that runs
(:meth:`flowsep.prior.PriorConfig.preset`, :data:`flowsep.separate.METHODS`, the baselines' configs), not typed
in. A reason shared by several rows is given once: :func:`noted` replaces it by a numbered note.
:func:`write_ledger` writes all three tables as ``ledger.csv`` (column ``part``) and ``ledger.md``;
:func:`read_ledger` reads them back.
"""
from __future__ import annotations

import math
from pathlib import Path

import pandas as pd

from . import paper, verdict
from .baselines.models import SupervisedConfig
from .constants import DISPLAY_NAMES, counted
from .io import atomic_path
from .prior import PriorConfig
from .separate import METHODS

STATUSES = ("reproduced", "differs", "undecided", "not attempted at this profile", "judged in chapter 7")
REPRODUCED, DIFFERS, UNDECIDED, NOT_ATTEMPTED, IN_CHAPTER_7 = STATUSES
#: what each status means, for the legend under a ledger table
STATUS_MEANING = {
    REPRODUCED: "measured here and in agreement with the paper",
    DIFFERS: "measured here and not in agreement",
    UNDECIDED: "a relation measured here whose paired 95% interval includes zero: this run cannot tell",
    NOT_ATTEMPTED: "the paper measured something this run cannot; this run's value, if any, is for orientation",
    IN_CHAPTER_7: "the benchmark does not run it; chapter 7 does, and shows this row with its numbers",
}
#: a number of the paper counts as reproduced when a comparable run (real MUSDB18, paper profile and protocol)
#: is this close to it (dB)
TOLERANCE_DB = 0.5
#: the parts of the ledger that hold claims (the rest: "setting", "deviation")
CLAIM_PARTS = ("4-stem MUSDB18", "Slakh new sources", "relations")
SETTING_PART, DEVIATION_PART = "setting", "deviation"
#: in an ordering: how each adjacent pair of this run relates (verdict.relation of the paired interval)
ORDER_SIGNS = {verdict.AHEAD: ">", verdict.TIED: "=", verdict.BEHIND: "<"}
STEREO_WORDS = {"midside": "mid and side, each a batch item of the search",
                "mid": "mid only, the side split in the ratios found for mid",
                "channels": "each channel a batch item"}
CLAIM_COLUMNS = ["part", "claim", "source", "paper", "this_run", "status", "judged_on", "evidence", "reason"]
SETTING_COLUMNS = ["part", "setting", "source", "paper", "this_run", "same", "paper_value_from"]
DEVIATION_COLUMNS = ["part", "aspect", "paper", "flowsep", "where"]
#: the paired differences :func:`claims` reads: one row per pair, ``diff`` = a - b over the songs both scored
PAIRED_COLUMNS = ["a", "b", "diff", "ci_low", "ci_high", "songs"]
NEW_SOURCES_TARGETS = ("guitar", "piano")


def _fmt(v, digits=2) -> str:
    """A cell of ledger.md's tables: numbers with ``digits`` decimals, "-" for none, "|" escaped."""
    if v is None or (isinstance(v, float) and math.isnan(v)):
        return "-"
    if isinstance(v, float):
        return f"{v:.{digits}f}"
    return str(v).replace("|", "\\|")


def run_name(key: str) -> str:
    """How the ledger names a system of *this run* (what ran: HDemucs, not the paper's Demucs v2)."""
    return DISPLAY_NAMES.get(key, key)


def paper_name(key: str) -> str:
    """How the ledger names a system of the *paper's* table (its own label: "Demucs (v2)")."""
    return paper.musdb_row(key).system


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


def judged_on(profile: str, protocol: str, synthetic: bool, songs: int | None = None,
              seconds: float | None = None, test_set: str | None = None) -> str:
    """What a relational claim was judged on, in words: "synthetic data at cpu (standard protocol, 6 songs)".
    test_set: the name of the set whose test songs were scored, where it is not the one the systems trained
    on (e.g. the held-out style's): "synthetic data at cpu (test songs of synth-cpu-heldout-seed0, ...)"."""
    data = "synthetic data" if synthetic else "MUSDB18-format data"
    detail = [f"test songs of {test_set}"] if test_set else []
    detail.append(f"{protocol} protocol")
    if songs is not None:
        detail.append(counted(int(songs), "song") + (f", {seconds:g} s of each" if seconds else ""))
    return f"{data} at {profile} ({', '.join(detail)})"


def pairs_to_judge(keys) -> list[tuple[str, str]]:
    """The pairs (a, b) whose paired difference a - b :func:`claims` needs: InstGlow against Open-Unmix, and
    each adjacent pair of the paper's order of the systems among ``keys`` (the better one in the paper first)."""
    keys = set(keys)
    pairs = [("instglow", "openunmix")] if {"instglow", "openunmix"} <= keys else []
    order = _paper_order(keys)
    for pair in zip(order, order[1:]):
        if pair not in pairs and pair[::-1] not in pairs:
            pairs.append(pair)
    return pairs


def _paper_order(keys) -> list[str]:
    run = [r.key for r in paper.MUSDB_TABLE if r.key in set(keys)]
    return sorted(run, key=lambda k: -paper.musdb_row(k).mean)


def _pair(paired: pd.DataFrame | None, a: str, b: str) -> tuple[float, float, float, float]:
    """(diff, low, high, songs) of a - b from the paired table (either direction), NaNs if it has none."""
    nan = (math.nan,) * 4
    if paired is None or len(paired) == 0:
        return nan
    for x, y, sign in ((a, b, 1.0), (b, a, -1.0)):
        hit = paired[(paired["a"] == x) & (paired["b"] == y)]
        if len(hit):
            r = hit.iloc[0]
            lo, hi = sign * float(r["ci_low"]), sign * float(r["ci_high"])
            return sign * float(r["diff"]), min(lo, hi), max(lo, hi), float(r.get("songs", math.nan))
    return nan


def _interval(diff: float, low: float, high: float) -> str:
    return f"{diff:+.2f} dB [{low:+.2f}, {high:+.2f}]"


def claims(table: pd.DataFrame, *, profile: str, protocol: str, synthetic: bool,
           paired: pd.DataFrame | None = None, songs: int | None = None, seconds: float | None = None,
           new_sources: dict | None = None, test_set: str | None = None) -> pd.DataFrame:
    """One row per claim of the paper (columns :data:`CLAIM_COLUMNS`).

    table: the benchmark table (columns key, vocals, drums, bass, other, mean). paired: the paired differences
    between systems over the songs (columns :data:`PAIRED_COLUMNS`; at least the pairs of :func:`pairs_to_judge`).
    songs, seconds: how many songs were scored and how long an excerpt of each (None: whole songs), for
    ``judged_on``. new_sources: chapter 7's result (:func:`new_sources_claim`), None where it did not run.
    test_set: the set whose test songs were scored, where the systems trained on another (:func:`judged_on`).
    """
    ours = table.set_index("key") if "key" in table.columns else table
    on = judged_on(profile, protocol, synthetic, songs, seconds, test_set)
    rows = (_musdb_claims(ours, *comparable(profile, protocol, synthetic)) + _slakh_claims()
            + _relative_claims(ours, paired, on) + [new_sources_claim(new_sources)])
    return pd.DataFrame(rows, columns=CLAIM_COLUMNS)


def _musdb_claims(ours: pd.DataFrame, ok: bool, why: str) -> list[dict]:
    """Every number of the paper's 4-stem table beside this run's: the value of the system that ran, named in the
    claim where it is not the paper's ("Demucs (v2) (this run: HDemucs)")."""
    rows = []
    for prow in paper.MUSDB_TABLE:
        ran = prow.key in ours.index
        for target in paper.TARGETS:
            value = float(ours.loc[prow.key, target]) if ran else math.nan
            evidence = f"{run_name(prow.key)}: {value:.2f} dB" if ran and math.isfinite(value) else "-"
            if not ran:
                status = NOT_ATTEMPTED
                reason = ("flowsep has no SpecGAN prior" if prow.key == "specgan"
                          else f"{prow.system} was not among the systems of this run")
            elif not ok:
                status, reason = NOT_ATTEMPTED, why
            elif math.isfinite(value) and abs(value - prow.sdr[target]) <= TOLERANCE_DB:
                status, reason = REPRODUCED, f"within {TOLERANCE_DB} dB of the paper"
            else:
                status, reason = DIFFERS, f"{value - prow.sdr[target]:+.2f} dB from the paper"
            here = f" (this run: {run_name(prow.key)})" if ran and run_name(prow.key) != prow.system else ""
            rows.append({"part": CLAIM_PARTS[0], "claim": f"{prow.system}{here}, {target} SDR (dB)",
                         "source": prow.source + (f" [{prow.cite}]" if prow.cite != paper.PAPER["key"] else ""),
                         "paper": prow.sdr[target], "this_run": round(value, 2) if math.isfinite(value) else value,
                         "status": status, "judged_on": "-", "evidence": evidence if ok else "-",
                         "reason": reason})
    return rows


def _slakh_claims() -> list[dict]:
    """Every number of the Slakh new-source table: not attempted here (no Slakh2100)."""
    return [{"part": CLAIM_PARTS[1], "claim": f"{prow.system}, {target} SDR (dB)",
             "source": prow.source, "paper": prow.sdr[target], "this_run": math.nan, "status": NOT_ATTEMPTED,
             "judged_on": "-", "evidence": "-",
             "reason": "no Slakh2100 data here; chapter 7 adds guitar and piano priors on synthetic songs"}
            for prow in paper.SLAKH_TABLE for target in paper.SLAKH_TARGETS if prow.sdr[target] is not None]


def _relative_claims(ours: pd.DataFrame, paired: pd.DataFrame | None, on: str) -> list[dict]:
    """"Competitive with Open-Unmix" and the ordering of the systems, judged by the paired intervals of this
    run with the book's one rule (:func:`flowsep.verdict.relation`), on what ran (``on``)."""
    rows = []
    p_gap = paper.gap("instglow", "openunmix")
    competitive = {"part": CLAIM_PARTS[2], "claim": "InstGlow competitive with Open-Unmix (not behind it)",
                   "source": paper.CLAIMS[0].source,
                   "paper": f"{p_gap:+.2f} dB (InstGlow - Open-Unmix, the paper's table)"}
    if {"instglow", "openunmix"} <= set(ours.index):
        diff, low, high, _ = _pair(paired, "instglow", "openunmix")
        if math.isfinite(low) and math.isfinite(high):
            rel = verdict.relation(low, high)
            status = DIFFERS if rel == verdict.BEHIND else REPRODUCED
            competitive.update(this_run=f"{diff:+.2f} dB", status=status, judged_on=on,
                               evidence=f"InstGlow - Open-Unmix {_interval(diff, low, high)}: InstGlow {rel} "
                                        "Open-Unmix",
                               reason="competitive read as not behind: the paired 95% interval of InstGlow - "
                                      "Open-Unmix over the songs is not wholly below zero")
        else:
            competitive.update(this_run="-", status=UNDECIDED, judged_on=on, evidence="-",
                               reason="no paired scores of InstGlow and Open-Unmix over the same songs")
    else:
        competitive.update(this_run="-", status=NOT_ATTEMPTED, judged_on="-", evidence="-",
                           reason="InstGlow or Open-Unmix not among the systems of this run")
    rows.append(competitive)
    order = _paper_order(ours.index)
    if len(order) >= 2:
        chain, evidence, rels = run_name(order[0]), [], []
        for a, b in zip(order, order[1:]):
            diff, low, high, _ = _pair(paired, a, b)
            rel = verdict.relation(low, high)  # no interval: a tie, no direction without evidence
            rels.append(rel)
            chain += f" {ORDER_SIGNS[rel]} {run_name(b)}"
            evidence.append(f"{run_name(a)} - {run_name(b)} " + (_interval(diff, low, high) if math.isfinite(diff)
                                                                  else "not paired"))
        if all(r == verdict.AHEAD for r in rels):
            status, reason = REPRODUCED, "each system ahead of the next, as in the paper"
        elif verdict.BEHIND in rels:
            status, reason = DIFFERS, (f"{counted(rels.count(verdict.BEHIND), 'adjacent pair')} of the paper's order "
                                       "reversed (its paired interval wholly on the other side of zero)")
        else:
            status, reason = UNDECIDED, (f"{counted(rels.count(verdict.TIED), 'adjacent pair')} tied (paired "
                                         "interval includes zero), none reversed")
        rows.append({"part": CLAIM_PARTS[2], "claim": "ordering of the systems by mean SDR",
                     "source": paper.MUSDB_SOURCE, "paper": " > ".join(paper_name(k) for k in order),
                     "this_run": chain, "status": status, "judged_on": on, "evidence": "; ".join(evidence),
                     "reason": reason})
    return rows


def new_sources_claim(result: dict | None = None) -> dict:
    """The row of "new sources without retraining" (a dict of :data:`CLAIM_COLUMNS`).

    result: chapter 7's numbers, or None (the benchmark does not run the claim: status ``judged in chapter 7``).
    Keys: ``diff``, ``ci_low``, ``ci_high``: the SDR of the new sources' estimates (the separator with the new
    priors added) minus that of the mixture used as their estimate, the mean over songs x new sources with its
    paired 95% interval; ``judged_on`` (:func:`judged_on`); optional ``targets`` (the new sources, default
    guitar and piano), ``reused`` (priors reused untouched), ``retrained`` (priors trained again). The claim
    holds when the new sources' estimates are ahead of the mixture (:func:`flowsep.verdict.relation`).
    """
    p = {r.key: r for r in paper.SLAKH_TABLE}["instglow"]
    row = {"part": CLAIM_PARTS[2], "claim": paper.CLAIMS[1].text, "source": paper.CLAIMS[1].source,
           "paper": "InstGlow with guitar and piano priors added: " + ", ".join(
               f"{t} {p.sdr[t]:.2f} dB" for t in NEW_SOURCES_TARGETS) + "; supervised systems need retraining"}
    if result is None:
        row.update(this_run="-", status=IN_CHAPTER_7, judged_on="-", evidence="-",
                   reason="the benchmark separates the 4 MUSDB18 stems; chapter 7 adds priors and separates")
        return row
    targets = list(result.get("targets", NEW_SOURCES_TARGETS))
    diff, low, high = float(result["diff"]), float(result["ci_low"]), float(result["ci_high"])
    rel = verdict.relation(low, high)
    status = {verdict.AHEAD: REPRODUCED, verdict.BEHIND: DIFFERS}.get(rel, UNDECIDED)
    reused, retrained = list(result.get("reused", ())), list(result.get("retrained", ()))
    reason = f"{' and '.join(targets)} priors trained on their stems alone"
    if reused:
        reason += f"; {', '.join(reused)} priors reused untouched"
    if retrained:
        reason += f"; {', '.join(retrained)} trained again (its stem lost the new sources)"
    row.update(this_run=f"{diff:+.2f} dB over the mixture", status=status, judged_on=str(result["judged_on"]),
               evidence=f"new sources' SDR - the mixture's {_interval(diff, low, high)}: estimates {rel} the mixture",
               reason=reason)
    return row


def with_new_sources(claim_rows: pd.DataFrame, result: dict | None) -> pd.DataFrame:
    """The claims with the new-source row replaced by the one of chapter 7's ``result``."""
    out = claim_rows.copy()
    at = out.index[out["claim"] == paper.CLAIMS[1].text]
    row = new_sources_claim(result)
    for col in CLAIM_COLUMNS:
        out.loc[at, col] = row[col]
    return out


def settings_rows(settings: dict) -> pd.DataFrame:
    """Each separation setting of the paper beside the one this run used (columns :data:`SETTING_COLUMNS`).
    Settings are not claims: the table says which ones flowsep shares, it reproduces nothing.
    ``paper_value_from``: "the paper (IEEE SPL letter)", or "reference code" where the paper's value was read from the authors'
    public code (:attr:`flowsep.paper.Setting.certain`)."""
    rows = []
    for s in paper.SEPARATION_SETTINGS:
        value = settings.get(s.name, "-")
        rows.append({"part": SETTING_PART, "setting": s.name, "source": s.source,
                     "paper": _setting(s.value), "this_run": _setting(value),
                     "same": "yes" if _same(s.value, value) else "no",
                     "paper_value_from": "the paper (IEEE SPL letter)" if s.certain else "reference code"})
    return pd.DataFrame(rows, columns=SETTING_COLUMNS)


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
         f"{run_name('demucs')}: torchaudio's Hybrid Demucs (v3), trained here", "flowsep/baselines/models.py"),
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
    return pd.DataFrame([{"part": DEVIATION_PART, "aspect": a, "paper": pv, "flowsep": fv, "where": w}
                         for a, pv, fv, w in rows], columns=DEVIATION_COLUMNS)


def counts(claim_rows: pd.DataFrame) -> dict:
    """How many claims have each status (settings and deviations are not claims)."""
    claim_rows = claim_rows[claim_rows["part"].isin(CLAIM_PARTS)]
    return {s: int((claim_rows["status"] == s).sum()) for s in STATUSES}


def noted(rows: pd.DataFrame, column: str = "reason") -> tuple[pd.DataFrame, list[str]]:
    """The rows with every reason that several rows share replaced by a note number ("note 1"), and the
    notes in order; a reason of one row stays in place. Returns (rows, notes)."""
    out = rows.copy()
    shared = out[column].value_counts()
    shared = [r for r in out[column].drop_duplicates() if shared[r] > 1]
    number = {r: i for i, r in enumerate(shared, start=1)}
    out[column] = [f"note {number[r]}" if r in number else r for r in out[column]]
    return out, [f"{number[r]}. {r}" for r in shared]


def markdown(claim_rows: pd.DataFrame, deviation_rows: pd.DataFrame, title: str,
             setting_rows: pd.DataFrame | None = None) -> str:
    """ledger.md: the claims (shared reasons as notes under the table), the settings, the deviations."""
    c = counts(claim_rows)
    view, notes = noted(claim_rows)
    lines = [f"# {title}", "",
             "Claims by status: " + ", ".join(f"{s}: {n}" for s, n in c.items()) + ".", "",
             "## Claims of the paper", "",
             "| part | claim | paper | this run | status | judged on | evidence | reason |",
             "|---|---|---|---|---|---|---|---|"]
    for _, r in view.iterrows():
        lines.append("| " + " | ".join(_fmt(r[c]) for c in ("part", "claim", "paper", "this_run", "status", "judged_on",
                                                              "evidence", "reason")) + " |")
    lines += ["", "Notes:", ""] + notes if notes else []
    lines += ["", "Statuses: " + "; ".join(f"*{s}*: {m}" for s, m in STATUS_MEANING.items()) + ". A relation is "
              "judged by the paired 95% interval of the difference over the songs: ahead only when it excludes "
              "zero, tied otherwise.", "",
              f"Sources: {paper.PAPER['authors']}, \"{paper.PAPER['title']}\", {paper.PAPER['venue']}, "
              f"doi:{paper.PAPER['doi']}; the SpecGAN-prior row: {paper.SPECGAN_PAPER['authors']}, "
              f"\"{paper.SPECGAN_PAPER['title']}\", {paper.SPECGAN_PAPER['venue']}."]
    if setting_rows is not None and len(setting_rows):
        lines += ["", "## The paper's separation settings beside flowsep's (not claims)", "",
                  "| setting | paper | this run | same | paper's value from |", "|---|---|---|---|---|"]
        for _, r in setting_rows.iterrows():
            lines.append("| " + " | ".join(_fmt(r[c]) for c in ("setting", "paper", "this_run", "same",
                                                                  "paper_value_from")) + " |")
    lines += ["", "## How flowsep departs from the paper", "",
              "| aspect | paper | flowsep | where |", "|---|---|---|---|"]
    for _, r in deviation_rows.iterrows():
        lines.append("| " + " | ".join(_fmt(r[c]) for c in ("aspect", "paper", "flowsep", "where")) + " |")
    return "\n".join(lines) + "\n"


def write_ledger(out, claim_rows: pd.DataFrame, deviation_rows: pd.DataFrame, title: str,
                 setting_rows: pd.DataFrame | None = None) -> tuple[Path, Path]:
    """Write ``out/ledger.csv`` (claims, settings and deviations, told apart by column ``part``) and
    ``out/ledger.md``."""
    out = Path(out)
    parts = [claim_rows] + ([setting_rows] if setting_rows is not None else []) + [deviation_rows]
    both = pd.concat(parts, ignore_index=True)
    with atomic_path(out / "ledger.csv") as tmp:
        both.to_csv(tmp, index=False, float_format="%.4f")
    with atomic_path(out / "ledger.md") as tmp:
        tmp.write_text(markdown(claim_rows, deviation_rows, title, setting_rows))
    return out / "ledger.csv", out / "ledger.md"


def _number_or_text(v: str):
    if v == "":
        return "-"
    try:
        return float(v)
    except ValueError:
        return v


def read_ledger(path) -> tuple[pd.DataFrame, pd.DataFrame, pd.DataFrame]:
    """``ledger.csv`` back as (claims, settings, deviations), each with its own columns (a claim's ``paper`` and
    ``this_run`` a number where they are one, "-" where there is none)."""
    both = pd.read_csv(path, keep_default_na=False, dtype=str)
    claim_rows = both[both["part"].isin(CLAIM_PARTS)][CLAIM_COLUMNS].reset_index(drop=True)
    for col in ("paper", "this_run"):
        claim_rows[col] = claim_rows[col].map(_number_or_text).astype(object)
    setting_rows = both[both["part"] == SETTING_PART][SETTING_COLUMNS].reset_index(drop=True)
    deviation_rows = both[both["part"] == DEVIATION_PART][DEVIATION_COLUMNS].reset_index(drop=True)
    return claim_rows, setting_rows, deviation_rows
