"""Choosing the torch device: the GPU when there is one, unless told otherwise."""

from __future__ import annotations

import torch


def available_devices() -> list[str]:
    """Devices this machine can run on, best first."""
    devices = []
    if torch.cuda.is_available():
        devices.append("cuda")
    if getattr(torch.backends, "mps", None) is not None and torch.backends.mps.is_available():
        devices.append("mps")
    devices.append("cpu")
    return devices


def pick_device(preference: str | None = None) -> torch.device:
    """`preference` may be None/"auto" (best available), "cpu", "cuda", "cuda:1", "mps"."""
    if preference in (None, "", "auto"):
        return torch.device(available_devices()[0])
    device = torch.device(preference)
    if device.type == "cuda" and not torch.cuda.is_available():
        from core.errors import AtlasError

        raise AtlasError(f"Device {preference!r} was asked for, but no CUDA GPU is visible here.")
    return device
