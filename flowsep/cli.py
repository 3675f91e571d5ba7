"""The ``flowsep`` command: one verb per job.

Each verb lives in the module that does the work; that module has ``register_cli(subparsers)``,
which adds its parser and sets ``func`` to a function taking the parsed arguments. Only the module of
the verb being run is imported (``flowsep separate`` never loads the training, evaluation or
benchmark code), so a command starts in little more than the time of ``import torch``. A user's
mistake ends with one line ``flowsep: error: ...`` and exit status 2, never a traceback.
"""
from __future__ import annotations

import argparse
import importlib
import os
import sys

from . import __version__
from .errors import exit_status

#: verb -> (module that implements it, one line for ``flowsep --help``)
VERBS = {
    "synth": ("flowsep.data.synth", "generate a synthetic MUSDB18 (procedural songs, MUSDB18 wav layout)"),
    "train": ("flowsep.train", "train a flow prior on one instrument's clean recordings"),
    "priors": ("flowsep.bundle", "build and inspect prior bundles (one trained prior per source)"),
    "separate": ("flowsep.separate_files", "separate audio files into stems with a bundle of trained flow priors"),
    "evaluate": ("flowsep.evaluate", "score separations of a MUSDB18-format set with museval (BSS Eval v4)"),
    "train-supervised": ("flowsep.baselines.training", "train a supervised comparison system (Open-Unmix, "
                                                       "Conv-TasNet, Demucs, Wave-U-Net) on mixtures and stems"),
    "benchmark": ("flowsep.comparison", "rerun the paper's comparison: InstGlow, supervised systems, oracles"),
}


def _verb_of(argv: list[str]) -> str | None:
    """The verb of a command line: its first word that is not an option."""
    return next((a for a in argv if not a.startswith("-")), None)


def build_parser(argv: list[str] | None = None) -> argparse.ArgumentParser:
    """The parser of ``flowsep``; the full parser of the verb in ``argv`` (None: of every verb)."""
    parser = argparse.ArgumentParser(
        prog="flowsep", description="Music source separation with generative flow priors (InstGlow).")
    parser.add_argument("--version", action="version", version=f"flowsep {__version__}")
    sub = parser.add_subparsers(dest="verb", metavar="VERB")
    sub.required = True
    chosen = _verb_of(argv) if argv is not None else None
    for verb, (module, summary) in VERBS.items():
        if argv is None or verb == chosen:
            importlib.import_module(module).register_cli(sub)
        else:
            sub.add_parser(verb, help=summary)  # listed in --help; its module stays unloaded
    return parser


def main(argv=None) -> int:
    argv = sys.argv[1:] if argv is None else list(argv)
    parser = build_parser(argv)
    args = parser.parse_args(argv)
    try:
        return exit_status(lambda: args.func(args), "flowsep")
    except BrokenPipeError:  # the reader of our output went away (e.g. `flowsep priors info B | head`)
        os.dup2(os.open(os.devnull, os.O_WRONLY), sys.stdout.fileno())
        return 141


if __name__ == "__main__":
    sys.exit(main())
