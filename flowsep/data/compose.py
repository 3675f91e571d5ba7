"""Composing a song: the score behind every track of the synthetic MUSDB18.

Chapter 1 (the separation problem and the data). A separator learns what each instrument sounds
like *in a mix*: notes that overlap in time and pitch, parts that enter and leave. So every song is
composed from one seeded random generator, top down, the way a pop song is built:

1. **Frame**: tempo, meter (4/4, 3/4 or 6/8), key and mode, a swing feel.
2. **Form**: sections (intro, verse, pre-chorus, chorus, bridge, outro), a few bars each.
3. **Harmony**: a diatonic chord progression per section type, one or two chords per bar.
4. **Parts**, all derived from the harmony so they agree with each other:
   - *vocals*: a melody on the scale, in phrases of one or two bars separated by rests, chord tones
     on strong beats, sung on syllables (consonant + vowel); see :mod:`flowsep.data.voice`;
   - *bass*: the chord roots in one of several rhythms, with passing notes into the next chord;
   - *drums* (General MIDI channel 10): a groove per meter, hats turning to ride in choruses,
     crashes on section starts and fills at section ends;
   - *other*: two or three General MIDI instruments chosen per song (pianos, guitars, organs,
     strings, pads, mallets, a lead), each with a role: rhythmic comping, arpeggios, sustained pads,
     a counter-melody where the voice rests.
   With ``extra=("guitar", "piano")`` a guitar part and a piano part become stems of their own.

The result is a :class:`Song`: pretty_midi instruments per stem (rendered by FluidSynth in
:mod:`flowsep.data.synth`) and the sung notes, with per-song levels and stereo positions.

A :class:`Style` decides the tempi, the instruments of each role, the registers and the mix;
the rules above are the same in every style. The book trains and tests on the "default" style;
chapter 6 also scores the trained systems on songs of the "heldout" style (:data:`STYLES`), whose
instruments none of the default pools hold, with faster tempi, the harmony an octave higher, quieter
vocals and another mix: how a system does on music unlike what it was trained on.
"""
from __future__ import annotations

from dataclasses import dataclass, field
from types import MappingProxyType
from typing import Mapping

import numpy as np
import pretty_midi

from ..errors import FlowsepError
from .voice import RANGES, Note, Voice

MAJOR = (0, 2, 4, 5, 7, 9, 11)
MINOR = (0, 2, 3, 5, 7, 8, 10)
#: Progressions as scale degrees (0 = tonic); diminished triads are left out.
PROGRESSIONS = {
    "major": [(0, 4, 5, 3), (0, 3, 4, 3), (5, 3, 0, 4), (0, 5, 3, 4), (0, 2, 3, 4), (0, 3, 5, 4),
              (3, 4, 0, 0), (0, 4, 3, 4), (1, 4, 0, 5), (0, 0, 3, 4)],
    "minor": [(0, 5, 2, 6), (0, 3, 6, 2), (0, 6, 5, 6), (0, 3, 4, 0), (0, 5, 3, 4), (0, 2, 6, 3),
              (5, 6, 0, 0), (0, 3, 0, 4)],
}


@dataclass(frozen=True)
class Meter:
    """A bar of ``beats`` beats, each of ``steps_per_beat`` grid steps (sixteenth notes)."""
    name: str
    beats: int
    steps_per_beat: int

    @property
    def steps(self) -> int:
        return self.beats * self.steps_per_beat


METERS = {"4/4": Meter("4/4", 4, 4), "3/4": Meter("3/4", 3, 4), "6/8": Meter("6/8", 2, 6)}

# Drum grooves, one string per lane and one character per sixteenth step:
# "x" hit, "X" accent, "g" ghost note, "." rest.
GROOVES = {
    "4/4": [
        {"kick": "x.......x.x.....", "snare": "....x.......x...", "hat": "x.x.x.x.x.x.x.x."},
        {"kick": "x...x...x...x...", "snare": "....x.......x...", "hat": "x.x.x.x.x.x.x.x."},
        {"kick": "x.........x.....", "snare": "........x.......", "hat": "x.x.x.x.x.x.x.x."},
        {"kick": "x..x......x..x..", "snare": "....x..g.g..x..g", "hat": "xxxxxxxxxxxxxxxx"},
        {"kick": "x.....x...x.....", "snare": "....x.......x...", "hat": "x.xxx.xxx.xxx.xx"},
        {"kick": "x.x.......x.....", "snare": "....x.......x.g.", "hat": "x.x.x.x.x.x.x.x."},
    ],
    "3/4": [
        {"kick": "x...........", "snare": "....x...x...", "hat": "x.x.x.x.x.x."},
        {"kick": "x.......x...", "snare": "....x.......", "hat": "x.x.x.x.x.x."},
    ],
    "6/8": [
        {"kick": "x...........", "snare": "......x.....", "hat": "x.x.x.x.x.x."},
        {"kick": "x...x.......", "snare": "......x.....", "hat": "x.x.x.x.x.x."},
        {"kick": "x.....x.x...", "snare": "......x.....", "hat": "x.xxx.x.xxx."},
    ],
}
KICK, SNARE, SIDESTICK, CLOSED_HAT, OPEN_HAT, CRASH, RIDE = 36, 38, 37, 42, 46, 49, 51
TOMS = (50, 48, 47, 45, 43, 41)   # high to low
DRUM_KITS = (0, 0, 0, 8, 16, 24, 32, 40)

# Comping rhythms per meter ("x" = chord hit).
COMP = {
    "4/4": ["x...x...x...x...", "x.......x.......", "..x...x...x...x.", "x..x..x...x..x..",
            "x.x.x.x.x.x.x.x.", "x..x..x.x..x..x."],
    "3/4": ["x...x...x...", "x.......x...", "x...x.x.x..."],
    "6/8": ["x.....x.....", "x.x.x.x.x.x.", "x....xx....."],
}
BASS_PROGRAMS = (32, 33, 33, 34, 34, 35, 38, 39)
PIANOS = (0, 0, 1, 2, 4, 5)
GUITARS = (24, 25, 26, 27, 27, 28, 29, 30)
ORGANS = (16, 17, 18, 19)
STRINGS = (48, 49, 50)
PADS = (88, 89, 90, 94, 95)
MALLETS = (11, 12, 46, 108)          # vibraphone, marimba, harp, kalimba
LEADS = (22, 40, 56, 65, 66, 71, 73, 80, 81)
#: Instruments available to the `other` stem, per role.
ROLE_PROGRAMS = {
    "comp": PIANOS + GUITARS + ORGANS[:2] + (7,),
    "arp": GUITARS[:4] + PIANOS[:3] + MALLETS,
    "pad": STRINGS + PADS + ORGANS,
    "lead": LEADS,
}
EXTRA_STEMS = {"guitar": GUITARS, "piano": PIANOS}


@dataclass(frozen=True)
class Style:
    """What a style decides about a song; everything else (form, harmony, rhythms) is the same rules.

    tempo: meter name ("4/4", "3/4", "6/8") -> (lo, hi) beats per minute, drawn uniformly (6/8 counts
    dotted quarters); drum_kits: General-MIDI drum kits (bank 128 programs), one drawn per song;
    bass_programs: GM programs of the bass; programs: role of the `other` stem ("comp", "arp", "pad",
    "lead") -> GM programs; extra_programs: extra stem ("guitar", "piano") -> GM programs, left out of
    `other` when that stem is asked for; strummed: the programs that comp as guitars (strummed, a
    lower register with the root below). harmony_shift: semitones added to the registers of the
    comp, arp and pad parts; bass_shift: semitones added to the bass line's centre (MIDI 33..40) and
    its upper limits; lead_range: (lo, hi) MIDI notes of the counter-melody. stem_gain_db: stem ->
    (lo, hi) dB, the stem's level in the mix drawn per song (only the differences between stems
    count: the mixture is normalised); pan_spread: factor on the stereo positions of the `other`
    and extra parts (1 = up to +-0.7, clipped at +-1); room: (lo, hi) reverb send (MIDI CC 91,
    0..127) per song. Vocals are sung in the singer's own range whatever the style.
    """
    name: str
    tempo: Mapping
    drum_kits: tuple
    bass_programs: tuple
    programs: Mapping
    extra_programs: Mapping
    strummed: tuple
    harmony_shift: int
    bass_shift: int
    lead_range: tuple
    stem_gain_db: Mapping
    pan_spread: float
    room: tuple

    def __post_init__(self):
        for key in ("tempo", "programs", "extra_programs", "stem_gain_db"):   # read-only mappings
            object.__setattr__(self, key, MappingProxyType(dict(getattr(self, key))))

    def all_programs(self) -> set:
        """Every melodic GM program this style may play (bass, `other` roles, extra stems)."""
        pools = [self.bass_programs, *self.programs.values(), *self.extra_programs.values()]
        return {int(p) for pool in pools for p in pool}


#: The styles a set can be composed in. "default" is the book's training and test data; "heldout" is
#: another kind of song for chapter 6, which scores the trained systems on music they never heard:
#: other instruments in every melodic role (none of the default pools), other drum kits, faster
#: tempi, the harmony an octave higher and the bass a fourth higher, quieter vocals under louder
#: bass and drums, a wider stereo field and more reverb.
STYLES = {
    "default": Style(
        name="default",
        tempo={"4/4": (76, 140), "3/4": (84, 150), "6/8": (50, 72)},
        drum_kits=DRUM_KITS, bass_programs=BASS_PROGRAMS, programs=ROLE_PROGRAMS, extra_programs=EXTRA_STEMS,
        strummed=tuple(range(24, 32)), harmony_shift=0, bass_shift=0, lead_range=(62, 84),
        stem_gain_db={"vocals": (-1, 2), "drums": (-3, 1), "bass": (-4, 0), "other": (-4, 0),
                      "guitar": (-5, -1), "piano": (-5, -1)},
        pan_spread=1.0, room=(15, 70)),
    "heldout": Style(
        name="heldout",
        tempo={"4/4": (142, 176), "3/4": (152, 190), "6/8": (76, 96)},
        drum_kits=(25, 25, 48),                                      # TR-808, orchestra
        bass_programs=(36, 36, 37, 43, 87),                          # slap basses, contrabass, bass & lead
        programs={"comp": (6, 3, 21, 105, 15, 23),                   # harpsichord, honky-tonk, accordion,
                                                                     # banjo, dulcimer, bandoneon
                  "arp": (8, 10, 13, 45, 107),                       # celesta, music box, xylophone,
                                                                     # pizzicato strings, koto
                  "pad": (44, 51, 92, 93, 20),                       # tremolo and synth strings, bowed
                                                                     # and metallic pads, reed organ
                  "lead": (60, 68, 70, 74, 82, 61)},                 # french horn, oboe, bassoon,
                                                                     # recorder, calliope, brass section
        extra_programs={"guitar": (104, 105, 106, 31),               # sitar, banjo, shamisen, harmonics
                        "piano": (3, 6)},                            # honky-tonk, harpsichord
        strummed=(31, 104, 105, 106), harmony_shift=12, bass_shift=5, lead_range=(55, 79),
        stem_gain_db={"vocals": (-5, -2), "drums": (-1, 3), "bass": (-1, 3), "other": (-4, 0),
                      "guitar": (-3, 1), "piano": (-3, 1)},
        pan_spread=1.35, room=(50, 100)),
}


def get_style(style) -> Style:
    """The :class:`Style` of ``style``: a name in :data:`STYLES`, or a Style (returned as is)."""
    if isinstance(style, Style):
        return style
    if isinstance(style, str) and style in STYLES:
        return STYLES[style]
    raise FlowsepError(f"unknown style {style!r}; choose one of: {', '.join(STYLES)}")


@dataclass
class Section:
    name: str
    start_bar: int
    bars: int


@dataclass
class Chord:
    start: int          # grid step (song-wide)
    end: int
    degree: int         # scale degree of the root (0-6)
    pcs: tuple          # pitch classes, root first


@dataclass
class Part:
    """One General-MIDI part: which stem it belongs to, its role, level (dB) and pan (-1..1)."""
    stem: str
    role: str
    instrument: pretty_midi.Instrument
    gain_db: float = 0.0
    pan: float = 0.0


@dataclass
class Song:
    """A composed song: timing, form, harmony, the MIDI parts and the sung notes."""
    tempo: float                     # beats per minute
    meter: Meter
    step: float                      # seconds per grid step
    tonic: int                       # pitch class 0..11
    mode: str                        # "major" or "minor"
    sections: list
    chords: list
    parts: list = field(default_factory=list)
    vocals: list = field(default_factory=list)
    voice: Voice = field(default_factory=Voice)
    vocal_pan: float = 0.0
    stem_gain_db: dict = field(default_factory=dict)
    swing: float = 0.0
    room: float = 40.0               # reverb amount, 0..127 (MIDI CC 91)
    style: str = "default"           # the name of the Style it was composed in

    @property
    def bar_seconds(self) -> float:
        return self.step * self.meter.steps

    def time(self, step: float) -> float:
        """Seconds at grid ``step``; swing delays every second eighth note."""
        spb = self.meter.steps_per_beat
        if self.swing and spb == 4 and int(round(step)) % 4 == 2:
            step = step + self.swing * 2
        return float(step * self.step)

    def stems(self) -> list:
        """The stem names of this song, vocals first."""
        names = ["vocals"]
        for p in self.parts:
            if p.stem not in names:
                names.append(p.stem)
        return names

    def describe(self) -> str:
        """One line: tempo, meter, key, form and instruments."""
        key = pretty_midi.note_number_to_name(60 + self.tonic)[:-1] + (" minor" if self.mode == "minor" else "")
        form = "-".join(f"{s.name}{s.bars}" for s in self.sections)
        inst = ", ".join(f"{p.stem}:{p.role}:{_program_name(p.instrument)}" for p in self.parts
                         if p.stem != "drums")
        kit = next((p.instrument.program for p in self.parts if p.stem == "drums"), None)
        inst = f"drum kit {kit}, " + inst
        return f"{self.tempo:.0f} bpm {self.meter.name} {key}; {form}; {self.voice.kind} voice; {inst}"


def _program_name(inst) -> str:
    return "drums" if inst.is_drum else pretty_midi.program_to_instrument_name(inst.program)


def _pick(rng, seq, p=None):
    return seq[int(rng.choice(len(seq), p=p))]


# ----------------------------------------------------------------------------------------------------
# frame, form and harmony
# ----------------------------------------------------------------------------------------------------
def _frame(rng, style):
    meter = METERS[_pick(rng, ("4/4", "3/4", "6/8"), p=(0.7, 0.15, 0.15))]
    tempo = float(rng.uniform(*style.tempo[meter.name]))    # 6/8: dotted quarters per minute
    step = 60.0 / tempo / meter.steps_per_beat
    mode = "minor" if rng.random() < 0.4 else "major"
    tonic = int(rng.integers(12))
    swing = float(rng.uniform(0.15, 0.3)) if meter.name == "4/4" and rng.random() < 0.15 else 0.0
    return meter, tempo, step, tonic, mode, swing


def _form(rng, n_bars: int) -> list:
    """Sections covering ``n_bars`` bars; the intro is short so every part plays most of the song."""
    intro = 0 if n_bars < 8 else (1 if n_bars < 12 else int(rng.integers(1, 3)))
    seq = [("intro", intro)] if intro else []
    verse = 8 if n_bars >= 32 and rng.random() < 0.5 else 4
    pre = rng.random() < 0.35
    first = "verse" if (intro or rng.random() < 0.6) else "chorus"
    cycle = 0
    order = ["verse", "prechorus", "chorus"] if first == "verse" else ["chorus", "verse", "prechorus"]
    while sum(b for _, b in seq) < n_bars:
        for name in order:
            if name == "prechorus" and not pre:
                continue
            seq.append((name, {"verse": verse, "prechorus": 2, "chorus": 4}[name]))
        cycle += 1
        if cycle == 2 and rng.random() < 0.6:
            seq.append(("bridge", 4))
            seq.append(("chorus", 4))
    sections, bar = [], 0
    for name, bars in seq:
        bars = min(bars, n_bars - bar)
        if bars <= 0:
            break
        sections.append(Section(name, bar, bars))
        bar += bars
    if len(sections) > 3 and sections[-1].bars >= 2 and rng.random() < 0.5:
        sections[-1].name = "outro"
    return sections


def _chords(rng, sections, meter, tonic, mode) -> list:
    scale = MAJOR if mode == "major" else MINOR
    progs = PROGRESSIONS[mode]
    by_section = {name: progs[int(rng.integers(len(progs)))] for name in
                  ("intro", "verse", "prechorus", "chorus", "bridge", "outro")}
    by_section["intro"] = by_section["chorus"] if rng.random() < 0.5 else by_section["verse"]
    by_section["outro"] = by_section["chorus"]
    per_bar = _pick(rng, (1, 2, 0.5), p=(0.65, 0.2, 0.15))
    if per_bar == 2 and meter.name == "3/4":
        per_bar = 1
    seventh = rng.random() < 0.25
    chords = []
    for sec in sections:
        prog = by_section[sec.name]
        length = int(meter.steps / per_bar)
        start = sec.start_bar * meter.steps
        end = (sec.start_bar + sec.bars) * meter.steps
        k = 0
        while start < end:
            d = prog[k % len(prog)]
            tones = [d, d + 2, d + 4] + ([d + 6] if seventh and rng.random() < 0.5 else [])
            pcs = tuple((tonic + scale[t % 7]) % 12 for t in tones)
            chords.append(Chord(start, min(start + length, end), d, pcs))
            start += length
            k += 1
    return chords


def _chord_at(chords, step):
    for c in chords:
        if c.start <= step < c.end:
            return c
    return chords[-1]


def _section_at(sections, bar):
    for s in sections:
        if s.start_bar <= bar < s.start_bar + s.bars:
            return s
    return sections[-1]


def _nearest(pc: int, target: float) -> int:
    """The MIDI pitch of pitch class ``pc`` nearest to ``target``."""
    base = int(round(target)) - 6
    return base + (pc - base) % 12


# ----------------------------------------------------------------------------------------------------
# melody (the voice, and counter-melodies for lead instruments)
# ----------------------------------------------------------------------------------------------------
def _melody(rng, song, bars, lo, hi, phrase_bars, density):
    """Phrases over ``bars`` (list of (bar, section name)): returns [(step, steps, pitch, vel, first)].

    Notes sit on the scale between MIDI ``lo`` and ``hi``; strong beats favour chord tones; choruses
    sit higher than verses; each phrase ends on a long chord tone followed by a rest (where a
    singer breathes); choruses repeat their rhythm (a hook).
    """
    meter = song.meter
    spb, bar_steps = meter.steps_per_beat, meter.steps
    scale = MAJOR if song.mode == "major" else MINOR
    pitches = [p for p in range(lo, hi + 1) if (p - song.tonic) % 12 in scale]
    if spb == 4:
        durs, wts = (1, 2, 3, 4, 6, 8), (0.04, 0.44, 0.08, 0.3, 0.08, 0.06)
    else:
        durs, wts = (1, 2, 3, 4, 6), (0.04, 0.5, 0.1, 0.18, 0.18)
    wts = np.array(wts) ** (1.0 / density)
    wts = wts / wts.sum()
    notes, prev_rhythm = [], None
    i = 0
    while i < len(bars):
        n_ph = min(phrase_bars, len(bars) - i)
        if any(bars[i + j][1] != bars[i][1] or bars[i + j][0] != bars[i][0] + j for j in range(n_ph)):
            n_ph = 1                                       # phrases stay inside one section
        section = bars[i][1]
        center = (lo + hi) / 2 + (3 if section in ("chorus", "outro") else -1)
        start = bars[i][0] * bar_steps
        length = n_ph * bar_steps
        offset = int(_pick(rng, (0, 0, 0, 2, spb))) if not notes else int(_pick(rng, (0, 0, 2, spb)))
        offset = min(offset, int(0.5 / song.step))                     # start within half a second
        rest = int(_pick(rng, (spb // 2, spb, spb, int(1.5 * spb), 2 * spb)))
        rest = max(2, min(rest, length // 3, int(1.2 / song.step)))   # breathe, but not for long
        room = length - offset - rest
        if room < 2:
            i += n_ph
            continue
        # rhythm: reuse the previous phrase's rhythm in choruses (a hook), else draw one
        if section == "chorus" and prev_rhythm is not None and sum(prev_rhythm) == room and rng.random() < 0.7:
            rhythm = list(prev_rhythm)
        else:
            final = int(min(_pick(rng, (spb, spb, 2 * spb)), max(room // 2, 1)))
            rhythm, left = [], room - final
            while left > 0:
                d = int(min(_pick(rng, durs, p=wts), left))
                rhythm.append(d)
                left -= d
            rhythm.append(final)
        prev_rhythm = rhythm
        step = start + offset
        first_chord = _chord_at(song.chords, step)
        cur = min(pitches, key=lambda p: abs(p - center) + (0 if p % 12 in first_chord.pcs else 3))
        for k, d in enumerate(rhythm):
            chord = _chord_at(song.chords, step)
            if k > 0:
                move = int(_pick(rng, (-4, -3, -2, -1, 0, 1, 2, 3, 4),
                                 p=(0.03, 0.05, 0.12, 0.27, 0.1, 0.27, 0.1, 0.04, 0.02)))
                if cur > center + 5 and move > 0 or cur < center - 5 and move < 0:
                    move = -move
                j = int(np.clip(pitches.index(cur) + move, 0, len(pitches) - 1))
                cur = pitches[j]
            strong = (step % spb == 0) or k == len(rhythm) - 1
            if strong and (cur % 12) not in chord.pcs and rng.random() < 0.8:
                near = [p for p in pitches if p % 12 in chord.pcs]
                if near:
                    cur = min(near, key=lambda p: abs(p - cur))
            loud = 0.62 + (0.14 if section in ("chorus", "outro") else 0.0)
            loud += 0.05 * np.sin(np.pi * k / max(len(rhythm), 1)) + rng.normal(0, 0.04)   # phrase arch
            notes.append((step, d, cur, float(np.clip(loud, 0.35, 1.0)), k == 0))
            step += d
        i += n_ph
    return notes


_VOWEL_P = {"a": 0.3, "o": 0.2, "e": 0.2, "i": 0.15, "u": 0.15}
_ONSETS = {"l": 0.12, "m": 0.1, "n": 0.12, "d": 0.07, "t": 0.08, "k": 0.06, "s": 0.1, "h": 0.06,
           "w": 0.06, "y": 0.04, "r": 0.06, "b": 0.04, "p": 0.03, "f": 0.02, "sh": 0.02, "v": 0.01,
           "g": 0.01}


def _sung(rng, song, melody) -> list:
    """Turn melody notes into sung syllables with times in seconds."""
    vowels, vp = list(_VOWEL_P), np.array(list(_VOWEL_P.values()))
    onsets, op = list(_ONSETS), np.array(list(_ONSETS.values()))
    out, vowel = [], "a"
    for step, d, pitch, vel, first in melody:
        start = song.time(step) + rng.normal(0, 0.008)
        end = song.time(step + d)
        legato = rng.random() < 0.75
        end -= 0.0 if legato else min(0.12, 0.3 * (end - start))
        if not first and rng.random() < 0.12:          # melisma: the same vowel moves to a new pitch
            onset = ""
        else:
            vowel = _pick(rng, vowels, p=vp / vp.sum())
            onset = _pick(rng, onsets, p=op / op.sum()) if rng.random() < (0.85 if first else 0.7) else ""
        out.append(Note(max(start, 0.0), end, float(pitch), vel, vowel, onset))
    for k in range(len(out) - 1):                         # no overlaps after the timing jitter
        a, b = out[k], out[k + 1]
        if a.end > b.start:
            out[k] = Note(a.start, b.start, a.pitch, a.velocity, a.vowel, a.onset)
    return [x for x in out if x.end - x.start > 0.03]


# ----------------------------------------------------------------------------------------------------
# drums and bass
# ----------------------------------------------------------------------------------------------------
#: Drum kit pieces rendered (and levelled, panned) separately, as on a mixing desk:
#: lane -> (level dB, pan range)
DRUM_LANES = {"kick": (-3.0, 0.05), "snare": (0.0, 0.15), "hats": (-6.0, 0.5), "toms": (-4.0, 0.35),
              "cymbals": (-9.0, 0.5)}


def _drum_lane(pitch: int) -> str:
    if pitch in (KICK, 35):
        return "kick"
    if pitch in (SNARE, SIDESTICK, 40):
        return "snare"
    if pitch in TOMS:
        return "toms"
    if pitch in (CRASH, 57):
        return "cymbals"
    return "hats"


def _drums(rng, song, n_bars, kits) -> dict:
    """The drum part in one of ``kits``, split by kit piece: {lane: pretty_midi.Instrument (is_drum)}."""
    meter = song.meter
    spb, bar_steps = meter.steps_per_beat, meter.steps
    groove = GROOVES[meter.name][int(rng.integers(len(GROOVES[meter.name])))]
    kit = int(_pick(rng, kits))
    inst = pretty_midi.Instrument(program=kit, is_drum=True, name="drums")
    chorus_hat = _pick(rng, (RIDE, OPEN_HAT, CLOSED_HAT))
    light_intro = rng.random() < 0.5
    sidestick_verse = rng.random() < 0.15
    fills = rng.random() < 0.85

    def hit(step, pitch, vel, dur=0.12):
        t = max(song.time(step) + rng.normal(0, 0.004), 0.0)
        v = int(np.clip(vel + rng.normal(0, 6), 20, 127))
        inst.notes.append(pretty_midi.Note(v, int(pitch), t, t + dur))

    for bar in range(n_bars):
        sec = _section_at(song.sections, bar)
        last_bar = bar == sec.start_bar + sec.bars - 1
        fill_from = bar_steps
        if fills and last_bar and sec.bars >= 2 and bar < n_bars - 1:
            fill_from = bar_steps - spb * (2 if rng.random() < 0.3 else 1)
        base = bar * bar_steps
        if bar == sec.start_bar and sec.name != "intro":
            hit(base, CRASH, 100, 1.0)
        hat = chorus_hat if sec.name in ("chorus", "outro") else CLOSED_HAT
        for s in range(bar_steps):
            if s >= fill_from:
                break
            if sec.name == "intro" and light_intro:
                if groove["hat"][s] != ".":
                    hit(base + s, hat if hat != OPEN_HAT else CLOSED_HAT, 80 if s % spb == 0 else 60)
                if s == 0:
                    hit(base + s, KICK, 95)
                continue
            for lane, pitch in (("kick", KICK), ("snare", SNARE), ("hat", hat)):
                ch = groove[lane][s]
                if ch == ".":
                    continue
                vel = {"x": 96, "X": 116, "g": 42}[ch]
                if lane == "hat":
                    vel = 88 if s % spb == 0 else 66
                    if hat == OPEN_HAT and s % spb == 0:
                        pitch = CLOSED_HAT
                if lane == "snare" and sec.name == "verse" and sidestick_verse:
                    pitch = SIDESTICK
                hit(base + s, pitch, vel)
        if fill_from < bar_steps:
            kind = _pick(rng, ("snare", "toms", "mixed"))
            n = bar_steps - fill_from
            for j in range(n):
                s = fill_from + j
                if kind == "snare":
                    pitch = SNARE
                elif kind == "toms":
                    pitch = TOMS[min(j * len(TOMS) // n, len(TOMS) - 1)]
                else:
                    pitch = SNARE if j % 2 == 0 else TOMS[min(j * len(TOMS) // n, len(TOMS) - 1)]
                hit(base + s, pitch, 60 + 50 * j / max(n - 1, 1))
            hit(base + fill_from, KICK, 90)
    lanes = {}
    for note in inst.notes:
        lane = _drum_lane(note.pitch)
        if lane not in lanes:
            lanes[lane] = pretty_midi.Instrument(program=kit, is_drum=True, name=f"drums-{lane}")
        lanes[lane].notes.append(note)
    return {k: lanes[k] for k in DRUM_LANES if k in lanes}


def _bass(rng, song, n_bars, groove_kick, programs=BASS_PROGRAMS, shift=0) -> pretty_midi.Instrument:
    meter = song.meter
    spb = meter.steps_per_beat
    scale = MAJOR if song.mode == "major" else MINOR
    inst = pretty_midi.Instrument(program=int(_pick(rng, programs)), name="bass")
    style = _pick(rng, ("roots", "pulse", "beats", "kick", "rootfifth"), p=(0.15, 0.2, 0.25, 0.2, 0.2))
    center = float(rng.uniform(33, 40)) + shift           # ``shift``: the style's register
    rest_intro = rng.random() < 0.4
    passing = rng.uniform(0.3, 0.8)
    total = n_bars * meter.steps
    for ci, chord in enumerate(song.chords):
        if chord.start >= total:
            break
        sec = _section_at(song.sections, chord.start // meter.steps)
        if sec.name == "intro" and rest_intro:
            continue
        root = _nearest(chord.pcs[0], center)
        fifth = root + 7 if root + 7 <= 50 + shift else root - 5
        span = chord.end - chord.start
        if style == "roots":
            onsets = [0]
        elif style == "pulse":
            onsets = list(range(0, span, 2))
        elif style == "beats":
            onsets = list(range(0, span, spb))
        elif style == "kick":
            onsets = [s for s in range(span) if groove_kick[(chord.start + s) % meter.steps] != "."] or [0]
        else:
            onsets = sorted({0, min(span // 2, span - 1)} if span >= 2 * spb else {0})
        notes = []
        for k, o in enumerate(onsets):
            end = onsets[k + 1] if k + 1 < len(onsets) else span
            pitch = root
            if style == "rootfifth" and k % 2 == 1:
                pitch = fifth
            elif style == "beats" and k % 2 == 1 and rng.random() < 0.3:
                pitch = root + 12 if root + 12 <= 55 + shift else fifth
            notes.append([o, end, pitch])
        nxt = song.chords[ci + 1] if ci + 1 < len(song.chords) else None
        if nxt is not None and nxt.pcs[0] != chord.pcs[0] and span >= 2 * spb and rng.random() < passing:
            target = _nearest(nxt.pcs[0], center)
            if rng.random() < 0.5:
                approach = target - 1 if rng.random() < 0.5 else target + 1          # chromatic
            else:
                below = [p for p in range(target - 3, target) if (p - song.tonic) % 12 in scale]
                approach = below[-1] if below else target - 2                      # scale step
            o = span - (spb if spb == 4 else 2)
            notes = [n for n in notes if n[0] < o]
            if notes:
                notes[-1][1] = min(notes[-1][1], o)
            notes.append([o, span, approach])
        for o, e, pitch in notes:
            t0 = song.time(chord.start + o) + rng.normal(0, 0.004)
            t1 = song.time(chord.start + e)
            gap = 0.9 if style in ("pulse", "kick") else 0.97
            t1 = t0 + max((t1 - t0) * gap, 0.05)
            vel = int(np.clip(rng.normal(96 if o % spb == 0 else 84, 6), 40, 127))
            inst.notes.append(pretty_midi.Note(vel, int(pitch), max(t0, 0.0), t1))
    return inst


# ----------------------------------------------------------------------------------------------------
# harmony instruments
# ----------------------------------------------------------------------------------------------------
def _voicing(pcs, lo, hi, prev, size) -> list:
    """Chord tones in [lo, hi], close to the previous voicing (voice leading)."""
    target = np.mean(prev) if prev else (lo + hi) / 2
    notes = sorted({_nearest(pc, target) for pc in pcs[:size]})
    notes = [p + 12 if p < lo else p - 12 if p > hi else p for p in notes]
    return sorted(set(notes))


def _harmony_part(rng, song, n_bars, role, program, sections_on, name, style) -> pretty_midi.Instrument:
    """The chords of the sections in ``sections_on`` played by GM ``program`` in ``role`` ("comp": hits
    on a rhythm, "arp": broken chords, "pad": held chords), in the style's register."""
    meter = song.meter
    spb, bar_steps = meter.steps_per_beat, meter.steps
    inst = pretty_midi.Instrument(program=int(program), name=name)
    guitar = program in style.strummed
    shift = style.harmony_shift
    total = n_bars * bar_steps
    prev = None
    rhythm = _pick(rng, COMP[meter.name])
    arp_rate = 2 if song.tempo >= 100 or spb == 6 else int(_pick(rng, (1, 2)))
    arp_shape = _pick(rng, ((0, 1, 2, 3), (0, 1, 2, 1), (0, 2, 1, 3), (0, 1, 2, 3, 2, 1)))
    base_vel = float(rng.uniform(70, 95))
    left_hand = rng.random() < 0.5            # pianos double the root an octave down
    if role == "pad":
        lo, hi = 48 + shift, 69 + shift
    elif role == "arp":
        lo, hi = 57 + shift, 81 + shift
    else:
        lo, hi = (50 + shift, 71 + shift) if guitar else (52 + shift, 74 + shift)   # the low end belongs to the bass
    for chord in song.chords:
        if chord.start >= total:
            break
        sec = _section_at(song.sections, chord.start // bar_steps)
        if sec.name not in sections_on:
            prev = None
            continue
        vel = base_vel + (8 if sec.name in ("chorus", "outro") else 0)
        size = 4 if len(chord.pcs) == 4 else 3
        voicing = _voicing(chord.pcs, lo, hi, prev, size)
        prev = voicing
        span = chord.end - chord.start
        if role == "pad":
            t0, t1 = song.time(chord.start), song.time(chord.end) + 0.05
            for p in voicing:
                inst.notes.append(pretty_midi.Note(int(np.clip(vel - 15, 30, 120)), p, t0, t1))
            continue
        if role == "arp":
            tones = voicing + [voicing[0] + 12]
            for k, s in enumerate(range(0, span, arp_rate)):
                p = tones[arp_shape[k % len(arp_shape)] % len(tones)]
                t0 = song.time(chord.start + s) + rng.normal(0, 0.005)
                t1 = t0 + arp_rate * song.step * 1.8
                v = int(np.clip(vel - 8 + (10 if s % spb == 0 else 0) + rng.normal(0, 5), 30, 127))
                inst.notes.append(pretty_midi.Note(v, p, max(t0, 0.0), t1))
            continue
        # comp: chord hits on the rhythm; guitars strum (strings a few ms apart), pianos add a bass note
        hits = [s for s in range(span) if rhythm[(chord.start + s) % bar_steps] != "."] or [0]
        notes = list(voicing)
        if guitar:
            notes = sorted(set([_nearest(chord.pcs[0], 50 + shift)] + notes + [notes[0] + 12]))
        elif left_hand and notes[0] - 12 >= 43 + shift:
            notes = [notes[0] - 12] + notes
        for k, s in enumerate(hits):
            end = hits[k + 1] if k + 1 < len(hits) else span
            t0 = song.time(chord.start + s) + rng.normal(0, 0.005)
            t1 = song.time(chord.start + end) - 0.02
            up = guitar and s % spb != 0
            order = notes[::-1] if up else notes
            v = int(np.clip(vel + (6 if s % spb == 0 else -4) + rng.normal(0, 5), 30, 127))
            for j, p in enumerate(order):
                d = j * (0.012 if guitar else 0.002)
                inst.notes.append(pretty_midi.Note(v, int(p), max(t0 + d, 0.0), max(t1, t0 + d + 0.06)))
    return inst


def _lead_part(rng, song, n_bars, program, vocal_bars, name, lo_hi=(62, 84)) -> pretty_midi.Instrument:
    """A counter-melody between MIDI notes ``lo_hi`` that plays in the bars where the voice does not sing."""
    inst = pretty_midi.Instrument(program=int(program), name=name)
    bars = [(b, _section_at(song.sections, b).name) for b in range(n_bars) if b not in vocal_bars]
    for step, d, pitch, vel, _ in _melody(rng, song, bars, *lo_hi, 2, 0.8):
        t0 = song.time(step)
        t1 = song.time(step + d) - 0.01
        inst.notes.append(pretty_midi.Note(int(np.clip(vel * 120, 30, 127)), int(pitch), t0, max(t1, t0 + 0.05)))
    return inst


# ----------------------------------------------------------------------------------------------------
# the whole song
# ----------------------------------------------------------------------------------------------------
def compose(rng: np.random.Generator, seconds: float, extra=(), style="default") -> Song:
    """Compose a song of at least ``seconds`` seconds from ``rng``.

    ``extra``: names among ``EXTRA_STEMS`` ("guitar", "piano") whose parts become stems of their own
    (every song then has one part of each); otherwise those instruments may play in `other`.
    ``style``: a name in :data:`STYLES` or a :class:`Style`: the tempi, instruments, registers and mix
    (an unknown name is a FlowsepError). The default style draws from ``rng`` exactly as before styles
    existed, so a seed gives the same song it always gave.
    """
    style = get_style(style)
    meter, tempo, step, tonic, mode, swing = _frame(rng, style)
    bar_seconds = step * meter.steps
    n_bars = int(np.ceil(seconds / bar_seconds)) + 1
    sections = _form(rng, n_bars)
    chords = _chords(rng, sections, meter, tonic, mode)
    song = Song(tempo, meter, step, tonic, mode, sections, chords, swing=swing, style=style.name)

    # vocals: in every section but the intro (and sometimes the bridge / outro)
    voice = Voice.random(rng)
    lo, hi = RANGES[voice.kind]
    skip = {"intro"} | ({"bridge"} if rng.random() < 0.4 else set()) | ({"outro"} if rng.random() < 0.5 else set())
    vocal_bars = [(b, _section_at(sections, b).name) for b in range(n_bars)
                  if _section_at(sections, b).name not in skip]
    phrase_bars = 2 if bar_seconds * 2 <= 6.0 else 1
    melody = _melody(rng, song, vocal_bars, lo, hi, phrase_bars, density=float(rng.uniform(0.8, 1.3)))
    song.vocals = _sung(rng, song, melody)
    song.voice = voice
    song.vocal_pan = float(rng.uniform(-0.1, 0.1))

    drums = _drums(rng, song, n_bars, style.drum_kits)
    bass = _bass(rng, song, n_bars, _kick_lane(drums.get("kick"), song, meter), style.bass_programs,
                 style.bass_shift)
    parts = []
    for lane, inst in drums.items():
        level, spread = DRUM_LANES[lane]
        gain, pan = level + float(rng.uniform(-2, 2)), float(rng.uniform(-spread, spread))
        parts.append(Part("drums", lane, inst, gain, pan))
    parts.append(Part("bass", "bass", bass, 0.0, float(rng.uniform(-0.1, 0.1))))

    all_sections = {s.name for s in sections}
    no_intro = all_sections - {"intro"}
    extra = tuple(extra)
    harmony = []                                   # (stem, role, program)
    for stem in extra:
        harmony.append((stem, _pick(rng, ("comp", "arp"), p=(0.65, 0.35)), _pick(rng, style.extra_programs[stem])))
    excluded = set().union(*(style.extra_programs[s] for s in extra)) if extra else set()

    def program_for(role):
        choices = [p for p in style.programs[role] if p not in excluded]
        return _pick(rng, choices)

    if extra:
        harmony.append(("other", "pad", program_for("pad")))
        if rng.random() < 0.3:
            harmony.append(("other", "arp", program_for("arp")))
    else:
        harmony.append(("other", _pick(rng, ("comp", "arp"), p=(0.7, 0.3)), program_for("comp")))
        if rng.random() < 0.7:
            harmony.append(("other", "pad", program_for("pad")))
        if rng.random() < 0.3:
            harmony.append(("other", _pick(rng, ("comp", "arp")), program_for("arp")))
    # who plays the intro: at least one harmony part of every stem that has one
    intro_players = set()
    for stem in dict.fromkeys(h[0] for h in harmony):      # in order: never iterate a set of str here
        idx = [i for i, h in enumerate(harmony) if h[0] == stem]
        intro_players.add(idx[int(rng.integers(len(idx)))])
    for i, (stem, role, program) in enumerate(harmony):
        on = all_sections if i in intro_players or rng.random() < 0.3 else no_intro
        shared = sum(h[0] == stem for h in harmony) > 1
        if role == "pad" and shared and i not in intro_players and rng.random() < 0.4:
            on = on - {"verse"}                    # the pad enters with the chorus
        inst = _harmony_part(rng, song, n_bars, role, program, on, f"{stem}-{role}", style)
        gain = float(rng.uniform(-3, 0)) - (4.0 if role == "pad" else 0.0)
        pan = float(rng.uniform(-0.7, 0.7)) * style.pan_spread
        parts.append(Part(stem, role, inst, gain, pan))
    if rng.random() < 0.35:
        sung = {b for b, _ in vocal_bars}
        lead = _lead_part(rng, song, n_bars, program_for("lead"), sung, "other-lead", style.lead_range)
        if lead.notes:
            gain = float(rng.uniform(-4, -1))
            parts.append(Part("other", "lead", lead, gain, float(rng.uniform(-0.5, 0.5)) * style.pan_spread))
    room = float(rng.uniform(*style.room))           # reverb send (MIDI CC 91), per song and part
    for part in parts:
        cc = int(np.clip(room + rng.normal(0, 12) - (15 if part.stem == "bass" else 0), 0, 127))
        part.instrument.control_changes.append(pretty_midi.ControlChange(91, cc, 0.0))
    song.parts = parts
    song.room = room
    levels = style.stem_gain_db                      # drawn in this order: vocals, drums, bass, other, extras
    song.stem_gain_db = {stem: float(rng.uniform(*levels[stem])) for stem in ("vocals", "drums", "bass", "other")}
    for stem in extra:
        song.stem_gain_db[stem] = float(rng.uniform(*levels[stem]))
    return song


def _kick_lane(kick, song, meter) -> str:
    """The kick pattern of the song's first full groove bar, as a lane string (for the bass)."""
    steps = ["."] * meter.steps
    if kick is None:
        return "x" + "." * (meter.steps - 1)
    bar = next((s.start_bar for s in song.sections if s.name != "intro"), 0)
    t0 = song.time(bar * meter.steps)
    for n in kick.notes:
        if n.pitch == KICK and t0 - 0.02 <= n.start < t0 + song.bar_seconds - 0.02:
            k = int(round((n.start - t0) / song.step))
            if 0 <= k < meter.steps:
                steps[k] = "x"
    return "".join(steps)
