"""Where computation runs: the device, mixed precision and the processes of a distributed run.

Chapter: used by training ("Training the source priors") and separation ("Likelihood separation").
"""
from __future__ import annotations

import os

import torch

from .errors import FlowsepError


def resolve_device(device: str | torch.device = "auto") -> torch.device:
    """"auto" -> cuda if available, else cpu; "cuda" without a GPU is a user error."""
    if str(device) == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    try:
        dev = torch.device(device)
    except RuntimeError:
        raise FlowsepError(f"unknown device {device!r}; use auto, cpu or cuda") from None
    if dev.type == "cuda" and not torch.cuda.is_available():
        raise FlowsepError("device cuda asked for but no CUDA GPU is available; use --device cpu or auto")
    return dev


def cpu_bf16_supported() -> bool:
    """True on CPUs with bfloat16 units (AVX-512 BF16 or AMX), where bf16 autocast pays off."""
    try:
        return bool(torch.ops.mkldnn._is_mkldnn_bf16_supported())
    except (AttributeError, RuntimeError):
        return False


def autocast_for(device: torch.device, enabled: bool):
    """The mixed-precision context of a step on ``device``: fp16 on CUDA, bf16 on CPUs that have it.

    A no-op when ``enabled`` is False or the device has no fast low precision.
    """
    if enabled and device.type == "cuda":
        return torch.autocast("cuda", dtype=torch.float16)
    if enabled and device.type == "cpu" and cpu_bf16_supported():
        return torch.autocast("cpu", dtype=torch.bfloat16)
    return torch.autocast(device.type, enabled=False)


def bf16_autocast(device: torch.device, enabled: bool = True):
    """bf16 autocast where the device computes it fast (CUDA GPUs with bf16, CPUs with bf16 units), else a no-op.

    For work without gradient scaling, such as a separation's search, whose gradients are too small
    for fp16's range.
    """
    fast = (device.type == "cuda" and torch.cuda.is_bf16_supported()) or (device.type == "cpu" and cpu_bf16_supported())
    return torch.autocast(device.type, dtype=torch.bfloat16, enabled=bool(enabled and fast))


def dist_info() -> tuple[int, int]:
    """(rank, world size) of this process: (0, 1) unless started by ``torchrun``."""
    return int(os.environ.get("RANK", 0)), int(os.environ.get("WORLD_SIZE", 1))
