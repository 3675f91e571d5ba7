"""Memory: how much there is, how much a computation will take, and sizes people can read.

Chapter: "Likelihood separation" (long songs). A separation plans its work before it starts: the song
is cut into segments, and the segments go through the priors in chunks small enough for the memory
that is free (CPU: the available RAM; CUDA: the free device memory), so that a long song fails with
one clear line, or not at all, instead of being killed by the operating system.
"""
from __future__ import annotations

import re
import resource
import sys

import psutil
import torch

from .errors import FlowsepError

_UNITS = {"": 1, "B": 1, "K": 2 ** 10, "M": 2 ** 20, "G": 2 ** 30, "T": 2 ** 40}


def parse_size(text) -> int:
    """'4G', '500M', '1.5GB', '2 GiB' or a number of bytes -> bytes (binary units)."""
    if isinstance(text, (int, float)) and not isinstance(text, bool):
        value, unit = float(text), ""
    else:
        m = re.fullmatch(r"\s*([0-9]*\.?[0-9]+)\s*([KMGT]?)(i?B)?\s*", str(text), flags=re.IGNORECASE)
        if not m:
            raise FlowsepError(f"cannot read the memory size {text!r}; write e.g. 4G, 500M or 1.5GB")
        value, unit = float(m.group(1)), m.group(2).upper()
    if not value > 0:
        raise FlowsepError(f"memory size must be positive, got {text!r}")
    return int(value * _UNITS[unit])


def format_size(n: float) -> str:
    """Bytes -> '1.23 GB' (binary units, as the operating system's tools count)."""
    for unit in ("B", "KB", "MB", "GB"):
        if abs(n) < 1024 or unit == "GB":
            return f"{n:.0f} {unit}" if unit == "B" else f"{n:.2f} {unit}"
        n /= 1024
    return f"{n:.2f} GB"


def available_bytes(device: torch.device) -> int:
    """Memory a new computation on ``device`` can use now: free device memory on CUDA, available RAM otherwise."""
    if device.type == "cuda":
        free, _ = torch.cuda.mem_get_info(device)
        return int(free)

    return int(psutil.virtual_memory().available)


def peak_resident_bytes() -> int:
    """This process's peak resident memory so far (the operating system's high-water mark)."""
    peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    return int(peak if sys.platform == "darwin" else peak * 1024)


def saved_for_backward_bytes(fn, *inputs) -> int:
    """Bytes of the tensors autograd keeps from ``fn(*inputs)`` for the backward pass.

    Each storage is counted once (many saved tensors are views of one another). This is the memory a
    forward pass holds on to until ``backward()``; it grows linearly with the input length.
    """
    seen: dict[int, int] = {}

    def pack(t):
        s = t.untyped_storage()
        seen[s.data_ptr()] = s.nbytes()
        return t

    with torch.autograd.graph.saved_tensors_hooks(pack, lambda t: t):
        fn(*inputs)
    return sum(seen.values())
