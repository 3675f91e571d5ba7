"""Writes instglow_reference.pt: two smoke priors, a stereo mixture and the published algorithm's output.

Run once, at the commit before the separator was reorganised for bounded memory and separation methods
(d1ed561), with ``python tests/data/make_instglow_reference.py``; tests/test_separate.py checks that
``Separator(priors, method="instglow")`` still gives this output (it is bit-identical after the change to
chunks and blocks; the test allows 1e-6 for other CPUs' rounding).
"""
from pathlib import Path

import numpy as np
import torch

import flowsep
from flowsep.separate import Separator

HERE = Path(__file__).resolve().parent


def main():
    import sys
    sys.path.insert(0, str(HERE.parent))
    from test_separate import burst_source, fit_prior, tone_source

    torch.set_num_threads(1)
    priors = {"tone": fit_prior(tone_source, 1, steps=60), "burst": fit_prior(burst_source, 2, steps=60)}
    rng = np.random.default_rng(5)
    rate = 11025  # not the priors' 8 kHz: the resampling round trip is part of what is checked
    tone, burst = tone_source(2.5, rng, rate), burst_source(2.5, rng, rate)
    mixture = np.stack([tone + 0.4 * burst, 0.6 * tone + burst]).astype(np.float32)
    out = {"mixture": torch.from_numpy(mixture), "rate": rate,
           "priors": {k: p.checkpoint() for k, p in priors.items()}}
    # 2.5 s in 1-s segments: several segments, cross-faded
    sep = Separator(priors, iterations=40, segment_seconds=1.0, overlap=0.25, progress=False)
    result = sep.estimate(mixture, rate)
    out["trace"] = torch.tensor(sep.trace)
    for post in ("none", "mask", "wiener"):
        out[post] = {k: torch.from_numpy(v) for k, v in result.render(post).items()}
    torch.save(out, HERE / "instglow_reference.pt")
    print("trace", sep.trace[0], sep.trace[-1])


if __name__ == "__main__":
    main()
