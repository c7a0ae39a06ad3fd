"""LLM-ESR over SASRec: a collaborative ID view and a semantic view (the frozen language-model item
table through a small adapter) encoded by ONE shared sequence encoder, scored by the concatenation of
both views, with retrieval-augmented self-distillation from the most similar users.

The exact speed-ups live here too: the adapter is linear, so it is applied once per distinct item of
a batch instead of at every (mostly padded) position, and the similar users' representations (the
distillation teachers) are computed without autograd. Both are tested against the straightforward way.
"""

from __future__ import annotations

import torch
from torch import nn
from torch.nn import functional as F

from llmesr.models.encoder import SequenceEncoder


class Adapter(nn.Module):
    """Linear(d, d/2) then Linear(d/2, h), no activation in between (as in the paper)."""

    def __init__(self, dim: int, hidden: int) -> None:
        super().__init__()
        self.down = nn.Linear(dim, dim // 2)
        self.up = nn.Linear(dim // 2, hidden)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.up(self.down(x))


class LLMESR(nn.Module):
    """Dual-view sequential recommender. `semantic` is the frozen `[n_items + 1, d]` item table (row 0
    padding); `id_init` an optional `[n_items + 1, hidden]` initial ID table (the PCA of `semantic`)."""

    def __init__(
        self,
        semantic: torch.Tensor,
        hidden: int = 64,
        max_len: int = 200,
        layers: int = 2,
        heads: int = 1,
        dropout: float = 0.5,
        id_init: torch.Tensor | None = None,
    ) -> None:
        super().__init__()
        n_rows = semantic.shape[0]
        self.register_buffer("semantic", semantic.float(), persistent=False)
        self.item_id = nn.Embedding(n_rows, hidden, padding_idx=0)
        if id_init is not None:
            with torch.no_grad():
                self.item_id.weight.copy_(id_init)
                self.item_id.weight[0].zero_()
        self.adapter = Adapter(semantic.shape[1], hidden)
        self.encoder = SequenceEncoder(hidden, max_len, layers, heads, dropout, causal=True)
        self.drop = nn.Dropout(dropout)

    def semantic_items(self, items: torch.Tensor) -> torch.Tensor:
        """adapter(E_llm[items]), computed once per distinct item (the adapter is linear per row);
        padding (item 0) maps to zeros."""
        unique, inverse = torch.unique(items, return_inverse=True)
        out = self.adapter(self.semantic[unique])
        out = out * (unique != 0)[:, None]
        return out[inverse]

    def item_vectors(self, items: torch.Tensor) -> torch.Tensor:
        """[e_id; adapter(e_llm)] of the given items."""
        return torch.cat([self.item_id(items), self.semantic_items(items)], dim=-1)

    def user_states(self, sequences: torch.Tensor) -> torch.Tensor:
        """`[B, L, 2·hidden]`: both views through the one shared encoder, concatenated."""
        valid = sequences != 0
        id_view = self.encoder(self.drop(self.item_id(sequences)), valid)
        llm_view = self.encoder(self.drop(self.semantic_items(sequences)), valid)
        return torch.cat([id_view, llm_view], dim=-1)

    def sequence_loss(self, inputs: torch.Tensor, targets: torch.Tensor, negatives: torch.Tensor) -> torch.Tensor:
        """SASRec's loss: binary cross-entropy of the target against one negative at every position."""
        states = self.user_states(inputs)
        mask = targets != 0
        pos = (states * self.item_vectors(targets)).sum(-1)
        neg = (states * self.item_vectors(negatives)).sum(-1)
        loss = F.binary_cross_entropy_with_logits(pos, torch.ones_like(pos), reduction="none") + (
            F.binary_cross_entropy_with_logits(neg, torch.zeros_like(neg), reduction="none")
        )
        return (loss * mask).sum() / mask.sum().clamp(min=1)

    def user_vector(self, sequences: torch.Tensor) -> torch.Tensor:
        """The representation of each user: the state at the last position (sequences are left-padded)."""
        return self.user_states(sequences)[:, -1]

    def distillation_loss(self, sequences: torch.Tensor, similar: torch.Tensor) -> torch.Tensor:
        """Retrieval-augmented self-distillation ("kd"): MSE between each user's representation and the
        mean representation of its similar users (`similar`: `[B, K, L]` sequences), computed by the same
        model without autograd (the teacher is a target, never trained through)."""
        student = self.user_vector(sequences)
        with torch.no_grad():
            b, k, length = similar.shape
            teacher = self.user_vector(similar.reshape(b * k, length)).reshape(b, k, -1).mean(dim=1)
        return F.mse_loss(student, teacher)


class SASRec(LLMESR):
    """The ID-only baseline (`--method base`): the same encoder and loss, a randomly initialised item
    table, no semantic view and no distillation."""

    def __init__(
        self, n_items: int, hidden: int = 64, max_len: int = 200, layers: int = 2, heads: int = 1, dropout: float = 0.5
    ):
        nn.Module.__init__(self)
        self.item_id = nn.Embedding(n_items + 1, hidden, padding_idx=0)
        nn.init.normal_(self.item_id.weight, std=hidden**-0.5)
        with torch.no_grad():
            self.item_id.weight[0].zero_()
        self.encoder = SequenceEncoder(hidden, max_len, layers, heads, dropout, causal=True)
        self.drop = nn.Dropout(dropout)

    def item_vectors(self, items: torch.Tensor) -> torch.Tensor:
        return self.item_id(items)

    def user_states(self, sequences: torch.Tensor) -> torch.Tensor:
        return self.encoder(self.drop(self.item_id(sequences)), sequences != 0)
