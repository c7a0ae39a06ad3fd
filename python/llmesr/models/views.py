"""LLM-ESR's two views of an item: the collaborative one (a learned ID table) and the semantic one (the
frozen language-model table through a small adapter). Each maps item ids to `[..., hidden]` vectors;
padding (item 0) maps to zeros."""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager

import torch
from torch import nn
from torch.nn import functional as F


class Adapter(nn.Module):
    """Linear(d, d/2) then Linear(d/2, h), no activation in between (as in the paper).

    Two linear maps with nothing between them are one: for more than `h` rows the composed `d x h`
    matrix is cheaper (d·h per row instead of d·d/2 + d/2·h, 12x fewer for 1536 -> 768 -> 64) and
    gives the same values and gradients to both layers."""

    def __init__(self, dim: int, hidden: int) -> None:
        super().__init__()
        self.down = nn.Linear(dim, dim // 2)
        self.up = nn.Linear(dim // 2, hidden)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if x.shape[0] <= self.up.out_features:
            return self.up(self.down(x))
        weight = self.up.weight @ self.down.weight
        bias = self.up.weight @ self.down.bias + self.up.bias
        return F.linear(x, weight, bias)


class IdView(nn.Module):
    """The collaborative view: a learned table of `rows` items (row 0 padding), initialised from `init`
    (`[n, hidden]`, the PCA of the semantic table, its first n rows) or at random."""

    def __init__(self, rows: int, hidden: int, init: torch.Tensor | None = None) -> None:
        super().__init__()
        self.table = nn.Embedding(rows, hidden, padding_idx=0)
        with torch.no_grad():
            if init is None:
                nn.init.normal_(self.table.weight, std=hidden**-0.5)
            else:
                self.table.weight[: init.shape[0]].copy_(init)
            self.table.weight[0].zero_()

    def forward(self, items: torch.Tensor) -> torch.Tensor:
        return self.table(items)


class SemanticView(nn.Module):
    """The semantic view: `adapter(E_llm[item])` from the frozen `[n_items + 1, d]` table (row 0
    padding); `mask_token` (Bert4Rec's item n_items + 1) has no text and gets a learned vector."""

    semantic: torch.Tensor  # the frozen language-model item table (a buffer, not saved with the weights)

    def __init__(self, semantic: torch.Tensor, hidden: int, mask_token: int | None = None) -> None:
        super().__init__()
        self.register_buffer("semantic", semantic.float(), persistent=False)
        self.adapter = Adapter(semantic.shape[1], hidden)
        self.mask_token = mask_token
        if mask_token is not None:
            self.mask_vector = nn.Parameter(torch.randn(hidden) * hidden**-0.5)
        self.adapted: torch.Tensor | None = None  # every item's vector, while frozen (`freeze`)

    def forward(self, items: torch.Tensor) -> torch.Tensor:
        """Computed once per distinct item (the adapter is linear per row), or looked up when frozen."""
        if self.adapted is not None:
            return self.adapted[items]
        unique, inverse = torch.unique(items, return_inverse=True)
        out = self.adapter(self.semantic[unique.clamp(max=len(self.semantic) - 1)]) * (unique != 0)[:, None]
        if self.mask_token is not None:
            out = torch.where((unique == self.mask_token)[:, None], self.mask_vector, out)
        return out[inverse]

    @contextmanager
    def frozen(self) -> Iterator[None]:
        """Frozen for the length of a pass, then as it was (a view frozen for serving stays frozen)."""
        before = self.adapted
        if before is None:
            self.freeze()
        try:
            yield
        finally:
            self.adapted = before

    @torch.no_grad()
    def freeze(self) -> None:
        """Every item's vector (and the mask token's) computed once and looked up from then on."""
        self.adapted = None
        self.adapted = self(torch.arange(len(self.semantic) + 1, device=self.semantic.device))
