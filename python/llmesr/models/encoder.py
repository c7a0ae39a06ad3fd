"""The sequence encoders of the three backbones: a Transformer (causal for SASRec, bidirectional for
Bert4Rec) and a GRU (GRU4Rec). Sequences are left-padded with item 0.

Correct where the original LLM-ESR code is not: the causal mask is applied (a position never sees the
items after it), padding is never attended to or fed to the GRU, and positions count from the first
real item, so the output of a sequence does not depend on how much padding surrounds it (the
original's results change with max_len). `compat=True` reproduces the original's masking instead (no
causal mask, padding attended, absolute positions, the GRU run over padding) for comparisons with its
published numbers; it is off by default.
"""

from __future__ import annotations

import torch
from torch import nn
from torch.nn import functional as F


def attention_mask(valid: torch.Tensor, causal: bool) -> torch.Tensor:
    """`[B, 1, L, L]` boolean, True where query i may attend to key j: the key is a real item (and
    j <= i when causal). A padded query attends to itself only, so its softmax is defined."""
    _, length = valid.shape
    allowed = valid[:, None, None, :].expand(-1, 1, length, -1)
    if causal:
        allowed = allowed & torch.ones(length, length, dtype=torch.bool, device=valid.device).tril()
    eye = torch.eye(length, dtype=torch.bool, device=valid.device)
    return allowed | (~valid[:, None, :, None] & eye)


def positions(valid: torch.Tensor) -> torch.Tensor:
    """0 for the first real item of each row, counting up; padding gets 0 too (it is masked anyway)."""
    return (valid.long().cumsum(dim=1) - 1).clamp(min=0)


class Attention(nn.Module):
    """Multi-head attention of `x` (queries) over `context` (keys and values); `mask` as
    `attention_mask` gives it, or None to attend everywhere."""

    def __init__(self, hidden: int, heads: int, dropout: float) -> None:
        super().__init__()
        if hidden % heads:
            raise ValueError(f"hidden size {hidden} is not divisible by {heads} heads")
        self.heads, self.dropout = heads, dropout
        self.q = nn.Linear(hidden, hidden)
        self.kv = nn.Linear(hidden, 2 * hidden)
        self.out = nn.Linear(hidden, hidden)

    def forward(self, x: torch.Tensor, context: torch.Tensor, mask: torch.Tensor | None) -> torch.Tensor:
        b, length, hidden = x.shape
        split = (b, length, self.heads, hidden // self.heads)
        q = self.q(x).view(split).transpose(1, 2)
        k, v = (t.reshape(split).transpose(1, 2) for t in self.kv(context).chunk(2, dim=-1))
        att = F.scaled_dot_product_attention(q, k, v, attn_mask=mask, dropout_p=self.dropout if self.training else 0.0)
        return self.out(att.transpose(1, 2).reshape(b, length, hidden))


class Block(nn.Module):
    """Pre-norm Transformer block: self-attention and a point-wise feed-forward, each residual."""

    def __init__(self, hidden: int, heads: int, dropout: float) -> None:
        super().__init__()
        self.norm1, self.norm2 = nn.LayerNorm(hidden), nn.LayerNorm(hidden)
        self.attention = Attention(hidden, heads, dropout)
        self.ffn = nn.Sequential(nn.Linear(hidden, hidden), nn.GELU(), nn.Dropout(dropout), nn.Linear(hidden, hidden))
        self.drop = nn.Dropout(dropout)

    def forward(self, x: torch.Tensor, mask: torch.Tensor | None) -> torch.Tensor:
        h = self.norm1(x)
        x = x + self.drop(self.attention(h, h, mask))
        return x + self.drop(self.ffn(self.norm2(x)))


class SequenceEncoder(nn.Module):
    """Transformer encoder (SASRec when causal, Bert4Rec when not): `[B, L, H]` item embeddings to
    `[B, L, H]` states; padded positions give zeros."""

    def __init__(
        self,
        hidden: int = 64,
        max_len: int = 200,
        layers: int = 2,
        heads: int = 1,
        dropout: float = 0.5,
        causal: bool = True,
        compat: bool = False,
    ) -> None:
        super().__init__()
        self.causal, self.compat = causal, compat
        self.position = nn.Embedding(max_len, hidden)
        self.drop = nn.Dropout(dropout)
        self.blocks = nn.ModuleList(Block(hidden, heads, dropout) for _ in range(layers))
        self.norm = nn.LayerNorm(hidden)

    def mask(self, valid: torch.Tensor) -> torch.Tensor | None:
        return None if self.compat else attention_mask(valid, self.causal)

    def forward(self, emb: torch.Tensor, valid: torch.Tensor) -> torch.Tensor:
        # compat: the original's absolute positions over the padded row
        pos = torch.arange(valid.shape[1], device=valid.device).expand_as(valid) if self.compat else positions(valid)
        if int(pos.max()) >= self.position.num_embeddings:
            raise ValueError(f"sequences longer than max_len={self.position.num_embeddings}")
        x = self.drop(emb + self.position(pos)) * valid[..., None]
        mask = self.mask(valid)
        for block in self.blocks:
            x = block(x, mask)
        return self.norm(x) * valid[..., None]


class GRUEncoder(nn.Module):
    """GRU4Rec's encoder: a GRU over the real items only (the state starts at zero at the first
    item), so padding never enters the recurrence; padded positions give zeros."""

    def __init__(self, hidden: int = 64, layers: int = 1, dropout: float = 0.5, compat: bool = False) -> None:
        super().__init__()
        self.compat = compat
        self.drop = nn.Dropout(dropout)
        self.gru = nn.GRU(hidden, hidden, num_layers=layers, batch_first=True)

    def mask(self, valid: torch.Tensor) -> torch.Tensor | None:
        """The attention mask for cross-attention in front of the GRU: causal, like the GRU."""
        return None if self.compat else attention_mask(valid, causal=True)

    def forward(self, emb: torch.Tensor, valid: torch.Tensor) -> torch.Tensor:
        x = self.drop(emb)
        if self.compat:  # the original: the GRU reads the padded steps too
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
