"""Separating audio files: files in, one file per stem out, laid out the way demucs users expect.

Chapter: README, "Separate your own song".

    flowsep separate song.mp3 live.m4a -p data/priors/my-bundle          # any format ffmpeg decodes
    #  -> separated/my-bundle/song/vocals.wav, .../drums.wav, ..., separated/my-bundle/live/vocals.wav, ...
    paths = flowsep.separate_file("song.mp3", "data/priors/my-bundle", two_stems="vocals", format="mp3")

The priors come from a bundle folder (:mod:`flowsep.bundle`, ``-p BUNDLE``) or from single checkpoints
(``--prior NAME=CKPT``, named ``priors`` in the output path). :class:`FileSeparator` does one file: read
it (:func:`flowsep.io.read_audio`: soundfile, else ffmpeg), separate it (:class:`flowsep.Separator`),
and write every stem through soundfile (wav 16/24-bit or float, flac 16/24-bit, mp3 at a constant
bitrate) block by block into temporary files that are renamed into place only when all stems of the
file are complete. A batch goes on past a file that fails; existing outputs are kept unless
``overwrite``.
"""
from __future__ import annotations

import argparse
import contextlib
import math
import os
import re
import sys
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import soundfile as sf

from .bundle import Bundle, load_bundle
from .errors import FlowsepError
from .io import atomic_path, check_writable_dir, read_audio
from .prior import FlowPrior
from .progress import bar as progress_bar
from .separate import DEFAULT_METHOD, METHODS, POSTS, STEREO_MODES, Separator

DEFAULT_OUT = "separated"
DEFAULT_TEMPLATE = "{track}/{stem}.{ext}"
TEMPLATE_FIELDS = ("track", "trackext", "stem", "ext")
SPEC_BUNDLE_NAME = "priors"          # the output folder's name for priors given as --prior NAME=CKPT
SAMPLE_FORMATS = {"int16": "PCM_16", "int24": "PCM_24", "float32": "FLOAT"}
MP3_BITRATES = (32, 40, 48, 56, 64, 80, 96, 112, 128, 160, 192, 224, 256, 320)   # kbps, MPEG-1 layer III
_NAME = re.compile(r"^[A-Za-z0-9_][A-Za-z0-9_.+-]*$")


# ---- priors ------------------------------------------------------------------------------------------
def parse_prior_specs(specs: list[str]) -> dict[str, Path]:
    """["vocals=ckpt/vocals.pt", ...] -> {"vocals": Path(...)}; one-line errors for bad syntax."""
    if not specs:
        raise FlowsepError("no priors given; pass -p BUNDLE, or --prior NAME=CKPT once per source")
    out: dict[str, Path] = {}
    for spec in specs:
        name, sep, path = spec.partition("=")
        name = name.strip()
        if not sep or not path.strip():
            raise FlowsepError(f"--prior {spec!r} is not NAME=CKPT; write e.g. --prior vocals=priors/vocals.pt")
        if not _NAME.match(name):
            raise FlowsepError(f"--prior name {name!r} is not usable as a file name; "
                               "use letters, digits, '_', '-', '.' (e.g. vocals)")
        if name in out:
            raise FlowsepError(f"--prior {name} given twice; give each source once")
        out[name] = Path(path.strip())
    return out


def load_priors(specs=(), bundle=None):
    """The priors of a bundle folder and/or of NAME=CKPT specs, as a :class:`flowsep.bundle.Bundle`.

    ``--prior`` specs add sources to the bundle's (or replace one of the same name). The result is a dict
    {name: FlowPrior} with a ``name``: the bundle's, or ``priors`` for specs alone.
    """
    if bundle is None and not specs:
        raise FlowsepError("no priors given; pass -p BUNDLE, or --prior NAME=CKPT once per source")
    loaded = load_bundle(bundle) if bundle is not None else Bundle({}, SPEC_BUNDLE_NAME)
    if specs:
        loaded.update({name: FlowPrior.load(path) for name, path in parse_prior_specs(list(specs)).items()})
    return loaded


# ---- output files ------------------------------------------------------------------------------------
@dataclass(frozen=True)
class StemFormat:
    """How stems are encoded: file extension, soundfile format and subtype, and the mp3 settings."""

    ext: str                         # "wav", "flac" or "mp3"
    container: str                   # soundfile's format: "WAV", "FLAC", "MP3"
    subtype: str                     # "PCM_16", "PCM_24", "FLOAT", "MPEG_LAYER_III"
    mp3_bitrate: int | None = None   # kbps (constant bitrate)

    @property
    def clips(self) -> bool:
        """Integer and mp3 outputs are clipped to [-1, 1]; float wav keeps what is beyond."""
        return self.subtype != "FLOAT"

    def open(self, path, rate: int, channels: int):
        """A soundfile.SoundFile open for writing ``path`` (the caller writes (samples, channels) blocks)."""
        kwargs = {}
        if self.container == "MP3":
            lo, hi = _mp3_range(rate)
            level = (hi - min(max(self.mp3_bitrate, lo), hi)) / (hi - lo)
            kwargs = dict(compression_level=min(level, 0.99), bitrate_mode="CONSTANT")
        try:
            return sf.SoundFile(str(path), "w", int(rate), int(channels), self.subtype, format=self.container,
                                **kwargs)
        except (sf.LibsndfileError, ValueError, TypeError) as e:
            hint = " (mp3 takes 8 to 48 kHz and 1 or 2 channels; use wav or --flac)" if self.ext == "mp3" else ""
            raise FlowsepError(f"cannot write {self.ext} at {rate} Hz with {channels} channel(s): "
                               f"{str(e).splitlines()[0][:80]}{hint}") from None


def _mp3_range(rate: int) -> tuple[int, int]:
    """(lowest, highest) constant bitrate in kbps of MPEG layer III at ``rate`` Hz (MPEG-1, 2 or 2.5).

    libsndfile (with LAME) maps its compression level 0..1 linearly onto this range.
    """
    if rate >= 32000:
        return 32, 320
    if rate >= 16000:
        return 8, 160
    return 8, 64


def stem_format(format: str = "wav", sample_format: str = "int16", mp3_bitrate: int = 320) -> StemFormat:
    """Check and combine the output options: wav (int16, int24, float32), flac (int16, int24) or mp3."""
    if format not in ("wav", "flac", "mp3"):
        raise FlowsepError(f"unknown output format {format!r}; use wav, flac or mp3")
    if sample_format not in SAMPLE_FORMATS:
        raise FlowsepError(f"unknown sample format {sample_format!r}; use int16, int24 or float32")
    if format == "mp3":
        if sample_format != "int16":
            raise FlowsepError(f"--{sample_format} applies to wav and flac output, not to mp3; leave it out or "
                               "drop --mp3")
        if mp3_bitrate not in MP3_BITRATES:
            raise FlowsepError(f"--mp3-bitrate {mp3_bitrate} is not an mp3 bitrate; choose one of "
                               f"{', '.join(map(str, MP3_BITRATES))} (kbps)")
        return StemFormat("mp3", "MP3", "MPEG_LAYER_III", int(mp3_bitrate))
    if format == "flac" and sample_format == "float32":
        raise FlowsepError("flac stores integers only; use --int24 with --flac, or --float32 with wav")
    return StemFormat(format, format.upper(), SAMPLE_FORMATS[sample_format])


def check_template(template: str) -> str:
    """A demucs-style file name template: fields {track}, {trackext}, {stem}, {ext}; a relative path."""
    try:
        a = template.format(track="t", trackext="wav", stem="a", ext="wav")
        b = template.format(track="t", trackext="wav", stem="b", ext="wav")
    except (KeyError, IndexError, ValueError, AttributeError) as e:
        raise FlowsepError(f"--filename {template!r} is not a usable template ({type(e).__name__}: {e}); use "
                           f"the fields {', '.join('{' + f + '}' for f in TEMPLATE_FIELDS)}, "
                           f"e.g. {DEFAULT_TEMPLATE!r}") from None
    if a == b:
        raise FlowsepError(f"--filename {template!r} gives every stem the same file; put {{stem}} in it")
    parts = Path(a).parts
    if Path(a).is_absolute() or ".." in parts or not parts:
        raise FlowsepError(f"--filename {template!r} must be a relative path inside the output folder")
    return template


def track_name(path) -> tuple[str, str]:
    """("song", "mp3") for "music/song.mp3", ("song", "stem.mp4") for a stems file: the name and extension."""
    name = Path(path).name
    if name.lower().endswith(".stem.mp4") and len(name) > len(".stem.mp4"):
        return name[:-len(".stem.mp4")], name[-len("stem.mp4"):]
    stem, dot, ext = name.rpartition(".")
    return (stem, ext) if dot and stem else (name, "")


def write_stem_blocks(blocks, paths: dict[str, Path], rate: int, channels: int, fmt: StemFormat) -> list[Path]:
    """Write consecutive blocks of stems into ``paths`` ({stem: path}); all files appear or none.

    blocks: an iterable of (start_sample, {stem: (channels, n) float32}), in order and without gaps. Each
    stem is written to a temporary file next to its target as the blocks come; the temporary files are
    renamed onto the targets only after the last block, and removed if anything fails.
    """
    with contextlib.ExitStack() as stack:
        files = {}
        for stem, path in paths.items():
            tmp = stack.enter_context(atomic_path(path, suffix="." + fmt.ext))
            files[stem] = stack.enter_context(fmt.open(tmp, rate, channels))
        expected = 0
        for start, block in blocks:
            if start != expected:
                raise RuntimeError(f"stem blocks out of order: block at sample {start}, expected {expected}")
            n = None
            for stem, f in files.items():
                a = np.asarray(block[stem], dtype=np.float32)
                if fmt.clips:
                    a = np.clip(a, -1.0, 1.0)
                f.write(np.ascontiguousarray(a.T))
                n = a.shape[-1]
            expected += n or 0
    return list(paths.values())


# ---- one file ----------------------------------------------------------------------------------------
class OutputsExist(FlowsepError):
    """Every output of a file is already there (and overwriting was not asked for)."""


class FileSeparator:
    """Separate audio files into stem files: ``FileSeparator(priors, "separated")("song.mp3") -> [paths]``.

    priors: a bundle folder, a :class:`flowsep.bundle.Bundle` or a dict {name: FlowPrior}.
    out: the output folder; the stems of FILE go to ``out/<name>/<filename>``, where name is the bundle's
    (``name=`` to choose another) and filename the template (fields {track}, {trackext}, {stem}, {ext}).
    format: "wav" (default), "flac" or "mp3"; sample_format: "int16" (default), "int24" or "float32" (wav);
    mp3_bitrate: kbps (default 320). two_stems: a source name: write it and ``no_<name>``, the rest of the
    mixture (the two add up to the mixture). start, duration: the part of each file to separate, in
    seconds. overwrite: replace existing outputs (otherwise a file whose outputs all exist raises
    :class:`OutputsExist`, and one with some of them raises FlowsepError). progress: the iteration bar.
    Every other keyword goes to :class:`flowsep.Separator` (iterations, lr, post, stereo, device, ...).
    """

    def __init__(self, priors, out=DEFAULT_OUT, *, name: str | None = None, format: str = "wav",
                 sample_format: str = "int16", mp3_bitrate: int = 320, filename: str = DEFAULT_TEMPLATE,
                 two_stems: str | None = None, start: float = 0.0, duration: float | None = None,
                 overwrite: bool = False, progress: bool = True, **separator_options):
        if isinstance(priors, (str, os.PathLike)):
            priors = load_bundle(priors)
        if not isinstance(priors, dict):
            raise FlowsepError(f"priors must be a bundle folder or a dict {{name: FlowPrior}}, got a "
                               f"{type(priors).__name__}")
        self.name = name or (priors.name if isinstance(priors, Bundle) else SPEC_BUNDLE_NAME)
        if not _NAME.match(self.name):
            raise FlowsepError(f"bundle name {self.name!r} is not usable as a folder name; give name=...")
        self.out = check_writable_dir(out)
        self.format = stem_format(format, sample_format, mp3_bitrate)
        self.template = check_template(filename)
        if two_stems is not None and two_stems not in priors:
            raise FlowsepError(f"--two-stems {two_stems}: no such source; choose one of: {', '.join(priors)}")
        if not (isinstance(start, (int, float)) and math.isfinite(start) and start >= 0):
            raise FlowsepError(f"--start must be a number of seconds >= 0, got {start}")
        if duration is not None and not (isinstance(duration, (int, float)) and duration > 0):
            raise FlowsepError(f"--duration must be a positive number of seconds, got {duration}")
        self.two_stems, self.start, self.duration, self.overwrite = two_stems, float(start), duration, overwrite
        self.separator = Separator(dict(priors), progress=progress, **separator_options)

    @property
    def stems(self) -> list[str]:
        if self.two_stems:
            return [self.two_stems, f"no_{self.two_stems}"]
        return list(self.separator.names)

    def outputs(self, path) -> dict[str, Path]:
        """{stem: output path} of the audio file ``path``."""
        track, trackext = track_name(path)
        folder = self.out / self.name
        return {stem: folder / self.template.format(track=track, trackext=trackext, stem=stem, ext=self.format.ext)
                for stem in self.stems}

    def check_outputs(self, path) -> dict[str, Path]:
        """The outputs of ``path``, after checking that writing them replaces nothing (unless overwrite)."""
        paths = self.outputs(path)
        if self.overwrite:
            return paths
        there = [p for p in paths.values() if p.exists()]
        if there and len(there) == len(paths):
            raise OutputsExist(f"its stems are already in {_common_folder(there)}; pass --overwrite to replace them")
        if there:
            raise FlowsepError(f"{there[0]} exists (and {len(there) - 1} more of its stems); pass --overwrite to "
                               "replace them")
        return paths

    def __call__(self, path) -> list[Path]:
        """Separate the audio file ``path``; returns the paths written (one per stem)."""
        paths = self.check_outputs(path)
        mixture, rate = read_audio(path, self.start, self.duration)
        result = self.separator.estimate(mixture, rate)
        return write_stem_blocks(self._blocks(result, mixture), paths, rate, mixture.shape[0], self.format)

    def _blocks(self, result, mixture: np.ndarray):
        """(start_sample, {stem: (channels, n)}) in order: the rendered estimates, or the two stems."""
        for start, block in result.render_blocks(self.separator.method.post, self.separator.method.wiener_iterations):
            if self.two_stems:
                keep = np.asarray(block[self.two_stems], dtype=np.float32)
                rest = mixture[:, start:start + keep.shape[-1]] - keep
                block = {self.two_stems: keep, f"no_{self.two_stems}": rest}
            yield start, block


def _common_folder(paths: list[Path]) -> Path:
    return Path(os.path.commonpath([str(p.parent) for p in paths]))


def separate_file(path, bundle, out=DEFAULT_OUT, **options) -> list[Path]:
    """Separate one audio file with a prior bundle and write one file per stem; returns their paths.

    path: any audio file ffmpeg decodes. bundle: a bundle folder, a :class:`flowsep.bundle.Bundle` or a
    dict {name: FlowPrior}. out: the output folder (stems go to ``out/<bundle name>/<track>/<stem>.<ext>``).
    options: those of :class:`FileSeparator` (format, sample_format, mp3_bitrate, filename, two_stems,
    start, duration, overwrite, progress, name) and of :class:`flowsep.Separator` (iterations, device, ...).
    """
    return FileSeparator(bundle, out, **options)(path)


def separate_batch(files: FileSeparator, paths: list, progress: bool = True, log=print):
    """Separate every file of ``paths``, going on past failures.

    Returns (written, skipped, failed): {path: [output paths]}, [paths whose outputs were all there],
    {path: one-line reason}.
    """
    written, skipped, failed = {}, [], {}
    claimed: dict[Path, str] = {}
    for path in progress_bar(paths, show=progress and len(paths) > 1, desc="files", unit="file"):
        try:
            outputs = files.outputs(path).values()
            clash = next((claimed[p] for p in outputs if p in claimed), None)
            if clash is not None:
                raise FlowsepError(f"its stems would replace those of {clash} from this batch (same track name); "
                                   "rename one, or use e.g. --filename '{track}_{trackext}/{stem}.{ext}'")
            claimed.update({p: str(path) for p in outputs})
            written[path] = files(path)
        except OutputsExist as e:
            skipped.append(path)
            log(f"flowsep: skipped {path}: {e}")
        except FlowsepError as e:
            failed[path] = _reason(path, str(e))
        except (RuntimeError, OSError, MemoryError, ValueError) as e:  # torch, ffmpeg, disk: one file's trouble
            first = (str(e).strip().splitlines() or [""])[0][:160]
            failed[path] = _reason(path, f"{type(e).__name__}: {first}")
    return written, skipped, failed


def _reason(path, message: str) -> str:
    return message if str(path) in message else f"{path}: {message}"


# ---- command line -----------------------------------------------------------------------------------
def add_separation_options(p) -> None:
    """The separation settings of `flowsep separate` and `flowsep evaluate` (defaults: the method's)."""
    p.add_argument("--method", choices=list(METHODS), default=DEFAULT_METHOD,
                   help="separation method: " + "; ".join(f"{m.name}: {m.summary}" for m in METHODS.values())
                        + f" (default {DEFAULT_METHOD})")
    p.add_argument("--iterations", type=int, default=None, help="Adam iterations (default: the method's)")
    p.add_argument("--lr", type=float, default=None, help="Adam learning rate (default: the method's)")
    p.add_argument("--post", choices=POSTS, default="wiener",
                   help="post-filter: multichannel Wiener (default), ratio mask, or none (mixture phase only)")
    p.add_argument("--stereo", choices=STEREO_MODES, default=None,
                   help="separate mid and side, mid only (the side shared in mid's ratios) or each channel "
                        "(default: the method's)")
    p.add_argument("--prior-weight", type=float, default=None, help="weight of the prior term (default: the method's)")
    p.add_argument("--bf16", action=argparse.BooleanOptionalAction, default=None,
                   help="run the priors' networks in bfloat16 where the device computes it fast (CPUs with "
                        "bf16 units, most CUDA GPUs); elsewhere a no-op; --no-bf16: float32 everywhere "
                        "(default: the method's)")
    p.add_argument("--segment-seconds", type=float, default=60.0,
                   help="longest stretch optimised as one segment (default 60)")
    p.add_argument("--max-memory", default=None, metavar="SIZE",
                   help="memory a separation may use, e.g. 4G or 500M (default: a share of the memory free "
                        "when it starts); long songs go through the priors in chunks that fit")


def separation_options(args) -> dict:
    """Separator keywords from the options of :func:`add_separation_options`."""
    return dict(method=args.method, iterations=args.iterations, lr=args.lr, post=args.post, stereo=args.stereo,
                prior_weight=args.prior_weight, segment_seconds=args.segment_seconds, device=args.device,
                max_memory=args.max_memory, bf16=args.bf16)


def register_cli(subparsers) -> None:
    p = subparsers.add_parser(
        "separate", help="separate audio files into stems with a bundle of trained flow priors",
        description="Separate each FILE (anything ffmpeg decodes: wav, flac, mp3, m4a/AAC, ogg, opus, the "
                    "audio of a video) with a prior bundle (-p BUNDLE) or single priors (--prior NAME=CKPT); "
                    "writes OUT/<bundle name>/<track>/<stem>.wav at the input's rate, channels and length. "
                    "A file that fails does not stop the others; the exit status is then 2.")
    p.add_argument("files", nargs="+", metavar="FILE", help="audio files to separate")
    p.add_argument("-p", "--priors", metavar="BUNDLE", default=None, help="a prior bundle folder "
                   "(flowsep priors build)")
    p.add_argument("--prior", action="append", metavar="NAME=CKPT", default=[],
                   help="a source name and its prior checkpoint (repeat once per source; adds to -p)")
    p.add_argument("-o", "--out", default=DEFAULT_OUT, metavar="OUT",
                   help=f"output folder (default: {DEFAULT_OUT})")
    p.add_argument("-n", "--name", default=None, help="the folder under OUT (default: the bundle's name, or "
                                                      f"{SPEC_BUNDLE_NAME} for --prior alone)")
    p.add_argument("--filename", default=DEFAULT_TEMPLATE,
                   help="file name template under OUT/<name>, with {track}, {trackext}, {stem}, {ext} "
                        f"(default: {DEFAULT_TEMPLATE})")
    p.add_argument("--two-stems", default=None, metavar="STEM",
                   help="write STEM and no_STEM (the rest of the mixture) only")
    enc = p.add_mutually_exclusive_group()
    enc.add_argument("--mp3", action="store_true", help="write mp3 (constant bitrate) instead of wav")
    enc.add_argument("--flac", action="store_true", help="write flac instead of wav")
    p.add_argument("--mp3-bitrate", type=int, default=320, help="mp3 bitrate in kbps (default 320)")
    depth = p.add_mutually_exclusive_group()
    depth.add_argument("--int24", action="store_true", help="24-bit wav or flac (default: 16-bit)")
    depth.add_argument("--float32", action="store_true", help="32-bit float wav, not clipped")
    p.add_argument("--overwrite", action="store_true", help="replace outputs that exist (default: keep them)")
    p.add_argument("--start", type=float, default=0.0, help="separate from this second on (default 0)")
    p.add_argument("--duration", type=float, default=None, help="separate this many seconds (default: to the end)")
    p.add_argument("-d", "--device", default="auto", help="auto (default), cpu or cuda")
    add_separation_options(p)
    p.add_argument("--quiet", action="store_true", help="no progress bars")
    p.set_defaults(func=_cli)


def _cli(args) -> int:
    out = check_writable_dir(args.out)
    priors = load_priors(args.prior, args.priors)
    options = separation_options(args)
    fmt = "mp3" if args.mp3 else "flac" if args.flac else "wav"
    depth = "int24" if args.int24 else "float32" if args.float32 else "int16"
    files = FileSeparator(priors, out, name=args.name, format=fmt, sample_format=depth, mp3_bitrate=args.mp3_bitrate,
                          filename=args.filename, two_stems=args.two_stems, start=args.start, duration=args.duration,
                          overwrite=args.overwrite, progress=not args.quiet, **options)
    written, skipped, failed = separate_batch(files, args.files, progress=not args.quiet,
                                              log=lambda line: print(line, file=sys.stderr))
    for paths in written.values():
        for path in paths:
            print(path)
    if not failed:
        return 0
    if len(args.files) == 1:
        raise FlowsepError(next(iter(failed.values())))
    for reason in failed.values():
        print(f"flowsep: error: {reason}", file=sys.stderr)
    raise FlowsepError(f"{len(failed)} of {len(args.files)} files failed (listed above); "
                       f"{len(written)} separated, {len(skipped)} skipped")
