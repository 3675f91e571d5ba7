"""Separating files (flowsep.separate_files), prior bundles (flowsep.bundle) and reading any format (flowsep.io).

A bundle of two smoke-profile priors is trained for a few steps on the session's synthetic set; the
inputs are a 1.5 s excerpt of one of its test songs, encoded by ffmpeg as mp3 and m4a (AAC).
"""
import shutil
import subprocess

import numpy as np
import pytest
import soundfile as sf
import torch

import flowsep
from flowsep.cli import main
from flowsep.errors import FlowsepError
from flowsep.io import read_audio
from flowsep.separate_files import StemFormat, write_stem_blocks

FAST = ["--iterations", "2", "--quiet"]


@pytest.fixture(scope="module")
def bundle(synth_root, tmp_path_factory):
    """A bundle folder "tiny" of vocals and bass priors, built by `flowsep priors build`."""
    out = tmp_path_factory.mktemp("bundles") / "tiny"
    rc = main(["priors", "build", "--data", str(synth_root), "--profile", "smoke", "--out", str(out),
               "--sources", "vocals,bass", "--steps", "3", "--quiet"])
    assert rc == 0
    return out


@pytest.fixture(scope="module")
def songs(synth_root, tmp_path_factory):
    """{"wav", "mp3", "m4a"}: the same 1.5 s stereo 44.1 kHz excerpt of a synthetic song, made by ffmpeg."""
    d = tmp_path_factory.mktemp("songs")
    mix = next((synth_root / "test").iterdir()) / "mixture.wav"
    out = {"wav": d / "song.wav", "mp3": d / "song.mp3", "m4a": d / "tune.m4a"}
    for path in out.values():
        subprocess.run(["ffmpeg", "-v", "error", "-y", "-ss", "1", "-t", "1.5", "-i", str(mix), str(path)], check=True)
    return out


def _stderr_lines(capsys):
    return capsys.readouterr().err.strip().splitlines()


def test_read_audio_decodes_what_ffmpeg_decodes(songs, tmp_path):
    ref, rate = read_audio(songs["wav"])
    assert ref.shape == (2, int(1.5 * rate)) and rate == 44100
    for kind in ("mp3", "m4a"):
        audio, r = read_audio(songs[kind])
        assert r == rate and audio.shape[0] == 2 and audio.dtype == np.float32
        assert abs(audio.shape[1] - ref.shape[1]) < 0.05 * rate   # codecs pad by at most a few frames
        assert 0.1 < np.abs(audio).max() <= 1.0
    part, _ = read_audio(songs["m4a"], start=0.5, duration=0.25)
    assert part.shape == (2, rate // 4)
    text = tmp_path / "text.m4a"
    text.write_text("not audio")
    with pytest.raises(FlowsepError, match="text.m4a is not a readable audio file"):
        read_audio(text)


def test_bundle_build_info_separate(bundle, songs, tmp_path, capsys):
    manifest = flowsep.bundle.read_manifest(bundle)
    assert list(manifest["sources"]) == ["vocals", "bass"]
    assert manifest["profile"] == "smoke" and manifest["data"]["train_tracks"] == 3
    assert all(e["steps"] == 3 and e["seconds"] > 0 and len(e["sha256"]) == 64 for e in manifest["sources"].values())
    capsys.readouterr()
    assert main(["priors", "info", str(bundle)]) == 0
    shown = capsys.readouterr().out
    assert "profile smoke" in shown and "vocals" in shown and "bass" in shown and "match" in shown

    out = tmp_path / "separated"
    assert main(["separate", str(songs["m4a"]), "-p", str(bundle), "-o", str(out), *FAST]) == 0
    printed = capsys.readouterr().out.split()
    folder = out / "tiny" / "tune"
    assert sorted(p.name for p in folder.iterdir()) == ["bass.wav", "vocals.wav"]
    assert sorted(printed) == sorted(str(p) for p in folder.iterdir())
    mix, rate = read_audio(songs["m4a"])
    for stem in ("vocals", "bass"):
        info = sf.info(str(folder / f"{stem}.wav"))
        assert (info.samplerate, info.channels, info.frames, info.subtype) == (rate, 2, mix.shape[1], "PCM_16")


def test_mp3_output_and_two_stems(bundle, songs, tmp_path):
    out = tmp_path / "out"
    assert main(["separate", str(songs["mp3"]), "-p", str(bundle), "--out", str(out), "--mp3", "--mp3-bitrate",
                 "128", "--two-stems", "vocals", *FAST]) == 0
    folder = out / "tiny" / "song"
    assert sorted(p.name for p in folder.iterdir()) == ["no_vocals.mp3", "vocals.mp3"]
    mix, rate = read_audio(songs["mp3"])
    for name in ("vocals", "no_vocals"):
        info = sf.info(str(folder / f"{name}.mp3"))
        assert info.format == "MP3"
        audio, r = read_audio(folder / f"{name}.mp3")
        assert r == rate and audio.shape == mix.shape            # decodes back to the right length and channels
    kbps = (folder / "vocals.mp3").stat().st_size * 8 / 1000 / (mix.shape[1] / rate)
    assert 100 < kbps < 160                                      # constant 128 kbps, plus headers

    # float wav is not clipped or rounded: the two stems add up to the mixture
    assert main(["separate", str(songs["wav"]), "-p", str(bundle), "-o", str(out), "--float32", "--two-stems",
                 "bass", *FAST]) == 0
    mix, rate = read_audio(songs["wav"])
    bass, _ = sf.read(str(out / "tiny" / "song" / "bass.wav"), dtype="float32")
    rest, _ = sf.read(str(out / "tiny" / "song" / "no_bass.wav"), dtype="float32")
    assert sf.info(str(out / "tiny" / "song" / "bass.wav")).subtype == "FLOAT"
    assert np.abs(bass + rest - mix.T).max() < 1e-6
    assert np.abs(bass).max() > 1e-4 and np.abs(rest).max() > 1e-4


def test_formats_template_part_and_device(bundle, songs, tmp_path):
    out = tmp_path / "o"
    assert main(["separate", str(songs["wav"]), "-p", str(bundle), "-o", str(out), "--flac", "--int24",
                 "--filename", "{stem}/{track}.{trackext}.{ext}", "--start", "0.5", "--duration", "0.5",
                 "-d", "cpu", *FAST]) == 0
    for stem in ("vocals", "bass"):
        info = sf.info(str(out / "tiny" / stem / "song.wav.flac"))
        assert (info.format, info.subtype, info.frames, info.channels) == ("FLAC", "PCM_24", 22050, 2)


def test_batch_goes_on_past_a_bad_file(bundle, songs, tmp_path, capsys):
    out = tmp_path / "out"
    bad = tmp_path / "broken.mp3"
    bad.write_bytes(b"ID3 this is not an mp3 at all" * 10)
    argv = ["separate", str(songs["mp3"]), str(bad), str(songs["m4a"]), "-p", str(bundle), "-o", str(out), *FAST]
    assert main(argv) == 2
    err = _stderr_lines(capsys)
    assert len(err) == 2, err
    assert err[0].startswith("flowsep: error: ") and str(bad) in err[0] and "not a readable audio file" in err[0]
    assert err[1].startswith("flowsep: error: 1 of 3 files failed")
    assert sorted(p.name for p in (out / "tiny").iterdir()) == ["song", "tune"]
    assert not [p for p in out.rglob("*") if p.name.startswith(".")]    # no temporary file left behind

    # existing outputs are kept: a second run skips both good files (the bad one still fails)
    before = {p: p.stat().st_mtime_ns for p in out.rglob("*.wav")}
    assert main(argv) == 2
    err = _stderr_lines(capsys)
    assert sum(line.startswith("flowsep: skipped ") for line in err) == 2 and "2 skipped" in err[-1]
    assert {p: p.stat().st_mtime_ns for p in out.rglob("*.wav")} == before
    assert main(["separate", str(songs["m4a"]), "-p", str(bundle), "-o", str(out), "--overwrite", *FAST]) == 0
    assert all((out / "tiny" / "tune" / f"{s}.wav").stat().st_mtime_ns != before[out / "tiny" / "tune" / f"{s}.wav"]
               for s in ("vocals", "bass"))


def test_bundle_rebuild_needs_resume_and_keeps_finished_priors(bundle, synth_root, capsys):
    sums = {n: e["sha256"] for n, e in flowsep.bundle.read_manifest(bundle)["sources"].items()}
    argv = ["priors", "build", "--data", str(synth_root), "--profile", "smoke", "--out", str(bundle),
            "--sources", "vocals,bass", "--steps", "3", "--quiet"]
    capsys.readouterr()
    assert main(argv) == 2
    assert "--resume" in _stderr_lines(capsys)[0]
    assert main(argv + ["--resume"]) == 0                      # both priors finished: nothing is retrained
    assert {n: e["sha256"] for n, e in flowsep.bundle.read_manifest(bundle)["sources"].items()} == sums
    assert main(argv[:5] + ["cpu"] + argv[6:] + ["--resume"]) == 2
    assert "profile smoke, not cpu" in _stderr_lines(capsys)[-1]


def test_a_prior_saved_before_the_noise_settings_existed_is_reused(bundle, synth_root, tmp_path):
    old = tmp_path / "old"
    shutil.copytree(bundle, old)
    ckpt = torch.load(old / "vocals.pt", weights_only=False)
    for key in ("noise_levels", "noise_max", "noise_min"):   # as a checkpoint of an older flowsep holds it
        del ckpt["prior"]["config"][key]
    torch.save(ckpt, old / "vocals.pt")
    before = (old / "vocals.pt").stat().st_mtime_ns
    assert main(["priors", "build", "--data", str(synth_root), "--profile", "smoke", "--out", str(old),
                 "--sources", "vocals", "--steps", "3", "--quiet", "--resume"]) == 0
    assert (old / "vocals.pt").stat().st_mtime_ns == before  # the same settings: reused, not trained again


def test_tampered_bundle_is_caught(bundle, songs, tmp_path, capsys):
    copy = tmp_path / "copy"
    shutil.copytree(bundle, copy)
    assert main(["priors", "info", str(copy)]) == 0
    data = bytearray((copy / "vocals.pt").read_bytes())
    data[len(data) // 2] ^= 0xFF
    (copy / "vocals.pt").write_bytes(bytes(data))
    capsys.readouterr()
    assert main(["priors", "info", str(copy)]) == 2
    err = _stderr_lines(capsys)
    assert len(err) == 1 and err[0].startswith("flowsep: error: ") and "vocals.pt" in err[0] and "sha256" in err[0]
    (copy / "bass.pt").unlink()
    assert main(["separate", str(songs["wav"]), "-p", str(copy), "-o", str(tmp_path / "o"), *FAST]) == 2
    err = _stderr_lines(capsys)
    assert len(err) == 1 and "bass.pt (bass) is missing" in err[0] and "vocals.pt" in err[0]
    assert not (tmp_path / "o").exists()


def test_python_api(bundle, songs, tmp_path):
    priors = flowsep.load_bundle(bundle)
    assert priors.name == "tiny" and sorted(priors) == ["bass", "vocals"]
    assert all(isinstance(p, flowsep.FlowPrior) for p in priors.values())
    paths = flowsep.separate_file(songs["mp3"], bundle, out=tmp_path, iterations=1, progress=False, format="flac")
    assert [p.relative_to(tmp_path).as_posix() for p in paths] == ["tiny/song/vocals.flac", "tiny/song/bass.flac"]
    with pytest.raises(FlowsepError, match="overwrite"):
        flowsep.separate_file(songs["mp3"], priors, out=tmp_path, iterations=1, progress=False, format="flac")
    with pytest.raises(FlowsepError, match="unknown option 'iteration'"):
        flowsep.separate_file(songs["mp3"], priors, out=tmp_path, iteration=1)


@pytest.mark.parametrize("argv, message", [
    (["--two-stems", "drums"], "no such source"),
    (["--flac", "--float32"], "flac stores integers"),
    (["--mp3", "--int24"], "applies to wav and flac"),
    (["--mp3", "--mp3-bitrate", "100"], "not an mp3 bitrate"),
    (["--filename", "{track}.{ext}"], "same file"),
    (["--filename", "../{stem}.{ext}"], "relative path inside"),
    (["--filename", "{song}/{stem}.{ext}"], "not a usable template"),
])
def test_bad_options_give_one_line(bundle, songs, tmp_path, capsys, argv, message):
    out = tmp_path / "o"
    assert main(["separate", str(songs["wav"]), "-p", str(bundle), "-o", str(out), *FAST, *argv]) == 2
    err = _stderr_lines(capsys)
    assert len(err) == 1 and err[0].startswith("flowsep: error: ") and message in err[0], err
    assert not out.exists()


def test_stem_files_appear_all_or_none(tmp_path):
    fmt = StemFormat("wav", "WAV", "PCM_16")
    paths = {"a": tmp_path / "t" / "a.wav", "b": tmp_path / "t" / "b.wav"}

    def blocks():
        yield 0, {"a": np.zeros((2, 100), np.float32), "b": np.zeros((2, 100), np.float32)}
        raise RuntimeError("the separation failed half-way")

    with pytest.raises(RuntimeError):
        write_stem_blocks(blocks(), paths, 8000, 2, fmt)
    assert not any((tmp_path / "t").iterdir())
    two = [(0, {"a": np.full((2, 100), 0.5, np.float32), "b": np.full((2, 100), 2.0, np.float32)}),
           (100, {"a": np.zeros((2, 50), np.float32), "b": np.zeros((2, 50), np.float32)})]
    write_stem_blocks(two, paths, 8000, 2, fmt)
    a, _ = sf.read(str(paths["a"]))
    b, _ = sf.read(str(paths["b"]))
    assert a.shape == (150, 2) and np.allclose(a[:100], 0.5, atol=1e-4) and np.allclose(b[:100], 1.0, atol=1e-4)
