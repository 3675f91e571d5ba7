"""flowsep: music source separation with generative flow priors (InstGlow), and the book around it.

The public API::

    import flowsep
    cfg = flowsep.PriorConfig.preset("smoke" | "cpu" | "paper")
    prior = flowsep.FlowPrior(cfg)
    z, logdet = prior(x); x = prior.inverse(z); prior.log_prob(mag); prior.sample(n, frames)
    sep = flowsep.Separator({"vocals": p1, "bass": p2}); stems = sep(mixture, sample_rate)
    priors = flowsep.load_bundle("data/priors/my-bundle")       # {source: FlowPrior}, checksums checked
    paths = flowsep.separate_file("song.mp3", priors, out="separated")   # one file per stem
"""
__version__ = "0.1.0"

from .errors import FlowsepError  # noqa: E402
from .prior import FlowPrior, PriorConfig  # noqa: E402

__all__ = ["FlowsepError", "FlowPrior", "PriorConfig", "__version__"]


def __getattr__(name):
    # heavier parts load on first use, so `import flowsep` stays quick
    if name == "Separator":
        from .separate import Separator
        return Separator
    if name == "load_bundle":
        from .bundle import load_bundle
        return load_bundle
    if name == "separate_file":
        from .separate_files import separate_file
        return separate_file
    raise AttributeError(f"module 'flowsep' has no attribute {name!r}")
