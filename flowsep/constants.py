"""The names every part of flowsep shares: the four MUSDB18 targets, the profiles, the comparison systems,
and how a count of things is written.

Chapter: "The separation problem" (targets), the preface (profiles), "Evaluation" (systems).
"""
#: the four stems of MUSDB18, in the order of its tables
TARGETS = ("vocals", "drums", "bass", "other")

#: the sizes of every experiment: seconds that prove the code runs, minutes on a laptop, a Colab GPU, the paper
PROFILES = ("smoke", "cpu", "gpu", "paper")

#: the supervised comparison systems of the paper (:mod:`flowsep.baselines`)
MODEL_NAMES = ("openunmix", "convtasnet", "demucs", "waveunet")

#: how tables and figures name every system of the comparison (:data:`flowsep.comparison.SYSTEMS`): what runs
#: ("HDemucs": torchaudio's Hybrid Demucs); the paper's own rows keep its labels (:data:`flowsep.paper.MUSDB_TABLE`)
DISPLAY_NAMES = {"instglow": "InstGlow", "openunmix": "Open-Unmix", "convtasnet": "Conv-TasNet", "demucs": "HDemucs",
                 "waveunet": "Wave-U-Net", "oracle-irm": "oracle IRM", "oracle-mwf": "oracle MWF",
                 "mixture": "mixture"}


def counted(n: int, noun: str) -> str:
    """A count in words for titles and text: counted(1, "song") -> "1 song", counted(6, "song") -> "6 songs"."""
    return f"{n} {noun}" + ("" if n == 1 else "s")
