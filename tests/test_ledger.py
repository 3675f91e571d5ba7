"""The paper's numbers (flowsep.paper), the statistics of the benchmark table and the reproduction ledger.

No training here: the ledger is built from made-up tables whose outcome is known; the smoke benchmark in
test_baselines.py writes a real one.
"""
import math
import re
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from flowsep import ledger, paper
from flowsep.comparison import bootstrap_mean, budget_title, per_track_sdr, song_statistics


def test_the_paper_table_has_every_system_once():
    keys = [r.key for r in paper.MUSDB_TABLE]
    assert keys == ["demucs", "convtasnet", "openunmix", "waveunet", "instglow", "specgan"]
    assert all(set(r.sdr) == set(paper.TARGETS) for r in paper.MUSDB_TABLE)
    gan = paper.musdb_row("specgan")
    assert gan.cite == "narayanaswamy2020unsupervised" and "Narayanaswamy" in gan.source
    assert math.isclose(paper.gap("openunmix", "instglow"), 5.4875 - 3.18)
    assert paper.setting("lr") == 0.01 and paper.setting("iterations") == 150
    assert paper.slakh_table().loc[0, "guitar"] == 1.85 and paper.slakh_table()["piano"].isna().sum() == 3


def test_every_cited_paper_is_in_the_references_and_named_in_words():
    bib = (Path(__file__).resolve().parent.parent / "book" / "references.bib").read_text()
    for key in paper.musdb_table()["cite"].unique():
        assert f"{{{key}," in bib, key
        year = re.search(r"\d{4}", key).group()
        assert paper.cited_as(key) != key and paper.cited_as(key).endswith(f"et al. {year}"), key


def test_counts_are_written_in_words():
    from flowsep.constants import counted
    assert counted(1, "test song") == "1 test song" and counted(6, "song") == "6 songs" and counted(0, "song") == "0 songs"


def test_bootstrap_interval_holds_the_mean_and_is_fixed():
    rng = np.random.default_rng(1)
    v = rng.normal(3.0, 2.0, size=(6, 4))
    mean, low, high = bootstrap_mean(v)
    assert math.isclose(mean, v.mean()) and low < mean < high
    assert bootstrap_mean(v) == (mean, low, high)          # fixed seed: the same interval
    wider = bootstrap_mean(np.concatenate([v, v + 10]))     # songs far apart: a wider interval
    assert wider[2] - wider[1] > high - low
    one = bootstrap_mean(v[:1])                              # one song: the targets are resampled
    assert one[1] <= one[0] <= one[2] and one[1] < one[2]
    assert all(math.isnan(x) for x in bootstrap_mean(np.full((2, 4), np.nan)))


def _scores(sdr):
    """A long score frame with two windows per (track, target) around the given SDR {track: [4 values]}."""
    rows = []
    for track, values in sdr.items():
        for target, v in zip(paper.TARGETS, values):
            for w in (-0.5, 0.5):
                rows.append({"track": track, "target": target, "metric": "SDR", "score": v + w, "time": 0.0})
                rows.append({"track": track, "target": target, "metric": "SIR", "score": 99.0, "time": 0.0})
    return pd.DataFrame(rows)


def test_paired_differences_count_wins_and_losses():
    ref = per_track_sdr(_scores({"a": [1, 1, 1, 1], "b": [2, 2, 2, 2], "c": [0, 0, 0, 0]}))
    assert ref.loc["b"].tolist() == [2, 2, 2, 2]              # the median of the windows, SIR ignored
    other = per_track_sdr(_scores({"a": [2, 2, 2, 2], "b": [1, 1, 1, 1], "c": [3, 3, 3, 3]}))
    stats = song_statistics({"instglow": ref, "openunmix": other})
    o = stats.loc["openunmix"]
    assert (o["wins"], o["losses"], o["songs"]) == (2, 1, 3)
    assert math.isclose(o["diff_instglow"], 1.0) and o["diff_ci_low"] <= 1.0 <= o["diff_ci_high"]
    assert math.isnan(stats.loc["instglow", "diff_instglow"])


def test_budget_title_names_the_budget():
    budget = {"steps": 1000, "train_seconds": 0.0}
    assert budget_title(None, 240.0, budget).startswith("equal training time: 240 s per system")
    assert budget_title(500, None, budget) == "equal steps: 500 per network"
    assert budget_title(None, None, budget) == "equal steps: 1000 per network"


def _table(means):
    """A benchmark table whose every target of system k has SDR means[k]."""
    rows = [{"key": k, **{t: v for t in paper.TARGETS}, "mean": v} for k, v in means.items()]
    return pd.DataFrame(rows)


def test_ledger_statuses_follow_what_was_measured():
    settings = ledger.flowsep_settings("paper")
    # the paper's own numbers, at the paper's profile and protocol on real data: the table is reproduced
    exact = pd.DataFrame([{"key": r.key, **r.sdr, "mean": r.mean} for r in paper.MUSDB_TABLE if r.key != "specgan"])
    rows = ledger.claims(exact, profile="paper", protocol="paper", synthetic=False, settings=settings)
    assert set(rows["status"]) <= set(ledger.STATUSES)
    stems = rows[rows["part"] == "4-stem MUSDB18"]
    assert len(stems) == 4 * len(paper.MUSDB_TABLE)
    assert (stems[~stems["claim"].str.startswith("GAN")]["status"] == "reproduced").all()
    assert (stems[stems["claim"].str.startswith("GAN")]["status"] == "not attempted at this profile").all()
    by = rows.set_index("claim")["status"]
    assert by["ordering of the systems by mean SDR"] == "reproduced"
    assert by.filter(like="competitive").item() == "reproduced"
    # 1 dB off: differs; InstGlow 4 dB behind Open-Unmix: not competitive; a changed order
    off = exact.copy()
    off.loc[off["key"] == "instglow", list(paper.TARGETS) + ["mean"]] -= 1.0
    rows = ledger.claims(off, profile="paper", protocol="paper", synthetic=False, settings=settings)
    by = rows.set_index("claim")["status"]
    assert by["InstGlow, vocals SDR (dB)"] == "differs" and by["Open-Unmix, vocals SDR (dB)"] == "reproduced"
    assert by.filter(like="competitive").item() == "differs"
    # synthetic songs at cpu: the absolute numbers are not attempted, the relative claims are
    rows = ledger.claims(_table({"instglow": 4.0, "openunmix": 3.0}), profile="cpu", protocol="standard",
                         synthetic=True, settings=ledger.flowsep_settings("cpu"))
    stems = rows[rows["part"] == "4-stem MUSDB18"]
    assert (stems["status"] == "not attempted at this profile").all()
    assert "synthetic" in stems.set_index("claim").loc["InstGlow, bass SDR (dB)", "reason"]
    by = rows.set_index("claim")
    assert by.filter(like="competitive", axis=0)["status"].item() == "reproduced"
    assert by.loc["ordering of the systems by mean SDR", "status"] == "differs"
    assert (rows["part"] == "Slakh new sources").sum() == 10
    assert by.loc["n_fft", "status"] == "differs" and by.loc["lr", "status"] == "reproduced"


def test_deviations_are_read_from_the_configs(tmp_path):
    settings = ledger.flowsep_settings("cpu")
    dev = ledger.deviations("cpu", data="synth-cpu-seed0", synthetic=True, protocol="standard", tracks=6,
                            budget="equal training time: 240 s per system", settings=settings)
    by = dev.set_index("aspect")["flowsep"]
    assert "HDemucs" in by["Demucs"] and by["magnitudes"].startswith("log")
    assert by["sample rate and STFT"].startswith("16000 Hz") and "Wiener" in by["post-filter"]
    assert "mid and side" in by["stereo"] and "synthetic" in by["training data"]
    assert by["test songs"] == "6 test songs"
    excerpted = ledger.deviations("cpu", data="synth-cpu-seed0", synthetic=True, protocol="standard", tracks=6,
                                  budget="", settings=settings, excerpt=(10.0, 5.0))
    assert excerpted.set_index("aspect")["flowsep"]["test songs"] == "6 test songs, 5 s of each from 10 s"
    claims = ledger.claims(_table({"instglow": 1.0}), profile="cpu", protocol="standard", synthetic=True,
                           settings=settings)
    csv, md = ledger.write_ledger(tmp_path, claims, dev, "ledger")
    back = pd.read_csv(csv)
    assert len(back) == len(claims) + len(dev) and "| Demucs |" in md.read_text()


@pytest.mark.parametrize("profile", ["smoke", "cpu", "gpu", "paper"])
def test_settings_cover_every_paper_setting(profile):
    s = ledger.flowsep_settings(profile)
    assert {x.name for x in paper.SEPARATION_SETTINGS} <= set(s)
