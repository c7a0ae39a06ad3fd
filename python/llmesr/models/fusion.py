"""How LLM-ESR's two views meet before the sequence encoder (`FUSIONS`): not at all (`concat`: each view
is encoded alone and the states are concatenated after), or two-way cross-attention. A new fusion is one
class here with `@fusion("name")`: built as `cls(hidden, heads, dropout, original=...)`, it maps the
views' `[id, semantic]` input embeddings to the same shapes under the backbone's key mask."""

from __future__ import annotations

from collections.abc import Callable
from typing import cast

import torch
from torch import nn

from llmesr.models.compat import KeyMask
from llmesr.models.encoder import Attention
from llmesr.models.registry import registrar
from llmesr.ops import HashedDropout, masked_attention


class Fusion(nn.Module):
    """What the model asks of a fusion: `forward(views, mask)`; `reads_mask`: whether it needs the key
    mask (the model builds it only then)."""

    reads_mask: bool

    def forward(self, views: list[torch.Tensor], mask: KeyMask | None) -> list[torch.Tensor]:
        raise NotImplementedError


FUSIONS: dict[str, Callable[..., Fusion]] = {}


fusion = registrar(FUSIONS)  # @fusion("name") adds a fusion class under its name


@fusion("concat")
class Concatenation(Fusion):
    """The views do not meet before the encoder; the model concatenates their states."""

    reads_mask = False

    def __init__(self, hidden: int, heads: int, dropout: float, original: bool = False) -> None:
        super().__init__()

    def forward(self, views: list[torch.Tensor], mask: KeyMask | None) -> list[torch.Tensor]:
        return views


class CrossAttention(nn.Module):
    """One direction of the two-way cross-attention, under the backbone's mask so that a causal model
    never sees a later item through the other view. Ours (residual): the view's positions attend over
    the other view's and add what they read, `x + Attention(q=LN(x), kv=other)`. `original` (under
    compat only; on ml-100k and Yelp it made LLM-ESR worse than the backbone alone): the original
    code's layout (its `llm2id(llm_seqs, id_seqs)` for the ID view): the OTHER view's positions query
    this view, and the result replaces the view, `Attention(q=other, kv=x)` (no LayerNorm, residual
    or dropout), so each view still carries its own item vectors."""

    def __init__(self, hidden: int, heads: int, dropout: float, original: bool = False) -> None:
        super().__init__()
        self.original = original
        self.norm = nn.Identity() if original else nn.LayerNorm(hidden)
        self.attention = Attention(hidden, heads, 0.0 if original else dropout)
        self.drop = HashedDropout(0.0 if original else dropout)

    def sources(self, x: torch.Tensor, other: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """(what the queries read, what the keys and values read) for view `x`."""
        return (other, x) if self.original else (self.norm(x), other)

    def combine(self, x: torch.Tensor, attended: torch.Tensor) -> torch.Tensor:
        return attended if self.original else x + self.drop(attended)

    def forward(self, x: torch.Tensor, other: torch.Tensor, mask: KeyMask) -> torch.Tensor:
        return self.combine(x, self.attention(*self.sources(x, other), mask))


@fusion("cross_attention")
class TwoWayCrossAttention(Fusion):
    """`[self[0](id, semantic), self[1](semantic, id)]`: each view attends over the other."""

    reads_mask = True

    def __init__(self, hidden: int, heads: int, dropout: float, original: bool = False) -> None:
        super().__init__()
        self.directions = nn.ModuleList(CrossAttention(hidden, heads, dropout, original=original) for _ in range(2))

    def __getitem__(self, i: int) -> CrossAttention:
        return cast(CrossAttention, self.directions[i])

    def forward(self, views: list[torch.Tensor], mask: KeyMask | None) -> list[torch.Tensor]:
        assert mask is not None
        return two_way_cross_attention(self[0], self[1], views, mask)


def two_way_cross_attention(
    to_id: nn.Module, to_semantic: nn.Module, views: list[torch.Tensor], mask: KeyMask
) -> list[torch.Tensor]:
    """`[to_id(id, semantic), to_semantic(semantic, id)]` with both directions in one operator call (their
    queries, keys and values stacked along the batch)."""
    to_id, to_semantic = cast(CrossAttention, to_id), cast(CrossAttention, to_semantic)
    ids, semantic = views
    q1, k1, v1 = to_id.attention.project(*to_id.sources(ids, semantic))
    q2, k2, v2 = to_semantic.attention.project(*to_semantic.sources(semantic, ids))
    dropout = to_id.attention.dropout if to_id.training else 0.0
    lengths = torch.cat([mask.lengths, mask.lengths])
    att = masked_attention(torch.cat([q1, q2]), torch.cat([k1, k2]), torch.cat([v1, v2]), lengths, mask.causal, dropout)
    att1, att2 = att.flatten(2).chunk(2)
    return [
        to_id.combine(ids, to_id.attention.out(att1)),
        to_semantic.combine(semantic, to_semantic.attention.out(att2)),
    ]
