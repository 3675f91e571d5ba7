"""A singing voice from the source-filter model: glottal pulses, vowel formants, consonants, breaths.

Chapter 1 (the separation problem and the data). General-MIDI "voice" patches hold a single vowel
and sing no words, so the ``vocals`` stem of the synthetic MUSDB18 is sung by this small synthesiser
instead. It follows the classic model of speech science::

    voice(t) = formants[vowel(t)] * ( a(t) * glottal_pulses(f0(t)) + aspiration(t) )
               + consonant_noise(t)

- **Source**: a Rosenberg glottal-flow pulse per period of f0, differentiated (the lips radiate the
  derivative of the flow). Its spectrum is a comb of harmonics at k * f0 falling about 12 dB/octave.
- **Pitch** f0(t): the melody's notes joined by portamento (a one-pole glide), with vibrato that
  fades in after each note's onset, and a slow random drift.
- **Filter**: five formant resonances per vowel (a cascade of second-order resonators, applied frame
  by frame in the STFT domain so the vowel can change every syllable), with 40 ms transitions.
- **Consonants** at syllable starts: fricatives (s, sh, f, v, z) and plosive bursts (p, t, k, b, d, g)
  as band-limited noise, nasals and liquids (m, n, l, r, w, y) as short voiced segments with their own
  formants, h as breath through the vowel's formants.
- **Breaths** before each phrase: soft aspiration noise.

Everything is numpy/scipy and seeded by the caller's ``numpy.random.Generator``, so the same notes and
seed give the same samples.
"""
from __future__ import annotations

from dataclasses import dataclass

import numpy as np
from scipy import signal

#: Sung-vowel formant frequencies F1..F5 in Hz per voice type (the standard table for bass, tenor,
#: alto and soprano singers).
FORMANTS = {
    "bass": {"a": (600, 1040, 2250, 2450, 2750), "e": (400, 1620, 2400, 2800, 3100),
             "i": (250, 1750, 2600, 3050, 3340), "o": (400, 750, 2400, 2600, 2900),
             "u": (350, 600, 2400, 2675, 2950)},
    "tenor": {"a": (650, 1080, 2650, 2900, 3250), "e": (400, 1700, 2600, 3200, 3580),
              "i": (290, 1870, 2800, 3250, 3540), "o": (400, 800, 2600, 2800, 3000),
              "u": (350, 600, 2700, 2900, 3300)},
    "alto": {"a": (800, 1150, 2800, 3500, 4950), "e": (400, 1600, 2700, 3300, 4950),
             "i": (350, 1700, 2700, 3700, 4950), "o": (450, 800, 2830, 3500, 4950),
             "u": (325, 700, 2530, 3500, 4950)},
    "soprano": {"a": (800, 1150, 2900, 3900, 4950), "e": (350, 2000, 2800, 3600, 4950),
                "i": (270, 2140, 2950, 3900, 4950), "o": (450, 800, 2830, 3800, 4950),
                "u": (325, 700, 2700, 3800, 4950)},
}
#: Formant bandwidths B1..B5 in Hz per vowel.
BANDWIDTHS = {"a": (80, 90, 120, 130, 140), "e": (70, 80, 100, 120, 120),
              "i": (50, 90, 100, 120, 120), "o": (70, 80, 100, 130, 135),
              "u": (50, 60, 100, 120, 120)}
VOWELS = tuple(FORMANTS["tenor"])
#: Comfortable singing range (MIDI pitches) per voice type.
RANGES = {"bass": (43, 62), "tenor": (48, 69), "alto": (55, 74), "soprano": (60, 79)}

# Consonants: kind, duration (s), and either formants (voiced segments) or a noise band (Hz).
# kinds: "sonorant" = voiced, with its own formants (nasals, liquids, glides);
#        "fricative" = band noise (voiced ones keep some voicing); "stop" = closure then burst;
#        "aspirate" = h, breath noise through the following vowel's formants.
CONSONANTS = {
    "m": ("sonorant", 0.07, (250, 1100, 2200, 3000, 3800), 0.35),
    "n": ("sonorant", 0.06, (250, 1600, 2500, 3200, 3900), 0.35),
    "l": ("sonorant", 0.05, (360, 1300, 2700, 3200, 3900), 0.55),
    "r": ("sonorant", 0.05, (420, 1300, 1600, 3100, 3900), 0.55),
    "w": ("sonorant", 0.05, (300, 650, 2200, 3000, 3800), 0.6),
    "y": ("sonorant", 0.04, (280, 2100, 2900, 3400, 4000), 0.6),
    "s": ("fricative", 0.10, (4500, 10000), 0.30),
    "sh": ("fricative", 0.10, (1800, 5500), 0.30),
    "f": ("fricative", 0.08, (1200, 9000), 0.10),
    "z": ("fricative", 0.07, (4500, 10000), 0.15),
    "v": ("fricative", 0.06, (1200, 7000), 0.06),
    "p": ("stop", 0.05, (400, 1800), 0.25),
    "t": ("stop", 0.05, (3000, 8000), 0.35),
    "k": ("stop", 0.06, (1500, 3800), 0.30),
    "b": ("stop", 0.03, (300, 1500), 0.12),
    "d": ("stop", 0.03, (2500, 6000), 0.15),
    "g": ("stop", 0.035, (1300, 3500), 0.15),
    "h": ("aspirate", 0.07, None, 0.0),
}
VOICED = set("mnlrwyzvbdg")

_BREATH_FORMANTS = ((500, 1500, 2500, 3500, 4500), (200, 250, 300, 350, 400))
_N_FFT, _HOP = 1024, 256


@dataclass(frozen=True)
class Note:
    """One sung syllable: a pitch held from ``start`` to ``end`` (seconds) on ``vowel``,
    preceded by the consonant ``onset`` ("" for none). ``velocity`` in [0, 1]."""
    start: float
    end: float
    pitch: float
    velocity: float
    vowel: str = "a"
    onset: str = ""


@dataclass(frozen=True)
class Voice:
    """The singer: voice type, and the parameters of pitch control and voice quality."""
    kind: str = "tenor"
    formant_scale: float = 1.0   # vocal-tract length: > 1 is a shorter tract (brighter)
    vibrato_rate: float = 5.5    # Hz
    vibrato_depth: float = 0.35  # semitones, peak
    vibrato_delay: float = 0.2   # seconds into a note before vibrato starts
    glide: float = 0.045         # portamento time constant, seconds
    breathiness: float = 0.06    # aspiration noise relative to the pulses
    open_quotient: float = 0.6   # fraction of the glottal period the folds are open
    breath_level: float = 0.25   # level of the breaths between phrases

    @classmethod
    def random(cls, rng: np.random.Generator, kind: str | None = None) -> "Voice":
        """A random singer (voice type drawn if ``kind`` is None)."""
        kind = kind or str(rng.choice(list(RANGES)))
        return cls(kind=kind, formant_scale=float(rng.uniform(0.95, 1.06)),
                   vibrato_rate=float(rng.uniform(4.8, 6.3)),
                   vibrato_depth=float(rng.uniform(0.15, 0.55)),
                   vibrato_delay=float(rng.uniform(0.12, 0.35)),
                   glide=float(rng.uniform(0.03, 0.07)),
                   breathiness=float(rng.uniform(0.03, 0.15)),
                   open_quotient=float(rng.uniform(0.5, 0.7)),
                   breath_level=float(rng.uniform(0.12, 0.35)))


def rosenberg(phase: np.ndarray, open_quotient) -> np.ndarray:
    """Rosenberg glottal-flow pulse at ``phase`` in [0, 1) of each period (same shape as ``phase``):
    a raised cosine opening over 70% of the open phase, a quarter cosine closing, then closed."""
    tp = 0.7 * np.asarray(open_quotient)
    tn = 0.3 * np.asarray(open_quotient)
    opening = 0.5 * (1.0 - np.cos(np.pi * phase / tp))
    closing = np.cos(0.5 * np.pi * np.clip((phase - tp) / tn, 0.0, 1.0))
    return np.where(phase < tp, opening, np.where(phase < tp + tn, closing, 0.0))


def formant_response(freqs: np.ndarray, formants: np.ndarray, bandwidths: np.ndarray) -> np.ndarray:
    """Magnitude response of a cascade of second-order resonators, unit gain at 0 Hz.

    freqs: (bins,) Hz; formants, bandwidths: (frames, K) Hz -> (frames, bins).
    Each resonator peaks near F_k with gain about F_k / B_k and falls 12 dB/octave above it, so the
    cascade sets the relative levels of the formants by itself, as in the vocal tract. A real tract
    has more resonances above F5, which keep its response from collapsing there: above F5 + B5 the
    response falls only 9 dB/octave from its value at that knee.
    """
    fk = formants[:, None, :]
    half = 0.5 * bandwidths[:, None, :]

    def cascade(f):
        num = fk ** 2 + half ** 2
        den = np.sqrt(((f - fk) ** 2 + half ** 2) * ((f + fk) ** 2 + half ** 2))
        return np.prod(num / den, axis=-1)

    h = cascade(freqs[None, :, None])
    knee = formants[:, -1:] + bandwidths[:, -1:]                      # (frames, 1)
    at_knee = cascade(knee[:, :, None])
    f = np.maximum(freqs[None, :], 1.0)
    tail = at_knee * (knee / f) ** 1.5
    return np.where(f > knee, np.maximum(h, tail), h)


def _smooth(x: np.ndarray, rate: float, tau: float) -> np.ndarray:
    """One-pole low-pass (time constant ``tau`` seconds) along the last axis, started at x[0]."""
    a = np.exp(-1.0 / (tau * rate))
    y, _ = signal.lfilter([1 - a], [1, -a], x, zi=[a * x[0]])
    return y


def _wander(rng: np.random.Generator, n: int, rate: float, tau: float) -> np.ndarray:
    """Slow random fluctuation: white noise low-passed at time constant ``tau``, unit std, (n,)."""
    x = _smooth(rng.standard_normal(n), rate, tau)
    return x / (x.std() + 1e-12)


def _ramp(n: int) -> np.ndarray:
    return 0.5 - 0.5 * np.cos(np.pi * (np.arange(n) + 0.5) / max(n, 1))


_SOS_CACHE: dict = {}


def _band(lo: float, hi: float, rate: int):
    key = (lo, hi, rate)
    if key not in _SOS_CACHE:
        hi = min(hi, 0.45 * rate)
        _SOS_CACHE[key] = signal.butter(2, [lo, hi], btype="bandpass", fs=rate, output="sos")
    return _SOS_CACHE[key]


def sing(notes, n_samples: int, rate: int, voice: Voice, rng: np.random.Generator) -> np.ndarray:
    """Sing ``notes`` (a sequence of :class:`Note`) with ``voice``: returns (n_samples,) float64.

    The level is arbitrary (about unit RMS while singing); the caller mixes it. Phrases (groups of
    notes separated by rests of more than 0.3 s) are sung one at a time, each with its breath, so
    memory and time grow with the singing, not with the song.
    """
    n = int(n_samples)
    out = np.zeros(n)
    notes = sorted((x for x in notes if x.end > x.start and x.start * rate < n), key=lambda x: x.start)
    phrases, current = [], []
    for x in notes:
        if current and x.start - current[-1].end > 0.3:
            phrases.append(current)
            current = []
        current.append(x)
    if current:
        phrases.append(current)
    for phrase in phrases:
        t0 = max(phrase[0].start - 0.7, 0.0)                     # room for the breath and consonant
        t1 = min(phrase[-1].end + 0.35, n / rate)                # and for the release
        a, b = int(round(t0 * rate)), int(round(t1 * rate))
        if b - a < _N_FFT:
            continue
        shift = a / rate
        local = [Note(x.start - shift, x.end - shift, x.pitch, x.velocity, x.vowel, x.onset) for x in phrase]
        out[a:b] += _sing_phrase(local, b - a, rate, voice, rng)
    return out


def _sing_phrase(notes, n: int, rate: int, voice: Voice, rng: np.random.Generator) -> np.ndarray:
    """The source-filter voice for one phrase: ``notes`` sorted, times from the buffer's start -> (n,)."""
    table = FORMANTS[voice.kind]
    starts = np.array([x.start for x in notes])
    ends = np.array([x.end for x in notes])
    s_idx = np.clip((starts * rate).astype(int), 0, n)
    e_idx = np.clip((ends * rate).astype(int), 0, n)

    # --- control tracks: pitch (MIDI), voicing amplitude, aspiration ---------------------------------
    t = np.arange(n) / rate
    current = np.clip(np.searchsorted(s_idx, np.arange(n), side="right") - 1, 0, len(notes) - 1)
    target = np.array([x.pitch for x in notes])[current]
    pitch = _smooth(target, rate, voice.glide)                       # portamento
    since = t - starts[current]                                       # time into the current note
    length = (ends - starts)[current]
    depth = voice.vibrato_depth * np.clip((since - voice.vibrato_delay) / 0.25, 0.0, 1.0)
    depth *= (since < length + 0.1)                                   # vibrato lives inside the note
    rate_mod = voice.vibrato_rate * (1.0 + 0.06 * _wander(rng, n, rate, 0.4))
    pitch = pitch + depth * np.sin(2 * np.pi * np.cumsum(rate_mod) / rate)
    pitch = pitch + 0.08 * _wander(rng, n, rate, 0.15)               # slow drift, in semitones
    f0 = 440.0 * 2.0 ** ((pitch - 69.0) / 12.0)

    amp = np.zeros(n)
    gate = np.ones(n)          # consonants close or narrow the voicing
    asp = np.zeros(n)          # aspiration that is not tied to voicing (h, breaths, released stops)
    noise_track = np.zeros(n)  # fricatives and bursts, added after the formant filter
    overrides = []             # (start s, end s, formants, bandwidths) for consonant/breath segments
    attack, release = int(0.035 * rate), int(0.07 * rate)
    for i, x in enumerate(notes):
        s, e = s_idx[i], e_idx[i]
        legato_in = i > 0 and starts[i] - ends[i - 1] < 0.03
        legato_out = i + 1 < len(notes) and starts[i + 1] - ends[i] < 0.03
        if x.onset:   # a voiced consonant starts the voicing early
            s = _consonant(x, i, notes, rate, n, rng, gate, asp, noise_track, overrides)
        seg = np.full(max(e - s, 0), x.velocity)
        if not legato_in:
            k = min(attack, len(seg))
            seg[:k] *= _ramp(k)
        amp[s:e] = np.maximum(amp[s:e], seg)
        if not legato_out:
            tail = x.velocity * _ramp(release)[::-1][: n - e]
            amp[e:e + len(tail)] = np.maximum(amp[e:e + len(tail)], tail)
        # breath before a phrase (a rest of at least 0.25 s, or the first note)
        gap = starts[i] - (ends[i - 1] if i > 0 else -1.0)
        if gap > 0.25 and voice.breath_level > 0:
            dur = min(0.45, 0.6 * gap)
            b1 = s_idx[i] - int((CONSONANTS[x.onset][1] if x.onset else 0.0) * rate) - int(0.04 * rate)
            b0 = max(b1 - int(dur * rate), 0)
            if b1 - b0 > 16:
                asp[b0:b1] += voice.breath_level * x.velocity * np.sin(np.linspace(0, np.pi, b1 - b0)) ** 2
                overrides.append((b0 / rate, b1 / rate) + _BREATH_FORMANTS)
    amp = _smooth(amp * gate, rate, 0.005)
    amp *= 1.0 + 0.04 * _wander(rng, n, rate, 0.05)                  # shimmer

    # --- glottal source -----------------------------------------------------------------------------
    phase = np.cumsum(f0 / rate) % 1.0
    oq = np.clip(voice.open_quotient + 0.15 * (0.7 - amp), 0.35, 0.85)   # softer = more open, darker
    flow = rosenberg(phase, oq)
    pulses = np.diff(flow, prepend=flow[0]) * rate / f0                 # radiated: derivative of flow
    singing = amp > 0.05
    if singing.any():
        pulses /= np.sqrt(np.mean(pulses[singing] ** 2)) + 1e-12
    noise = rng.standard_normal(n)
    source = amp * pulses + voice.breathiness * amp * (0.4 + flow) * noise + asp * noise

    # --- formant filter, frame by frame -------------------------------------------------------------
    out = _formant_filter(source, rate, notes, starts, f0, table, voice, overrides)
    level = np.sqrt(np.mean(out[singing] ** 2)) if singing.any() else 1.0
    return out + level * noise_track


def _consonant(x: Note, i, notes, rate, n, rng, gate, asp, noise_track, overrides) -> int:
    """Shape the voicing gate, aspiration and noise for the consonant that opens note ``i``;
    the consonant sits just before the note's start so the vowel lands on the beat.
    Returns the sample where voicing starts (the consonant's start if it is voiced)."""
    kind, dur, spec, level = CONSONANTS[x.onset]
    dur *= rng.uniform(0.8, 1.25)
    lo_limit = notes[i - 1].start + 0.5 * (notes[i - 1].end - notes[i - 1].start) if i > 0 else 0.0
    c0 = max(x.start - dur, lo_limit, 0.0)
    a, b = int(c0 * rate), min(int(x.start * rate), n)
    if b - a < 8:
        return b
    m = b - a
    edge = min(int(0.008 * rate), m // 2)
    win = np.ones(m)
    win[:edge] = _ramp(edge)
    win[m - edge:] = _ramp(edge)[::-1]
    voiced = x.onset in VOICED
    if kind == "sonorant":
        gate[a:b] *= 1.0 - (1.0 - level) * win
        overrides.append((a / rate, b / rate, spec, (100, 120, 150, 200, 250)))
        return a
    gate[a:b] *= 1.0 - (0.75 if voiced else 1.0) * win
    if kind == "aspirate":
        asp[a:b] += 0.5 * x.velocity * win
        return b
    noise = signal.sosfilt(_band(spec[0], spec[1], rate), rng.standard_normal(m + 256))[256:]
    noise /= noise.std() + 1e-12
    if kind == "fricative":
        env = np.sin(np.linspace(0, np.pi, m)) ** 1.5
        noise_track[a:b] += level * x.velocity * env * noise
    else:  # stop: silence (closure), then a short burst at the release, then aspiration
        k = min(int(0.012 * rate), m)
        burst = np.exp(-np.arange(k) / (0.003 * rate))
        noise_track[b - k:b] += 2.0 * level * x.velocity * burst * noise[m - k:]
        if not voiced:
            k2 = min(int(0.03 * rate), n - b)
            asp[b:b + k2] += 0.4 * x.velocity * _ramp(k2)[::-1]
    return a if voiced else b


def _formant_filter(source, rate, notes, starts, f0, table, voice, overrides) -> np.ndarray:
    """Filter ``source`` (samples,) by the formants of the vowel sung at each STFT frame."""
    n = len(source)
    window = np.hanning(_N_FFT + 1)[:-1]
    pad = np.concatenate([np.zeros(_N_FFT // 2), source, np.zeros(_N_FFT)])
    n_frames = 1 + (n + _N_FFT // 2) // _HOP
    centres = np.arange(n_frames) * _HOP / rate                       # seconds
    idx = np.clip(np.searchsorted(starts, centres + 0.02, side="right") - 1, 0, len(notes) - 1)
    vowel_f = np.array([table[x.vowel] for x in notes], dtype=float)
    vowel_b = np.array([BANDWIDTHS[x.vowel] for x in notes], dtype=float)
    fmt, bw = vowel_f[idx], vowel_b[idx]
    for t0, t1, ff, bb in overrides:
        sel = (centres >= t0) & (centres < t1)
        fmt[sel], bw[sel] = ff, bb
    # 40 ms transitions between vowels and consonants
    k = max(int(0.04 * rate / _HOP), 1)
    kern = np.ones(k) / k
    fmt = np.stack([np.convolve(np.pad(c, (k, k), mode="edge"), kern, "same")[k:-k] for c in fmt.T], 1)
    bw = np.stack([np.convolve(np.pad(c, (k, k), mode="edge"), kern, "same")[k:-k] for c in bw.T], 1)
    fmt = fmt * voice.formant_scale
    f0_frames = f0[np.clip((centres * rate).astype(int), 0, n - 1)]
    fmt[:, 0] = np.maximum(fmt[:, 0], 1.1 * f0_frames)   # sopranos raise F1 above f0 on high notes
    freqs = np.fft.rfftfreq(_N_FFT, 1.0 / rate)
    out = np.zeros(len(pad))
    norm = np.zeros(len(pad))
    chunk = 512                                                       # frames at a time, bounded memory
    for c0 in range(0, n_frames, chunk):
        c1 = min(c0 + chunk, n_frames)
        pos = np.arange(c0, c1)[:, None] * _HOP + np.arange(_N_FFT)[None, :]
        spec = np.fft.rfft(pad[pos] * window, axis=1)
        spec *= formant_response(freqs, fmt[c0:c1], bw[c0:c1])
        frames = np.fft.irfft(spec, n=_N_FFT, axis=1) * window
        for j, frame in enumerate(frames):                          # weighted overlap-add
            p = (c0 + j) * _HOP
            out[p:p + _N_FFT] += frame
            norm[p:p + _N_FFT] += window ** 2
    out = out / np.maximum(norm, 1e-3)
    return out[_N_FFT // 2:_N_FFT // 2 + n]
