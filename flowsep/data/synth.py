"""The synthetic MUSDB18: procedurally composed songs, written in MUSDB18's exact wav layout.

Chapter 1 (the separation problem and the data). Real MUSDB18 needs a licence request and a
download, so the book's default data is generated on the reader's machine::

    OUT/setup.yaml                        musdb setup file (the train/valid split)
    OUT/flowsep-synth.json                how the set was made (seed, sizes, track names)
    OUT/{train,test}/<Artist - Title>/{mixture,vocals,drums,bass,other}.wav
                                          44.1 kHz, stereo, 16-bit PCM, like MUSDB18-HQ

and read through the ``musdb`` package itself, so a real MUSDB18 folder works with the same code.
Each song is composed by :func:`flowsep.data.compose.compose`; bass, drums and the ``other``
instruments are rendered by FluidSynth through pretty_midi with the General-MIDI sound font that
ships inside pretty_midi (TimGM6mb.sf2); the vocals are sung by :mod:`flowsep.data.voice`.

Mixing follows MUSDB18's rule that the mixture is the sum of the stems: every stem is scaled by
its per-song level and placed in the stereo field, one gain for the whole song keeps the sum from
clipping, each stem is rounded to 16 bits, and ``mixture.wav`` is the exact integer sum of the
rounded stems.

The same seed gives the same bytes whatever the number of worker processes: track ``i`` of subset
``s`` draws everything from ``numpy.random.default_rng([seed, s, i])``.

``style`` (a name in :data:`flowsep.data.compose.STYLES`) picks the kind of song; the book's sets are of
the "default" style, and chapter 6 scores the trained systems on a test-only set of the "heldout"
style. A style other than the default is recorded in the manifest (``"style": "heldout"``; the
default's manifest has no such key) and its songs come from streams of their own: track ``i`` of
subset ``s`` draws from ``default_rng([seed, s, i, k])`` and the names from ``default_rng([seed,
1000, k])``, with ``k`` the style's place in STYLES (1 for "heldout"), so that its songs and names
are not the default set's.
"""
from __future__ import annotations

import ctypes
import json
import multiprocessing as mp
import os
import sys
from concurrent.futures import ProcessPoolExecutor, as_completed
from pathlib import Path

import numpy as np
import pretty_midi
import soundfile as sf
import yaml
from scipy import signal

from ..errors import FlowsepError
from ..io import atomic_path, write_audio
from ..progress import bar as progress_bar
from .compose import EXTRA_STEMS, STYLES, Song, compose, get_style
from .musdb import SETUP, setup_file
from .voice import sing

RATE = 44100
STEMS = ("vocals", "drums", "bass", "other")
EXTRA = tuple(EXTRA_STEMS)                 # ("guitar", "piano")
SUBSETS = ("train", "test")
MANIFEST = "flowsep-synth.json"
FORMAT = 1                                 # bump when the generated audio changes
MAX_SECONDS = 120.0                        # about 1 GB of memory per worker at this length
_PEAK = 0.89                               # mixture peak after the song's gain (about -1 dBFS)


def soundfont_path() -> Path:
    """The General-MIDI sound font shipped inside the pretty_midi package (TimGM6mb.sf2)."""
    path = Path(pretty_midi.__file__).parent / "TimGM6mb.sf2"
    if not path.is_file():
        raise FlowsepError(f"sound font {path} is missing; reinstall pretty_midi "
                           "(pip install --force-reinstall pretty_midi)")
    return path


# ----------------------------------------------------------------------------------------------------
# rendering
# ----------------------------------------------------------------------------------------------------
def _float_synth_class():
    """A fluidsynth.Synth whose samples are 32-bit floats.

    pyfluidsynth reads 16-bit samples, and FluidSynth dithers those with a noise table seeded
    from the C library's rand(): the result would depend on what else ran in the process. The
    float output has no dither, so the rendering is a pure function of the notes.
    """
    import fluidsynth

    write = fluidsynth._fl.fluid_synth_write_float
    write.argtypes = [ctypes.c_void_p, ctypes.c_int, ctypes.c_void_p, ctypes.c_int, ctypes.c_int,
                      ctypes.c_void_p, ctypes.c_int, ctypes.c_int]
    write.restype = ctypes.c_int

    class FloatSynth(fluidsynth.Synth):
        def get_samples(self, len=1024):  # noqa: A002 - the parent's signature
            buf = np.zeros(2 * max(int(len), 0), dtype=np.float32)
            if len > 0:
                write(self.synth, int(len), buf.ctypes.data, 0, 2, buf.ctypes.data, 1, 2)
            return buf

    return FloatSynth


def render_part(instrument, n_samples: int, rate: int = RATE) -> np.ndarray:
    """Render one pretty_midi instrument with FluidSynth and the GM sound font: (n_samples,) mono."""
    synth = _float_synth_class()(samplerate=float(rate))
    try:
        sfid = synth.sfload(str(soundfont_path()))
        y = instrument.fluidsynth(fs=rate, synthesizer=synth, sfid=sfid)
    finally:
        synth.delete()
    out = np.zeros(n_samples)
    m = min(n_samples, len(y))
    out[:m] = y[:m]
    return out


def _pan(mono: np.ndarray, pan: float) -> np.ndarray:
    """Constant-power pan, ``pan`` in [-1 (left), 1 (right)]: (samples,) -> (2, samples)."""
    theta = (np.clip(pan, -1, 1) + 1) * np.pi / 4
    return np.stack([np.cos(theta) * mono, np.sin(theta) * mono])


def _room(mono: np.ndarray, rate: int, rt60: float, rng: np.random.Generator) -> np.ndarray:
    """A small stereo reverb: two decorrelated exponentially decaying noise responses.
    (samples,) -> (2, samples), with about the input's energy."""
    n = int(rt60 * rate)
    t = np.arange(n) / rate
    ir = rng.standard_normal((2, n)) * np.exp(-6.9 * t / rt60)
    ir = signal.lfilter([0.35], [1, -0.65], ir, axis=1)          # darker tail
    ir[:, : int(0.012 * rate)] = 0.0                              # pre-delay
    ir /= np.sqrt((ir ** 2).sum(axis=1, keepdims=True)) + 1e-12
    return signal.oaconvolve(mono[None, :], ir, axes=1)[:, : len(mono)]


def _active_rms(x: np.ndarray, frame: int = 2048) -> float:
    """RMS over the frames where ``x`` (..., samples) plays (within 30 dB of its loudest frame)."""
    mono = x.reshape(-1, x.shape[-1]).mean(axis=0)
    m = len(mono) // frame * frame
    if m == 0:
        return float(np.sqrt(np.mean(mono ** 2)))
    r = np.sqrt(np.mean(mono[:m].reshape(-1, frame) ** 2, axis=1))
    if r.max() <= 0:
        return 0.0
    act = r > r.max() * 10 ** (-30 / 20)
    return float(np.sqrt(np.mean(r[act] ** 2)))


def _db(x: float) -> float:
    return 10.0 ** (x / 20.0)


def render(song: Song, n_samples: int, rng: np.random.Generator, rate: int = RATE) -> dict:
    """Render ``song`` to float stems {name: (2, n_samples)}, each at its per-song level."""
    stems = {name: np.zeros((2, n_samples)) for name in song.stems()}
    for part in song.parts:
        mono = render_part(part.instrument, n_samples, rate)
        level = _active_rms(mono)
        if level > 0:
            stems[part.stem] += _pan(mono / level * _db(part.gain_db), part.pan)
    dry = sing(song.vocals, n_samples, rate, song.voice, rng)
    level = _active_rms(dry)
    if level > 0:
        dry = dry / level
        wet = _room(dry, rate, float(rng.uniform(0.5, 1.6)), rng) * _db(rng.uniform(-16, -8))
        stems["vocals"] = _pan(dry, song.vocal_pan) + wet
    fade = np.ones(n_samples)
    k_in, k_out = min(int(0.005 * rate), n_samples), min(int(0.25 * rate), n_samples)
    fade[:k_in] = np.linspace(0, 1, k_in)
    fade[n_samples - k_out:] *= np.linspace(1, 0, k_out)
    for name, x in stems.items():
        level = _active_rms(x)
        if level > 0:
            stems[name] = x / level * _db(song.stem_gain_db.get(name, 0.0)) * fade
    return stems


def quantise(stems: dict) -> tuple:
    """One gain for the song so that nothing clips, then 16-bit stems and their exact sum.

    stems: {name: (2, samples) float} -> ({name: (samples, 2) int16}, mixture (samples, 2) int16).
    """
    total = sum(stems.values())
    peak = max([np.abs(total).max()] + [np.abs(x).max() for x in stems.values()])
    gain = _PEAK / peak if peak > 0 else 1.0
    q = {k: np.round(v.T * gain * 32767.0).astype(np.int16) for k, v in stems.items()}
    mix = np.sum([x.astype(np.int32) for x in q.values()], axis=0)
    assert np.abs(mix).max() <= 32767, "mixture clips"
    return q, mix.astype(np.int16)


def _write_int16(path: Path, data: np.ndarray, rate: int = RATE) -> None:
    write_audio(path, data.T, rate)  # (samples, channels) int16 -> a 16-bit wav


def _make_track(job: dict) -> dict:
    """Compose, render and write one track (runs in a worker process). Returns a summary."""
    rng = np.random.default_rng([job["seed"], SUBSETS.index(job["subset"]), job["index"]] + _stream(job["style"]))
    n = int(round(job["seconds"] * RATE))
    song = compose(rng, job["seconds"], extra=tuple(job["extra_stems"]), style=job["style"])
    stems, mixture = quantise(render(song, n, rng))
    folder = Path(job["folder"])
    folder.mkdir(parents=True, exist_ok=True)
    for name in _stem_files(job["extra_stems"]):
        if name != "mixture":
            _write_int16(folder / f"{name}.wav", stems[name])
    _write_int16(folder / "mixture.wav", mixture)            # last: its presence marks a complete track
    rms = {k: float(20 * np.log10(np.sqrt(np.mean((v / 32768.0) ** 2)) + 1e-12))
           for k, v in [("mixture", mixture)] + list(stems.items())}
    return {"subset": job["subset"], "name": job["name"], "song": song.describe(), "rms_dbfs": rms}


def _stem_files(extra_stems) -> list:
    return list(STEMS) + list(extra_stems) + ["mixture"]


def _stream(style: str) -> list:
    """What a style adds to the seeds of its random streams: [] for the default (the seeds it always
    had), [k] for the k-th style of STYLES."""
    k = list(STYLES).index(style)
    return [k] if k else []


# ----------------------------------------------------------------------------------------------------
# names
# ----------------------------------------------------------------------------------------------------
_FIRST = ("Ada", "Milo", "Nora", "Theo", "Iris", "Otto", "Lena", "Jonas", "Mara", "Felix", "Ruby", "Hugo",
          "Elsa", "Arlo", "Vera", "Caspar", "Juno", "Silas", "Wren", "Ezra", "Lotte", "Bruno", "Ines",
          "Pablo", "Kaia", "Tomas", "Freya", "Levi", "Rosa", "Anouk")
_LAST = ("Hollow", "Marsh", "Lindqvist", "Okafor", "Brandt", "Calloway", "Ferreira", "Nakamura", "Whitlock",
         "Duval", "Harrow", "Kessler", "Moreau", "Quill", "Rainer", "Sato", "Thorne", "Varga", "Winslow",
         "Yilmaz", "Abernathy", "Castellano", "Delacroix", "Eriksen", "Fontaine", "Gallagher", "Jansen")
_ADJ = ("Velvet", "Electric", "Paper", "Silver", "Quiet", "Golden", "Hollow", "Neon", "Wooden", "Crimson",
        "Northern", "Lazy", "Broken", "Glass", "Midnight", "Wild", "Little", "Distant", "Painted", "Sleepy",
        "Restless", "Amber", "Cosmic", "Rusty", "Secret", "Blue", "Early")
_BAND = ("Harbours", "Lanterns", "Foxes", "Machines", "Orchards", "Tides", "Satellites", "Pilots", "Gardens",
         "Rivers", "Owls", "Engines", "Sparrows", "Mirrors", "Comets", "Tigers", "Balloons", "Wolves",
         "Parade", "Radio", "Circus", "Islands", "Weather", "Avenue")
_NOUN = ("Heart", "Summer", "River", "Window", "Morning", "Shadow", "Letter", "Highway", "Garden", "Mountain",
         "Ocean", "Fire", "Rain", "Echo", "Promise", "Horizon", "Street", "Dream", "Winter", "Signal",
         "Island", "Stranger", "Candle", "Thunder", "Season", "Harbour", "Light", "Road")
_VERB = ("Chasing", "Waiting For", "Dancing In", "Leaving", "Holding", "Finding", "Calling", "Running From",
         "Dreaming Of", "Falling Into", "Counting", "Crossing", "Following", "Burning", "Remember")


def _word(rng) -> str:
    """A pronounceable invented word (two or three consonant-vowel syllables)."""
    cons, vows = "bdfklmnprstvz", "aeiou"
    w = "".join(rng.choice(list(cons)) + rng.choice(list(vows)) for _ in range(int(rng.integers(2, 4))))
    if rng.random() < 0.4:
        w += rng.choice(list("nrsl"))
    return w.capitalize()


def _name(rng) -> str:
    c = lambda seq: seq[int(rng.integers(len(seq)))]  # noqa: E731
    artist = [lambda: f"{c(_FIRST)} {c(_LAST)}", lambda: f"The {c(_ADJ)} {c(_BAND)}",
              lambda: f"{c(_ADJ)} {c(_BAND)}", lambda: f"{c(_FIRST)} And The {c(_BAND)}",
              lambda: _word(rng), lambda: f"{_word(rng)} {c(_BAND)}"][int(rng.integers(6))]()
    title = [lambda: f"{c(_ADJ)} {c(_NOUN)}", lambda: f"{c(_VERB)} The {c(_NOUN)}",
             lambda: f"{c(_NOUN)} Of {c(_NOUN)}s", lambda: f"The {c(_NOUN)}",
             lambda: _word(rng), lambda: f"{c(_VERB)} {_word(rng)}"][int(rng.integers(6))]()
    return f"{artist} - {title}"


def track_names(seed: int, n_train: int, n_test: int, style: str = "default") -> tuple:
    """Unique "Artist - Title" names: (train names, test names, validation names); another style
    (a name in STYLES) draws other names."""
    rng = np.random.default_rng([seed, 1000] + _stream(style))
    names: list = []
    while len(names) < n_train + n_test:
        name = _name(rng)
        if name.lower() not in {x.lower() for x in names}:
            names.append(name)
    train, test = names[:n_train], names[n_train:]
    n_valid = max(1 if n_train >= 2 else 0, int(round(n_train / 6)))
    pick = (np.random.default_rng([seed, 1001] + _stream(style)).choice(n_train, size=n_valid, replace=False)
            if n_valid else [])
    valid = sorted(train[int(i)] for i in pick)
    return train, test, valid


# ----------------------------------------------------------------------------------------------------
# the dataset
# ----------------------------------------------------------------------------------------------------
def _extra_list(extra_stems) -> list:
    if extra_stems is None:
        return []
    if isinstance(extra_stems, str):
        extra_stems = [x for x in extra_stems.split(",")]
    names = [str(x).strip().lower() for x in extra_stems if str(x).strip()]
    for x in names:
        if x not in EXTRA:
            raise FlowsepError(f"unknown extra stem {x!r}; choose among {', '.join(EXTRA)}")
    return [x for x in EXTRA if x in names]


def _setup(valid: list, extra: list) -> dict:
    """The musdb setup dictionary for this set (template in flowsep/data/synth_setup.yaml)."""
    with open(Path(__file__).with_name("synth_setup.yaml")) as f:
        setup = yaml.safe_load(f)
    for k, name in enumerate(extra):
        setup["sources"][name] = f"{name}.wav"
        setup["stem_ids"][name] = 5 + k
        setup["targets"][name] = {name: 1}
        setup["targets"]["accompaniment"][name] = 1
        setup["targets"]["linear_mixture"][name] = 1
    setup["validation_tracks"] = list(valid)
    return setup


def style_name(style) -> str:
    """The name in STYLES of ``style`` (a name, or a Style of STYLES); anything else is a FlowsepError."""
    chosen = get_style(style)
    if STYLES.get(chosen.name) != chosen:
        raise FlowsepError(f"a synthetic set is made in one of the styles {', '.join(STYLES)}; "
                           f"{chosen.name!r} is not one of them")
    return chosen.name


def _check(n_train, n_test, seconds, seed, workers) -> None:
    for name, v in (("--train", n_train), ("--test", n_test)):
        if isinstance(v, bool) or not isinstance(v, (int, np.integer)) or v < 0:
            raise FlowsepError(f"{name} must be a whole number >= 0 (got {v!r})")
    if n_train + n_test <= 0:
        raise FlowsepError("nothing to generate: ask for at least one track (--train N or --test M)")
    try:
        seconds = float(seconds)
    except (TypeError, ValueError):
        raise FlowsepError(f"--seconds must be a number (got {seconds!r})") from None
    if not np.isfinite(seconds) or seconds <= 0:
        raise FlowsepError(f"--seconds must be positive (got {seconds})")
    if seconds > MAX_SECONDS:
        raise FlowsepError(f"--seconds must be at most {MAX_SECONDS:.0f} (got {seconds}); "
                           "make more tracks instead")
    if isinstance(seed, bool) or not isinstance(seed, (int, np.integer)) or seed < 0:
        raise FlowsepError(f"--seed must be a whole number >= 0 (got {seed!r})")
    if workers is not None and (not isinstance(workers, (int, np.integer)) or workers < 1):
        raise FlowsepError(f"--workers must be at least 1 (got {workers!r})")


def synthesize(out, n_train: int = 16, n_test: int = 4, seconds: float = 24.0, seed: int = 0,
               extra_stems=(), workers: int | None = None, progress: bool = True, style: str = "default") -> Path:
    """Generate a synthetic MUSDB18 in ``out`` and return its path.

    n_train, n_test: tracks per subset (about 1 in 6 train tracks form the validation split, at
    least one when n_train >= 2); seconds: length of every track; seed: the whole set is a function
    of it; extra_stems: "guitar", "piano" (a list or "guitar,piano") rendered as stems of their
    own and left out of ``other``; workers: processes (default min(2, CPUs); 1 works in this
    process); the result does not depend on it; style: a name in
    :data:`flowsep.data.compose.STYLES` ("default", "heldout"): the kind of song, recorded in the
    manifest when it is not the default (whose songs and names it does not share).

    ``out`` must be empty or new, or hold a set made with the same settings: tracks already complete
    there are kept (an interrupted run resumes; a finished one returns at once). A folder holding
    anything else is refused.
    """
    _check(n_train, n_test, seconds, seed, workers)
    extra, style = _extra_list(extra_stems), style_name(style)
    n_train, n_test, seed, seconds = int(n_train), int(n_test), int(seed), float(seconds)
    out = Path(out).expanduser()
    train, test, valid = track_names(seed, n_train, n_test, style)
    settings = {"format": FORMAT, "seed": seed, "n_train": n_train, "n_test": n_test,
                "seconds": seconds, "extra_stems": extra, "sample_rate": RATE}
    if style != "default":
        settings["style"] = style                  # the default's manifest stays as it always was
    _claim(out, settings)
    manifest = dict(settings, generator="flowsep synth", tracks={"train": train, "test": test},
                    validation_tracks=valid)
    _write_text(out / MANIFEST, json.dumps(manifest, indent=1) + "\n")
    _write_text(out / SETUP, yaml.safe_dump(_setup(valid, extra), sort_keys=False))

    files = _stem_files(extra)
    for subset in SUBSETS:
        (out / subset).mkdir(exist_ok=True)
    jobs = []
    for subset, names in (("train", train), ("test", test)):
        for index, name in enumerate(names):
            folder = out / subset / name
            if not all((folder / f"{f}.wav").is_file() for f in files):
                jobs.append({"seed": seed, "subset": subset, "index": index, "name": name, "seconds": seconds,
                             "extra_stems": extra, "style": style, "folder": str(folder)})
    if workers is None:
        workers = min(2, os.cpu_count() or 1)
    _run(jobs, n_train + n_test, workers, progress)
    return out


def _write_text(path: Path, text: str) -> None:
    """Write ``text`` atomically unless the file already holds it (a finished set stays untouched)."""
    if path.is_file() and path.read_text() == text:
        return
    with atomic_path(path, suffix=path.suffix) as tmp:
        tmp.write_text(text)


def _claim(out: Path, settings: dict) -> None:
    """Make sure ``out`` is ours: new, empty, or a set made with the same ``settings``."""
    if out.exists() and not out.is_dir():
        raise FlowsepError(f"{out} is a file; give a folder for the dataset")
    if out.is_dir() and any(out.iterdir()):
        path = out / MANIFEST
        if not path.is_file():
            raise FlowsepError(f"{out} is not empty and holds no flowsep synthetic dataset; "
                               "choose an empty or new folder")
        try:
            old = json.loads(path.read_text())
        except (OSError, ValueError):
            raise FlowsepError(f"{path} is unreadable; delete {out} and generate again") from None
        defaults = {"style": "default"}           # keys a manifest leaves out when they hold these values
        had, want = {**defaults, **old}, {**defaults, **settings}
        diff = [f"{k} {had.get(k)!r} -> {v!r}" for k, v in want.items() if had.get(k) != v]
        if diff:
            raise FlowsepError(f"{out} holds a synthetic set made with other settings ({'; '.join(diff)}); "
                               "choose another folder or delete this one")
    try:
        out.mkdir(parents=True, exist_ok=True)
    except OSError as e:
        raise FlowsepError(f"cannot create {out}: {e.strerror}; choose a writable location") from None
    if not os.access(out, os.W_OK | os.X_OK):
        raise FlowsepError(f"{out} is not writable; choose a writable location")


def _mp_context():
    """How worker processes start: fork on Linux (quick, and no re-import of the caller's script),
    spawn elsewhere (macOS and Windows, where fork is unsafe or missing)."""
    return mp.get_context("fork" if sys.platform.startswith("linux") else "spawn")


def _worker_init() -> None:
    """Run in each worker first: make OpenMP single-threaded.

    FluidSynth loads sound fonts inside OpenMP regions, and torch computes with OpenMP. Once the
    parent has run such a region, a forked child inherits a thread pool whose threads do not exist
    in it, and its first parallel region waits for them forever. With one thread no pool is used.
    """
    os.environ["OMP_NUM_THREADS"] = "1"
    try:
        with open("/proc/self/maps") as f:
            paths = {line.split()[-1] for line in f if len(line.split()) >= 6}
    except OSError:
        return
    for path in sorted(paths):
        if os.path.basename(path).startswith(("libgomp", "libomp", "libiomp")):
            try:
                ctypes.CDLL(path).omp_set_num_threads(1)
            except (OSError, AttributeError):
                pass


def _run(jobs: list, total: int, workers: int, progress: bool) -> list:
    results = []
    with progress_bar(total=total, initial=total - len(jobs), desc="synth", unit="track", show=progress) as bar:
        if workers == 1 or len(jobs) <= 1:
            for job in jobs:
                results.append(_make_track(job))
                bar.update()
            return results
        with ProcessPoolExecutor(max_workers=min(workers, len(jobs)), mp_context=_mp_context(),
                                 initializer=_worker_init) as pool:
            futures = [pool.submit(_make_track, job) for job in jobs]
            try:
                for fut in as_completed(futures):
                    results.append(fut.result())
                    bar.update()
            except BaseException:
                for fut in futures:
                    fut.cancel()
                raise
    return results


def describe(root, subset: str = "train", index: int = 0) -> dict:
    """Per-stem duration (s) and RMS (dBFS) of one track of a generated set (a listening check in
    numbers): {stem: (seconds, rms_dbfs)}."""
    root = Path(root)
    folders = sorted(p for p in (root / subset).iterdir() if p.is_dir())
    out = {}
    for f in sorted(folders[index].glob("*.wav")):
        x, rate = sf.read(str(f), dtype="float64", always_2d=True)
        out[f.stem] = (len(x) / rate, float(20 * np.log10(np.sqrt(np.mean(x ** 2)) + 1e-12)))
    return out


# ----------------------------------------------------------------------------------------------------
# command line
# ----------------------------------------------------------------------------------------------------
def register_cli(subparsers) -> None:
    p = subparsers.add_parser(
        "synth", help="generate a synthetic MUSDB18 (procedural songs, MUSDB18 wav layout)",
        description="Compose and render songs into OUT/{train,test}/<Artist - Title>/{mixture,vocals,"
                    "drums,bass,other}.wav (44.1 kHz stereo 16-bit), with OUT/setup.yaml for musdb's "
                    "train/valid split. Rerunning with the same settings keeps complete tracks; a "
                    "folder holding anything else is refused.")
    p.add_argument("out", metavar="OUT", help="dataset folder (new, empty, or made with the same settings)")
    p.add_argument("--train", type=int, default=16, metavar="N",
                   help="training tracks, about 1 in 6 of them in the validation split (default 16)")
    p.add_argument("--test", type=int, default=4, metavar="M", help="test tracks (default 4)")
    p.add_argument("--seconds", type=float, default=24.0, metavar="S",
                   help="length of every track in seconds (default 24)")
    p.add_argument("--seed", type=int, default=0, metavar="K",
                   help="random seed: the same seed gives the same files (default 0)")
    p.add_argument("--extra-stems", default="", metavar="LIST",
                   help="comma-separated instruments rendered as stems of their own and left out of "
                        "'other': guitar, piano (default none)")
    p.add_argument("--style", default="default", metavar="NAME",
                   help=f"kind of song: {' or '.join(STYLES)} (other instruments, tempi, registers and mix, "
                        "for scoring systems on songs unlike their training data; default: default)")
    p.add_argument("--workers", type=int, default=None, metavar="W",
                   help="worker processes (default min(2, CPUs))")
    p.add_argument("--quiet", action="store_true", help="no progress bar")
    p.set_defaults(func=_cli)


def _cli(args) -> int:
    root = synthesize(args.out, n_train=args.train, n_test=args.test, seconds=args.seconds, seed=args.seed,
                      extra_stems=args.extra_stems, workers=args.workers, progress=not args.quiet,
                      style=args.style)
    size = sum(f.stat().st_size for f in root.rglob("*.wav"))
    print(f"{args.train + args.test} tracks of {args.seconds:g} s in {root} ({size / 1e6:.0f} MB); "
          f"musdb setup file: {setup_file(root)}")
    return 0
