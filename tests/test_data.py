"""Reading MUSDB18-format roots and instrument folders, and the deterministic training chunks."""
import os
from pathlib import Path

import numpy as np
import pytest
import soundfile as sf
import torch

from flowsep import FlowsepError
from flowsep.data.chunks import SourceChunks, StemChunks, step_loader
from flowsep.data import musdb as musdb_data
from flowsep.data.musdb import example_track, load_source_signals, open_db, track_stems


def test_real_musdb18_excerpt_from_stempeg():
    stems, rate = example_track()
    assert rate == 44100 and set(stems) == {"mixture", "drums", "bass", "other", "vocals"}
    shapes = {v.shape for v in stems.values()}
    assert len(shapes) == 1 and next(iter(shapes))[0] == 2 and next(iter(shapes))[1] > 5 * rate
    mix, total = stems["mixture"], sum(stems[k] for k in ("drums", "bass", "other", "vocals"))
    # AAC-coded stems: the mixture is their sum up to coding noise
    assert np.corrcoef(mix.ravel(), total.ravel())[0, 1] > 0.98


def test_musdb_root_through_musdb(synth_root):
    train, valid, test = (open_db(synth_root, "train", "train"), open_db(synth_root, "train", "valid"),
                          open_db(synth_root, "test"))
    assert len(train) >= 1 and len(valid) >= 1 and len(test) == 2
    assert not {t.name for t in train} & {t.name for t in valid}
    stems, rate = track_stems(test[0], rate=16000)
    assert rate == 16000 and stems["vocals"].shape[0] == 2
    assert abs(stems["vocals"].shape[1] - 6.0 * 16000) <= 16000 * 0.1
    sigs = load_source_signals(synth_root, "bass", 8000, "train")
    assert len(sigs) == len(train) and all(s.ndim == 1 for s in sigs)


def test_stream_audio_is_musdb_s_audio_decoded_once(synth_root, tmp_path, monkeypatch):
    import shutil

    import stempeg
    from flowsep.evaluate import load_track

    root = tmp_path / "copy"
    shutil.copytree(synth_root, root)
    musdb_data.clear_audio_cache()
    decoded = []
    real = stempeg.read_stems
    monkeypatch.setattr(stempeg, "read_stems", lambda *a, **k: decoded.append(1) or real(*a, **k))
    track = open_db(root, "test")[0]
    first = load_track(track)
    reads = len(decoded)
    assert reads == 1 + len(track.sources)          # the mixture and each source, once
    again = load_track(open_db(root, "test")[0])    # another DB of the same root: nothing decoded again
    assert len(decoded) == reads
    for k, s in track.sources.items():              # exactly musdb's arrays, and they cannot be changed
        kept = musdb_data.stream_audio(track, s)
        np.testing.assert_array_equal(kept, s.audio)
        assert not kept.flags.writeable
    for k in first.references:
        np.testing.assert_array_equal(first.references[k], again.references[k])
        np.testing.assert_array_equal(first.references[k], np.asarray(track.targets[k].audio, np.float32).T)
    np.testing.assert_array_equal(first.mixture, np.asarray(track.audio, np.float32).T)
    # a chunk is another key; a file written again is read again
    track.chunk_start, track.chunk_duration = 1.0, 2.0
    assert musdb_data.stream_audio(track).shape[0] < first.mixture.shape[1]
    n = len(decoded)
    path = Path(track.sources["vocals"].path)
    path.write_bytes(path.read_bytes())
    os.utime(path, ns=(0, 0))
    musdb_data.stream_audio(track, track.sources["vocals"])
    assert len(decoded) == n + 1
    musdb_data.clear_audio_cache()


def test_bad_roots_and_sources(synth_root, tmp_path):
    with pytest.raises(FlowsepError, match="does not exist"):
        open_db(tmp_path / "missing")
    with pytest.raises(FlowsepError, match="not a MUSDB18-format root"):
        open_db(tmp_path)
    with pytest.raises(FlowsepError, match="unknown source 'kazoo'"):
        load_source_signals(synth_root, "kazoo", 8000)
    with pytest.raises(FlowsepError, match="unknown subset"):
        open_db(synth_root, "dev")


def test_instrument_folder_split(tmp_path):
    sf.write(tmp_path / "one.wav", np.random.default_rng(0).standard_normal((20000, 2)) * 0.1, 10000)
    tr, va = load_source_signals(tmp_path, None, 5000, "train"), load_source_signals(tmp_path, None, 5000, "valid")
    assert len(tr[0]) + len(va[0]) == 10000 and len(va[0]) == 1000


def test_source_chunks_are_deterministic_and_skip_silence():
    sig = np.zeros(40000, np.float32)
    sig[20000:] = np.random.default_rng(0).standard_normal(20000) * 0.1
    ds = SourceChunks([sig], 2000, seed=3, silence_db=-40)
    a, b = ds[17], SourceChunks([sig], 2000, seed=3, silence_db=-40)[17]
    assert torch.equal(a, b) and not torch.equal(a, ds[18])
    rms = [float(ds[i].pow(2).mean().sqrt()) for i in range(50)]
    assert min(rms) > 10 ** (-40 / 20) * 0.5  # at most the gain (>= 0.5) below the threshold


def test_stem_chunks_sum_and_loader_slices():
    rng = np.random.default_rng(0)
    tracks = [rng.standard_normal((4, 2, 5000)).astype(np.float32) for _ in range(3)]
    ds = StemChunks(tracks, 1000, seed=1, remix=True)
    mix, stems = ds[5]
    assert stems.shape == (4, 2, 1000) and torch.allclose(mix, stems.sum(0))
    one = [b[0] for b in step_loader(ds, 2, 4, batch=4)]
    r0 = [b[0] for b in step_loader(ds, 2, 4, batch=4, rank=0, world=2)]
    r1 = [b[0] for b in step_loader(ds, 2, 4, batch=4, rank=1, world=2)]
    for full, a, b in zip(one, r0, r1):
        assert torch.equal(full, torch.cat([a, b]))
    with pytest.raises(FlowsepError, match="divisible"):
        step_loader(ds, 0, 1, batch=3, world=2)


def test_a_cached_synthetic_set_of_an_older_format_is_generated_again(tmp_path, monkeypatch):
    """Bumping flowsep.data.synth.FORMAT (the generated audio changed) regenerates the book's cached set."""
    import json

    from flowsep import cache
    from flowsep.data import synth
    monkeypatch.setenv("FLOWSEP_DATA", str(tmp_path))
    monkeypatch.setitem(cache.DATASET_SIZES, "smoke", (1, 1, 2.0))
    root = cache.ensure_dataset("smoke", progress=False)
    assert json.loads((root / synth.MANIFEST).read_text())["format"] == synth.FORMAT
    (root / "left-by-the-old-set").write_text("")
    assert cache.ensure_dataset("smoke", progress=False) == root and (root / "left-by-the-old-set").exists()
    monkeypatch.setattr(synth, "FORMAT", synth.FORMAT + 1)
    assert cache.ensure_dataset("smoke", progress=False) == root
    assert json.loads((root / synth.MANIFEST).read_text())["format"] == synth.FORMAT
    assert not (root / "left-by-the-old-set").exists() and (root / "complete").is_file()


def test_a_cached_synthetic_set_of_other_settings_is_refused(tmp_path, monkeypatch):
    """A set made by an older flowsep with other sizes is not silently used as the profile's."""
    import json

    from flowsep.cache import DATASET_SIZES, ensure_dataset
    from flowsep.data.synth import FORMAT, MANIFEST
    monkeypatch.setenv("FLOWSEP_DATA", str(tmp_path))
    old = tmp_path / "synth-cpu-seed0"
    old.mkdir()
    (old / "complete").write_text("")
    n_train, n_test, seconds = DATASET_SIZES["cpu"]
    same = {"format": FORMAT}  # of the same generated audio (another FORMAT is generated again, above)
    (old / MANIFEST).write_text(json.dumps({**same, "n_train": n_train, "n_test": n_test - 2, "seconds": seconds}))
    with pytest.raises(FlowsepError, match="other settings"):
        ensure_dataset("cpu", progress=False)
    (old / MANIFEST).write_text(json.dumps({**same, "n_train": n_train, "n_test": n_test, "seconds": seconds}))
    assert ensure_dataset("cpu", progress=False) == old


def test_a_heldout_style_set_is_test_only_and_read_by_open_tracks(tmp_path, monkeypatch):
    """ensure_dataset(profile, style="heldout"): the profile's test songs in another style, no train songs."""
    import json

    from flowsep import cache
    from flowsep.data.synth import MANIFEST, track_names
    from flowsep.evaluate import open_tracks
    monkeypatch.setenv("FLOWSEP_DATA", str(tmp_path))
    monkeypatch.setitem(cache.DATASET_SIZES, "smoke", (3, 2, 2.0))   # the smoke profile, with shorter songs
    root = cache.ensure_dataset("smoke", style="heldout", progress=False)
    assert root == tmp_path / "synth-smoke-heldout-seed0" and (root / "complete").is_file()
    manifest = json.loads((root / MANIFEST).read_text())
    assert (manifest["style"], manifest["n_train"], manifest["n_test"], manifest["seconds"]) == ("heldout", 0, 2, 2.0)
    assert not any((root / "train").iterdir())
    found = open_tracks(root, "test")
    assert sorted(t.name for t in found) == sorted(manifest["tracks"]["test"]) and len(found) == 2
    assert found[0].audio.shape == (round(2.0 * 44100), 2)
    default_names = set(sum(track_names(0, 3, 2)[:2], []))
    assert not {t.name for t in found} & default_names
    assert cache.ensure_dataset("smoke", style="heldout", progress=False) == root      # reused
    with pytest.raises(FlowsepError, match="unknown style 'jazz'"):
        cache.ensure_dataset("smoke", style="jazz", progress=False)
