"""Files: atomic writes, audio reading (soundfile, else ffmpeg through stempeg) and writing, checkpoints.

Chapter: used everywhere. Nothing here leaves a half-written file behind: every write goes to a
temporary file in the target's folder and is renamed over the target when complete. Audio is read by
libsndfile (wav, flac, ogg/vorbis and opus, mp3, aiff) where it can, and otherwise decoded by ffmpeg
(m4a/AAC, video containers' audio, the first stream of a MUSDB18 .stem.mp4, ...) through stempeg.
"""
from __future__ import annotations

import contextlib
import math
import os
import shutil
import tempfile
from pathlib import Path

import numpy as np
import soundfile as sf
import torch

from . import __version__
from .errors import FlowsepError

# the process's file-creation mask (read once: reading it means setting it), applied to the files written
# here, since the temporary files they start as are private (0600)
_UMASK = os.umask(0o022)
os.umask(_UMASK)


@contextlib.contextmanager
def atomic_path(path, suffix: str = ""):
    """Yield a temporary path next to ``path``; rename it onto ``path`` if the block succeeds.

    The file gets the permissions of any new file (0666 less the umask), not the temporary file's 0600.
    """
    path = Path(path)
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=suffix + ".tmp", dir=path.parent)
    except OSError as e:
        raise FlowsepError(f"cannot write {path}: {e.strerror}; choose a writable location") from None
    os.close(fd)
    try:
        yield Path(tmp)
        os.chmod(tmp, 0o666 & ~_UMASK)
        os.replace(tmp, path)
    finally:
        if os.path.exists(tmp):
            os.unlink(tmp)


def save_torch(obj, path) -> None:
    """torch.save, atomically."""
    with atomic_path(path) as tmp:
        torch.save(obj, tmp)


def load_torch(path, what: str = "checkpoint") -> dict:
    """torch.load of a dict of tensors and plain values, with one-line errors naming the file."""
    path = Path(path)
    if not path.is_file():
        raise FlowsepError(f"{what} {path} not found; check the path or train it first")
    try:
        obj = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as e:  # torch raises many types for damaged files
        raise FlowsepError(f"{what} {path} is corrupt or not a flowsep file "
                           f"({type(e).__name__}); retrain or copy it again") from None
    if not isinstance(obj, dict):
        raise FlowsepError(f"{what} {path} is not a flowsep file (it holds a {type(obj).__name__})")
    return obj


def read_audio(path, start: float = 0.0, duration: float | None = None) -> tuple[np.ndarray, int]:
    """Read an audio file: returns (channels, samples) float32 in [-1, 1] and the sample rate.

    Any file ffmpeg decodes: soundfile reads what libsndfile knows, ffmpeg (through stempeg) the rest;
    a file with several audio streams (a stems .mp4) gives its first stream. start, duration: the part
    to read, in seconds (default: from the start to the end).
    """
    path = Path(path)
    if not path.is_file():
        raise FlowsepError(f"audio file {path} not found; check the path")
    if not (isinstance(start, (int, float)) and math.isfinite(start) and start >= 0):
        raise FlowsepError(f"start must be a number of seconds >= 0, got {start!r}")
    if duration is not None and not (isinstance(duration, (int, float)) and math.isfinite(duration)
                                     and duration > 0):
        raise FlowsepError(f"duration must be a positive number of seconds, got {duration!r}")
    try:
        data, rate = _read_soundfile(path, start, duration)
    except sf.LibsndfileError:
        data, rate = _read_ffmpeg(path, start, duration)
    if data.shape[0] == 0:
        where = f" after {start:g} s" if start else ""
        raise FlowsepError(f"{path} holds no samples{where}; give a non-empty recording (or an earlier --start)")
    if not np.isfinite(data).all():
        raise FlowsepError(f"{path} contains NaN or Inf samples; clean the audio first")
    return np.ascontiguousarray(data.T), int(rate)


def _read_soundfile(path: Path, start: float, duration: float | None) -> tuple[np.ndarray, int]:
    """(samples, channels) float32 and the rate, by libsndfile; raises sf.LibsndfileError if it cannot."""
    with sf.SoundFile(str(path)) as f:
        rate = f.samplerate
        first = int(round(start * rate))
        if first >= f.frames > 0:
            return np.zeros((0, f.channels), np.float32), rate
        if first:
            f.seek(first)
        frames = -1 if duration is None else int(round(duration * rate))
        return f.read(frames, dtype="float32", always_2d=True), rate


def _read_ffmpeg(path: Path, start: float, duration: float | None) -> tuple[np.ndarray, int]:
    """(samples, channels) float32 and the rate of the first audio stream, decoded by ffmpeg via stempeg."""
    if shutil.which("ffmpeg") is None or shutil.which("ffprobe") is None:
        raise FlowsepError(f"{path} needs ffmpeg to be decoded, and ffmpeg/ffprobe are not on PATH; "
                           "install ffmpeg (e.g. sudo apt-get install ffmpeg)")
    import stempeg

    try:
        info = stempeg.Info(str(path))
        if info.nb_audio_streams == 0:
            raise ValueError("it has no audio stream")
        first = info.audio_stream_idx()[0]
        stems, rate = stempeg.read_stems(str(path), start=start or None, duration=duration, stem_id=first,
                                         always_3d=True, dtype=np.float32, info=info)
    except Exception as e:  # ffprobe/ffmpeg failures arrive as several exception types
        why = _last_line(getattr(e, "stderr", None)) or _last_line(str(e)) or type(e).__name__
        why = why.removeprefix(f"{path}: ")
        raise FlowsepError(f"{path} is not a readable audio file ({why[:100]}); give a file ffmpeg can "
                           "decode (wav, flac, mp3, m4a, ogg, opus, ...)") from None
    return stems[0], int(rate)


def check_format(ckpt: dict, fmt: str, version: int, path, what: str, written_by: str, key: str) -> dict:
    """``ckpt`` when it is a flowsep file of format ``fmt``, version ``version``, with the entry ``key``.

    Otherwise one line naming the file and what to do: ``what`` names the kind of file, ``written_by`` what
    writes it. Every flowsep checkpoint (priors, supervised systems) is checked here.
    """
    if ckpt.get("format") != fmt or key not in ckpt:
        raise FlowsepError(f"{path} is not a {what}; give a file written by {written_by}")
    if ckpt.get("format_version") != version:
        raise FlowsepError(f"{path} has checkpoint format {ckpt.get('format_version')} "
                           f"(flowsep {ckpt.get('flowsep_version')}); this flowsep {__version__} "
                           f"reads format {version}: use a matching flowsep or retrain it")
    return ckpt


def _last_line(text) -> str:
    if isinstance(text, bytes):
        text = text.decode(errors="replace")
    lines = [line.strip() for line in (text or "").splitlines() if line.strip()]
    return lines[-1] if lines else ""


def write_audio(path, audio, rate: int, subtype: str = "PCM_16") -> None:
    """Write (channels, samples) audio as a wav file, atomically.

    Float audio is clipped to [-1, 1] for the integer subtypes; int16 samples are written as they are.
    subtype: soundfile's "PCM_16" (default), "PCM_24" or "FLOAT".
    """
    a = audio.detach().cpu().numpy() if isinstance(audio, torch.Tensor) else np.asarray(audio)
    if a.ndim == 1:
        a = a[None]
    if a.dtype != np.int16:
        a = a.astype(np.float32)
        if subtype.startswith("PCM"):
            a = np.clip(a, -1.0, 1.0)
    with atomic_path(path, suffix=".wav") as tmp:
        sf.write(str(tmp), a.T, int(rate), subtype=subtype, format="WAV")


# ---- folders -------------------------------------------------------------------------------------------
def check_writable_dir(path, flag: str = "--out") -> Path:
    """Fail early (one line) if ``path`` cannot become a writable folder; creates nothing."""
    path = Path(path)
    if path.exists() and not path.is_dir():
        raise FlowsepError(f"{flag} {path} exists and is not a folder; give a folder path")
    probe = path
    while not probe.exists():
        if probe.parent == probe:
            break
        probe = probe.parent
    if not probe.is_dir() or not os.access(probe, os.W_OK | os.X_OK):
        raise FlowsepError(f"cannot write to {path} ({probe} is not a writable folder); choose another {flag}")
    return path


def set_data_home(path) -> Path:
    """Keep datasets, priors and supervised models in ``path`` from now on (sets $FLOWSEP_DATA; creates it).

    For Colab: a folder on a mounted Google Drive outlives the session, so a later chapter (or session)
    reuses what an earlier one made. An empty ``path`` leaves the data folder as it is.
    """
    if path:
        os.environ["FLOWSEP_DATA"] = str(Path(path).expanduser())
        data_home().mkdir(parents=True, exist_ok=True)
    return data_home()


def data_home() -> Path:
    """Where generated data lives: $FLOWSEP_DATA, else ``data/`` of the repository (or of the working folder)."""
    env = os.environ.get("FLOWSEP_DATA")
    if env:
        return Path(env)
    here = Path(__file__).resolve().parent.parent
    if (here / "pyproject.toml").is_file():
        return here / "data"
    return Path.cwd() / "data"
