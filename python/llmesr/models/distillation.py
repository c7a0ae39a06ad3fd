"""The training objectives beside the next-item loss: the retrieval-augmented self-distillation's
teachers (the loss itself is the fused `llmesr.ops.distill_loss`) and the item regulariser between the views."""

from __future__ import annotations

from typing import TYPE_CHECKING

import torch

from llmesr.ops.distill import info_nce

if TYPE_CHECKING:
    from llmesr.models.llmesr import LLMESR


def teachers(model: LLMESR, similar: torch.Tensor, users: int, index: torch.Tensor | None = None) -> torch.Tensor:
    """`[users, k, D]`: the representations of each user's `k` similar users, without autograd and
    without dropout: a teacher is a target, never trained through (the original applies dropout to
    it, which only adds noise to the target). `similar`: their sequences, `[users·k, L]`, or, with
    `index` (`[users·k]`), the distinct ones that `index` picks from: a user who is a neighbour of
    several users in the batch is encoded once (the same vector, as there is no dropout)."""
    vectors = model.frozen_user_vectors(similar)
    if index is not None:
        vectors = vectors[index]
    return vectors.view(users, -1, vectors.shape[-1])


def item_regulariser(model: LLMESR, items: torch.Tensor, temperature: float = 1.0) -> torch.Tensor:
    """Contrastive alignment of the two views of the batch's distinct items: an item's ID
    embedding is paired with its adapted semantic embedding against the other items'."""
    unique = torch.unique(items)
    return info_nce(model.id_view(unique), model.semantic_view(unique), temperature)
