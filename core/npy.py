"""Reading `.npy` headers without trusting them: the shape and dtype are checked before any array is allocated.

`np.load` allocates whatever the header declares, so a 100-byte file that claims shape (10**12,) asks for
terabytes (or fails with a foreign exception). Everything Atlas reads from disk or from a bundle goes through
`read_header` first: the header is parsed from at most MAX_HEADER_BYTES, the dtype must be plain numbers or
booleans (never objects, so nothing can need pickle), and the byte count the shape implies must equal what is
actually there and fit the caller's cap.
"""

from __future__ import annotations

import io
import math
from dataclasses import dataclass
from typing import BinaryIO

import numpy as np

from core.errors import AtlasError

MAX_HEADER_BYTES = 65_536   # numpy writes headers of a few hundred bytes; version 2/3 allow 4 GiB
MAX_NDIM = 16
ALLOWED_KINDS = "biuf"      # bool, signed/unsigned integers, floats: everything Atlas stores


class NpyError(AtlasError):
    """An `.npy` file (or bundle member) whose header is unreadable, unsafe or inconsistent."""


@dataclass(frozen=True)
class NpyHeader:
    shape: tuple[int, ...]
    dtype: np.dtype
    fortran_order: bool
    data_offset: int    # bytes before the array data (magic + header)

    @property
    def data_bytes(self) -> int:
        return int(math.prod(self.shape)) * int(self.dtype.itemsize)


def read_header(stream: BinaryIO, name: str = "array") -> NpyHeader:
    """Parse and check the header at the start of `stream` (left positioned at the array data)."""
    try:
        version = np.lib.format.read_magic(stream)
        if version == (1, 0):
            shape, fortran, dtype = np.lib.format.read_array_header_1_0(stream, max_header_size=MAX_HEADER_BYTES)
        elif version in ((2, 0), (3, 0)):
            shape, fortran, dtype = np.lib.format.read_array_header_2_0(stream, max_header_size=MAX_HEADER_BYTES)
        else:
            raise ValueError(f"unknown .npy format version {version}")
        offset = stream.tell()
    except (ValueError, OSError, EOFError, SyntaxError, TypeError) as error:
        raise NpyError(f"{name} is not a readable .npy array ({error}).") from None
    dtype = np.dtype(dtype)
    if dtype.hasobject or dtype.fields is not None or dtype.kind not in ALLOWED_KINDS or dtype.subdtype is not None:
        raise NpyError(f"{name} holds {dtype!s} values; only numbers and booleans are accepted.")
    if not isinstance(shape, tuple) or len(shape) > MAX_NDIM or any(
            not isinstance(n, int) or n < 0 for n in shape):
        raise NpyError(f"{name} declares an invalid shape {shape!r}.")
    return NpyHeader(tuple(int(n) for n in shape), dtype, bool(fortran), int(offset))


def check_size(header: NpyHeader, available: int, name: str = "array", max_bytes: int | None = None) -> None:
    """The declared shape must describe exactly the `available` data bytes and stay under `max_bytes`."""
    declared = header.data_bytes
    if max_bytes is not None and declared > max_bytes:
        raise NpyError(f"{name} declares shape {header.shape} ({declared:,} bytes); the limit is {max_bytes:,} bytes.")
    if declared != available:
        raise NpyError(f"{name} declares shape {header.shape} ({declared:,} bytes) but holds {available:,} bytes: "
                       "it is truncated or corrupt.")


def array_from_bytes(content: bytes, name: str = "array", max_bytes: int | None = None) -> np.ndarray:
    """A read-only array from the full bytes of an `.npy` file, header checked before anything is allocated."""
    header = read_header(io.BytesIO(content), name)
    check_size(header, len(content) - header.data_offset, name, max_bytes)
    flat = np.frombuffer(content, dtype=header.dtype, count=math.prod(header.shape), offset=header.data_offset)
    return flat.reshape(header.shape, order="F" if header.fortran_order else "C")
