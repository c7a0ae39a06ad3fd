"""Dropout as one operator whose keep/drop decisions are a hash of (seed, element index), with
`hashed_dropout_reference` its PyTorch twin. No mask is stored: the backward applies the same op to the
gradient. On CPU it is several times faster than `torch.nn.functional.dropout` (whose random numbers
took 12-17 % of a training step), and the twin makes exactly the same decisions."""

from __future__ import annotations

import torch
from torch import nn

from llmesr.ops.hashing import MASK32, draw_seed, drop_threshold, fmix32


def keep_elements(seed: int, numel: int, p: float, device=None) -> torch.Tensor:
    """`[numel]` booleans: which elements (in row-major order) dropout keeps (the op's decisions)."""
    n = torch.arange(numel, device=device)
    key = fmix32((seed & MASK32) ^ fmix32((n & MASK32) ^ fmix32(n >> 32)))
    return key >= drop_threshold(p)


def hashed_dropout_reference(x: torch.Tensor, p: float, seed: int) -> torch.Tensor:
    keep = keep_elements(seed, x.numel(), p, x.device).view(x.shape)
    return x * keep / (1 - p)


def hashed_dropout(x: torch.Tensor, p: float) -> torch.Tensor:
    """Training-time dropout: the native op when loaded (see `llmesr.ops`), else the twin. The seed
    comes from torch's default generator, so `torch.manual_seed` makes it reproducible."""
    from llmesr.ops import loader

    if not 0 <= p < 1:
        raise ValueError(f"dropout must be in [0, 1), not {p}")
    if p == 0:
        return x
    seed = draw_seed()
    if loader.native_for(x):
        return torch.ops.llmesr.dropout(x, p, seed)
    return hashed_dropout_reference(x, p, seed)


class HashedDropout(nn.Module):
    """`nn.Dropout` through `hashed_dropout`: active in training mode only."""

    def __init__(self, p: float) -> None:
        super().__init__()
        self.p = p

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return hashed_dropout(x, self.p) if self.training else x

    def extra_repr(self) -> str:
        return f"p={self.p}"


def register_fake() -> None:
    """Shape kernel for torch.compile (see `llmesr.ops.distill.register_fake`)."""

    @torch.library.register_fake("llmesr::dropout")
    def _(x, p, seed):
        return torch.empty_like(x, memory_format=torch.contiguous_format)
