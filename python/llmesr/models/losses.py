"""The next-item losses (`--loss`), over the user states at the target positions `[N, D]`:

- `bce`: the paper's: each target against one sampled negative, binary cross-entropy;
- `ce`: softmax cross-entropy over the whole catalogue (as RecBole trains SASRec; Klenitskiy & Vasilev,
  "Turning Dross Into Gold Loss", RecSys 2023), chunked so that at most `CE_CHUNK_SCORES` scores exist
  at a time, forward or backward;
- `sampled`: softmax over negatives shared by the batch, drawn from a distribution Q, with the log-Q
  correction (every candidate's logit minus the log of its expected count in the draw) and accidental
  hits (a negative that is the row's target) removed; a repeated draw is scored once.

Each returns the SUM over rows; the caller divides by the number of targets. `NEXT_ITEM_LOSSES` maps
each `--loss` name to its objective (`@register_loss("name")`): a new loss is one function here and
its name among `config.ObjectiveSettings.loss`'s choices (CONTRIBUTING.md has a worked example). `logit_adjustment` gives
the per-item offsets of the logit-adjusted losses (Menon et al., "Long-tail learning via logit
adjustment", ICLR 2021): trained with tau * log(prior) added to every item's logit and ranked without it,
a model stops spending its scores on popularity, which lifts the long tail.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import NamedTuple

import torch
from torch.nn import functional as F

from llmesr.models.registry import registrar

CE_CHUNK_SCORES = 1 << 22  # scores per chunk (16 MiB in float32)
# Up to this many scores (a Yelp step's ~1,150 x 20,033; 128 MiB in float32) `ce` keeps its softmax for the
# backward rather than recomputing it: one matrix product of four saved
CE_KEEP_SCORES = 1 << 25
# The sampled loss's chunk: a Yelp step (~1,150 targets x 8,192 draws) in one, whose softmax is kept for
# the backward rather than recomputed (64 MiB in float32)
SAMPLED_CHUNK_SCORES = 1 << 24


class SharedNegatives(NamedTuple):
    """The `sampled` loss's negatives for one batch: `items` `[S]` drawn from a distribution Q (with
    replacement), and `log_q` `[n_items + 1]`, the log of each item's expected count in such a draw
    (log(S * Q(item)))."""

    items: torch.Tensor
    log_q: torch.Tensor


def bce_loss(states: torch.Tensor, positives: torch.Tensor, negatives: torch.Tensor) -> torch.Tensor:
    """`states`, `positives`, `negatives`: `[N, D]` (a row's target and its negative's item vectors)."""
    pos, neg = (states * positives).sum(-1), (states * negatives).sum(-1)
    return F.binary_cross_entropy_with_logits(
        pos, torch.ones_like(pos), reduction="sum"
    ) + F.binary_cross_entropy_with_logits(neg, torch.zeros_like(neg), reduction="sum")


def _logsumexp(scores: torch.Tensor, overwrite: bool) -> torch.Tensor:
    """torch.logsumexp over dim 1 (the same operations, the same result) with one `[rows, C]` temporary,
    or none where `scores` (finite) may be `overwrite`n."""
    top = scores.amax(dim=1, keepdim=True)
    shifted = scores.sub_(top) if overwrite else scores - top
    return shifted.exp_().sum(dim=1).log_().add_(top.squeeze(1))


class _ChunkedSoftmaxCE(torch.autograd.Function):
    """sum_r logsumexp(states_r @ table.T) - states_r @ table[targets_r], a chunk of rows at a time. With
    `keep`, the forward keeps each chunk's softmax for the backward; without, the backward recomputes
    them (softmax minus one-hot) instead of keeping `[N, C]`. Both give the same bits."""

    @staticmethod
    def forward(
        ctx, states: torch.Tensor, table: torch.Tensor, targets: torch.Tensor, rows: int, keep: bool
    ) -> torch.Tensor:
        lse, kept = [], []
        for chunk in states.split(rows):
            scores = chunk @ table.T
            lse.append(_logsumexp(scores, overwrite=not keep))
            if keep:  # the softmax the backward would recompute, in the scores themselves
                kept.append(scores.sub_(lse[-1][:, None]).exp_())
        total = torch.cat(lse)
        ctx.save_for_backward(states, table, targets, total)
        ctx.rows, ctx.kept = rows, kept  # the backward overwrites them: a second one recomputes
        return (total - (states * table[targets]).sum(-1)).sum()

    @staticmethod
    def backward(ctx, grad: torch.Tensor) -> tuple[torch.Tensor | None, ...]:
        states, table, targets, lse = ctx.saved_tensors
        kept, ctx.kept = ctx.kept, []
        grad_states, grad_table = torch.empty_like(states), torch.zeros_like(table)
        for i, start in enumerate(range(0, len(states), ctx.rows)):
            end = min(start + ctx.rows, len(states))
            chunk = states[start:end]
            # softmax minus one-hot, in place in the kept or recomputed scores: no [rows, C] temporaries beside them
            p = kept[i] if kept else (chunk @ table.T).sub_(lse[start:end, None]).exp_()
            p[torch.arange(end - start, device=p.device), targets[start:end]] -= 1.0
            p.mul_(grad)
            torch.mm(p, table, out=grad_states[start:end])
            grad_table.addmm_(p.T, chunk)
        return grad_states, grad_table, None, None, None


def full_softmax_loss(
    states: torch.Tensor,
    table: torch.Tensor,
    targets: torch.Tensor,
    chunk_scores: int = CE_CHUNK_SCORES,
    keep_scores: int = CE_KEEP_SCORES,
) -> torch.Tensor:
    """Cross-entropy of each row's target (`targets`: row indices of `table`, `[C, D]`) against every row
    of `table`, summed; memory O(chunk_scores) beyond the inputs, or the whole softmax where it has at
    most `keep_scores` entries (then the backward does not recompute the scores)."""
    if len(states) == 0:
        return states.sum() * 0.0 + table.sum() * 0.0
    rows = max(1, chunk_scores // max(1, len(table)))
    return _ChunkedSoftmaxCE.apply(states, table, targets, rows, len(states) * len(table) <= keep_scores)


class _ChunkedSampledSoftmax(torch.autograd.Function):
    """Each row's logsumexp over its own logit `positive_r` and `states_r @ candidates.T + bias`, leaving
    out the candidates that are the row's target (`targets_r == items_c`), a chunk of rows at a time.
    One chunk (the usual case) keeps its softmax for the backward; several recompute theirs there
    instead of keeping `[N, S]`."""

    @staticmethod
    def _scores(chunk, candidates, bias, targets, items) -> torch.Tensor:
        scores = torch.addmm(bias, chunk, candidates.T)
        return scores.masked_fill_(targets[:, None] == items[None, :], -torch.inf)

    @staticmethod
    def forward(ctx, states, candidates, bias, positive, targets, items, rows: int) -> torch.Tensor:
        lse, kept = torch.empty_like(positive), positive.new_empty(0)
        for start in range(0, len(states), rows):
            end = min(start + rows, len(states))
            scores = _ChunkedSampledSoftmax._scores(states[start:end], candidates, bias, targets[start:end], items)
            top = torch.maximum(scores.amax(dim=1), positive[start:end])  # finite: the positive is
            weights = scores.sub_(top[:, None]).exp_()
            total = weights.sum(dim=1) + (positive[start:end] - top).exp()
            lse[start:end] = total.log().add_(top)
            if rows >= len(states):
                kept = weights.div_(total[:, None])  # the softmax's weights over the candidates
        ctx.save_for_backward(states, candidates, bias, positive, targets, items, lse, kept)
        ctx.rows = rows
        return lse

    @staticmethod
    def backward(ctx, grad: torch.Tensor) -> tuple[torch.Tensor | None, ...]:
        states, candidates, bias, positive, targets, items, lse, kept = ctx.saved_tensors
        grad_states, grad_candidates = torch.empty_like(states), torch.zeros_like(candidates)
        for start in range(0, len(states), ctx.rows):
            end = min(start + ctx.rows, len(states))
            chunk = states[start:end]
            if len(kept):
                p = kept * grad[:, None]
            else:  # the softmax's weights (0 where left out) recomputed, times the incoming gradient, in place
                p = _ChunkedSampledSoftmax._scores(chunk, candidates, bias, targets[start:end], items)
                p.sub_(lse[start:end, None]).exp_().mul_(grad[start:end, None])
            torch.mm(p, candidates, out=grad_states[start:end])
            grad_candidates.addmm_(p.T, chunk)
        grad_positive = (positive - lse).exp() * grad
        return grad_states, grad_candidates, None, grad_positive, None, None, None


def sampled_softmax_loss(
    states: torch.Tensor,
    positives: torch.Tensor,
    candidates: torch.Tensor,
    log_q_positive: torch.Tensor,
    log_q_candidates: torch.Tensor,
    targets: torch.Tensor,
    items: torch.Tensor,
    chunk_scores: int = SAMPLED_CHUNK_SCORES,
) -> torch.Tensor:
    """Softmax of each row's target against the shared candidates, log-Q corrected, summed; memory
    O(chunk_scores) beyond the inputs.

    `positives`: `[N, D]` target vectors; `candidates`: `[S, D]` shared negatives; `log_q_*`: the log of
    each item's expected count in the draw (`[N]`, `[S]`); `targets` `[N]` and `items` `[S]`: the
    rows' target ids and the candidates' (a candidate that is the row's own target is left out of that
    row's softmax)."""
    positive = (states * positives).sum(-1) - log_q_positive
    if len(states) == 0:
        return positive.sum() + candidates.sum() * 0.0
    rows = max(1, chunk_scores // max(1, len(candidates)))
    lse = _ChunkedSampledSoftmax.apply(states, candidates, -log_q_candidates, positive, targets, items, rows)
    return (lse - positive).sum()


def logit_adjustment(popularity: torch.Tensor, tau: float) -> torch.Tensor:
    """`[n_items + 1]`: tau * log of each item's share of the training interactions (+1 each, so an
    unseen item has a finite prior); entry 0 (padding) too, never used."""
    prior = popularity.double() + 1.0
    return (tau * torch.log(prior / prior[1:].sum())).float()


class LossInputs(NamedTuple):
    """What a next-item objective sees: `states` `[N, D]` at the target positions, their `targets` and
    (for bce) `negatives` `[N]`, the batch's `shared` negatives (sampled), `vectors(items)`: the item
    vectors the states are scored against (`[len(items), D]`), and the catalogue's size."""

    states: torch.Tensor
    targets: torch.Tensor
    negatives: torch.Tensor
    shared: SharedNegatives | None
    vectors: Callable[[torch.Tensor], torch.Tensor]
    n_items: int


NextItemLoss = Callable[[LossInputs], torch.Tensor]


def next_item_loss(batch: LossInputs, loss: str, item_offset: torch.Tensor | None = None) -> torch.Tensor:
    """The summed `loss` (a name in NEXT_ITEM_LOSSES) of `batch`'s states against its targets. `item_offset` (`[n_items + 1]`): added to every item's logit in training only (logit
    adjustment, see `logit_adjustment`), as one more coordinate of the states and item vectors."""
    objective = NEXT_ITEM_LOSSES.get(loss)
    if objective is None:
        raise ValueError(f"loss must be one of {', '.join(NEXT_ITEM_LOSSES)}, not {loss!r}")
    if item_offset is None:
        return objective(batch)
    item_vectors = batch.vectors

    def vectors(items: torch.Tensor) -> torch.Tensor:
        return torch.cat([item_vectors(items), item_offset[items, None]], dim=1)

    states = torch.cat([batch.states, batch.states.new_ones(len(batch.states), 1)], dim=1)
    return objective(batch._replace(states=states, vectors=vectors))


NEXT_ITEM_LOSSES: dict[str, NextItemLoss] = {}


register_loss = registrar(NEXT_ITEM_LOSSES)  # @register_loss("name") adds an objective under its --loss name


@register_loss("bce")
def bce_objective(x: LossInputs) -> torch.Tensor:
    vectors = x.vectors(torch.cat([x.targets, x.negatives]))  # the item side once for both
    return bce_loss(x.states, *vectors.chunk(2))


@register_loss("ce")
def ce_objective(x: LossInputs) -> torch.Tensor:
    table = x.vectors(torch.arange(1, x.n_items + 1, device=x.states.device))
    return full_softmax_loss(x.states, table, x.targets - 1)


@register_loss("sampled")
def sampled_objective(x: LossInputs) -> torch.Tensor:
    if x.shared is None:
        raise ValueError("the sampled loss needs the batch's shared negatives")
    # An item drawn c times is one column with c times its weight (log c added to its logit): the same
    # softmax in exact arithmetic, with at most min(draws, n_items) columns.
    items, counts = torch.unique(x.shared.items, return_counts=True)
    log_q = x.shared.log_q
    return sampled_softmax_loss(
        x.states,
        x.vectors(x.targets),
        x.vectors(items),
        log_q[x.targets],
        log_q[items] - counts.log(),
        x.targets,
        items,
    )
