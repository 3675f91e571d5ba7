"""flowsep: music source separation with generative flow priors (InstGlow), and the book around it.

The public API::

    import flowsep
    cfg = flowsep.PriorConfig.preset("smoke" | "cpu" | "paper")
    prior = flowsep.FlowPrior(cfg)
    z, logdet = prior(x); x = prior.inverse(z); prior.log_prob(mag); prior.sample(n, frames)
    sep = flowsep.Separator({"vocals": p1, "bass": p2}); stems = sep(mixture, sample_rate)
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
    raise AttributeError(f"module 'flowsep' has no attribute {name!r}")
