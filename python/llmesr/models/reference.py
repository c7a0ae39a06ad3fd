"""The straightforward computation of LLM-ESR's training loss, as the original code does it: every
row padded to max_len, the adapter applied at every position, both views encoded separately, scores
at every position then masked, and the similar users' pass run with autograd and detached afterwards;
the adapter runs as its two layers at every position.

It shares the model's weights, so it computes the same function as `LLMESR.training_loss`; the tests
check that the fast path gives the same loss and gradients, and benches/ measure the speed-up.
"""

from __future__ import annotations

import torch
from torch.nn import functional as F

from llmesr.models.fusion import TwoWayCrossAttention
from llmesr.models.llmesr import LLMESR
from llmesr.models.losses import SharedNegatives
from llmesr.ops.distill import distill_loss_reference, info_nce


def pad_to(x: torch.Tensor, length: int) -> torch.Tensor:
    return F.pad(x, (length - x.shape[1], 0))


def view_embeddings(model: LLMESR, items: torch.Tensor) -> list[torch.Tensor]:
    out = []
    if model.views != "semantic":
        out.append(model.id_view.table(items))
    if model.views != "id":
        view = model.semantic_view
        semantic = view.adapter.up(view.adapter.down(view.semantic[items.clamp(max=model.n_items)]))
        semantic = semantic * (items != 0)[..., None]
        if view.mask_token is not None:
            semantic = torch.where((items == view.mask_token)[..., None], view.mask_vector, semantic)
        out.append(semantic)
    return out


def user_states(model: LLMESR, sequences: torch.Tensor) -> torch.Tensor:
    valid = sequences != 0
    views = [v * model.input_scale for v in view_embeddings(model, sequences)]
    if isinstance(model.fusion, TwoWayCrossAttention):  # each direction on its own
        mask = model.cross_mask(valid)
        views = [model.fusion[0](views[0], views[1], mask), model.fusion[1](views[1], views[0], mask)]
    encoders = list(model.encoders) * (len(views) if len(model.encoders) == 1 else 1)
    return torch.cat([enc(v, valid) for enc, v in zip(encoders, views, strict=True)], dim=-1)


def user_vector(model: LLMESR, sequences: torch.Tensor) -> torch.Tensor:
    sequences = pad_to(sequences, model.max_len)
    if model.spec.mask_token:
        sequences = torch.cat([sequences[:, 1:], torch.full_like(sequences[:, :1], model.mask_token)], dim=1)
    return user_states(model, sequences)[:, -1]


def training_loss(
    model: LLMESR,
    inputs: torch.Tensor,
    targets: torch.Tensor,
    negatives: torch.Tensor,
    similar: torch.Tensor | None = None,
    *,
    alpha: float = 0.0,
    distill: str = "kd",
    beta: float = 0.0,
    temperature: float = 1.0,
    loss: str = "bce",
    shared: SharedNegatives | None = None,
    item_offset: torch.Tensor | None = None,
) -> torch.Tensor:
    inputs, targets, negatives = (pad_to(t, model.max_len) for t in (inputs, targets, negatives))
    states = user_states(model, inputs)
    mask = (targets != 0).float()
    offset = torch.zeros(model.n_items + 1) if item_offset is None else item_offset  # added to each item's logit
    pos = (states * torch.cat(view_embeddings(model, targets), dim=-1)).sum(-1) + offset[targets]
    if loss == "bce":
        neg = (states * torch.cat(view_embeddings(model, negatives), dim=-1)).sum(-1) + offset[negatives]
        per_position = F.binary_cross_entropy_with_logits(pos, torch.ones_like(pos), reduction="none")
        per_position = per_position + F.binary_cross_entropy_with_logits(neg, torch.zeros_like(neg), reduction="none")
    elif loss == "ce":  # every item's score at every position, then the softmax's cross-entropy
        items = torch.arange(1, model.n_items + 1)
        logits = states @ torch.cat(view_embeddings(model, items), dim=-1).T + offset[items]
        per_position = F.cross_entropy(logits.transpose(1, 2), (targets - 1).clamp(min=0), reduction="none")
    else:  # sampled: the target and the shared negatives, each logit minus its log expected count
        assert shared is not None
        neg = states @ torch.cat(view_embeddings(model, shared.items), dim=-1).T
        neg = neg + offset[shared.items] - shared.log_q[shared.items]
        neg = neg.masked_fill(targets[..., None] == shared.items, -torch.inf)
        logits = torch.cat([(pos - shared.log_q[targets])[..., None], neg], dim=-1)
        per_position = -torch.log_softmax(logits, dim=-1)[..., 0]
    total = (per_position * mask).sum() / mask.sum().clamp(min=1)
    if similar is not None and alpha > 0:
        student = states[:, -1]
        k = similar.shape[0] // inputs.shape[0]
        model.eval()  # the teacher without dropout, as the model's
        teachers = user_vector(model, similar).view(inputs.shape[0], k, -1).detach()
        model.train()
        total = total + alpha * distill_loss_reference(student, teachers, distill, temperature)
    if beta > 0 and model.views == "both":
        items = torch.unique(targets[targets != 0])
        semantic = view_embeddings(model, items)[1]
        total = total + beta * info_nce(model.id_view.table(items), semantic, temperature)
    return total
