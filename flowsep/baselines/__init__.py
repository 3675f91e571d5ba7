"""The paper's comparison systems: fully supervised separators, oracles and trivial bounds.

Chapter: "Evaluation".

Every system here has the call of InstGlow's :class:`flowsep.separate.Separator`,
``stems = system(mixture, rate)`` -> {target: (channels, samples)} (the oracles also take the true stems),
so one evaluation code scores them all (:func:`flowsep.evaluate.evaluate_separator`)::

    from flowsep.baselines import train_supervised, load_supervised, OracleWiener
    umx = train_supervised("openunmix", root, profile="cpu", out="umx.pt")   # or load_supervised("umx.pt")
    stems = umx(mixture, 44100)
"""
from .models import (DISPLAY_NAMES, MODEL_NAMES, TARGETS, SupervisedConfig, SupervisedSeparator,
                     build_network, training_budget)
from .oracles import MixtureAsEstimate, OracleRatioMask, OracleWiener
from .training import ensure_supervised, load_supervised, train_supervised
from .waveunet import WaveUNet

__all__ = ["DISPLAY_NAMES", "MODEL_NAMES", "TARGETS", "SupervisedConfig", "SupervisedSeparator", "build_network",
           "training_budget", "MixtureAsEstimate", "OracleRatioMask", "OracleWiener", "ensure_supervised",
           "load_supervised", "train_supervised", "WaveUNet"]
