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


def _paired(intervals):
    """A paired table from {(a, b): (low, high)}: the difference a - b in the middle of its interval."""
    return pd.DataFrame([{"a": a, "b": b, "diff": (lo + hi) / 2, "ci_low": lo, "ci_high": hi, "songs": 6}
                         for (a, b), (lo, hi) in intervals.items()], columns=ledger.PAIRED_COLUMNS)


FIVE = {"instglow": 3.0, "openunmix": 4.0, "demucs": 3.5, "convtasnet": 3.2, "waveunet": 2.0}


def _claims(means=FIVE, intervals=None, **kw):
    args = dict(profile="cpu", protocol="standard", synthetic=True, songs=6, seconds=3.0)
    args.update(kw)
    return ledger.claims(_table(means), paired=None if intervals is None else _paired(intervals), **args)


def _relations(rows):
    return rows[rows["part"] == "relations"].set_index("claim")


def test_ledger_numbers_follow_what_was_measured():
    # the paper's own numbers, at the paper's profile and protocol on real data: the table is reproduced
    exact = pd.DataFrame([{"key": r.key, **r.sdr, "mean": r.mean} for r in paper.MUSDB_TABLE if r.key != "specgan"])
    rows = ledger.claims(exact, profile="paper", protocol="paper", synthetic=False)
    assert set(rows["status"]) <= set(ledger.STATUSES)
    stems = rows[rows["part"] == "4-stem MUSDB18"]
    assert len(stems) == 4 * len(paper.MUSDB_TABLE)
    assert (stems[~stems["claim"].str.startswith("GAN")]["status"] == "reproduced").all()
    assert (stems[stems["claim"].str.startswith("GAN")]["status"] == "not attempted at this profile").all()
    # 1 dB off: differs, the others stay reproduced
    off = exact.copy()
    off.loc[off["key"] == "instglow", list(paper.TARGETS) + ["mean"]] -= 1.0
    by = ledger.claims(off, profile="paper", protocol="paper", synthetic=False).set_index("claim")["status"]
    assert by["InstGlow, vocals SDR (dB)"] == "differs" and by["Open-Unmix, vocals SDR (dB)"] == "reproduced"
    # synthetic songs at cpu: the absolute numbers are not attempted, with the reason why
    stems = _claims().query("part == '4-stem MUSDB18'").set_index("claim")
    assert (stems["status"] == "not attempted at this profile").all()
    assert "synthetic" in stems.loc["InstGlow, bass SDR (dB)", "reason"]
    assert (_claims()["part"] == "Slakh new sources").sum() == 10


def test_settings_are_a_table_of_their_own_and_not_claims():
    rows = _claims()
    assert not rows["claim"].isin([s.name for s in paper.SEPARATION_SETTINGS]).any()
    assert sum(ledger.counts(rows).values()) == len(rows) == 4 * len(paper.MUSDB_TABLE) + 10 + 3
    settings = ledger.settings_rows(ledger.flowsep_settings("cpu")).set_index("setting")
    assert list(settings.index) == [s.name for s in paper.SEPARATION_SETTINGS]
    assert settings.loc["n_fft", "same"] == "no" and settings.loc["lr", "same"] == "yes"
    assert settings.loc["lr", "paper_value_from"] == "reference code"
    assert settings.loc["optimizer", "paper_value_from"] == "the paper (IEEE SPL letter)"
    # settings in the file do not count as claims, and come back as their own table
    assert ledger.counts(pd.concat([rows, settings.reset_index()])) == ledger.counts(rows)


def test_competitive_is_judged_by_the_paired_interval_without_a_threshold():
    # 3.9 dB behind in the means but the interval includes zero: tied, so not behind, so competitive
    rel = _relations(_claims({"instglow": 0.1, "openunmix": 4.0}, {("instglow", "openunmix"): (-8.0, 0.3)}))
    row = rel.filter(like="competitive", axis=0).iloc[0]
    assert row["status"] == "reproduced" and "tied with" in row["evidence"] and "[-8.00, +0.30]" in row["evidence"]
    assert row["judged_on"] == "synthetic data at cpu (standard protocol, 6 songs, 3 s of each)"
    # 0.2 dB behind but the whole interval below zero: behind, so the claim does not hold here
    rel = _relations(_claims({"instglow": 3.8, "openunmix": 4.0}, {("instglow", "openunmix"): (-0.3, -0.1)}))
    assert rel.filter(like="competitive", axis=0)["status"].item() == "differs"
    # the pair given the other way round: Open-Unmix - InstGlow above zero is InstGlow behind
    rel = _relations(_claims({"instglow": 3.8, "openunmix": 4.0}, {("openunmix", "instglow"): (0.1, 0.3)}))
    assert rel.filter(like="competitive", axis=0)["status"].item() == "differs"
    # an interval that touches zero is a tie
    rel = _relations(_claims({"instglow": 3.8, "openunmix": 4.0}, {("instglow", "openunmix"): (-0.3, 0.0)}))
    assert rel.filter(like="competitive", axis=0)["status"].item() == "reproduced"
    # no paired scores: undecided, never a verdict from the means alone
    rel = _relations(_claims({"instglow": 3.8, "openunmix": 4.0}))
    assert rel.filter(like="competitive", axis=0)["status"].item() == "undecided"
    # one of the two did not run: not attempted
    rel = _relations(_claims({"instglow": 3.8}))
    assert rel.filter(like="competitive", axis=0)["status"].item() == "not attempted at this profile"


def test_the_ordering_is_judged_pair_by_pair_and_names_what_ran():
    pairs = ledger.pairs_to_judge(FIVE)
    # the paper's order by mean: Demucs (v2) > Open-Unmix > Conv-TasNet > Wave-U-Net > InstGlow
    assert pairs == [("instglow", "openunmix"), ("demucs", "openunmix"), ("openunmix", "convtasnet"),
                     ("convtasnet", "waveunet"), ("waveunet", "instglow")]
    ahead = {p: (0.5, 1.5) for p in pairs[1:]}
    ahead[("instglow", "openunmix")] = (-1.0, 1.0)
    order = _relations(_claims(intervals=ahead)).loc["ordering of the systems by mean SDR"]
    assert order["status"] == "reproduced"
    assert order["paper"] == "Demucs (v2) > Open-Unmix > Conv-TasNet > Wave-U-Net > InstGlow"
    assert order["this_run"] == "HDemucs > Open-Unmix > Conv-TasNet > Wave-U-Net > InstGlow"
    assert "HDemucs - Open-Unmix +1.00 dB [+0.50, +1.50]" in order["evidence"]
    # one adjacent pair tied: undecided, and the chain shows it; the means' order does not matter
    tied = {**ahead, ("convtasnet", "waveunet"): (-0.5, 0.5)}
    order = _relations(_claims({**FIVE, "waveunet": 9.0}, tied)).loc["ordering of the systems by mean SDR"]
    assert order["status"] == "undecided" and "Conv-TasNet = Wave-U-Net" in order["this_run"]
    # one pair reversed: differs
    reversed_ = {**tied, ("demucs", "openunmix"): (-1.5, -0.5)}
    order = _relations(_claims(intervals=reversed_)).loc["ordering of the systems by mean SDR"]
    assert order["status"] == "differs" and order["this_run"].startswith("HDemucs < Open-Unmix")
    # the 4-stem rows say which system's value stands beside the paper's Demucs (v2)
    stems = _claims(intervals=ahead).query("part == '4-stem MUSDB18'")["claim"]
    assert "Demucs (v2) (this run: HDemucs), vocals SDR (dB)" in set(stems)


def test_demucs_is_named_for_what_runs():
    from flowsep.baselines.models import HDemucsModel
    from flowsep.constants import DISPLAY_NAMES
    assert HDemucsModel.__name__.startswith(DISPLAY_NAMES["demucs"])          # the model flowsep builds
    assert paper.musdb_row("demucs").system == "Demucs (v2)"                   # the paper's own label
    assert ledger.run_name("demucs") == "HDemucs" and ledger.paper_name("demucs") == "Demucs (v2)"


def test_new_sources_row_is_chapter_7s():
    rows = _claims()
    row = _relations(rows).loc[paper.CLAIMS[1].text]
    assert row["status"] == "judged in chapter 7" and ledger.counts(rows)["not attempted at this profile"] == 34
    on = ledger.judged_on("cpu", "standard", True, 6, 4.0)
    assert on == "synthetic data at cpu (standard protocol, 6 songs, 4 s of each)"
    assert (ledger.judged_on("cpu", "standard", True, 4, 15.0, test_set="synth-cpu-heldout-seed0")
            == "synthetic data at cpu (test songs of synth-cpu-heldout-seed0, standard protocol, 4 songs, 15 s of each)")
    result = {"diff": 2.0, "ci_low": 1.2, "ci_high": 2.9, "judged_on": on, "reused": ["vocals", "bass", "drums"],
              "retrained": ["other"]}
    row = ledger.new_sources_claim(result)
    assert row["status"] == "reproduced" and row["judged_on"] == on and "[+1.20, +2.90]" in row["evidence"]
    assert "vocals, bass, drums priors reused untouched" in row["reason"] and "other trained again" in row["reason"]
    assert ledger.new_sources_claim(dict(result, ci_low=-0.1))["status"] == "undecided"
    assert ledger.new_sources_claim(dict(result, diff=-2.0, ci_low=-2.9, ci_high=-1.2))["status"] == "differs"
    updated = ledger.with_new_sources(rows, result)
    assert ledger.counts(updated)["judged in chapter 7"] == 0
    assert ledger.counts(updated)["reproduced"] == ledger.counts(rows)["reproduced"] + 1
    assert len(updated) == len(rows)


def test_a_shared_reason_is_given_once():
    rows = _claims()
    shown, notes = ledger.noted(rows)
    # every reason of more than one row is a note, stated once; a reason of one row stays in place
    assert shown["reason"].str.startswith("note ").sum() == (rows["reason"].map(rows["reason"].value_counts()) > 1).sum()
    texts = [n.split(". ", 1)[1] for n in notes]
    assert len(texts) == len(set(texts)) and all((rows["reason"] == t).sum() > 1 for t in texts)
    assert any("synthetic songs" in t for t in texts) and any("Slakh2100" in t for t in texts)
    assert (shown["reason"] == "note 1").sum() == (rows["reason"] == texts[0]).sum()
    unique = rows["reason"].value_counts()
    unique = unique[unique == 1].index
    assert set(unique) <= set(shown["reason"])


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
    claims = _claims()
    setting_rows = ledger.settings_rows(settings)
    csv, md = ledger.write_ledger(tmp_path, claims, dev, "ledger", setting_rows)
    assert len(pd.read_csv(csv)) == len(claims) + len(setting_rows) + len(dev)
    text = md.read_text()
    assert "| Demucs |" in text and "## The paper's separation settings" in text
    # every row of a table has as many cells as its header: a "|" inside a cell (the loss setting) is escaped
    for block in text.split("\n\n"):
        table_rows = [line for line in block.splitlines() if line.startswith("|")]
        assert len({len(re.split(r"(?<!\\)\|", line)) for line in table_rows}) <= 1, block[:300]
    # a shared reason appears once in the file, as a note
    stems = claims[claims["part"] == "4-stem MUSDB18"].set_index("claim")
    why = stems.loc["InstGlow, bass SDR (dB)", "reason"]
    assert text.count(why) == 1
    back_claims, back_settings, back_dev = ledger.read_ledger(csv)
    assert list(back_claims["claim"]) == list(claims["claim"]) and ledger.counts(back_claims) == ledger.counts(claims)
    assert list(back_settings.columns) == ledger.SETTING_COLUMNS and len(back_settings) == len(setting_rows)
    assert list(back_dev["aspect"]) == list(dev["aspect"])
    back_stems = back_claims[back_claims["part"] == "4-stem MUSDB18"].set_index("claim")
    assert back_stems.loc["InstGlow, bass SDR (dB)", "paper"] == 2.58
    assert back_claims.set_index("claim").loc["GAN prior (SpecGAN), bass SDR (dB)", "this_run"] == "-"


def test_the_benchmark_pairs_what_the_ledger_asks_for():
    from flowsep.comparison import bootstrap_mean, paired_table
    rng = np.random.default_rng(0)
    pt = {k: pd.DataFrame(rng.normal(v, 1.0, size=(5, 4)), index=list("abcde"), columns=list(paper.TARGETS))
          for k, v in FIVE.items()}
    pt["instglow"] = pt["instglow"].iloc[:4]              # one song not scored: the pairs use the common ones
    table = paired_table(pt, ledger.pairs_to_judge(pt))
    assert list(table.columns) == ledger.PAIRED_COLUMNS and len(table) == 5
    first = table.iloc[0]
    assert (first["a"], first["b"], first["songs"]) == ("instglow", "openunmix", 4)
    expect = bootstrap_mean((pt["instglow"] - pt["openunmix"].iloc[:4]).to_numpy())
    assert np.allclose([first["diff"], first["ci_low"], first["ci_high"]], expect)


@pytest.mark.parametrize("profile", ["smoke", "cpu", "gpu", "paper"])
def test_settings_cover_every_paper_setting(profile):
    s = ledger.flowsep_settings(profile)
    assert {x.name for x in paper.SEPARATION_SETTINGS} <= set(s)
