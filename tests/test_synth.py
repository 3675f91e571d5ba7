"""The synthetic MUSDB18: layout, musdb access, determinism, mixing, and what each stem sounds like."""
import hashlib
import json
import os
import subprocess
import sys

import numpy as np
import pytest
import soundfile as sf

from flowsep import FlowsepError
from flowsep.data import compose as C
from flowsep.data.synth import STEMS, setup_file, synthesize
from flowsep.data.voice import FORMANTS, RANGES, Note, Voice, sing

RATE = 44100


# ---------------------------------------------------------------------------------------------------
# helpers: reading a set, and a few descriptors computed from the audio
# ---------------------------------------------------------------------------------------------------
def tracks(root, subset=None):
    subsets = [subset] if subset else ["train", "test"]
    return [p for s in subsets for p in sorted((root / s).iterdir()) if p.is_dir()]


def mono(path):
    x, rate = sf.read(str(path), dtype="float64", always_2d=True)
    assert rate == RATE
    return x.mean(axis=1)


def file_hashes(root):
    return {str(p.relative_to(root)): hashlib.sha256(p.read_bytes()).hexdigest()
            for p in sorted(root.rglob("*")) if p.is_file()}


def frame_power(x, n=2048, hop=1024):
    """(frames, bins) power spectra of Hann-windowed frames, the frames' RMS, and the bin frequencies."""
    m = (len(x) - n) // hop + 1
    frames = np.stack([x[i * hop:i * hop + n] for i in range(m)])
    power = np.abs(np.fft.rfft(frames * np.hanning(n), axis=1)) ** 2 + 1e-20
    return power, np.sqrt(np.mean(frames ** 2, axis=1)), np.fft.rfftfreq(n, 1 / RATE)


def active(rms, db=30):
    return rms > rms.max() * 10 ** (-db / 20)


def centroid(x):
    """Spectral centroid (Hz) of the long-term average power spectrum over the playing frames."""
    power, rms, f = frame_power(x)
    p = power[active(rms)].mean(axis=0)
    return float((p * f).sum() / p.sum())


def flatness(x):
    """Median spectral flatness (geometric / arithmetic mean of the power, 50 Hz - 16 kHz): ~0 for
    harmonic sounds, larger for noisy, percussive ones."""
    power, rms, f = frame_power(x)
    band = (f > 50) & (f < 16000)
    p = power[active(rms)][:, band]
    return float(np.median(np.exp(np.log(p).mean(axis=1)) / p.mean(axis=1)))


def pitch_strength(x):
    """Per loud frame (within 20 dB of the loudest): normalised autocorrelation peak for periods of
    1/1000 .. 1/70 s, and the frequency of that peak (a clear pitch gives a peak near 1, noise ~0)."""
    n, hop = 2048, 1024
    frames = np.stack([x[i * hop:i * hop + n] for i in range((len(x) - n) // hop + 1)])
    frames = frames[active(np.sqrt(np.mean(frames ** 2, axis=1)), db=20)]
    ac = np.fft.irfft(np.abs(np.fft.rfft(frames * np.hanning(n), 2 * n, axis=1)) ** 2, axis=1)[:, :n]
    window = np.fft.irfft(np.abs(np.fft.rfft(np.hanning(n), 2 * n)) ** 2)[:n]
    ac = ac / (ac[:, :1] + 1e-20) / (window / window[0])               # undo the window's own decay
    lo, hi = RATE // 1000, RATE // 70
    peak = ac[:, lo:hi].max(axis=1)
    lag = lo + (ac[:, lo:hi] >= 0.9 * peak[:, None]).argmax(axis=1)   # the first near-top peak: the period
    return peak, RATE / lag


def band_fraction(x, lo, hi):
    """Median over playing frames of the share of power between ``lo`` and ``hi`` Hz."""
    power, rms, f = frame_power(x)
    p = power[active(rms)]
    return float(np.median(p[:, (f >= lo) & (f < hi)].sum(axis=1) / p.sum(axis=1)))


# ---------------------------------------------------------------------------------------------------
# layout, format, musdb
# ---------------------------------------------------------------------------------------------------
def test_layout_and_wav_format(synth_root):
    train, test = tracks(synth_root, "train"), tracks(synth_root, "test")
    assert len(train) == 3 and len(test) == 2
    names = [t.name for t in train + test]
    assert len(set(names)) == len(names)
    assert all(" - " in n and n == n.strip() for n in names)
    for track in train + test:
        assert sorted(p.name for p in track.iterdir()) == sorted(f"{s}.wav" for s in ("mixture",) + STEMS)
        for wav in track.iterdir():
            info = sf.info(str(wav))
            assert (info.samplerate, info.channels, info.subtype, info.format) == (RATE, 2, "PCM_16", "WAV")
            assert info.frames == round(6.0 * RATE)
    assert not list(synth_root.rglob("*.tmp"))             # atomic writes left nothing behind
    manifest = json.loads((synth_root / "flowsep-synth.json").read_text())
    assert sorted(manifest["tracks"]["train"]) == [t.name for t in train]
    assert sorted(manifest["tracks"]["test"]) == [t.name for t in test]


def test_musdb_sees_train_valid_and_test_tracks(synth_root, tmp_path):
    import musdb
    setup = setup_file(synth_root)
    assert setup is not None and setup_file(tmp_path) is None      # a real MUSDB18 root has none
    train = musdb.DB(str(synth_root), is_wav=True, subsets="train", split="train", setup_file=setup)
    valid = musdb.DB(str(synth_root), is_wav=True, subsets="train", split="valid", setup_file=setup)
    test = musdb.DB(str(synth_root), is_wav=True, subsets="test", setup_file=setup)
    assert len(valid) == 1 and len(train) == 2 and len(test) == 2
    assert {t.name for t in train} | {t.name for t in valid} == {t.name for t in tracks(synth_root, "train")}
    assert not {t.name for t in train} & {t.name for t in valid}
    track = test[0]
    assert track.rate == RATE and set(track.targets) >= {"vocals", "drums", "bass", "other", "accompaniment"}
    vocals = track.targets["vocals"].audio
    assert vocals.shape == (round(6.0 * RATE), 2) and np.abs(vocals).max() > 0.01
    # musdb's own setup file (no setup_file) still reads every track, without a split
    assert len(musdb.DB(str(synth_root), is_wav=True)) == 5


def test_mixture_is_the_sum_of_the_stems(synth_root):
    for track in tracks(synth_root):
        stems = [sf.read(str(track / f"{s}.wav"), dtype="int16")[0].astype(np.int32) for s in STEMS]
        mix = sf.read(str(track / "mixture.wav"), dtype="int16")[0].astype(np.int32)
        assert np.abs(mix - sum(stems)).max() <= 1                   # within 16-bit rounding
        peak = np.abs(mix).max()
        assert 0.5 * 32767 < peak < 32767                            # loud, and never clipped


def test_every_stem_plays_most_of_the_time(synth_root):
    half_second = RATE // 2
    for track in tracks(synth_root):
        for stem in STEMS:
            x = mono(track / f"{stem}.wav")
            frames = x[: len(x) // half_second * half_second].reshape(-1, half_second)
            rms = np.sqrt((frames ** 2).mean(axis=1))
            playing = active(rms, db=40).mean()
            assert playing > 0.5, f"{track.name}/{stem} plays in only {playing:.0%} of the half-seconds"


# ---------------------------------------------------------------------------------------------------
# what the stems sound like
# ---------------------------------------------------------------------------------------------------
def test_instrument_character(synth_root):
    for track in tracks(synth_root):
        audio = {s: mono(track / f"{s}.wav") for s in STEMS}
        others = lambda stem: [s for s in STEMS if s != stem]  # noqa: E731
        cen = {s: centroid(x) for s, x in audio.items()}
        assert all(cen["bass"] < cen[s] for s in others("bass")), (track.name, cen)
        flat = {s: flatness(x) for s, x in audio.items()}
        assert all(flat["drums"] > flat[s] for s in others("drums")), (track.name, flat)
        # vocals: a clear pitch in the singing range, most energy in the formant region (F1..F4)
        strength, f0 = pitch_strength(audio["vocals"])
        assert np.median(strength) > 0.8, track.name
        assert 90 < np.median(f0) < 800, track.name                     # MIDI 43..79, the singers' range
        formant = {s: band_fraction(audio[s], 250, 4000) for s in ("vocals", "bass")}
        assert formant["vocals"] > max(0.5, formant["bass"]), (track.name, formant)


def _sung_vowel(vowel, pitch=55.0, onset=""):
    voice = Voice(kind="tenor", vibrato_depth=0.0, breathiness=0.02, breath_level=0.0)
    note = Note(0.2, 1.2, pitch, 0.8, vowel, onset)
    return sing([note], int(1.4 * RATE), RATE, voice, np.random.default_rng(0))


def _band_energy(x, lo, hi):
    spec = np.abs(np.fft.rfft(x * np.hanning(len(x)))) ** 2
    f = np.fft.rfftfreq(len(x), 1 / RATE)
    return spec[(f >= lo) & (f < hi)].sum()


def test_sung_vowels_have_their_pitch_harmonics_and_formants():
    seg = slice(int(0.5 * RATE), int(0.5 * RATE) + 8192)
    a, i, u = (_sung_vowel(v)[seg] for v in "aiu")
    # pitch: the strongest autocorrelation peak sits at the period of MIDI 55 (196 Hz)
    ac = np.correlate(a, a, "full")[len(a) - 1:]
    lag = RATE // 1000 + np.argmax(ac[RATE // 1000: RATE // 70])
    assert abs(RATE / lag - 196.0) / 196.0 < 0.03
    # harmonics: the spectrum has peaks at k * f0 well above the valleys between them
    spec = np.abs(np.fft.rfft(a * np.hanning(len(a))))
    hz = RATE / len(a)
    for k in range(1, 6):
        peak = spec[int(k * 196 / hz) - 2:int(k * 196 / hz) + 3].max()
        valley = spec[int((k + 0.5) * 196 / hz) - 1:int((k + 0.5) * 196 / hz) + 2].min()
        assert peak > 10 * valley
    # formants: /i/ has a high F2 (energy at 1.5-2.5 kHz against 0.5-1.5 kHz), /a/ a middle one,
    # /u/ a low one; /a/ has the highest F1 (energy at 0.5-1.2 kHz against below 0.5 kHz)
    f2_share = {v: _band_energy(x, 1500, 2500) / _band_energy(x, 500, 1500) for v, x in zip("aiu", (a, i, u))}
    assert f2_share["i"] > f2_share["a"] > f2_share["u"]
    f1_share = {v: _band_energy(x, 500, 1200) / _band_energy(x, 0, 500) for v, x in zip("aiu", (a, i, u))}
    assert f1_share["a"] > max(f1_share["i"], f1_share["u"])
    assert FORMANTS["tenor"]["i"][1] > 1500 > FORMANTS["tenor"]["u"][1]


def test_consonant_s_is_a_burst_of_high_noise_before_the_vowel():
    s, plain = _sung_vowel("a", onset="s"), _sung_vowel("a")
    before = slice(int(0.12 * RATE), int(0.2 * RATE))                # the consonant sits before the note
    assert _band_energy(s[before], 4500, 12000) > 100 * _band_energy(plain[before], 4500, 12000)
    vowel = slice(int(0.6 * RATE), int(0.7 * RATE))
    assert _band_energy(s[before], 4500, 12000) / _band_energy(s[before], 0, 4500) > \
        _band_energy(s[vowel], 4500, 12000) / _band_energy(s[vowel], 0, 4500)


def test_composition_follows_the_harmony():
    for k in range(6):
        song = C.compose(np.random.default_rng([11, k]), 20.0)
        bars = sum(s.bars for s in song.sections)
        assert bars * song.bar_seconds >= 20.0
        assert song.sections[0].start_bar == 0 and all(
            a.start_bar + a.bars == b.start_bar for a, b in zip(song.sections, song.sections[1:]))
        scale = C.MAJOR if song.mode == "major" else C.MINOR
        lo, hi = RANGES[song.voice.kind]
        assert len(song.vocals) > 10
        assert all((int(n.pitch) - song.tonic) % 12 in scale and lo <= n.pitch <= hi for n in song.vocals)
        assert len({n.vowel for n in song.vocals}) >= 3 and any(n.onset for n in song.vocals)
        # bass: mostly the root of the chord that sounds at the note's start
        bass = next(p.instrument for p in song.parts if p.stem == "bass")
        chords = [C._chord_at(song.chords, int(round(n.start / song.step))) for n in bass.notes]
        on_root = np.mean([n.pitch % 12 == c.pcs[0] for n, c in zip(bass.notes, chords)])
        on_chord = np.mean([n.pitch % 12 in c.pcs for n, c in zip(bass.notes, chords)])
        assert on_root > 0.4 and on_chord > 0.75 and max(n.pitch for n in bass.notes) < 60
        drums = [p.instrument for p in song.parts if p.stem == "drums"]
        assert drums and all(d.is_drum for d in drums)
        assert {p.stem for p in song.parts} == {"drums", "bass", "other"}


# ---------------------------------------------------------------------------------------------------
# determinism, resuming, extra stems
# ---------------------------------------------------------------------------------------------------
def test_same_seed_same_bytes_whatever_the_workers(tmp_path):
    a = synthesize(tmp_path / "a", n_train=2, n_test=1, seconds=3.0, seed=7, workers=1, progress=False)
    b = synthesize(tmp_path / "b", n_train=2, n_test=1, seconds=3.0, seed=7, workers=2, progress=False)
    ha, hb = file_hashes(a), file_hashes(b)
    assert len(ha) == 2 + 3 * 5 and ha == hb
    c = synthesize(tmp_path / "c", n_train=2, n_test=1, seconds=3.0, seed=8, workers=2, progress=False)
    hc = file_hashes(c)
    assert not set(v for k, v in ha.items() if k.endswith(".wav")) & set(hc.values())


def test_rerun_keeps_complete_tracks_and_refuses_other_sets(tmp_path):
    root = synthesize(tmp_path / "set", n_train=1, n_test=1, seconds=2.0, seed=3, progress=False)
    before = file_hashes(root)
    stamps = {p: p.stat().st_mtime_ns for p in root.rglob("*") if p.is_file()}
    assert synthesize(root, n_train=1, n_test=1, seconds=2.0, seed=3, progress=False) == root
    assert {p: p.stat().st_mtime_ns for p in root.rglob("*") if p.is_file()} == stamps
    victim = tracks(root, "test")[0] / "bass.wav"
    victim.unlink()                                                   # an interrupted track
    synthesize(root, n_train=1, n_test=1, seconds=2.0, seed=3, progress=False)
    assert file_hashes(root) == before
    with pytest.raises(FlowsepError, match="other settings"):
        synthesize(root, n_train=1, n_test=1, seconds=3.0, seed=3, progress=False)
    (tmp_path / "busy").mkdir()
    (tmp_path / "busy" / "notes.txt").write_text("mine")
    with pytest.raises(FlowsepError, match="not empty"):
        synthesize(tmp_path / "busy", n_train=1, n_test=1, seconds=2.0, progress=False)


def test_extra_stems_guitar_and_piano(tmp_path):
    import musdb
    root = synthesize(tmp_path / "x", n_train=2, n_test=1, seconds=4.0, seed=2,
                      extra_stems=("piano", "guitar"), progress=False)
    stems = STEMS + ("guitar", "piano")
    for track in tracks(root):
        assert sorted(p.name for p in track.iterdir()) == sorted(f"{s}.wav" for s in ("mixture",) + stems)
        parts = [sf.read(str(track / f"{s}.wav"), dtype="int16")[0].astype(np.int32) for s in stems]
        mix = sf.read(str(track / "mixture.wav"), dtype="int16")[0].astype(np.int32)
        assert np.abs(mix - sum(parts)).max() <= 1
        for s in ("guitar", "piano", "other"):
            rms = np.sqrt(np.mean(mono(track / f"{s}.wav") ** 2))
            assert rms > 10 ** (-40 / 20), (track.name, s)
    db = musdb.DB(str(root), is_wav=True, subsets="train", setup_file=setup_file(root))
    assert set(db[0].sources) == set(stems) and "guitar" in db[0].targets
    # guitars and pianos play only in their own stems
    for k in range(5):
        song = C.compose(np.random.default_rng([5, k]), 8.0, extra=("guitar", "piano"))
        by_stem = {}
        for p in song.parts:
            by_stem.setdefault(p.stem, []).append(p.instrument.program)
        assert all(p in C.GUITARS for p in by_stem["guitar"]) and all(p in C.PIANOS for p in by_stem["piano"])
        assert not set(by_stem["other"]) & (set(C.GUITARS) | set(C.PIANOS))


@pytest.mark.parametrize("kwargs, message", [
    (dict(n_train=0, n_test=0), "at least one track"),
    (dict(n_train=-1), "--train"),
    (dict(seconds=0), "--seconds"),
    (dict(seconds=-2.5), "--seconds"),
    (dict(extra_stems="guitar,flute"), "unknown extra stem 'flute'"),
    (dict(seed=-1), "--seed"),
])
def test_bad_arguments(tmp_path, kwargs, message):
    args = dict(n_train=1, n_test=1, seconds=1.0, progress=False) | kwargs
    with pytest.raises(FlowsepError, match=message) as err:
        synthesize(tmp_path / "out", **args)
    assert "\n" not in str(err.value)
    assert not (tmp_path / "out").exists()


def test_unwritable_destinations(tmp_path):
    blocker = tmp_path / "file.txt"
    blocker.write_text("x")
    for out in (blocker, blocker / "inside"):
        with pytest.raises(FlowsepError) as err:
            synthesize(out, n_train=1, n_test=0, seconds=1.0, progress=False)
        assert "\n" not in str(err.value)


# ---------------------------------------------------------------------------------------------------
# command line
# ---------------------------------------------------------------------------------------------------
def test_cli_generates_a_set(tmp_path):
    out = tmp_path / "cli"
    r = subprocess.run([sys.executable, "-m", "flowsep.cli", "synth", str(out), "--train", "2", "--test", "1",
                        "--seconds", "1.5", "--seed", "4", "--extra-stems", "guitar,piano", "--quiet"],
                       capture_output=True, text=True, timeout=120, env=dict(os.environ, PYTHONHASHSEED="1"))
    assert r.returncode == 0, r.stderr
    assert "setup.yaml" in r.stdout and len(tracks(out)) == 3
    assert all((t / "guitar.wav").is_file() and (t / "piano.wav").is_file() for t in tracks(out))
    # the same bytes from another process (another string-hash seed) and from this one
    here = synthesize(tmp_path / "here", n_train=2, n_test=1, seconds=1.5, seed=4,
                      extra_stems=["guitar", "piano"], workers=1, progress=False)
    assert file_hashes(out) == file_hashes(here)


def test_cli_bad_input_is_one_line_and_status_2(tmp_path):
    blocker = tmp_path / "file.txt"
    blocker.write_text("x")
    busy = tmp_path / "busy"
    busy.mkdir()
    (busy / "song.wav").write_text("not ours")
    cases = [                      # a bad number, an unknown stem, an unwritable and a foreign folder
        (tmp_path / "a", "--seconds", -1),
        (tmp_path / "b", "--extra-stems", "flute"),
        (blocker / "c",),
        (busy,),
    ]
    runs = [subprocess.Popen([sys.executable, "-m", "flowsep.cli", "synth", *map(str, args), "--quiet"],
                             stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True) for args in cases]
    for args, run in zip(cases, runs):
        _, stderr = run.communicate(timeout=120)
        lines = stderr.strip().splitlines()
        assert run.returncode == 2 and len(lines) == 1 and lines[0].startswith("flowsep: error: "), (args, stderr)


# ---------------------------------------------------------------------------------------------------
# styles: the default one, and the held-out songs chapter 6 scores the trained systems on
# ---------------------------------------------------------------------------------------------------
def _score(song):
    """Everything a composed song decides, as plain values (compares two songs exactly)."""
    parts = [(p.stem, p.role, p.instrument.program, p.gain_db, p.pan,
              [(n.velocity, n.pitch, n.start, n.end) for n in p.instrument.notes],
              [(c.number, c.value, c.time) for c in p.instrument.control_changes]) for p in song.parts]
    return song.describe(), parts, song.vocals, song.stem_gain_db, song.vocal_pan, song.room


def test_the_default_style_composes_the_songs_of_before():
    # the songs these seeds gave before styles existed (the sets' bytes did not change either)
    before = ["108 bpm 4/4 G#; verse4-prechorus1; tenor voice; drum kit 0, bass:bass:Synth Bass 1, "
              "other:comp:Acoustic Guitar (steel), other:pad:Synth Strings 1",
              "135 bpm 4/4 D#; verse4-chorus2; tenor voice; drum kit 0, bass:bass:Electric Bass (pick), "
              "other:comp:Acoustic Grand Piano, other:pad:Pad 8 (sweep)"]
    for k in range(3):
        rng = lambda: np.random.default_rng([11, k])  # noqa: E731
        plain = _score(C.compose(rng(), 8.0))
        assert plain == _score(C.compose(rng(), 8.0, style="default"))
        assert plain == _score(C.compose(rng(), 8.0, style=C.STYLES["default"]))
        if k < len(before):
            assert plain[0] == before[k]
    assert C.compose(np.random.default_rng(0), 2.0).style == "default"


def test_heldout_songs_use_only_heldout_instruments_and_tempi():
    default, held = C.STYLES["default"], C.STYLES["heldout"]
    assert not held.all_programs() & default.all_programs()
    assert not set(held.drum_kits) & set(default.drum_kits)
    for k in range(20):
        extra = [(), ("guitar", "piano"), ("guitar",), ("piano",)][k % 4]
        song = C.compose(np.random.default_rng([3, k]), 10.0, extra=extra, style="heldout")
        assert song.style == "heldout"
        lo, hi = held.tempo[song.meter.name]
        assert lo <= song.tempo <= hi and song.tempo > default.tempo[song.meter.name][1] - 1
        for p in song.parts:
            program = p.instrument.program
            if p.stem == "drums":
                assert program in held.drum_kits
            elif p.stem == "bass":
                assert program in held.bass_programs
            elif p.stem == "other":
                assert program in set().union(*held.programs.values()) - set().union(
                    *(held.extra_programs[s] for s in extra))
            else:
                assert program in held.extra_programs[p.stem]
        assert {p.stem for p in song.parts} == {"drums", "bass", "other", *extra}
        assert all(held.stem_gain_db[s][0] <= g <= held.stem_gain_db[s][1] for s, g in song.stem_gain_db.items())
        bass = next(p.instrument for p in song.parts if p.stem == "bass")
        assert bass.notes and max(n.pitch for n in bass.notes) < 65
    # the same seed gives another song in another style
    assert _score(C.compose(np.random.default_rng(1), 6.0)) != _score(
        C.compose(np.random.default_rng(1), 6.0, style="heldout"))


def test_an_unknown_style_is_a_one_line_error(tmp_path):
    bad = C.Style(**{**vars(C.STYLES["heldout"]), "name": "mine"})     # a Style that is not in STYLES
    for call in (lambda: C.compose(np.random.default_rng(0), 2.0, style="jazz"),
                 lambda: synthesize(tmp_path / "out", n_train=0, n_test=1, seconds=1.0, style="jazz"),
                 lambda: synthesize(tmp_path / "out", n_train=0, n_test=1, seconds=1.0, style=bad)):
        with pytest.raises(FlowsepError, match="jazz|mine") as err:
            call()
        assert "\n" not in str(err.value) and "default, heldout" in str(err.value)
    assert not (tmp_path / "out").exists()


def test_sets_of_two_styles_are_other_songs_and_refuse_each_other(tmp_path):
    args = dict(n_train=0, n_test=1, seconds=1.5, seed=4, workers=1, progress=False)
    default, held = synthesize(tmp_path / "d", **args), synthesize(tmp_path / "h", style="heldout", **args)
    md, mh = (json.loads((r / "flowsep-synth.json").read_text()) for r in (default, held))
    assert "style" not in md and mh["style"] == "heldout" and mh["tracks"]["train"] == []
    assert not set(md["tracks"]["test"]) & set(mh["tracks"]["test"])
    hd, hh = file_hashes(default), file_hashes(held)
    assert not {v for k, v in hd.items() if k.endswith(".wav")} & set(hh.values())
    with pytest.raises(FlowsepError, match="style 'heldout' -> 'default'"):
        synthesize(held, **args)
    with pytest.raises(FlowsepError, match="style 'default' -> 'heldout'"):
        synthesize(default, style="heldout", **args)
    assert synthesize(held, style="heldout", **args) == held and file_hashes(held) == hh


def test_cli_style_option(tmp_path):
    cases = [("good", "heldout"), ("bad", "jazz")]
    runs = [subprocess.Popen([sys.executable, "-m", "flowsep.cli", "synth", str(tmp_path / out), "--train", "0",
                              "--test", "1", "--seconds", "1.5", "--seed", "4", "--style", style, "--quiet"],
                             stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True) for out, style in cases]
    (_, good_err), (_, bad_err) = (run.communicate(timeout=120) for run in runs)
    assert runs[0].returncode == 0, good_err
    assert json.loads((tmp_path / "good" / "flowsep-synth.json").read_text())["style"] == "heldout"
    here = synthesize(tmp_path / "here", n_train=0, n_test=1, seconds=1.5, seed=4, workers=1, progress=False,
                      style="heldout")
    assert file_hashes(tmp_path / "good") == file_hashes(here)
    lines = bad_err.strip().splitlines()
    assert runs[1].returncode == 2 and len(lines) == 1 and "unknown style 'jazz'" in lines[0], bad_err
