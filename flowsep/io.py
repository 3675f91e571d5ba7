"""Files: atomic writes, audio reading and writing (soundfile), checkpoint reading.

Chapter: used everywhere. Nothing here leaves a half-written file behind: every write goes to a
temporary file in the target's folder and is renamed over the target when complete.
"""
from __future__ import annotations

import contextlib
import os
import tempfile
from pathlib import Path

import numpy as np
import soundfile as sf
import torch

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


def read_audio(path) -> tuple[np.ndarray, int]:
    """Read an audio file: returns (channels, samples) float32 in [-1, 1] and the sample rate."""
    path = Path(path)
    if not path.is_file():
        raise FlowsepError(f"audio file {path} not found; check the path")
    try:
        data, rate = sf.read(str(path), dtype="float32", always_2d=True)
    except Exception as e:
        raise FlowsepError(f"{path} is not a readable audio file ({str(e).splitlines()[0][:80]}); "
                           "give a wav, flac or ogg file") from None
    if data.shape[0] == 0:
        raise FlowsepError(f"{path} holds no samples; give a non-empty recording")
    if not np.isfinite(data).all():
        raise FlowsepError(f"{path} contains NaN or Inf samples; clean the audio first")
    return np.ascontiguousarray(data.T), int(rate)


def write_audio(path, audio, rate: int) -> None:
    """Write (channels, samples) float audio as 16-bit wav, atomically."""
    a = np.asarray(audio.detach().cpu() if isinstance(audio, torch.Tensor) else audio, dtype=np.float32)
    if a.ndim == 1:
        a = a[None]
    with atomic_path(path, suffix=".wav") as tmp:
        sf.write(str(tmp), np.clip(a.T, -1.0, 1.0), int(rate), subtype="PCM_16", format="WAV")
