"""The shared Transformer sequence encoder of SASRec (causal) and Bert4Rec (bidirectional).

Correct where the original LLM-ESR code is not: the causal mask is applied (a position never sees the
items after it), padding is never attended to, and positions count from the first real item, so the
output of a sequence does not depend on how much padding surrounds it (the original's results change
with max_len). Sequences are left-padded with item 0.
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


class Block(nn.Module):
    """Pre-norm Transformer block: self-attention and a point-wise feed-forward, each residual."""

    def __init__(self, hidden: int, heads: int, dropout: float) -> None:
        super().__init__()
        if hidden % heads:
            raise ValueError(f"hidden size {hidden} is not divisible by {heads} heads")
        self.heads, self.dropout = heads, dropout
        self.norm1, self.norm2 = nn.LayerNorm(hidden), nn.LayerNorm(hidden)
        self.qkv = nn.Linear(hidden, 3 * hidden)
        self.out = nn.Linear(hidden, hidden)
        self.ffn = nn.Sequential(nn.Linear(hidden, hidden), nn.GELU(), nn.Dropout(dropout), nn.Linear(hidden, hidden))
        self.drop = nn.Dropout(dropout)

    def forward(self, x: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
        b, length, hidden = x.shape
        q, k, v = self.qkv(self.norm1(x)).view(b, length, 3, self.heads, hidden // self.heads).unbind(dim=2)
        att = F.scaled_dot_product_attention(
            q.transpose(1, 2),
            k.transpose(1, 2),
            v.transpose(1, 2),
            attn_mask=mask,
            dropout_p=self.dropout if self.training else 0.0,
        )
        x = x + self.drop(self.out(att.transpose(1, 2).reshape(b, length, hidden)))
        return x + self.drop(self.ffn(self.norm2(x)))


class SequenceEncoder(nn.Module):
    """Encodes `[B, L, H]` item embeddings into `[B, L, H]` states; padded positions give zeros."""

    def __init__(
        self,
        hidden: int = 64,
        max_len: int = 200,
        layers: int = 2,
        heads: int = 1,
        dropout: float = 0.5,
        causal: bool = True,
    ) -> None:
        super().__init__()
        self.causal = causal
        self.position = nn.Embedding(max_len, hidden)
        self.drop = nn.Dropout(dropout)
        self.blocks = nn.ModuleList(Block(hidden, heads, dropout) for _ in range(layers))
        self.norm = nn.LayerNorm(hidden)

    def forward(self, emb: torch.Tensor, valid: torch.Tensor) -> torch.Tensor:
        pos = positions(valid)
        if int(pos.max()) >= self.position.num_embeddings:
            raise ValueError(f"sequences longer than max_len={self.position.num_embeddings}")
        x = self.drop(emb + self.position(pos)) * valid[..., None]
        mask = attention_mask(valid, self.causal)
        for block in self.blocks:
            x = block(x, mask)
        return self.norm(x) * valid[..., None]
