"""The dropout hash of the fused operators on int64 tensors: the PyTorch twin of csrc/dropout_hash.h."""

from __future__ import annotations

import torch

MASK32 = 0xFFFFFFFF
GOLDEN32 = 0x9E3779B9  # spreads key indices before mixing


def mul32(x: torch.Tensor, c: int) -> torch.Tensor:
    """(x * c) mod 2^32 for int64 tensors holding uint32 values, without int64 overflow."""
    return (x * (c & 0xFFFF) + (((x * (c >> 16)) & 0xFFFF) << 16)) & MASK32


def fmix32(x: torch.Tensor) -> torch.Tensor:
    """MurmurHash3's finaliser (csrc/dropout_hash.h has the same)."""
    x = x ^ (x >> 16)
    x = mul32(x, 0x85EBCA6B)
    x = x ^ (x >> 13)
    x = mul32(x, 0xC2B2AE35)
    return x ^ (x >> 16)


def drop_threshold(p: float) -> int:
    """An element is kept when its 32-bit hash is at least this: probability 1 - p (to 2^-32)."""
    return min(int(p * 2**32), MASK32)


def draw_seed() -> int:
    """A 32-bit seed for one call, from torch's default generator (`torch.manual_seed` fixes it)."""
    return int(torch.randint(MASK32 + 1, ()))
