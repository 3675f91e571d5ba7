"""MUSDB18-format data through the ``musdb`` package, and folders of one instrument's recordings.

Chapter: "The separation problem" and "Training the source priors".

The same functions read the synthetic set of ``flowsep synth``, a real MUSDB18 (stems .mp4, decoded
by stempeg with ffmpeg), MUSDB18-HQ (wav) and MUSDB18's 7-second previews: the dataset name
``musdb-preview`` (``DATASET = "musdb-preview"`` in a chapter, ``--data musdb-preview`` on the command
line) fetches them once through ``musdb.DB(download=True)`` into the data folder
(:func:`flowsep.cache.data_home`) and from then on reads them like any MUSDB18 root.
"""
from __future__ import annotations

import urllib.error
import zipfile
from collections import OrderedDict
from pathlib import Path

import musdb
import numpy as np
import stempeg
import torch

from ..errors import FlowsepError
from ..io import data_home, read_audio
from ..spectral import downmix, resample

AUDIO_SUFFIXES = (".wav", ".flac", ".ogg", ".aiff", ".aif", ".mp3", ".m4a", ".aac", ".opus")  # see io.read_audio
SETUP = "setup.yaml"  # the musdb setup file of a synthetic set (flowsep.data.synth)
#: the dataset name that stands for MUSDB18's 7-second previews (fetched once into the data folder)
PREVIEW = "musdb-preview"
#: the previews' folder inside the data folder (the name musdb gives it under ~/MUSDB18)
PREVIEW_FOLDER = "MUSDB18-7"
#: how many bytes of decoded audio :func:`stream_audio` keeps (about 85 MB per 24-s track of five stereo streams
#: at 44.1 kHz: all the test songs of the cpu profile's race, its held-out songs or a song being separated again)
AUDIO_CACHE_BYTES = 1_500_000_000
_audio_cache: OrderedDict = OrderedDict()


def preview_root() -> Path:
    """Where the previews live: ``<data folder>/MUSDB18-7/{train,test}/<Artist - Title>.stem.mp4``."""
    return data_home() / PREVIEW_FOLDER


def fetch_previews() -> Path:
    """MUSDB18's 7-second previews (100 train and 50 test songs, stems .mp4): downloaded on first use.

    musdb downloads and unpacks them into :func:`preview_root` unless its ``train/`` folder already exists
    (then nothing is fetched). Without the internet this stops with a :class:`FlowsepError`.
    Returns the root, a MUSDB18 root in musdb's stems layout.
    """

    root = preview_root()
    try:
        db = musdb.DB(root=str(root), download=True, subsets="test")
    except (urllib.error.URLError, OSError, zipfile.BadZipFile, RuntimeError) as e:
        reason = getattr(e, "reason", None) or e
        raise FlowsepError(f"could not download MUSDB18's 7-second previews into {root} ({reason}); connect to "
                           "the internet and run again, or give DATASET / --data a MUSDB18 folder") from None
    if not db.tracks or not any((root / "train").glob("*.stem.mp4")):
        raise FlowsepError(f"the previews in {root} are incomplete (no .stem.mp4 files in train/ and test/); "
                           "delete that folder and run again to download them anew")
    return root


def resolve_root(data):
    """A dataset argument as a folder: ``"musdb-preview"`` -> the fetched previews; anything else unchanged."""
    if str(data) == PREVIEW:
        return fetch_previews()
    return data


def is_musdb_root(root) -> bool:
    """True if ``root`` looks like a MUSDB18-format folder (``train/`` or ``test/`` with track folders or stems)."""
    root = Path(root)
    return any((root / s).is_dir() for s in ("train", "test"))


def _is_wav_layout(root: Path) -> bool:
    for subset in ("train", "test"):
        d = root / subset
        if d.is_dir():
            if any(d.glob("*.stem.mp4")):
                return False
            if any(d.glob("*/mixture.wav")):
                return True
    raise FlowsepError(f"{root} has neither track folders with mixture.wav nor .stem.mp4 files; "
                       "give a MUSDB18 or MUSDB18-HQ root or run `flowsep synth` first")


def setup_file(root) -> str | None:
    """The musdb ``setup_file`` for a dataset folder: OUT/setup.yaml of a synthetic set (absolute
    path; musdb joins it to the root, which keeps an absolute path), or None for a real MUSDB18
    root (musdb then uses its own list of validation tracks)."""
    path = Path(root) / SETUP
    return str(path.resolve()) if path.is_file() else None


def open_db(root=None, subset: str = "train", split: str | None = None, download: bool = False):
    """Open a MUSDB18-format root with ``musdb.DB``.

    root: a folder, or ``"musdb-preview"`` for MUSDB18's previews (see :func:`fetch_previews`).
    subset: "train" or "test"; split: None, "train" or "valid" (only for subset "train").
    ``download=True`` is musdb's own download of the previews into ``root`` (needs the internet).
    """
    if subset not in ("train", "test"):
        raise FlowsepError(f"unknown subset {subset!r}; use 'train' or 'test'")
    if split not in (None, "train", "valid"):
        raise FlowsepError(f"unknown split {split!r}; use 'train' or 'valid'")
    if download:
        return musdb.DB(root=root, download=True, subsets=subset, split=split)
    if root is None:
        raise FlowsepError("no dataset root given; pass --data ROOT (a MUSDB18-format folder)")
    root = Path(resolve_root(root))
    if not root.is_dir():
        raise FlowsepError(f"dataset root {root} does not exist; run `flowsep synth {root}` or give a MUSDB18 folder")
    if not is_musdb_root(root):
        raise FlowsepError(f"{root} is not a MUSDB18-format root (no train/ or test/ folder inside)")
    kwargs = dict(root=str(root), subsets=subset, split=split, is_wav=_is_wav_layout(root))
    setup = setup_file(root)
    if setup:
        kwargs["setup_file"] = setup
    try:
        db = musdb.DB(**kwargs)
    except (OSError, KeyError, ValueError) as e:
        raise FlowsepError(f"musdb could not read {root} ({e}); check that it is a MUSDB18-format root") from None
    return db


def stream_audio(track, stream=None) -> np.ndarray:
    """One stream of a musdb track exactly as musdb reads it, (samples, channels) float64, read-only: the
    mixture (``stream=None``) or one of ``track.sources``, in the track's chunk (``chunk_start``,
    ``chunk_duration``).

    Every read of a .stem.mp4 stream starts an ffprobe and an ffmpeg process (about 0.4 s on a 2-core
    machine), and a race reads every test song once per system, a training run every training song: so the
    arrays are kept for the process, the least recently used dropped first beyond :data:`AUDIO_CACHE_BYTES`.
    The key holds the file's inode, size and times: a file written again is read again. A training set larger
    than the cap, read in the same order again and again, gains nothing (at the cpu profile it fits).
    """
    src = track if stream is None else stream
    if getattr(src, "_audio", None) is not None:   # set by hand through musdb's setter: not a file's audio
        return src._audio
    try:
        stat = Path(src.path).stat()
    except (OSError, TypeError):
        return src.audio                           # musdb's own error for a missing file
    owner = getattr(src, "multitrack", track)     # musdb reads a source in its track's chunk, at its rate
    key = (str(Path(src.path).resolve()), src.stem_id, owner.chunk_start, owner.chunk_duration, owner.sample_rate,
           stat.st_ino, stat.st_size, stat.st_mtime_ns, stat.st_ctime_ns)
    if key in _audio_cache:
        _audio_cache.move_to_end(key)
        return _audio_cache[key]
    audio = np.asarray(src.audio)
    audio.setflags(write=False)
    _audio_cache[key] = audio
    while sum(a.nbytes for a in _audio_cache.values()) > AUDIO_CACHE_BYTES and len(_audio_cache) > 1:
        _audio_cache.popitem(last=False)
    return audio


def target_audio(track, name: str) -> np.ndarray:
    """A musdb target (a sum of sources, e.g. ``accompaniment``) as musdb mixes it, from :func:`stream_audio`."""
    target = track.targets[name]
    return np.sum(np.array([s.gain * stream_audio(track, s) for s in target.sources]), axis=0)


def clear_audio_cache() -> None:
    """Forget the audio :func:`stream_audio` kept."""
    _audio_cache.clear()


def track_stems(track, rate: int | None = None) -> tuple[dict[str, np.ndarray], int]:
    """All stems of a musdb track as {name: (channels, samples) float32}, optionally resampled."""
    stems = {name: np.asarray(stream_audio(track, src), dtype=np.float32).T for name, src in track.sources.items()}
    sr = int(track.rate)
    if rate and rate != sr:
        stems = {k: resample(torch.from_numpy(v), sr, rate).numpy() for k, v in stems.items()}
        sr = rate
    return stems, sr


def example_track() -> tuple[dict[str, np.ndarray], int]:
    """The real MUSDB18 excerpt that ships inside stempeg (6 s, CC BY-NC-SA).

    Returns ({"mixture", "drums", "bass", "other", "vocals": (2, samples)}, 44100).
    """
    stems, rate = stempeg.read_stems(stempeg.example_stem_path())
    names = ("mixture", "drums", "bass", "other", "vocals")  # MUSDB18's order of streams in .stem.mp4
    return {n: np.ascontiguousarray(stems[i].T, dtype=np.float32) for i, n in enumerate(names)}, int(rate)


def _downmix32(audio: np.ndarray, rate: int, new_rate: int) -> np.ndarray:
    return downmix(np.asarray(audio, dtype=np.float32), rate, new_rate)


def training_db(root, split: str = "train"):
    """The train subset of ``root`` as a musdb DB, musdb's ``split`` "train" or "valid" (an empty "valid"
    split falls back to every training track); a root without training tracks is an error."""
    db = open_db(root, "train", split)
    if not db.tracks and split == "valid":
        db = open_db(root, "train", "train")
    if not db.tracks:
        raise FlowsepError(f"{root} has no training tracks; generate or download some first")
    return db


def load_source_signals(data, source: str | None, rate: int, split: str = "train",
                        val_fraction: float = 0.02) -> list[np.ndarray]:
    """Mono signals of one source at ``rate``: a list of float32 arrays (samples,), one per recording.

    ``data`` is a MUSDB18-format root or ``"musdb-preview"`` (``source`` names the stem; split
    "train"/"valid" is musdb's split of the train subset, falling back to the train tracks when the valid
    split is empty) or a folder of audio files of one instrument (split "valid" holds out the last files, at least one,
    or the last tenth of a single file).
    """
    data = Path(resolve_root(data))
    if not data.exists():
        raise FlowsepError(f"training data {data} does not exist; give a MUSDB18-format root or a folder of audio")
    if is_musdb_root(data):
        db = training_db(data, split)
        known = set(db.tracks[0].sources)
        if source not in known:
            raise FlowsepError(f"unknown source {source!r} in {data}; choose one of: {', '.join(sorted(known))}")
        return [_downmix32(stream_audio(t, t.sources[source]).T, int(t.rate), rate) for t in db.tracks]
    files = sorted(p for p in data.rglob("*") if p.suffix.lower() in AUDIO_SUFFIXES) if data.is_dir() else [data]
    if not files:
        raise FlowsepError(f"{data} holds no audio files ({', '.join(AUDIO_SUFFIXES)}); "
                           "give a folder of one instrument's recordings or a MUSDB18-format root")
    if len(files) == 1:
        sig = _downmix32(*read_audio(files[0]), rate)
        cut = int(len(sig) * 0.9)
        return [sig[:cut]] if split == "train" else [sig[cut:]]
    n_val = max(1, round(val_fraction * len(files)))
    chosen = files[:-n_val] if split == "train" else files[-n_val:]
    return [_downmix32(*read_audio(f), rate) for f in chosen]
