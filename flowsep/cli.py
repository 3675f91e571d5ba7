"""The ``flowsep`` command: one verb per job.

Each verb lives in the module that does the work; that module has ``register_cli(subparsers)``,
which adds its parser and sets ``func`` to a function taking the parsed arguments. A user's
mistake ends with one line ``flowsep: error: ...`` and exit status 2, never a traceback.
"""
from __future__ import annotations

import argparse
import importlib
import os
import sys

from . import __version__
from .errors import FlowsepError

VERBS = {
    "synth": "flowsep.data.synth",
    "train": "flowsep.train",
    "priors": "flowsep.bundle",
    "separate": "flowsep.separate_files",
    "evaluate": "flowsep.evaluate",
    "train-supervised": "flowsep.baselines.training",
    "benchmark": "flowsep.comparison",
}


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="flowsep", description="Music source separation with generative flow priors (InstGlow).")
    parser.add_argument("--version", action="version", version=f"flowsep {__version__}")
    sub = parser.add_subparsers(dest="verb", metavar="VERB")
    sub.required = True
    for module in VERBS.values():
        importlib.import_module(module).register_cli(sub)
    return parser


def main(argv=None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    try:
        return int(args.func(args) or 0)
    except FlowsepError as e:
        print(f"flowsep: error: {e}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        print("flowsep: interrupted", file=sys.stderr)
        return 130
    except BrokenPipeError:  # the reader of our output went away (e.g. `flowsep priors info B | head`)
        os.dup2(os.open(os.devnull, os.O_WRONLY), sys.stdout.fileno())
        return 141


if __name__ == "__main__":
    sys.exit(main())
