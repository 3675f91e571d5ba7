"""The comparison systems (flowsep.baselines) and the benchmark (flowsep.comparison) on the synthetic set.

Every supervised baseline trains a few smoke steps and separates audio of any shape; training resumes to
the same weights; the oracles score far above the mixture; the smoke benchmark writes every row.
"""
import json
import math
import shutil

import numpy as np
import pandas as pd
import pytest
import soundfile as sf
import torch

from flowsep.baselines import (MODEL_NAMES, MixtureAsEstimate, OracleRatioMask, OracleWiener, SupervisedConfig,
                               WaveUNet, load_supervised, train_supervised, training_budget)
from flowsep.comparison import SYSTEMS, run_benchmark
from flowsep.cli import main
from flowsep.errors import FlowsepError
from flowsep import paper
from flowsep.ledger import STATUSES, read_ledger
from flowsep.evaluate import load_track, open_tracks

TARGETS = ("vocals", "drums", "bass", "other")


@pytest.fixture(scope="module")
def short_root(synth_root, tmp_path_factory):
    """The synthetic set with its first test track cut to 1 s and downmixed to mono: one museval window of
    one channel (museval's time grows with the length and the square of the channels)."""
    root = tmp_path_factory.mktemp("short") / "musdb"
    shutil.copytree(synth_root / "train", root / "train")
    shutil.copy(synth_root / "setup.yaml", root / "setup.yaml")
    track = sorted((synth_root / "test").iterdir())[0]
    (root / "test" / track.name).mkdir(parents=True)
    for wav in track.glob("*.wav"):
        audio, rate = sf.read(wav, dtype="float32", always_2d=True)
        sf.write(root / "test" / track.name / wav.name, audio[:rate].mean(1), rate, subtype="FLOAT")
    return root


@pytest.fixture(scope="module")
def track(synth_root):
    """The first synthetic test track: 6 s of stereo at 44.1 kHz."""
    return load_track(open_tracks(synth_root, "test", 1)[0])


# ---- the supervised systems --------------------------------------------------------------------------
@pytest.mark.parametrize("name", MODEL_NAMES)
def test_baseline_trains_and_separates_any_shape(name, synth_root, track, tmp_path):
    sep = train_supervised(name, synth_root, "smoke", out=tmp_path / "m.pt", steps=3, progress=False)
    h = sep.history
    assert h["step"] == [1, 2, 3] and all(math.isfinite(v) for v in h["train_loss"])
    assert h["val_step"] == [3] and h["seconds"] > 0
    # a stereo 44.1 kHz track longer than the separation chunk, and a short mono clip at another rate
    mix = track.mixture                                                 # 6 s of stereo: two chunks at smoke
    est = sep(mix, track.rate)
    assert set(est) == set(TARGETS)
    for v in est.values():
        assert v.shape == mix.shape and v.dtype == np.float32 and np.isfinite(v).all()
    assert max(np.abs(v).max() for v in est.values()) > 0
    mono = track.mixture[0, :3001].copy()                               # (samples,)
    est_mono = sep(mono, 22050)
    assert all(v.shape == (1, 3001) for v in est_mono.values())
    loaded = load_supervised(tmp_path / "m.pt")
    again = loaded(mix, track.rate)
    for t in TARGETS:
        np.testing.assert_allclose(again[t], est[t], atol=1e-5)


def test_openunmix_learns(synth_root):
    """The magnitude MSE falls within a few dozen steps (the training loop does optimise)."""
    sep = train_supervised("openunmix", synth_root, "smoke", steps=40, progress=False, val_every=40)
    loss = sep.history["train_loss"]
    assert np.mean(loss[-8:]) < 0.8 * np.mean(loss[:8]), (loss[:8], loss[-8:])


def test_resume_gives_the_same_weights(synth_root, tmp_path):
    """Open-Unmix with two LSTM layers (dropout 0.4) and batch norm: interrupted + resumed == straight."""
    kw = dict(progress=False, checkpoint_every=2, val_every=2, arch=dict(layers=2))
    straight = train_supervised("openunmix", synth_root, "smoke", out=tmp_path / "a.pt", steps=4, **kw)
    train_supervised("openunmix", synth_root, "smoke", out=tmp_path / "b.pt", steps=2, **kw)
    resumed = train_supervised("openunmix", synth_root, "smoke", out=tmp_path / "b.pt", steps=4, resume=True,
                               **kw)
    a, b = straight.network.state_dict(), resumed.network.state_dict()
    assert a.keys() == b.keys()
    for k in a:
        assert torch.equal(a[k], b[k]), k
    assert resumed.history["step"] == [1, 2, 3, 4]
    assert resumed.history["train_loss"] == straight.history["train_loss"]


def test_a_time_budget_stops_and_resumes(synth_root, tmp_path):
    """--seconds for a supervised system: steps and training seconds recorded together, resumed within it."""
    from flowsep.baselines import ensure_supervised
    ckpt = tmp_path / "w.pt"
    kw = dict(progress=False)  # the profile's settings, so that ensure_supervised recognises the model
    h = train_supervised("waveunet", synth_root, "smoke", out=ckpt, seconds=0.5, **kw).history
    n = len(h["step"])
    assert h["step"] == list(range(1, n + 1)) and len(h["elapsed"]) == n
    assert h["seconds"] == h["elapsed"][-1] >= 0.5 and (n == 1 or h["elapsed"][-2] < 0.5)
    saved = torch.load(ckpt, weights_only=True)["train"]
    assert saved["budget"] == {"seconds": 0.5} and saved["history"]["elapsed"] == h["elapsed"]
    more = train_supervised("waveunet", synth_root, "smoke", out=ckpt, seconds=1.0, resume=True, **kw).history
    assert more["step"][:n] == h["step"] and len(more["step"]) > n and more["elapsed"][-2] < 1.0 <= more["seconds"]
    # a finished run of the same budget is reused, not retrained
    again = ensure_supervised("waveunet", synth_root, "smoke", ckpt, seconds=1.0, progress=False).history
    assert again["step"] == more["step"]
    with pytest.raises(FlowsepError, match="not both"):
        train_supervised("waveunet", synth_root, "smoke", steps=2, seconds=1.0, progress=False)


def test_budget_is_the_same_for_every_learned_system():
    for profile in ("smoke", "cpu", "paper"):
        budget = training_budget(profile)
        seen = set()
        for name in MODEL_NAMES:
            c = SupervisedConfig.preset(name, profile)
            seen.add((c.steps, c.batch_size, round(c.segment_seconds, 6)))
        assert seen == {(budget["steps"], budget["batch_size"], round(budget["segment_seconds"], 6))}
        assert budget["examples"] == budget["steps"] * budget["batch_size"]


def test_paper_profile_has_the_published_sizes():
    """Parameter counts of the published models: UMX 8.9 M per target, Conv-TasNet 5.1 M, Wave-U-Net 10.2 M."""
    from flowsep.baselines import build_network

    count = lambda name: sum(p.numel() for p in build_network(SupervisedConfig.preset(name, "paper")).parameters())
    assert 8.5e6 < count("openunmix") / 4 < 9.3e6
    assert 4.9e6 < count("convtasnet") < 5.3e6
    assert 9.8e6 < count("waveunet") < 10.6e6


@pytest.mark.parametrize("length", [1, 37, 1024, 1029])
def test_waveunet_keeps_the_length(length):
    net = WaveUNet(n_sources=3, channels=2, layers=4, features=3)
    y = net(torch.randn(2, 2, length))
    assert y.shape == (2, 3, 2, length)


# ---- oracles and bounds ---------------------------------------------------------------------------------
def _snr(reference, estimate):
    """Plain signal-to-distortion ratio in dB (no BSS Eval projection; museval's SDR is in the benchmark test)."""
    return 10 * np.log10(np.sum(reference ** 2) / np.sum((reference - estimate) ** 2))


def _mean_sdr(est, track):
    return float(np.mean([_snr(track.sources[t], est[t]) for t in TARGETS]))


def test_oracles_score_far_above_the_mixture(track):
    mixture = _mean_sdr(MixtureAsEstimate()(track.mixture, track.rate), track)
    irm = _mean_sdr(OracleRatioMask()(track.mixture, track.rate, sources=track.sources), track)
    mwf = OracleWiener(sources=track.sources)(track.mixture, track.rate)
    assert irm > mixture + 8, (irm, mixture)
    assert _mean_sdr(mwf, track) > mixture + 8
    # given every stem, the Wiener filter distributes the mixture: the estimates add up to it
    assert _snr(track.mixture, sum(mwf[t] for t in TARGETS)) > 40


def test_oracle_wiener_needs_the_stems(track):
    with pytest.raises(FlowsepError, match="true stems"):
        OracleWiener()(track.mixture, track.rate)
    with pytest.raises(FlowsepError, match="shape"):
        OracleWiener()(track.mixture, track.rate, sources={"vocals": track.mixture[:, :100]})


# ---- the benchmark -------------------------------------------------------------------------------------
def test_benchmark_writes_every_row_and_the_demo(short_root, tmp_path, monkeypatch):
    monkeypatch.setenv("FLOWSEP_DATA", str(tmp_path / "data"))  # where the priors are kept
    out = tmp_path / "bench"
    # the race at equal training time: 2 s per system, 0.5 s per InstGlow prior
    table = run_benchmark(short_root, "smoke", out, tracks=1, train_seconds=2.0, iterations=2, demo_seconds=0.5,
                          progress=False, log=None)
    names = [title for _, title, _ in SYSTEMS]
    assert list(table["system"]) == names
    csv = pd.read_csv(out / "table.csv")
    assert list(csv["system"]) == names
    assert {"vocals", "drums", "bass", "other", "mean", "steps", "train_seconds", "rtf", "ci_low", "ci_high",
            "diff_instglow", "wins", "losses"} <= set(csv.columns)
    assert csv[list(TARGETS)].notna().all().all()
    assert (csv["rtf"] > 0).all()
    learned = csv["kind"].isin(["supervised", "source-only"])
    assert (csv.loc[learned, "train_seconds"] > 0).all() and csv.loc[~learned, "train_seconds"].isna().all()
    # every learned system trained its budget (the run stops after the step that reaches it)
    assert (csv.loc[learned, "train_seconds"] >= 2.0).all() and (csv.loc[learned, "budget_seconds"] == 2.0).all()
    assert (csv.loc[learned, "steps"] >= 1).all() and csv.loc[~learned, "steps"].isna().all()
    # the interval of every system holds its mean; the paired comparison is against InstGlow, over 1 song
    assert (csv["ci_low"] <= csv["song_mean"] + 1e-9).all() and (csv["song_mean"] <= csv["ci_high"] + 1e-9).all()
    others = csv[csv["system"] != "InstGlow"]
    assert others["diff_instglow"].notna().all() and ((others["wins"] + others["losses"]) <= 1).all()
    assert csv.loc[csv["system"] == "InstGlow", "diff_instglow"].isna().all()
    md = (out / "table.md").read_text()
    assert all(f"| {n} |" in md for n in names)
    assert "equal training time: 2 s per system" in md.splitlines()[0]
    info = json.loads((out / "benchmark.json").read_text())
    assert info["train_seconds"] == 2.0 and info["steps"] is None
    # the ledger: a row for every number of the paper's tables, each with a known status; the settings apart
    claims, settings, deviations = read_ledger(out / "ledger.csv")
    assert set(claims["status"]) <= set(STATUSES)
    assert (claims["part"] == "4-stem MUSDB18").sum() == 4 * len(paper.MUSDB_TABLE)
    assert (claims["part"] == "Slakh new sources").sum() == sum(
        v is not None for r in paper.SLAKH_TABLE for v in r.sdr.values())
    relations = claims[claims["part"] == "relations"].set_index("claim")
    assert relations.loc["ordering of the systems by mean SDR", "evidence"].count("[") == 4  # 5 systems, 4 pairs
    assert "HDemucs" in relations.loc["ordering of the systems by mean SDR", "this_run"]
    assert len(settings) == len(paper.SEPARATION_SETTINGS) and len(deviations) >= 10
    assert "Reproduction ledger" in (out / "ledger.md").read_text()
    # the oracles beat the mixture bound
    by = csv.set_index("system")["mean"]
    assert by["oracle IRM"] > by["mixture"] + 5 and by["oracle MWF"] > by["mixture"] + 5
    # the audio grid: every system's estimates and the references, half a second each
    for key, _, _ in SYSTEMS:
        for t in TARGETS:
            info = sf.info(out / "demo" / key / f"{t}.wav")
            assert (info.samplerate, info.channels, info.frames) == (44100, 1, 22050)
    assert (out / "demo" / "reference" / "mixture.wav").is_file()
    assert (out / "models" / "demucs-2s.pt").is_file() and (out / "priors" / "seconds0.5" / "bass.pt").is_file()
    # the same trained systems on songs of another style: nothing is trained again, the other songs are scored
    from flowsep.data.synth import synthesize
    held = synthesize(tmp_path / "heldout", n_train=0, n_test=1, seconds=1.5, style="heldout", workers=1,
                      progress=False)
    trained = {p: p.stat().st_mtime_ns for p in out.rglob("*.pt")}
    other = run_benchmark(short_root, "smoke", tmp_path / "bench-heldout", tracks=1, train_seconds=2.0, iterations=2,
                          demo_seconds=None, progress=False, log=None, models_dir=out, test_data=held)
    assert {p: p.stat().st_mtime_ns for p in out.rglob("*.pt")} == trained
    assert list(other["system"]) == names and other[list(TARGETS)].notna().all().all()
    info = json.loads((tmp_path / "bench-heldout" / "benchmark.json").read_text())
    assert info["test_data"] == str(held.resolve()) and info["data"] == str(short_root.resolve())
    assert info["tracks"] == [p.name for p in (held / "test").iterdir()] != json.loads(
        (out / "benchmark.json").read_text())["tracks"]
    # the ledger says which songs its relations were judged on; the race on the training set's songs names none
    judged = {run: set(read_ledger(folder / "ledger.csv")[0]["judged_on"]) - {"-"}
              for run, folder in (("race", out), ("held-out", tmp_path / "bench-heldout"))}
    assert judged["held-out"] and all(f"test songs of {held.name}," in j for j in judged["held-out"])
    assert judged["race"] and not any("test songs of" in j for j in judged["race"])
    with pytest.raises(FlowsepError, match="not a MUSDB18-format root"):
        run_benchmark(short_root, "smoke", tmp_path / "bad", tracks=1, train_seconds=2.0, models_dir=out,
                      test_data=tmp_path / "nowhere", progress=False, log=None)


def test_the_race_uses_the_books_priors_only_when_they_were_trained_to_its_budget(tmp_path, monkeypatch):
    from flowsep.bundle import MANIFEST
    from flowsep.cache import prior_bundle_path
    from flowsep.comparison import race_prior_bundle
    from flowsep.prior import PriorConfig
    monkeypatch.setenv("FLOWSEP_DATA", str(tmp_path / "data"))
    root, models = tmp_path / "synth-cpu-seed0", tmp_path / "race"
    quarter = PriorConfig.preset("cpu").train_seconds
    assert quarter > 0  # the cpu profile trains each prior to a time budget
    book = prior_bundle_path("cpu", root)
    assert race_prior_bundle("cpu", root, quarter, models, "bass") == book
    assert race_prior_bundle("cpu", root, quarter / 2, models, "bass") == models / "priors" / f"seconds{quarter / 2:g}"
    assert race_prior_bundle("smoke", root, 1.0, models, "bass") == models / "priors" / "seconds1"
    # a book prior trained to a step budget (chapter 4 with STEPS) is not the race's entry
    book.mkdir(parents=True)
    (book / MANIFEST).write_text(json.dumps({"format": "flowsep-bundle", "format_version": 1, "sources": {
        "bass": {"budget": {"steps": 300}}, "drums": {"budget": {"seconds": quarter}}}}))
    assert race_prior_bundle("cpu", root, quarter, models, "bass") == models / "priors" / f"seconds{quarter:g}"
    assert race_prior_bundle("cpu", root, quarter, models, "drums") == book


def test_chapter_6_and_7_find_the_same_trained_systems(tmp_path, monkeypatch):
    from flowsep.comparison import RACE_SECONDS, model_file, models_folder
    monkeypatch.setenv("FLOWSEP_DATA", str(tmp_path))
    assert models_folder("x/synth-cpu-seed0", "cpu") == tmp_path / "benchmarks" / "synth-cpu-seed0-cpu-models"
    assert model_file("openunmix", RACE_SECONDS["cpu"]) == "openunmix-120s.pt"
    assert model_file("openunmix") == "openunmix.pt" and "paper" not in RACE_SECONDS
    from flowsep import PriorConfig
    for profile in ("cpu", "gpu"):   # the book's priors are InstGlow's entry in the race: a quarter each
        assert RACE_SECONDS[profile] == 4 * PriorConfig.preset(profile).train_seconds, profile


def test_budget_curve_trains_each_budget_and_shares_models(short_root, tmp_path, monkeypatch):
    from flowsep.comparison import budget_curve
    monkeypatch.setenv("FLOWSEP_DATA", str(tmp_path / "data"))
    curve = budget_curve(short_root, "smoke", tmp_path / "curve", budgets=(1.0, 0.5), tracks=1,
                         iterations=2, models_dir=tmp_path / "shared", progress=False, log=None)
    assert list(curve["budget_seconds"]) == [0.5, 0.5, 1.0, 1.0] and set(curve["key"]) == {"instglow", "openunmix"}
    assert (curve["train_seconds"] >= curve["budget_seconds"]).all()
    assert ((curve["ci_low"] <= curve["song_mean"] + 1e-9) & (curve["song_mean"] <= curve["ci_high"] + 1e-9)).all()
    assert (tmp_path / "shared" / "models" / "openunmix-1s.pt").is_file()
    assert (tmp_path / "curve" / "budget_curve.csv").is_file()
    assert (tmp_path / "curve" / "seconds0.5" / "table.csv").is_file()
    # a point taken from a race already run at its budget: the race's scores, nothing separated again
    again = budget_curve(short_root, "smoke", tmp_path / "curve2", budgets=(1.0,), tracks=1, iterations=2,
                         models_dir=tmp_path / "shared", reuse={1.0: tmp_path / "curve" / "seconds1"},
                         progress=False, log=None)
    first = curve[curve["budget_seconds"] == 1.0].set_index("key")
    again = again.set_index("key")
    assert np.allclose(again.loc[first.index, "song_mean"], first["song_mean"], atol=1e-6)
    assert again["rtf"].isna().all() and first["rtf"].notna().all()
    with pytest.raises(FlowsepError, match="no finished race"):
        budget_curve(short_root, "smoke", tmp_path / "curve3", budgets=(1.0,), tracks=1, iterations=2,
                     models_dir=tmp_path / "shared", reuse={1.0: tmp_path / "nowhere"}, progress=False, log=None)
    with pytest.raises(FlowsepError, match="reuse only the same race"):   # another excerpt: other scores
        budget_curve(short_root, "smoke", tmp_path / "curve3", budgets=(1.0,), tracks=1, iterations=2,
                     models_dir=tmp_path / "shared", reuse={1.0: tmp_path / "curve" / "seconds1"},
                     excerpt=(0.0, 1.0), progress=False, log=None)


# ---- command line --------------------------------------------------------------------------------------
def _cli_fails(argv, capsys):
    rc = main(argv)
    err = capsys.readouterr().err.strip().splitlines()
    assert rc == 2 and len(err) == 1 and err[0].startswith("flowsep: error: "), err
    return err[0]


def test_cli_bad_input_gives_one_line(synth_root, tmp_path, capsys):
    ckpt = str(tmp_path / "m.pt")
    assert "unknown model" in _cli_fails(["train-supervised", "unet", "--data", str(synth_root), "--out", ckpt],
                                         capsys)
    assert "MUSDB18" in _cli_fails(["train-supervised", "demucs", "--data", str(tmp_path), "--out", ckpt], capsys)
    assert "profile" in _cli_fails(["train-supervised", "demucs", "--data", str(synth_root), "--out", ckpt,
                                    "--profile", "huge"], capsys)
    assert "--steps" in _cli_fails(["train-supervised", "demucs", "--data", str(synth_root), "--out", ckpt,
                                    "--steps", "0"], capsys)
    bad = tmp_path / "bad.pt"
    bad.write_bytes(b"not a checkpoint")
    assert "corrupt" in _cli_fails(["train-supervised", "waveunet", "--data", str(synth_root), "--out", str(bad),
                                    "--resume"], capsys)
    assert "MUSDB18" in _cli_fails(["benchmark", "--data", str(tmp_path), "--profile", "smoke", "--out",
                                    str(tmp_path / "b")], capsys)
    assert "unknown system" in _cli_fails(["benchmark", "--data", str(synth_root), "--profile", "smoke", "--out",
                                           str(tmp_path / "b"), "--systems", "instglow,unet"], capsys)
    assert "--curve" in _cli_fails(["benchmark", "--data", str(synth_root), "--profile", "smoke", "--out",
                                    str(tmp_path / "b"), "--curve", "1,two"], capsys)
    assert "--resume" in _cli_fails(["benchmark", "--data", str(synth_root), "--profile", "smoke", "--out",
                                     str(tmp_path / "b"), "--curve", "1,2", "--resume"], capsys)
    assert "not both" in _cli_fails(["benchmark", "--data", str(synth_root), "--profile", "smoke", "--out",
                                     str(tmp_path / "b"), "--steps", "2", "--train-seconds", "3"], capsys)
    with pytest.raises(FlowsepError, match="supervised"):
        from flowsep.io import save_torch
        save_torch({"format": "flowsep-prior"}, tmp_path / "prior.pt")
        load_supervised(tmp_path / "prior.pt")


def test_cli_train_supervised_writes_a_checkpoint(synth_root, tmp_path, capsys):
    ckpt = tmp_path / "tasnet.pt"
    rc = main(["train-supervised", "convtasnet", "--data", str(synth_root), "--profile", "smoke", "--out",
               str(ckpt), "--steps", "2", "--quiet"])
    assert rc == 0 and "2 steps" in capsys.readouterr().out
    sep = load_supervised(ckpt)
    assert sep.config.model == "convtasnet" and sep.history["step"] == [1, 2]
