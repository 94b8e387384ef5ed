"""Choosing the torch device: the GPU when there is one, unless told otherwise.

A device string comes from a user (the CLI's --device, a session document, the sidebar), so it is checked
against the devices Atlas knows (auto, cpu, cuda, cuda:N, mps) and against what this machine has; anything
else is an AtlasError that names the choices, never torch's own exception.
"""

from __future__ import annotations

import re
from collections.abc import Iterator
from contextlib import contextmanager

import torch

from core.errors import AtlasError

_DEVICE = re.compile(r"^(auto|cpu|mps|cuda)(?::(\d{1,3}))?$")


class DeviceError(AtlasError):
    """A device name that is unknown or not available on this machine."""


def available_devices() -> list[str]:
    """Devices this machine can run on, best first."""
    devices = []
    if torch.cuda.is_available():
        devices.append("cuda")
    if getattr(torch.backends, "mps", None) is not None and torch.backends.mps.is_available():
        devices.append("mps")
    devices.append("cpu")
    return devices


def check_device_name(preference: str | None) -> str:
    """`preference` normalised ("auto" for None/""), or DeviceError when it is not a device Atlas knows."""
    if preference in (None, ""):
        return "auto"
    match = _DEVICE.match(str(preference).strip().lower()) if isinstance(preference, str) else None
    if match is None or (match.group(2) is not None and match.group(1) != "cuda"):
        raise DeviceError(f"Unknown device {preference!r}: use auto, cpu, cuda, cuda:<index> or mps.")
    return match.group(0)


def pick_device(preference: str | None = None) -> torch.device:
    """`preference` may be None/"auto" (best available), "cpu", "cuda", "cuda:1", "mps"."""
    name = check_device_name(preference)
    if name == "auto":
        return torch.device(available_devices()[0])
    device = torch.device(name)
    if device.type == "cuda":
        if not torch.cuda.is_available():
            raise DeviceError(f"Device {preference!r} was asked for, but no CUDA GPU is visible here; "
                              "use auto or cpu.")
        count = torch.cuda.device_count()
        if device.index is not None and device.index >= count:
            raise DeviceError(f"Device {preference!r} was asked for, but this machine has {count} CUDA GPU(s) "
                              f"(cuda:0 to cuda:{count - 1}).")
    if device.type == "mps" and "mps" not in available_devices():
        raise DeviceError(f"Device {preference!r} was asked for, but Apple's MPS is not available here; "
                          "use auto or cpu.")
    return device


@contextmanager
def single_thread() -> Iterator[None]:
    """Run the block with one torch intra-op thread, then restore the count.

    For training loops on tiny tensors (the toy lab): their ops are too small to gain from threads, and on a
    busy machine each op's thread hand-off costs more than the op (measured on the 2-core machine under load:
    the toy sparsity sweep took 75 s on one thread and over 300 s on two)."""
    before = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        yield
    finally:
        torch.set_num_threads(before)
