"""Masked multi-head attention as one operator, with `masked_attention_reference` its PyTorch twin.

One call serves every attention of the dual-view model: the encoder's self-attention over both views
stacked along the batch (causal for SASRec, bidirectional for Bert4Rec) and the two cross-attention
directions stacked the same way (id queries over semantic keys, semantic queries over id keys).
Rows are left-padded: row b's real items are its last `lengths[b]` positions. Query i attends to the
real keys of its row (and, when causal, only to keys j <= i); a padded query's output is zero.

Dropout on the attention weights draws its keep/drop decisions from a counter-based hash of
(seed, row, head, query, key) instead of a random stream, so the backward pass regenerates them
instead of storing an L x L mask, and the native op and the twin drop exactly the same weights.
"""

from __future__ import annotations

import torch

from llmesr.ops.hashing import GOLDEN32, MASK32, draw_seed, drop_threshold, fmix32, mul32


def keep_mask(seed: int, batch: int, heads: int, length: int, p: float, device=None) -> torch.Tensor:
    """`[B, H, L, L]` booleans: which attention weights dropout keeps (the op's exact decisions)."""
    rows = torch.arange(batch * heads, device=device).view(batch, heads, 1, 1)
    i = torch.arange(length, device=device).view(1, 1, length, 1)
    j = torch.arange(length, device=device).view(1, 1, 1, length)
    row_key = fmix32((seed & MASK32) ^ fmix32((rows * length + i) & MASK32))
    return fmix32(row_key ^ mul32(j, GOLDEN32)) >= drop_threshold(p)


def valid_positions(lengths: torch.Tensor, length: int) -> torch.Tensor:
    """`[B, L]`: True at the real items of each left-padded row."""
    return torch.arange(length, device=lengths.device) >= (length - lengths)[:, None]


def masked_attention_reference(
    q: torch.Tensor,
    k: torch.Tensor,
    v: torch.Tensor,
    lengths: torch.Tensor,
    causal: bool,
    dropout: float = 0.0,
    seed: int = 0,
) -> torch.Tensor:
    """q, k, v `[B, L, H, Dh]` -> `[B, L, H, Dh]`; `lengths` `[B]` real items per row."""
    b, length, heads, dim = q.shape
    valid = valid_positions(lengths, length)
    allowed = valid[:, None, None, :] & valid[:, None, :, None]
    if causal:
        allowed = allowed & torch.ones(length, length, dtype=torch.bool, device=q.device).tril()
    scores = torch.einsum("bihd,bjhd->bhij", q, k) * dim**-0.5
    # A padded query row has no allowed key: its scores become zeros (finite), its weights zero.
    scores = torch.where(allowed, scores, float("-inf")).where(valid[:, None, :, None], 0.0)
    weights = torch.softmax(scores, dim=-1) * allowed
    if dropout > 0:
        weights = weights * keep_mask(seed, b, heads, length, dropout, q.device) / (1 - dropout)
    return torch.einsum("bhij,bjhd->bihd", weights, v)


def masked_attention(
    q: torch.Tensor,
    k: torch.Tensor,
    v: torch.Tensor,
    lengths: torch.Tensor,
    causal: bool,
    dropout: float = 0.0,
) -> torch.Tensor:
    """The native op when loaded (see `llmesr.ops`), else the reference. With dropout, the seed
    comes from torch's default generator, so `torch.manual_seed` makes it reproducible."""
    from llmesr.ops import loader

    if not 0 <= dropout < 1:
        raise ValueError(f"attention dropout must be in [0, 1), not {dropout}")
    seed = draw_seed() if dropout > 0 else 0
    if loader.native_for(q):
        return torch.ops.llmesr.attention(q, k, v, lengths, causal, dropout, seed)[0]
    return masked_attention_reference(q, k, v, lengths, causal, dropout, seed)


def register_fake() -> None:
    """Shape kernels for torch.compile (see `llmesr.ops.distill.register_fake`)."""

    @torch.library.register_fake("llmesr::attention")
    def _(q, k, v, lengths, causal, dropout, seed):
        b, length, heads, _ = q.shape
        lse_dtype = torch.float64 if q.dtype == torch.float64 else torch.float32
        return torch.empty_like(q), q.new_empty((b, heads, length), dtype=lse_dtype)

    @torch.library.register_fake("llmesr::attention_backward")
    def _(grad, q, k, v, out, lse, lengths, causal, dropout, seed):
        return torch.empty_like(q), torch.empty_like(k), torch.empty_like(v)
