"""BSS Eval v4, the images version museval computes, with fewer operations: the scores of both protocols.

Chapter: "Evaluation".

``museval.evaluate(references, estimates, win, hop)`` in its default mode (v4) fits one set of distortion
filters per estimate on the whole signals, then takes four energy ratios in every window.
:func:`bss_eval` computes the same numbers (equal to museval's up to float rounding: checked in
tests/test_evaluate.py) and changes only how the arithmetic is arranged:

- the least-squares fits of all the estimates share one factorisation of the references' Gram matrix
  (museval factorises it again for every estimate);
- a window's references are transformed once, and their spectra serve every estimate and channel
  (museval transforms them again for every pair of sources, channels and estimates);
- that factorisation depends on the references alone, so it is kept for the last few sets of references
  scored (:data:`CACHED_REFERENCES`): a race of up to that many songs, which scores every system on the
  same songs, factorises each song's Gram matrix once, not once per system (with more songs than that, each
  system's pass evicts the songs the next one needs: no gain, no harm). :func:`clear_cache` frees them.

The decomposition (Vincent, Gribonval & Févotte 2006; v4: Stöter, Liutkus & Ito 2018). With references
s_j (nsrc sources, nchan channels each) and the estimate ŝ of source t, both (samples, nchan):

    P(ŝ)    the projection of ŝ on every reference channel delayed by 0..L-1 samples (L = filters_len)
    P_t(ŝ)  the projection on the delayed channels of s_t alone
    e_spat = P_t(ŝ) - s_t      e_interf = P(ŝ) - P_t(ŝ)      e_artif = ŝ - P(ŝ)
    SDR = ||s_t||² / ||e_spat + e_interf + e_artif||²     ISR = ||s_t||² / ||e_spat||²
    SIR = ||s_t + e_spat||² / ||e_interf||²               SAR = ||s_t + e_spat + e_interf||² / ||e_artif||²

in dB. The projections' filters are fitted once on the whole signals (v4); in each window the windowed
references are filtered with them, and the ratios are taken over the window and the L-1 samples the
filters ring past its end. A window in which any reference or any estimate is silent scores NaN.
"""
from __future__ import annotations

import hashlib
import warnings
from collections import OrderedDict

import numpy as np
from scipy import fft as sfft
from scipy import linalg as slinalg

FILTERS_LEN = 512
#: how many sets of references keep their factorised Gram matrices (about 170 MB each for four stereo sources)
CACHED_REFERENCES = 8
_factors_cache: OrderedDict = OrderedDict()


def _any_silent(sources: np.ndarray) -> bool:
    """True if some source of (nsrc, samples, nchan) is zero at every sample (summed over its channels)."""
    return bool(np.any(np.all(sources.sum(axis=2) == 0, axis=1)))


def windows(n: int, win: float, hop: float) -> list[slice]:
    """museval's framing: windows of ``win`` samples every ``hop``, the last one ending at or before ``n``
    (one window over everything when ``win`` >= ``n``)."""
    if not win < n:
        return [slice(0, n)]
    count = int(np.floor((n - win + hop) / hop))
    return [slice(int(np.floor(k * hop)), int(np.floor(min(k * hop + win, n)))) for k in range(count)]


def _channels_rows(x: np.ndarray) -> np.ndarray:
    """(nsrc, samples, nchan) -> (nsrc*nchan, samples), row j*nchan + c is channel c of source j."""
    return np.moveaxis(x, 2, 1).reshape(-1, x.shape[1])


def _gram(x_f: np.ndarray, nfft: int, length: int) -> np.ndarray:
    """The Gram matrix of delayed signals from their spectra.

    x_f: (K, nfft//2+1) rfft of K signals zero-padded to nfft >= samples + length - 1 ->
    (K*length, K*length), entry (p*length + a, q*length + b) = <x_p delayed by a, x_q delayed by b>.
    """
    k = x_f.shape[0]
    lags = (np.arange(length)[:, None] - np.arange(length)[None, :]) % nfft      # a - b, wrapped
    g = np.empty((k, length, k, length))
    for p in range(k):
        for q in range(p, k):
            corr = sfft.irfft(x_f[q] * np.conj(x_f[p]), nfft)      # corr[m] = sum_t x_q[t + m] x_p[t]
            block = corr[lags]
            g[p, :, q, :] = block
            g[q, :, p, :] = block.T
    return g.reshape(k * length, k * length)


def _cross(x_f: np.ndarray, e_f: np.ndarray, nfft: int, length: int) -> np.ndarray:
    """(K*length, E): entry (p*length + a, e) = <x_p delayed by a, e_e>, from the spectra of both."""
    out = np.empty((x_f.shape[0], length, e_f.shape[0]))
    for p in range(x_f.shape[0]):
        out[p] = sfft.irfft(e_f * np.conj(x_f[p]), nfft, axis=-1)[:, :length].T
    return out.reshape(-1, e_f.shape[0])


class _Factored:
    """A Gram matrix A ready to solve (A + eps I) X = B for any B: its LU factors, or A itself where A + eps I
    is singular (then least squares, as museval)."""

    def __init__(self, a: np.ndarray):
        loaded = a.copy()
        loaded.flat[::a.shape[0] + 1] += np.finfo(float).eps
        with warnings.catch_warnings():                    # a singular matrix is handled below, not warned of
            warnings.simplefilter("ignore", slinalg.LinAlgWarning)
            lu, piv = slinalg.lu_factor(loaded, overwrite_a=True, check_finite=False)
        singular = not np.all(np.diag(lu))                 # a zero pivot: np.linalg.solve would refuse
        self.lu, self.piv, self.a = (None, None, a) if singular else (lu, piv, None)

    def solve(self, b: np.ndarray) -> np.ndarray:
        if self.lu is None:
            return np.linalg.lstsq(self.a, b, rcond=None)[0]
        return slinalg.lu_solve((self.lu, self.piv), b, check_finite=False)


def clear_cache() -> None:
    """Forget the kept factorisations (about 170 MB each for four stereo sources)."""
    _factors_cache.clear()


def _reference_factors(references: np.ndarray, x_f: np.ndarray, nfft: int, filters_len: int):
    """(full, own): the factored Gram matrix of all the references' delayed channels, and of each source's
    alone; kept for the last :data:`CACHED_REFERENCES` sets of references (keyed by their bytes)."""
    key = (references.shape, references.dtype.str, filters_len,
           hashlib.blake2b(np.ascontiguousarray(references).data).hexdigest())
    if key in _factors_cache:
        _factors_cache.move_to_end(key)
        return _factors_cache[key]
    nsrc, _, nchan = references.shape
    size = nchan * filters_len
    gram = _gram(x_f, nfft, filters_len)
    factors = (_Factored(gram), [_Factored(gram[t * size:(t + 1) * size, t * size:(t + 1) * size])
                                 for t in range(nsrc)])
    _factors_cache[key] = factors
    while len(_factors_cache) > CACHED_REFERENCES:
        _factors_cache.popitem(last=False)
    return factors


def projection_filters(references: np.ndarray, estimates: np.ndarray, filters_len: int = FILTERS_LEN):
    """The v4 distortion filters, fitted on the whole signals.

    references, estimates: (nsrc, samples, nchan), estimate t of reference t ->
    (full, own): full (nsrc_t, nsrc, nchan_in, nchan_out, filters_len) projects estimate t on every
    reference; own (nsrc_t, nchan_in, nchan_out, filters_len) on reference t alone.
    """
    nsrc, n, nchan = references.shape
    size = nchan * filters_len
    nfft = sfft.next_fast_len(n + filters_len - 1, real=True)
    x_f = sfft.rfft(_channels_rows(references), nfft, axis=-1)
    e_f = sfft.rfft(_channels_rows(estimates), nfft, axis=-1)
    gram_all, gram_own = _reference_factors(references, x_f, nfft, filters_len)
    cross = _cross(x_f, e_f, nfft, filters_len)                   # (nsrc*size, nsrc*nchan)
    full = gram_all.solve(cross).reshape(nsrc, nchan, filters_len, nsrc, nchan)
    own = np.stack([gram_own[t].solve(cross[t * size:(t + 1) * size, t * nchan:(t + 1) * nchan])
                    for t in range(nsrc)])
    own = own.reshape(nsrc, nchan, filters_len, nchan)
    return full.transpose(3, 0, 1, 4, 2), own.transpose(0, 1, 3, 2)


def _db(num: float, den: float) -> float:
    return np.inf if den == 0 else 10 * np.log10(num / den)


def bss_eval(references, estimates, win: float = 44100, hop: float = 44100, filters_len: int = FILTERS_LEN):
    """museval.evaluate(references, estimates, win, hop) in its default mode (v4, images, no permutation).

    references, estimates: (nsrc, samples, nchan) arrays, estimate t of reference t; estimates longer than
    the references are cut, shorter ones padded with zeros. Returns (SDR, ISR, SIR, SAR), each
    (nsrc, windows) in dB. Like museval, a reference or estimate that is silent throughout is an error
    (ValueError), and a window in which any of them is silent is NaN.
    """
    refs = np.asarray(references, dtype=float)
    ests = np.asarray(estimates, dtype=float)
    if refs.ndim != 3 or ests.ndim != 3 or ests.shape[::2] != refs.shape[::2]:
        raise ValueError(f"references {refs.shape} and estimates {ests.shape} must be (nsrc, samples, nchan) "
                         "with the same sources and channels")
    n = refs.shape[1]
    ests = ests[:, :n] if ests.shape[1] >= n else np.pad(ests, ((0, 0), (0, n - ests.shape[1]), (0, 0)))
    if _any_silent(refs):
        raise ValueError("a reference source is silent throughout; every reference must be non-silent")
    if _any_silent(ests):
        raise ValueError("an estimated source is silent throughout; every estimate must be non-silent")
    full, own = projection_filters(refs, ests, filters_len)
    framing = windows(n, win, hop)
    out = np.full((4, refs.shape[0], len(framing)), np.nan)
    spectra = {}                                   # the filters' spectra, per transform length
    for w, cut in enumerate(framing):
        if _any_silent(refs[:, cut]) or _any_silent(ests[:, cut]):
            continue
        out[:, :, w] = _window_scores(refs[:, cut], ests[:, cut], full, own, spectra)
    return out[0], out[1], out[2], out[3]


def _window_scores(refs: np.ndarray, ests: np.ndarray, full, own, spectra: dict) -> np.ndarray:
    """(4, nsrc) SDR, ISR, SIR, SAR of one window: refs, ests (nsrc, samples, nchan)."""
    nsrc, n, nchan = refs.shape
    m = n + full.shape[-1] - 1                     # the filtered window, with the filters' ring
    nfft = sfft.next_fast_len(m, real=True)
    if nfft not in spectra:
        spectra[nfft] = (sfft.rfft(full, nfft, axis=-1), sfft.rfft(own, nfft, axis=-1))
    full_f, own_f = spectra[nfft]
    r_f = sfft.rfft(np.moveaxis(refs, 2, 1), nfft, axis=-1)          # (nsrc, nchan, freq)
    proj_all = sfft.irfft(np.einsum("tjiof,jif->tof", full_f, r_f), nfft, axis=-1)[..., :m]
    proj_own = sfft.irfft(np.einsum("tiof,tif->tof", own_f, r_f), nfft, axis=-1)[..., :m]
    s_true = np.zeros((nsrc, nchan, m))
    s_true[..., :n] = np.moveaxis(refs, 2, 1)
    est = np.zeros((nsrc, nchan, m))
    est[..., :n] = np.moveaxis(ests, 2, 1)
    e_spat = proj_own - s_true
    e_interf = proj_all - s_true - e_spat
    e_artif = est - s_true - e_spat - e_interf
    scores = np.empty((4, nsrc))
    for t in range(nsrc):
        energy = lambda x: float(np.sum(x[t] ** 2))  # noqa: E731
        scores[:, t] = (_db(energy(s_true), energy(e_spat + e_interf + e_artif)),
                        _db(energy(s_true), energy(e_spat)),
                        _db(energy(s_true + e_spat), energy(e_interf)),
                        _db(energy(s_true + e_spat + e_interf), energy(e_artif)))
    return scores
