"""What the InstGlow paper reports, held once as data with its source.

Chapters: "The separation problem" (the paper's table) and "Evaluation" (the reproduction ledger,
:mod:`flowsep.ledger`).

Every number of the paper that the book quotes lives here and nowhere else: the 4-stem MUSDB18 table
(:data:`MUSDB_TABLE`, every system of it), the new-source table on the Slakh2100 submix
(:data:`SLAKH_TABLE`), the settings of the separation that produced the 4-stem results
(:data:`SEPARATION_SETTINGS`), the prior's training settings (:data:`TRAINING_SETTINGS`), the paper's
evaluation protocol (:data:`PROTOCOL`) and its qualitative claims (:data:`CLAIMS`).

Source: Zhu, Darefsky, Jiang, Selitskiy, Duan, "Music Source Separation with Generative Flow", IEEE Signal
Processing Letters 29, 2022, doi:10.1109/LSP.2022.3219355 (arXiv:2204.09079); bibtex key
``zhu2022instglow``. Each entry's ``source`` names the part of the paper it comes from (the results table of
the 4-stem MUSDB18 experiment, the table of the new-source experiment, the experimental setup). Table and page
numbers are not given: they differ between the arXiv and the journal versions and were not checked against
the printed letter. Settings marked ``certain=False`` were read from the authors' public reference code
rather than the letter; the letter does not state them all.

The GAN-prior row is a result the paper *cites*: source-only separation with SpecGAN priors, from
Narayanaswamy et al., "Unsupervised Audio Source Separation using Generative Priors", Interspeech 2020
(bibtex key ``narayanaswamy2020unsupervised``), not from BASIS (Jayaram and Thickstun 2020).
"""
from __future__ import annotations

from dataclasses import dataclass

import pandas as pd

#: the paper itself (bibtex key in book/references.bib)
PAPER = {
    "key": "zhu2022instglow",
    "title": "Music Source Separation with Generative Flow",
    "authors": "Zhu, Darefsky, Jiang, Selitskiy, Duan",
    "venue": "IEEE Signal Processing Letters 29 (2022)",
    "doi": "10.1109/LSP.2022.3219355",
    "arxiv": "2204.09079",
    "cited_as": "Zhu et al. 2022",
}

#: the cited prior-only baseline (its own paper, not BASIS)
SPECGAN_PAPER = {
    "key": "narayanaswamy2020unsupervised",
    "title": "Unsupervised Audio Source Separation using Generative Priors",
    "authors": "Narayanaswamy, Thiagarajan, Anirudh, Spanias",
    "venue": "Interspeech 2020",
    "cited_as": "Narayanaswamy et al. 2020",
}

TARGETS = ("vocals", "drums", "bass", "other")
MUSDB_SOURCE = "Zhu et al. 2022, results table of the 4-stem MUSDB18 experiment (SDR, dB)"
SLAKH_SOURCE = "Zhu et al. 2022, table of the new-source experiment on the Slakh2100 submix (SDR, dB)"
SETUP_SOURCE = "Zhu et al. 2022, experimental setup; settings marked uncertain from the authors' reference code"


@dataclass(frozen=True)
class PaperRow:
    """One system of a table of the paper: its SDR (dB) per target, None where it has no output."""

    system: str
    key: str          # flowsep's key for the system (flowsep.comparison.SYSTEM_KEYS), or a name of its own
    kind: str         # "supervised" or "source-only"
    sdr: dict
    source: str
    cite: str = PAPER["key"]  # the bibtex key of the paper the number comes from
    note: str = ""

    @property
    def mean(self) -> float | None:
        vals = [v for v in self.sdr.values() if v is not None]
        return sum(vals) / len(vals) if vals else None


#: The paper's 4-stem MUSDB18 table, every system in the paper's order (its protocol: :data:`PROTOCOL`).
MUSDB_TABLE = (
    PaperRow("Demucs (v2)", "demucs", "supervised",
             {"vocals": 7.14, "drums": 6.74, "bass": 5.50, "other": 4.16}, MUSDB_SOURCE),
    PaperRow("Conv-TasNet", "convtasnet", "supervised",
             {"vocals": 7.00, "drums": 5.25, "bass": 4.19, "other": 3.94}, MUSDB_SOURCE),
    PaperRow("Open-Unmix", "openunmix", "supervised",
             {"vocals": 6.86, "drums": 6.35, "bass": 4.88, "other": 3.86}, MUSDB_SOURCE),
    PaperRow("Wave-U-Net", "waveunet", "supervised",
             {"vocals": 5.06, "drums": 3.74, "bass": 2.63, "other": 1.95}, MUSDB_SOURCE),
    PaperRow("InstGlow", "instglow", "source-only",
             {"vocals": 3.92, "drums": 3.85, "bass": 2.58, "other": 2.37}, MUSDB_SOURCE),
    PaperRow("GAN prior (SpecGAN)", "specgan", "source-only",
             {"vocals": -0.44, "drums": -0.40, "bass": 0.48, "other": 0.32},
             MUSDB_SOURCE + "; cited by the paper from Narayanaswamy et al. 2020",
             cite=SPECGAN_PAPER["key"], note="prior-only baseline the paper cites; flowsep does not implement it"),
)

#: The paper's new-source table on the Slakh2100 submix: InstGlow separates guitar and piano with priors added
#: without retraining the others; the supervised systems have no guitar or piano output (None).
SLAKH_TABLE = (
    PaperRow("InstGlow", "instglow", "source-only",
             {"bass": 1.54, "drums": 6.14, "guitar": 1.85, "piano": 0.80}, SLAKH_SOURCE),
    PaperRow("Demucs (v2)", "demucs", "supervised",
             {"bass": 5.48, "drums": 10.21, "guitar": None, "piano": None}, SLAKH_SOURCE),
    PaperRow("Conv-TasNet", "convtasnet", "supervised",
             {"bass": 4.97, "drums": 9.95, "guitar": None, "piano": None}, SLAKH_SOURCE),
    PaperRow("Open-Unmix", "openunmix", "supervised",
             {"bass": 4.66, "drums": 8.64, "guitar": None, "piano": None}, SLAKH_SOURCE),
)
SLAKH_TARGETS = ("bass", "drums", "guitar", "piano")


@dataclass(frozen=True)
class Setting:
    """One setting of the paper's method: its value, where it comes from, whether it is certain."""

    name: str
    value: object
    source: str = SETUP_SOURCE
    certain: bool = True
    note: str = ""


#: The separation that produced the 4-stem results (frozen priors, one latent per source).
SEPARATION_SETTINGS = (
    Setting("domain", "linear magnitude STFT, mono, mixture phase for resynthesis"),
    Setting("sample_rate", 22050),
    Setting("n_fft", 1024),
    Setting("hop", 256),
    Setting("window", "hann 1024"),
    Setting("loss", "a1 * generalized KL(|X| || sum_j x_j) + a2 * prior term"),
    Setting("prior_space", "z", certain=False, note="z-space prior term 0.5*||z||^2"),
    Setting("z_init", 0.0, certain=False, note="z = 0, the mode of every prior"),
    Setting("a1", 1.0, certain=False),
    Setting("a2", 0.0, certain=False, note="the prior acts through the reparametrisation and the init only"),
    Setting("optimizer", "Adam"),
    Setting("lr", 0.01, certain=False, note="lr 0.005 with 300 iterations also seen"),
    Setting("iterations", 150, certain=False),
    Setting("segment_seconds", 60.0, note="segments of up to 60 s processed whole"),
    Setting("post_processing", "none", certain=False,
            note="a ratio rescale x_j / sum_k x_k * |X| exists in the code, off by default"),
    Setting("annealing", "none"),
)

#: How each prior was trained.
TRAINING_SETTINGS = (
    Setting("flow", "Glow-TTS decoder: squeeze 2, 12 blocks (ActNorm, 1x1 conv over groups of 4, "
                    "WaveNet coupling 4 layers x 128 channels, kernel 5)"),
    Setting("optimizer", "Adam lr 1e-4, x0.3 every 80k steps"),
    Setting("batch_size", 32),
    Setting("epochs", 1000),
    Setting("precision", "fp16 mixed"),
    Setting("grad_clip", 4.0),
    Setting("training_pieces", "random 7-10 s pieces of MUSDB18 train stems, mono 22.05 kHz"),
)

#: The paper's evaluation protocol (non-standard; flowsep's "paper" protocol in :mod:`flowsep.evaluate`).
PROTOCOL = ("museval v4, one window per 60 s mono segment at 22.05 kHz, near-silent references dropped, "
            "median over all segments pooled across tracks")


@dataclass(frozen=True)
class Claim:
    """A qualitative claim of the paper."""

    key: str
    text: str
    source: str = "Zhu et al. 2022, abstract and conclusion"


CLAIMS = (
    Claim("competitive", "source-only InstGlow is competitive with a fully supervised system (Open-Unmix)"),
    Claim("new_sources", "new sources can be added without retraining the other priors"),
)

#: Reference points on MUSDB18 (standard protocol, average of 4 stems) from other papers, for orientation.
REFERENCE_POINTS = {
    "oracle IRM2": 8.22, "oracle MWF": 7.88, "oracle IBM2": 6.60, "mixture as estimate": 1.07,
    "Open-Unmix (UMX)": 5.33, "Demucs v2": 6.3, "Hybrid Demucs v3": 7.7, "HT Demucs v4": 9.0,
}


def musdb_row(key: str) -> PaperRow:
    """The row of :data:`MUSDB_TABLE` whose flowsep key is ``key`` (KeyError if the paper has none)."""
    for row in MUSDB_TABLE:
        if row.key == key:
            return row
    raise KeyError(key)


def cited_as(key: str) -> str:
    """How the text names the paper with bibtex key ``key`` ("Zhu et al. 2022"); the key itself if unknown."""
    return {p["key"]: p["cited_as"] for p in (PAPER, SPECGAN_PAPER)}.get(key, key)


def musdb_table(with_mean: bool = True) -> pd.DataFrame:
    """The 4-stem table as a DataFrame: system, kind, vocals, drums, bass, other (dB), mean, cite (the bibtex
    key of the paper the row's numbers come from; :func:`cited_as` names it in words)."""
    rows = []
    for r in MUSDB_TABLE:
        row = {"system": r.system, "kind": r.kind, **{t: r.sdr[t] for t in TARGETS}}
        if with_mean:
            row["mean"] = r.mean
        row["cite"] = r.cite
        rows.append(row)
    return pd.DataFrame(rows)


def slakh_table() -> pd.DataFrame:
    """The new-source table as a DataFrame (NaN where a system has no output for a source)."""
    return pd.DataFrame([{"system": r.system, "kind": r.kind,
                          **{t: (float("nan") if r.sdr[t] is None else r.sdr[t]) for t in SLAKH_TARGETS}}
                         for r in SLAKH_TABLE])


def setting(name: str):
    """The value of a separation setting by name."""
    for s in SEPARATION_SETTINGS:
        if s.name == name:
            return s.value
    raise KeyError(name)


def gap(better: str, worse: str) -> float:
    """Mean-SDR difference (dB) between two systems of the 4-stem table, by flowsep key."""
    return musdb_row(better).mean - musdb_row(worse).mean
