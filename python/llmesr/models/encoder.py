"""The sequence encoders of the three backbones: a Transformer (causal for SASRec, bidirectional for
Bert4Rec) and a GRU (GRU4Rec). Sequences are left-padded with item 0.

Correct where the original LLM-ESR code is not: the causal mask is applied (a position never sees the
items after it), padding is never attended to or fed to the GRU, and positions count from the first
real item, so the output of a sequence does not depend on how much padding surrounds it (the
original's results change with max_len). The `compat` strategy `ORIGINAL` (llmesr.models.compat) reproduces
the original's masking instead (no causal mask, padding up to max_len attended, the GRU run over padding) for
comparisons with its published numbers; the default is `OURS`.
"""

from __future__ import annotations

import math
from typing import Protocol

import torch
from torch import nn

from llmesr.models.compat import OURS, KeyMask, Ours
from llmesr.ops import HashedDropout, masked_attention
from llmesr.ops.attention import valid_positions


def with_repeated_first_key(
    q: torch.Tensor, k: torch.Tensor, v: torch.Tensor, copies: int
) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """q, k, v with one more head dimension so that the attention weighs key 0 as `copies` identical
    keys: its logit gains log(copies) (queries 1 and keys log(copies) at column 0 in the new dimension,
    queries rescaled so the operator's 1/sqrt(Dh + 1) still scales by 1/sqrt(Dh)); values get a zero."""
    dim = q.shape[-1]
    q = torch.cat([q * ((dim + 1) / dim) ** 0.5, torch.full_like(q[..., :1], (dim + 1) ** 0.5)], dim=-1)
    bias = torch.zeros_like(k[..., :1])
    bias[:, 0] = math.log(copies)
    return q, torch.cat([k, bias], dim=-1), torch.cat([v, torch.zeros_like(v[..., :1])], dim=-1)


def positions(valid: torch.Tensor) -> torch.Tensor:
    """0 for the first real item of each row, counting up; padding gets 0 too (it is masked anyway)."""
    return (valid.long().cumsum(dim=1) - 1).clamp(min=0)


class Attention(nn.Module):
    """Multi-head attention of `x` (queries) over `context` (keys and values) under a `KeyMask`, through
    the fused operator (`llmesr.ops.masked_attention`). A padded query's output is zero."""

    def __init__(self, hidden: int, heads: int, dropout: float) -> None:
        super().__init__()
        if hidden % heads:
            raise ValueError(f"hidden size {hidden} is not divisible by {heads} heads")
        self.heads, self.dropout = heads, dropout
        self.q = nn.Linear(hidden, hidden)
        self.kv = nn.Linear(hidden, 2 * hidden)
        self.out = nn.Linear(hidden, hidden)

    def project(self, x: torch.Tensor, context: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        """Queries, keys and values `[B, L, H, Dh]`, the layout the operator reads."""
        b, length, hidden = x.shape
        q = self.q(x).view(b, length, self.heads, hidden // self.heads)
        k, v = self.kv(context).view(b, length, 2, self.heads, hidden // self.heads).unbind(2)
        return q, k, v

    def forward(self, x: torch.Tensor, context: torch.Tensor, mask: KeyMask) -> torch.Tensor:
        if x.shape[1] < context.shape[1]:
            return self.last_query(x, context, mask)
        q, k, v = self.project(x, context)
        if mask.padding_copies > 1:
            q, k, v = with_repeated_first_key(q, k, v, mask.padding_copies)
        att = masked_attention(q, k, v, mask.lengths, mask.causal, self.dropout if self.training else 0.0)
        if mask.padding_copies > 1:
            att = att[..., :-1]
        return self.out(att.flatten(2))

    def last_query(self, x: torch.Tensor, context: torch.Tensor, mask: KeyMask) -> torch.Tensor:
        """`x` `[B, 1, H]`, the query of each row's last position only, over all of `context`: what
        `forward` gives at that position (the last position may see every real key, causal or not),
        for the encoders' `last_only` pass. Without dropout on the weights, so for evaluation only."""
        if self.training and self.dropout > 0:
            raise RuntimeError("the last-query attention has no attention dropout: use it in eval mode")
        if mask.padding_copies > 1:
            raise ValueError("the last-query attention does not take compat padding keys")
        b, length, hidden = context.shape
        q = self.q(x).view(b, self.heads, hidden // self.heads)
        k, v = self.kv(context).view(b, length, 2, self.heads, hidden // self.heads).unbind(2)
        scores = torch.einsum("bhd,bjhd->bhj", q, k) * (hidden // self.heads) ** -0.5
        real = valid_positions(mask.lengths, length)
        weights = torch.softmax(scores.masked_fill(~real[:, None, :], float("-inf")), dim=-1)
        weights = torch.nan_to_num(weights) * (mask.lengths > 0)[:, None, None]  # an empty row: zeros
        return self.out(torch.einsum("bhj,bjhd->bhd", weights, v).reshape(b, 1, hidden))


class Block(nn.Module):
    """Pre-norm Transformer block: self-attention and a point-wise feed-forward, each residual."""

    def __init__(self, hidden: int, heads: int, dropout: float) -> None:
        super().__init__()
        self.norm1, self.norm2 = nn.LayerNorm(hidden), nn.LayerNorm(hidden)
        self.attention = Attention(hidden, heads, dropout)
        self.ffn = nn.Sequential(
            nn.Linear(hidden, hidden), nn.GELU(), HashedDropout(dropout), nn.Linear(hidden, hidden)
        )
        self.drop = HashedDropout(dropout)

    def forward(self, x: torch.Tensor, mask: KeyMask, last_only: bool = False) -> torch.Tensor:
        """`[B, L, H]` to `[B, L, H]`, or to the last position's `[B, 1, H]` when `last_only`."""
        h = self.norm1(x)
        query = h[:, -1:] if last_only else h
        x = (x[:, -1:] if last_only else x) + self.drop(self.attention(query, h, mask))
        return x + self.drop(self.ffn(self.norm2(x)))


class OriginalBlock(nn.Module):
    """The original code's block (pmixer/SASRec.pytorch's layout): the normalised input queries the
    unnormalised one and the residual adds the normalised query (`q + MHA(q, x, x)`), then a
    LayerNorm, then a ReLU feed-forward (the original's kernel-1 convolutions, i.e. linear layers) with
    dropout inside and its own residual; LayerNorm eps 1e-8."""

    def __init__(self, hidden: int, heads: int, dropout: float) -> None:
        super().__init__()
        self.norm1, self.norm2 = nn.LayerNorm(hidden, eps=1e-8), nn.LayerNorm(hidden, eps=1e-8)
        self.attention = Attention(hidden, heads, dropout)
        self.ffn = nn.Sequential(
            nn.Linear(hidden, hidden),
            HashedDropout(dropout),
            nn.ReLU(),
            nn.Linear(hidden, hidden),
            HashedDropout(dropout),
        )

    def forward(self, x: torch.Tensor, mask: KeyMask, last_only: bool = False) -> torch.Tensor:
        """`[B, L, H]` to `[B, L, H]`, or to the last position's `[B, 1, H]` when `last_only`."""
        q = self.norm1(x[:, -1:] if last_only else x)
        x = self.norm2(q + self.attention(q, x, mask))
        return x + self.ffn(x)


BLOCKS = {"prenorm": Block, "original": OriginalBlock}


class TransformerEncoder(nn.Module):
    """Transformer encoder (SASRec when causal, Bert4Rec when not): `[B, L, H]` item embeddings to
    `[B, L, H]` states; padded positions give zeros. `block`: a key of `BLOCKS`."""

    def __init__(
        self,
        hidden: int = 64,
        max_len: int = 200,
        layers: int = 2,
        heads: int = 1,
        dropout: float = 0.5,
        causal: bool = True,
        compat: Ours = OURS,
        block: str = "original",
    ) -> None:
        super().__init__()
        self.causal, self.compat, self.max_len = causal, compat, max_len
        self.position = nn.Embedding(max_len, hidden)
        self.drop = HashedDropout(dropout)
        self.blocks = nn.ModuleList(BLOCKS[block](hidden, heads, dropout) for _ in range(layers))
        self.norm = nn.LayerNorm(hidden, eps=1e-8 if block == "original" else 1e-5)

    def mask(self, valid: torch.Tensor) -> KeyMask:
        return self.compat.key_mask(valid, self.causal, self.max_len)

    def forward(self, emb: torch.Tensor, valid: torch.Tensor, last_only: bool = False) -> torch.Tensor:
        """`last_only` (evaluation, not compat): only the last position's state, `[B, 1, H]`; its
        last block computes that one query (the earlier blocks' states are all its keys)."""
        pos = positions(valid)  # from the first real item, in compat mode too (as the original)
        if int(pos.max()) >= self.position.num_embeddings:
            raise ValueError(f"sequences longer than max_len={self.position.num_embeddings}")
        x = self.drop(emb + self.position(pos)) * valid[..., None]
        mask = self.mask(valid)
        for i, block in enumerate(self.blocks):
            x = block(x, mask, last_only and i == len(self.blocks) - 1)
            x = x * valid[:, -x.shape[1] :, None]  # padding zeroed after each block, as the original
        if last_only:
            x = x[:, -1:]  # a no-op unless there are no blocks
        return self.norm(x) * valid[:, -x.shape[1] :, None]


class GRUEncoder(nn.Module):
    """GRU4Rec's encoder: a GRU over the real items only (the state starts at zero at the first
    item), so padding never enters the recurrence; padded positions give zeros."""

    def __init__(self, hidden: int = 64, layers: int = 1, dropout: float = 0.5, compat: Ours = OURS) -> None:
        super().__init__()
        self.compat = compat
        self.drop = HashedDropout(dropout)
        self.gru = nn.GRU(hidden, hidden, num_layers=layers, batch_first=True)

    def mask(self, valid: torch.Tensor) -> KeyMask:
        """The mask for cross-attention in front of the GRU: causal, like the GRU."""
        return self.compat.key_mask(valid, True)

    def forward(self, emb: torch.Tensor, valid: torch.Tensor, last_only: bool = False) -> torch.Tensor:
        out = self.states(emb, valid)
        return out[:, -1:] if last_only else out

    def states(self, emb: torch.Tensor, valid: torch.Tensor) -> torch.Tensor:
        x = self.drop(emb)
        if self.compat.gru_reads_padding:  # the original: the GRU reads the padded steps too
            return self.gru(x)[0] * valid[..., None]
        b, length, hidden = x.shape
        lengths = valid.sum(dim=1)
        # Left-padded to right-aligned-at-start: row r's real items move to columns 0..len-1.
        shift = (torch.arange(length, device=x.device) + (length - lengths)[:, None]) % length
        packed = nn.utils.rnn.pack_padded_sequence(
            x.gather(1, shift[..., None].expand(-1, -1, hidden)),
            lengths.clamp(min=1).cpu(),
            batch_first=True,
            enforce_sorted=False,
        )
        out = nn.utils.rnn.pad_packed_sequence(self.gru(packed)[0], batch_first=True, total_length=length)[0]
        back = (torch.arange(length, device=x.device) - (length - lengths)[:, None]) % length
        return out.gather(1, back[..., None].expand(-1, -1, hidden)) * valid[..., None]


class SequenceEncoder(Protocol):
    """What the dual-view model needs of a sequence encoder: `[B, L, H]` item embeddings of left-padded
    rows (`valid` marks the real items) to `[B, L, H]` states (`[B, 1, H]`, the last, when `last_only`), zeros at padding, a position's state
    depending on no later item when the model is causal; and the `KeyMask` a cross-attention in
    front of it must use so that it sees no more than the encoder does."""

    def __call__(self, emb: torch.Tensor, valid: torch.Tensor, last_only: bool = False) -> torch.Tensor: ...

    def mask(self, valid: torch.Tensor) -> KeyMask: ...


# The factories the backbone specs name (llmesr.backbones): one signature for every encoder.


def causal_transformer(
    hidden: int, max_len: int, layers: int, heads: int, dropout: float, *, compat: Ours, block: str
) -> TransformerEncoder:
    return TransformerEncoder(hidden, max_len, layers, heads, dropout, causal=True, compat=compat, block=block)


def bidirectional_transformer(
    hidden: int, max_len: int, layers: int, heads: int, dropout: float, *, compat: Ours, block: str
) -> TransformerEncoder:
    return TransformerEncoder(hidden, max_len, layers, heads, dropout, causal=False, compat=compat, block=block)


def gru(hidden: int, max_len: int, layers: int, heads: int, dropout: float, *, compat: Ours, block: str) -> GRUEncoder:
    return GRUEncoder(hidden, layers, dropout, compat=compat)
