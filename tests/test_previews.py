"""MUSDB18's 7-second previews (``musdb-preview``) without a download: a local stand-in in their layout.

The stand-in is what musdb's download unpacks, ``<data folder>/MUSDB18-7/{train,test}/<Artist - Title>.stem.mp4``
(five AAC streams: mixture, drums, bass, other, vocals), written by stempeg from a short synthetic song and
placed where the download lands, so ``musdb.DB(download=True)`` takes its "already downloaded" branch.
Any attempt to reach the network fails the test.
"""
import urllib.error

import numpy as np
import pytest
import soundfile as sf

from flowsep import FlowsepError
from flowsep.cache import data_home, ensure_dataset, set_data_home
from flowsep.data.musdb import PREVIEW, load_source_signals, open_db, preview_root, track_stems

STREAMS = ("mixture", "drums", "bass", "other", "vocals")   # MUSDB18's order of streams in .stem.mp4
TRAIN = ("Actions - One Minute Smile", "Synthetic - Song One")  # the first is in musdb's validation list
TEST = ("Synthetic - Song Two",)


@pytest.fixture
def no_network(monkeypatch):
    import musdb

    def refuse(*args, **kwargs):
        raise urllib.error.URLError("no network in tests")

    monkeypatch.setattr(musdb, "urlopen", refuse)


@pytest.fixture
def data_folder(tmp_path, monkeypatch):
    monkeypatch.delenv("FLOWSEP_DATA", raising=False)
    return set_data_home(tmp_path / "drive")


def _write_preview(path, track_folder, seconds=2.0):
    """One synthetic song's stems as a MUSDB18 .stem.mp4 (44.1 kHz stereo, mixture = sum of the stems)."""
    import stempeg

    stems = {}
    for name in STREAMS[1:]:
        audio, rate = sf.read(track_folder / f"{name}.wav", dtype="float32", always_2d=True)
        stems[name] = audio[:int(seconds * rate)]
    stems["mixture"] = sum(stems[n] for n in STREAMS[1:])
    data = np.stack([stems[n] for n in STREAMS])              # (5, samples, 2)
    stempeg.write_stems(str(path), data, sample_rate=rate, writer=stempeg.StreamsWriter(codec="aac"))


@pytest.fixture
def preview_stand_in(synth_root, data_folder):
    root = preview_root()
    songs = sorted((synth_root / "train").iterdir())
    for subset, names in (("train", TRAIN), ("test", TEST)):
        (root / subset).mkdir(parents=True)
        for name, song in zip(names, songs):
            _write_preview(root / subset / f"{name}.stem.mp4", song)
    return root


def test_previews_are_read_like_any_musdb18_root(preview_stand_in, no_network):
    root = ensure_dataset("smoke", PREVIEW)
    assert root == preview_stand_in == data_home() / "MUSDB18-7"
    train, valid, test = (open_db(PREVIEW, "train", "train"), open_db(PREVIEW, "train", "valid"),
                          open_db(PREVIEW, "test"))
    assert [t.name for t in train] == [TRAIN[1]] and [t.name for t in valid] == [TRAIN[0]]
    assert [t.name for t in test] == list(TEST)
    stems, rate = track_stems(test[0], rate=16000)
    assert rate == 16000 and set(stems) >= {"vocals", "drums", "bass", "other"}
    assert stems["vocals"].shape[0] == 2 and abs(stems["vocals"].shape[1] - 2.0 * 16000) < 0.1 * 16000
    assert np.abs(stems["bass"]).max() > 0.01
    signals = load_source_signals(PREVIEW, "bass", 8000, "train")
    assert len(signals) == 1 and signals[0].ndim == 1
    from flowsep.baselines.training import load_stem_tracks
    songs = load_stem_tracks(PREVIEW, ("vocals", "drums", "bass", "other"), 8000, channels=1)
    assert len(songs) == 2 and songs[0].shape[:2] == (4, 1)        # one train song, two channels as mono songs


def test_offline_stops_with_one_clear_line(data_folder, no_network):
    with pytest.raises(FlowsepError, match="could not download MUSDB18's 7-second previews") as e:
        ensure_dataset("smoke", PREVIEW)
    assert "\n" not in str(e.value) and "internet" in str(e.value)


def test_offline_cli_is_one_line(data_folder, no_network, capsys, tmp_path):
    from flowsep.cli import main

    rc = main(["train", "--data", PREVIEW, "--source", "bass", "--profile", "smoke", "--out", str(tmp_path / "p.pt")])
    err = capsys.readouterr().err.strip().splitlines()
    assert rc == 2 and len(err) == 1 and "could not download" in err[0], err


def test_data_home_follows_set_data_home(tmp_path, monkeypatch):
    monkeypatch.delenv("FLOWSEP_DATA", raising=False)
    before = data_home()
    assert set_data_home("") == before
    assert set_data_home(tmp_path / "kept") == tmp_path / "kept" and (tmp_path / "kept").is_dir()
    assert data_home() == tmp_path / "kept"

