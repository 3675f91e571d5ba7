"""museval wrappers, bounds and the `flowsep evaluate` verb (flowsep.evaluate).

BSS Eval v4 is slow (its distortion filters grow with sources x channels), so the fixture here is a tiny
MUSDB18-format set of its own: two test tracks of 2 s at 8 kHz with two stems.
"""
import json
import math

import numpy as np
import pandas as pd
import pytest
import soundfile as sf

import flowsep
from flowsep.cli import main
from flowsep.errors import FlowsepError
from flowsep.baselines.oracles import MixtureAsEstimate, OracleRatioMask
from flowsep.evaluate import (evaluate_estimates, evaluate_separator, excerpt_tracks, iter_tracks, load_track, load_scores, open_tracks, score_track,
                              score_track_paper, summarize)

RATE = 8000


@pytest.fixture(scope="module")
def tiny_db(tmp_path_factory):
    """test/{A - One, B - Two}/{mixture,vocals,bass}.wav, stereo, 2 s at 8 kHz (float wav)."""
    root = tmp_path_factory.mktemp("db") / "musdb"
    rng = np.random.default_rng(0)
    n = 2 * RATE
    t = np.arange(n) / RATE
    for k, name in enumerate(["A - One", "B - Two"]):
        d = root / "test" / name
        d.mkdir(parents=True)
        vocals = 0.2 * np.sin(2 * np.pi * (300 + 50 * k) * t * (1 + 0.05 * np.sin(2 * np.pi * 3 * t)))
        vocals = vocals[:, None] * [1.0, 0.7] + 0.01 * rng.standard_normal((n, 2))
        bass = 0.3 * np.sin(2 * np.pi * (55 + 10 * k) * t)[:, None] * [0.8, 1.0] * (1 + (t[:, None] % 0.5 < 0.25))
        sf.write(d / "vocals.wav", vocals, RATE, subtype="FLOAT")
        sf.write(d / "bass.wav", bass, RATE, subtype="FLOAT")
        sf.write(d / "mixture.wav", vocals + bass, RATE, subtype="FLOAT")
    return root


def test_tracks_are_read_channels_first(tiny_db):
    tracks = list(iter_tracks(tiny_db, "test"))
    assert [t.name for t in tracks] == ["A - One", "B - Two"]
    tr = tracks[0]
    assert tr.rate == RATE and tr.mixture.shape == (2, 2 * RATE)
    assert set(tr.sources) == {"vocals", "bass"}
    assert "accompaniment" in tr.references and "linear_mixture" not in tr.references
    np.testing.assert_allclose(tr.sources["vocals"] + tr.sources["bass"], tr.mixture, atol=1e-4)  # 16-bit reads
    assert [t.name for t in open_tracks(tiny_db, "test", ["B - Two"])] == ["B - Two"]
    with pytest.raises(FlowsepError):
        open_tracks(tiny_db, "test", ["C - Three"])
    with pytest.raises(FlowsepError):
        open_tracks(tiny_db / "nowhere", "test")


def test_an_excerpt_is_that_part_of_the_track_and_is_scored_as_such(tiny_db):
    """excerpt=(offset, seconds): musdb reads only that part of the mixture and of every stem."""
    whole = load_track(open_tracks(tiny_db, "test")[1])
    part = load_track(excerpt_tracks(open_tracks(tiny_db, "test")[1:], (0.5, 1.25))[0])
    cut = slice(int(0.5 * RATE), int(0.5 * RATE) + int(1.25 * RATE))
    assert part.mixture.shape == (2, int(1.25 * RATE))
    np.testing.assert_array_equal(part.mixture, whole.mixture[:, cut])
    for k in whole.references:
        np.testing.assert_array_equal(part.references[k], whole.references[k][:, cut])
    # evaluating with an excerpt hands the system only that part of every track, and scores every track
    seen = []

    def system(mixture, rate):
        seen.append(mixture.shape[-1])
        return MixtureAsEstimate(["vocals", "bass"])(mixture, rate)
    ev = evaluate_separator(system, tiny_db, "test", excerpt=(0.5, 1.25), progress=False)
    assert seen == [int(1.25 * RATE)] * 2 and set(ev.scores["track"]) == {"A - One", "B - Two"}
    with pytest.raises(FlowsepError, match="too short"):
        excerpt_tracks(open_tracks(tiny_db, "test"), (1.5, 1.0))
    with pytest.raises(FlowsepError, match="positive length"):
        excerpt_tracks(open_tracks(tiny_db, "test"), (0.0, 0.0))


def test_score_track_equals_museval_on_the_same_arrays():
    import museval

    rng = np.random.default_rng(1)
    refs = {"vocals": rng.standard_normal((1, 3 * RATE)), "bass": rng.standard_normal((1, 3 * RATE))}
    ests = {k: v + 0.5 * rng.standard_normal(v.shape) for k, v in refs.items()}
    store = score_track(refs, ests, RATE, track_name="x")
    df = store.df
    sdr, isr, sir, sar = museval.evaluate([refs[k].T for k in refs], [ests[k].T for k in refs],
                                          win=RATE, hop=RATE)
    for i, target in enumerate(refs):
        for metric, values in (("SDR", sdr), ("SIR", sir), ("SAR", sar), ("ISR", isr)):
            mine = df[(df.target == target) & (df.metric == metric)].sort_values("time")["score"].to_numpy()
            np.testing.assert_allclose(mine.astype(float), values[i], atol=1e-4)
    assert json.loads(store.json)["targets"][0]["name"] == "vocals"


@pytest.mark.parametrize("nsrc, n, nchan, win, hop", [
    (4, 7000, 2, 2000, 2000),     # the standard protocol's shape: 4 stereo targets, a short last stretch
    (2, 6500, 1, 2000, 1500),     # mono, overlapping windows
    (3, 5000, 2, 8000, 8000),     # one window longer than the signal: the whole signal
])
def test_bss_eval_equals_museval(nsrc, n, nchan, win, hop):
    """flowsep.bsseval gives museval.evaluate's numbers (v4) within float rounding, NaN windows included."""
    import museval
    from scipy.signal import lfilter

    from flowsep.bsseval import bss_eval

    rng = np.random.default_rng(nsrc)
    refs = lfilter([1.0], [1.0, -0.9], rng.standard_normal((nsrc, n, nchan)), axis=1)   # correlated in time
    ests = 0.7 * refs + 0.2 * refs.sum(0) + 0.1 * rng.standard_normal(refs.shape)        # leaks, noise
    refs[0, 1500:4000] = 0.0          # silent through the second window: NaN there, as museval
    ests = ests[:, :n - 300]          # shorter estimates are padded with zeros
    from flowsep import bsseval
    bsseval.clear_cache()
    want = museval.evaluate(refs, ests, win=win, hop=hop)
    got = bss_eval(refs, ests, win=win, hop=hop)
    assert len(bsseval._factors_cache) == 1          # these references' factorisation, kept
    for name, w, g in zip(("SDR", "ISR", "SIR", "SAR"), want, got):
        assert g.shape == w.shape, name
        np.testing.assert_array_equal(np.isnan(g), np.isnan(w), err_msg=name)
        np.testing.assert_allclose(g, w, rtol=0, atol=1e-9, err_msg=name)
    if win < n:
        assert np.isnan(got[0][:, 1]).all()
    # other estimates of the same references: the references' factorisation is reused, the numbers still museval's
    calls = []
    real_gram = bsseval._gram
    bsseval._gram = lambda *a: calls.append(1) or real_gram(*a)
    try:
        other = ests[::-1] + 0.3 * rng.standard_normal(ests.shape)
        for w, g in zip(museval.evaluate(refs, other, win=win, hop=hop), bss_eval(refs, other, win=win, hop=hop)):
            np.testing.assert_allclose(g, w, rtol=0, atol=1e-9)
    finally:
        bsseval._gram = real_gram
    assert not calls and len(bsseval._factors_cache) == 1
    with pytest.raises(ValueError, match="silent throughout"):
        bss_eval(np.zeros_like(refs), ests, win=win, hop=hop)


def test_a_singular_gram_matrix_falls_back_to_least_squares_as_museval():
    from flowsep.bsseval import _Factored
    a = -np.finfo(float).eps * np.eye(3)           # A + eps I is exactly zero: np.linalg.solve would refuse
    b = np.arange(6.0).reshape(3, 2)
    np.testing.assert_array_equal(_Factored(a).solve(b), np.linalg.lstsq(a, b, rcond=None)[0])
    well = np.diag([2.0, 3.0, 4.0])
    np.testing.assert_allclose(_Factored(well).solve(b), np.linalg.solve(well + np.finfo(float).eps * np.eye(3), b))


def test_score_track_groups_like_eval_mus_track(tiny_db):
    import museval

    mt = open_tracks(tiny_db, "test", 1)[0]
    track = next(iter_tracks(tiny_db, "test", 1))
    rng = np.random.default_rng(2)
    est = {k: track.references[k] + 0.05 * rng.standard_normal(track.mixture.shape)
           for k in ("vocals", "bass", "accompaniment")}
    mine = score_track(track.references, est, track.rate, track_name=track.name).df
    theirs = museval.eval_mus_track(mt, {k: v.T for k, v in est.items()}).df
    key = ["target", "metric", "time"]
    merged = mine.merge(theirs, on=key, suffixes=("_mine", "_museval"))
    assert len(merged) == len(mine) == len(theirs) > 0
    np.testing.assert_allclose(merged["score_mine"].astype(float), merged["score_museval"].astype(float),
                               atol=1e-4)


def test_summaries_standard_and_paper():
    rows = []
    values = {("t1", "vocals"): [1.0, 2.0, 9.0], ("t2", "vocals"): [4.0, 5.0, math.nan],
              ("t1", "bass"): [0.0, 0.5, 1.0], ("t2", "bass"): [3.0, 3.0, 3.0]}
    for (track, target), vals in values.items():
        for i, v in enumerate(vals):
            for metric in ("SDR", "SIR", "SAR", "ISR"):
                rows.append(dict(track=track, target=target, metric=metric, score=v, time=float(i)))
    df = pd.DataFrame(rows)
    std = summarize(df, "standard")
    paper = summarize(df, "paper")
    assert list(std.index) == ["vocals", "bass"] and list(std.columns) == ["SDR", "SIR", "SAR", "ISR"]
    for target in ("vocals", "bass"):
        per_track = [np.nanmedian(values[(tr, target)]) for tr in ("t1", "t2")]
        assert std.loc[target, "SDR"] == pytest.approx(np.median(per_track))
        pooled = values[("t1", target)] + values[("t2", target)]
        assert paper.loc[target, "SDR"] == pytest.approx(np.nanmedian(pooled))
    assert std.loc["vocals", "SDR"] != paper.loc["vocals", "SDR"]  # the two protocols differ here
    with pytest.raises(FlowsepError):
        summarize(df, "sisec")


def test_paper_protocol_drops_silent_segments():
    rng = np.random.default_rng(3)
    n = 2 * RATE
    vocals = 0.3 * rng.standard_normal((2, n))
    vocals[:, RATE:] = 1e-5 * rng.standard_normal((2, RATE))  # a near-silent second
    refs = {"vocals": vocals, "bass": 0.3 * rng.standard_normal((2, n))}
    ests = {k: v + 0.1 * rng.standard_normal(v.shape) for k, v in refs.items()}
    store = score_track_paper(refs, ests, RATE, segment=1.0, eval_rate=RATE, track_name="x")
    df = store.df
    sdr = df[(df.target == "vocals") & (df.metric == "SDR")].sort_values("time")["score"].astype(float).to_numpy()
    assert len(sdr) == 2 and np.isfinite(sdr[0]) and math.isnan(sdr[1])
    bass = df[(df.target == "bass") & (df.metric == "SDR")]["score"].astype(float)
    assert len(bass) == 2 and np.isfinite(bass).all()
    assert summarize(df, "paper").loc["vocals", "SDR"] == pytest.approx(np.nanmedian(sdr))


def test_bounds_write_files_and_rescore_from_disk(tiny_db, tmp_path):
    mix_eval = evaluate_separator(MixtureAsEstimate(("vocals", "bass")), tiny_db, tracks=["B - Two"],
                                  progress=False)
    oracle = evaluate_separator(OracleRatioMask(), tiny_db, tracks=["B - Two"], out=tmp_path / "irm",
                                progress=False)
    for target in ("vocals", "bass"):
        assert oracle.summary.loc[target, "SDR"] > mix_eval.summary.loc[target, "SDR"] + 5
    out = tmp_path / "irm"
    assert sorted(p.name for p in (out / "scores" / "test").iterdir()) == ["B - Two.json"]
    wav = out / "estimates" / "test" / "B - Two" / "vocals.wav"
    info = sf.info(str(wav))
    assert (info.samplerate, info.channels, info.frames) == (RATE, 2, 2 * RATE)
    csv = pd.read_csv(out / "summary.csv", index_col=0)
    assert list(csv.columns) == ["SDR", "SIR", "SAR", "ISR"] and list(csv.index) == ["vocals", "bass"]
    np.testing.assert_allclose(csv.to_numpy(), oracle.summary.to_numpy(float), atol=1e-3)
    with pytest.warns(UserWarning, match="no estimates for track 'A - One'"):
        again = evaluate_estimates(out, tiny_db, progress=False)
    np.testing.assert_allclose(again.summary.to_numpy(float), oracle.summary.to_numpy(float), atol=1e-3)
    loaded = load_scores(out)
    assert len(loaded) == len(oracle.scores)


def test_cli_evaluate_with_priors_then_from_estimates(tiny_db, tmp_path, capsys):
    ckpt = tmp_path / "ckpt"
    for name in ("vocals", "bass"):
        flowsep.FlowPrior(flowsep.PriorConfig.preset("smoke")).save(ckpt / f"{name}.pt")
    out = tmp_path / "run"
    argv = ["evaluate", "--data", str(tiny_db), "--tracks", "1", "--prior", f"vocals={ckpt / 'vocals.pt'}",
            "--prior", f"bass={ckpt / 'bass.pt'}", "--out", str(out), "--iterations", "2", "--quiet"]
    assert main(argv) == 0
    printed = capsys.readouterr().out
    assert "SDR" in printed and "vocals" in printed
    json_path = out / "scores" / "test" / "A - One.json"
    assert json_path.is_file() and not (out / "scores" / "test" / "B - Two.json").exists()
    assert sorted(p.name for p in (out / "estimates" / "test" / "A - One").iterdir()) == ["bass.wav", "vocals.wav"]
    first = pd.read_csv(out / "summary.csv", index_col=0)
    stamp = json_path.stat().st_mtime_ns
    assert main(argv + ["--resume"]) == 0
    assert json_path.stat().st_mtime_ns == stamp
    capsys.readouterr()
    with pytest.warns(UserWarning, match="no estimates"):
        assert main(["evaluate", "--data", str(tiny_db), "--estimates", str(out), "--out", str(tmp_path / "re"),
                     "--quiet"]) == 0
    capsys.readouterr()
    again = pd.read_csv(tmp_path / "re" / "summary.csv", index_col=0)
    np.testing.assert_allclose(again.to_numpy(), first.to_numpy(), atol=1e-3)
    assert main(["evaluate", "--data", str(tiny_db), "--estimates", str(out), "--out", str(tmp_path / "pp"),
                 "--protocol", "paper", "--tracks", "1", "--quiet"]) == 0
    assert "paper protocol" in capsys.readouterr().out
    assert (tmp_path / "pp" / "summary.csv").is_file()


def test_cli_evaluate_errors(tiny_db, tmp_path, capsys):
    ckpt = tmp_path / "v.pt"
    flowsep.FlowPrior(flowsep.PriorConfig.preset("smoke")).save(ckpt)
    blocker = tmp_path / "file.txt"
    blocker.write_text("x")
    base = ["evaluate", "--data", str(tiny_db), "--quiet"]
    cases = [
        (base + ["--out", str(tmp_path / "o")], "either"),
        (base + ["--prior", f"vocals={ckpt}", "--estimates", str(tmp_path), "--out", str(tmp_path / "o")], "either"),
        (["evaluate", "--data", str(tmp_path / "none"), "--prior", f"vocals={ckpt}", "--out",
          str(tmp_path / "o")], "does not exist"),
        (base + ["--prior", "vocals", "--out", str(tmp_path / "o")], "NAME=CKPT"),
        (base + ["--prior", f"vocals={tmp_path / 'missing.pt'}", "--out", str(tmp_path / "o")], "not found"),
        (base + ["--prior", f"vocals={ckpt}", "--out", str(blocker)], "not a folder"),
        (base + ["--estimates", str(tmp_path / "empty"), "--out", str(tmp_path / "o")], "no test/"),
        (base + ["--prior", f"guitar={ckpt}", "--out", str(tmp_path / "o"), "--iterations", "1"], "none of the"),
    ]
    for argv, words in cases:
        assert main(argv) == 2, argv
        err = capsys.readouterr().err.strip().splitlines()
        assert len(err) == 1 and err[0].startswith("flowsep: error:") and words in err[0], (argv, err)
    assert not (tmp_path / "o" / "summary.csv").exists()
