"""Deterministic sampling keys: uniform hashes of (seed, corpus chunk, position[, feature]) and bottom-k
selection per cell, so a sharded harvest merges to exactly the one-pass result."""

from __future__ import annotations

from typing import TypeVar

import numpy as np
import torch

_Ints = TypeVar("_Ints", torch.Tensor, np.ndarray)

_MASK32 = 0xFFFFFFFF
EMPTY_KEY = 1 << 62  # larger than any (32-bit) sampling key
TOP_EMPTY = (1 << 63) - 1  # larger than any top-k order key (< 2^62)


def mix32(x: _Ints) -> _Ints:
    """lowbias32 integer hash on int64 tensors or numpy arrays holding values in [0, 2^32).

    int64 products wrap in two's complement (in torch and numpy alike), so masking keeps the exact low 32 bits.
    """
    x = x & _MASK32
    x = x ^ (x >> 16)
    x = (x * 0x7FEB352D) & _MASK32
    x = x ^ (x >> 15)
    x = (x * 0x846CA68B) & _MASK32
    return x ^ (x >> 16)


def hash_keys(seed: int, *parts: torch.Tensor) -> torch.Tensor:
    """A 32-bit key per element, uniform and deterministic in (seed, parts...)."""
    h = mix32(torch.as_tensor(seed * 0x9E3779B9 + 0x632BE5AB, dtype=torch.int64))
    for part in parts:
        h = mix32(h ^ mix32(part.to(torch.int64) + 0x165667B1))
    return h


def hash_keys_np(seed: int, *parts: np.ndarray) -> np.ndarray:
    """hash_keys on int64 numpy arrays: the same bits (int64 products wrap alike in numpy and torch)."""
    with np.errstate(over="ignore"):
        h = mix32(np.asarray(seed * 0x9E3779B9 + 0x632BE5AB, dtype=np.int64))
        for part in parts:
            h = mix32(h ^ mix32(np.asarray(part, dtype=np.int64) + 0x165667B1))
    return np.asarray(h, dtype=np.int64)


def bottom_per_cell(cells: torch.Tensor, keys: torch.Tensor, m: int) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """For entries labelled by cell, the (up to) m entries with the smallest 32-bit key per cell, for the cells
    that hold entries only (the work follows the entries, not the number of cells).

    Returns (occupied cells [u] ascending, entry index [u, m] with -1 for empty slots, key [u, m] with
    EMPTY_KEY). One sort of a composite int64 (cell << 32 | key); no Python loop over cells.
    """
    device = cells.device
    if cells.numel() == 0 or m == 0:
        empty = torch.zeros(0, dtype=torch.int64, device=device)
        return (empty, torch.full((0, m), -1, dtype=torch.int64, device=device),
                torch.full((0, m), EMPTY_KEY, dtype=torch.int64, device=device))
    order, sorted_cells = _cell_order(cells.to(torch.int64), keys)
    occupied, slot_of, counts = torch.unique_consecutive(sorted_cells, return_inverse=True, return_counts=True)
    first = (torch.cumsum(counts, 0) - counts).index_select(0, slot_of)  # first position of each entry's cell
    rank = torch.arange(order.numel(), device=device) - first
    keep = rank < m
    rows, slots, kept = slot_of[keep], rank[keep], order[keep]
    index = torch.full((occupied.numel(), m), -1, dtype=torch.int64, device=device)
    out_keys = torch.full((occupied.numel(), m), EMPTY_KEY, dtype=torch.int64, device=device)
    index[rows, slots] = kept
    out_keys[rows, slots] = keys.index_select(0, kept)
    return occupied, index, out_keys


def _cell_order(cells: torch.Tensor, keys: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """The order of entries by (cell, key, entry index) and the cells in that order.

    On the CPU, when cell, key and index fit in 63 bits together, one sort of the packed values (numpy's
    vectorised sort: several times faster than a stable argsort; the index bits make every value
    distinct, so equal keys keep corpus order exactly as a stable sort does); else a stable torch sort."""
    n = cells.numel()
    index_bits = max(1, (n - 1).bit_length())
    key_bits = max(1, int(keys.max()).bit_length())
    cell_bits = int(cells.max()).bit_length()
    if cells.device.type == "cpu" and cell_bits + key_bits + index_bits <= 63:
        packed = (cells << (key_bits + index_bits)) | (keys << index_bits) | torch.arange(n, dtype=torch.int64)
        ordered = torch.from_numpy(np.sort(packed.numpy()))
        return ordered & ((1 << index_bits) - 1), ordered >> (key_bits + index_bits)
    order = torch.sort((cells << 32) | keys, stable=True).indices  # stable: equal keys keep corpus order
    return order, cells.index_select(0, order)


def float_order_key(values: torch.Tensor) -> torch.Tensor:
    """32-bit keys that sort positive float32 values descending (smaller key = larger value)."""
    bits = values.to(torch.float32).contiguous().view(torch.int32).to(torch.int64)
    return (0x7FFFFFFF - bits) & _MASK32


def to_numpy(t: torch.Tensor) -> np.ndarray:
    return t.detach().cpu().numpy()
