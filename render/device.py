"""Which device a command runs on: ``auto`` (CUDA when torch sees a GPU, else the CPU),
``cpu``, ``cuda`` or ``cuda:N``. Resolved once, at the edge, then passed down; nothing in
the model code names a device."""

from __future__ import annotations

import re

import torch

DEVICE_PATTERN = re.compile(r"^(auto|cpu|cuda(:\d+)?)$")


class DeviceError(ValueError):
    """A device that cannot be used here (one line: the option and why)."""


def resolve_device(name: str) -> torch.device:
    if not DEVICE_PATTERN.match(name):
        raise DeviceError(f"--device: {name!r} is not auto, cpu, cuda or cuda:N")
    if name == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    device = torch.device(name)
    if device.type == "cuda":
        if not torch.cuda.is_available():
            build = "a CPU-only build" if torch.version.cuda is None else f"built for CUDA {torch.version.cuda}"
            raise DeviceError(f"--device {name}: torch {torch.__version__} ({build}) sees no CUDA device")
        if device.index is not None and device.index >= torch.cuda.device_count():
            raise DeviceError(f"--device {name}: there are {torch.cuda.device_count()} CUDA devices (0..{torch.cuda.device_count() - 1})")
    return device


def synchronize(device: torch.device) -> None:
    """Waits for the device's queued work (timing a CUDA kernel needs it; a no-op on the CPU)."""
    if device.type == "cuda":
        torch.cuda.synchronize(device)
