"""LLM-ESR: a collaborative ID view and a semantic view (the frozen language-model item table
through a small adapter), optionally mixed by two-way cross-attention, encoded by ONE shared sequence
encoder (SASRec, Bert4Rec or GRU4Rec), scored by the concatenation of both views, and trained with
retrieval-augmented self-distillation from the most similar users.

The same class is the ID-only baseline (`views="id"`, no semantic table) and every ablation of the
paper's Table 2 (one view, separate encoders, no cross-attention, random ID init, no distillation).

The exact speed-ups live here too: the adapter is linear, so it is applied once per distinct item of
a batch instead of at every (mostly padded) position; a shared encoder reads both views in one call
(stacked along the batch); the similar users' representations (the distillation teachers) are computed
without autograd; scores are computed only where there is a target. Each is tested against the
straightforward way.
"""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager
from typing import cast

import torch
from torch import nn
from torch.nn import functional as F

from llmesr.backbones import backbone as backbone_spec
from llmesr.models.compat import KeyMask, strategy
from llmesr.models.encoder import Attention, SequenceEncoder
from llmesr.models.losses import NEXT_ITEM_LOSSES, LossInputs, SharedNegatives
from llmesr.ops import HashedDropout, distill_loss, masked_attention, native_ops_loaded
from llmesr.ops.distill import info_nce

VIEWS = ("both", "id", "semantic")  # config.FusionSettings.views


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


def two_way_cross_attention(pair: nn.ModuleList, views: list[torch.Tensor], mask: KeyMask) -> list[torch.Tensor]:
    """`[pair[0](id, semantic), pair[1](semantic, id)]` with both directions in one operator call (their
    queries, keys and values stacked along the batch)."""
    to_id, to_semantic = cast(CrossAttention, pair[0]), cast(CrossAttention, pair[1])
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


def in_original_order(parts: list[torch.Tensor], indices: list[torch.Tensor]) -> torch.Tensor:
    """Concatenates per-group rows and puts them back in the rows' original order."""
    return torch.cat(parts)[torch.argsort(torch.cat(indices))]


class LLMESR(nn.Module):
    """Dual-view sequential recommender over `n_items` items (ids 1..n_items, 0 = padding).

    `semantic`: the frozen `[n_items + 1, d]` language-model item table (row 0 padding), needed unless
    `views="id"`; `id_init`: an optional `[n_items + 1, hidden]` initial ID table (the PCA of
    `semantic`; random when None). Bert4Rec adds a mask token, item `n_items + 1`.
    """

    semantic: torch.Tensor  # the frozen language-model item table (a buffer)
    semantic_mask: nn.Parameter  # Bert4Rec: the mask token's semantic-view vector

    def __init__(
        self,
        n_items: int,
        semantic: torch.Tensor | None = None,
        *,
        backbone: str = "sasrec",
        views: str = "both",
        hidden: int = 64,
        max_len: int = 200,
        layers: int = 2,
        heads: int = 1,
        dropout: float = 0.5,
        id_init: torch.Tensor | None = None,
        cross_attention: bool = True,
        shared_encoder: bool = True,
        compat: bool = False,
        block: str = "original",
        init: str = "xavier",
        embed_scale: bool = True,
        chunk_tokens: int = 2048,
    ) -> None:
        super().__init__()
        self.chunk_tokens = chunk_tokens  # padded positions per encoder call (see `compat.length_chunks`)
        native_ops_loaded()  # build the fused operators now, once, before any fork (see llmesr.ops)
        self.spec = backbone_spec(backbone)
        if views not in VIEWS:
            raise ValueError(f"views must be one of {', '.join(VIEWS)}, not {views!r}")
        if views != "id" and semantic is None:
            raise ValueError(f"views={views!r} needs the semantic item table")
        if semantic is not None and semantic.shape[0] != n_items + 1:
            raise ValueError(f"the semantic table has {semantic.shape[0]} rows, expected {n_items + 1}")
        self.n_items, self.backbone, self.views, self.max_len = n_items, backbone, views, max_len
        self.compat = strategy(compat)  # how rows are read: ours, or the original code's (llmesr.models.compat)
        self.block = block
        # The original scales the input embeddings of its Transformers by sqrt(hidden) (both views, not
        # the scored item vectors), which balances them against the position embeddings.
        self.input_scale = hidden**0.5 if embed_scale and self.spec.scales_input else 1.0
        self.adapted: torch.Tensor | None = None  # set by `freeze_items` for serving
        self.mask_token = n_items + 1  # only read by a backbone with spec.mask_token (Bert4Rec)
        rows = n_items + 2
        if views != "semantic":
            self.item_id = nn.Embedding(rows, hidden, padding_idx=0)
            with torch.no_grad():
                if id_init is None:
                    nn.init.normal_(self.item_id.weight, std=hidden**-0.5)
                else:
                    self.item_id.weight[: n_items + 1].copy_(id_init)
                self.item_id.weight[0].zero_()
        if views != "id":
            assert semantic is not None
            self.register_buffer("semantic", semantic.float(), persistent=False)
            self.adapter = Adapter(semantic.shape[1], hidden)
            if self.spec.mask_token:  # the mask token's semantic-view vector (it has no text)
                self.semantic_mask = nn.Parameter(torch.randn(hidden) * hidden**-0.5)
        self.cross = (
            nn.ModuleList(CrossAttention(hidden, heads, dropout, original=self.compat.original) for _ in range(2))
            if cross_attention and views == "both"
            else None
        )
        n_encoders = 1 if shared_encoder or views != "both" else 2
        self.encoders = nn.ModuleList(
            self.spec.build_encoder(hidden, max_len, layers, heads, dropout, compat=self.compat, block=block)
            for _ in range(n_encoders)
        )
        if init == "xavier":
            self._xavier_init(keep_id_table=id_init is not None)
        elif init != "normal":
            raise ValueError(f"init must be 'normal' or 'xavier', not {init!r}")

    @torch.no_grad()
    def _xavier_init(self, keep_id_table: bool) -> None:
        """The original's initialisation: xavier_normal_ on every matrix (embeddings too), vectors
        (biases, LayerNorm) left as they are, a pretrained (PCA) ID table kept."""
        for name, param in self.named_parameters():
            if param.dim() >= 2 and not (keep_id_table and name.startswith("item_id.")):
                nn.init.xavier_normal_(param)
        if self.views != "semantic":
            self.item_id.weight[0].zero_()  # padding

    # Item side.

    def semantic_items(self, items: torch.Tensor) -> torch.Tensor:
        """adapter(E_llm[items]), computed once per distinct item (the adapter is linear per row);
        padding (item 0) maps to zeros and the mask token to its learned vector."""
        if self.adapted is not None:
            return self.adapted[items]
        unique, inverse = torch.unique(items, return_inverse=True)
        out = self.adapter(self.semantic[unique.clamp(max=self.n_items)]) * (unique != 0)[:, None]
        if self.spec.mask_token:
            out = torch.where((unique == self.mask_token)[:, None], self.semantic_mask, out)
        return out[inverse]

    def view_embeddings(self, items: torch.Tensor) -> list[torch.Tensor]:
        """The item embeddings of each view, in the order [id, semantic]."""
        out = []
        if self.views != "semantic":
            out.append(self.item_id(items))
        if self.views != "id":
            out.append(self.semantic_items(items))
        return out

    def input_embeddings(self, sequences: torch.Tensor) -> list[torch.Tensor]:
        """The views' embeddings of an input sequence, scaled by `input_scale`."""
        views = self.view_embeddings(sequences)
        return views if self.input_scale == 1.0 else [v * self.input_scale for v in views]

    def item_vectors(self, items: torch.Tensor) -> torch.Tensor:
        """[e_id; adapter(e_llm)] of the given items (one part when one view is used)."""
        return torch.cat(self.view_embeddings(items), dim=-1)

    @torch.no_grad()
    def freeze_items(self) -> None:
        """For serving: the adapter's output for every item (and the mask token) is computed once, so
        the semantic view costs a table lookup, as the ID view does. Call it after training only."""
        if self.views != "id":
            self.adapted = None
            self.adapted = self.semantic_items(torch.arange(self.n_items + 2, device=self.semantic.device))

    @contextmanager
    def cached_items(self) -> Iterator[None]:
        """`freeze_items` for the length of a no-grad pass over many users (an evaluation, the epoch's
        teacher table), during which the weights do not change; the adapter's output per batch is
        the same rows of that table. Nothing inside may train: the adapter gets no gradient there. A
        model frozen for serving already has the table."""
        before = self.adapted
        if before is None:
            self.freeze_items()
        try:
            yield
        finally:
            self.adapted = before

    # User side.

    def _pad(self, sequences: torch.Tensor) -> torch.Tensor:
        return self.compat.pad(sequences, self.max_len, self.spec)

    def cross_mask(self, valid: torch.Tensor) -> KeyMask:
        return self.compat.cross_mask(valid, cast(SequenceEncoder, self.encoders[0]))

    def user_states(self, sequences: torch.Tensor, last_only: bool = False) -> torch.Tensor:
        """`[B, L, H·views]`: each view through the sequence encoder, concatenated (`[B, 1, H·views]`,
        the last position's, when `last_only`: see `TransformerEncoder.forward`)."""
        valid = sequences != 0
        views = self.input_embeddings(sequences)  # the encoders apply the embedding dropout
        if self.cross is not None:
            views = two_way_cross_attention(self.cross, views, self.cross_mask(valid))
        if len(self.encoders) == 1 and len(views) == 2:  # shared encoder: both views in one call
            both = self.encoders[0](torch.cat(views), torch.cat([valid, valid]), last_only)
            return torch.cat(both.chunk(2), dim=-1)
        return torch.cat([enc(v, valid, last_only) for enc, v in zip(self.encoders, views, strict=False)], dim=-1)

    def by_length(self, sequences: torch.Tensor) -> list[tuple[torch.Tensor, int]]:
        """Row indices grouped by history length, each with the columns its rows need (see
        `llmesr.models.compat`): the rows of a group are encoded at that width only."""
        return self.compat.length_groups(sequences, self.spec, self.chunk_tokens)

    def user_vector(self, sequences: torch.Tensor) -> torch.Tensor:
        """Each user's representation from their history (left-padded): the state at the last
        position; Bert4Rec appends the mask token and reads its state. Without dropout (eval mode)
        the encoder's last block computes that position only (exact; compat keeps the full pass)."""
        last_only = self.compat.last_only(self.training)
        sequences = self._pad(sequences)
        if self.spec.mask_token:
            mask = torch.full_like(sequences[:, :1], self.mask_token)
            sequences = torch.cat([sequences, mask], dim=1)[:, -self.max_len :]
        groups = self.by_length(sequences)
        vectors = [self.user_states(sequences[idx, -width:], last_only)[:, -1] for idx, width in groups]
        return in_original_order(vectors, [idx for idx, _ in groups])

    # Losses.

    def training_loss(
        self,
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
        similar_index: torch.Tensor | None = None,
        item_offset: torch.Tensor | None = None,
        teacher_vectors: torch.Tensor | None = None,
    ) -> torch.Tensor:
        """The next-item `loss` (see `llmesr.models.losses`: `bce` of each target against its negative,
        `ce` over the whole catalogue, or `sampled` softmax over the `shared` negatives) averaged over
        the targets (wherever `targets` is not 0: every position for SASRec, the masked ones for
        Bert4Rec, the last for GRU4Rec), plus `alpha` times the self-distillation loss towards the
        `similar` users' sequences (`[B·K, L]` rows, K per user, or distinct rows picked by
        `similar_index`, see `teachers`), or towards precomputed `teacher_vectors` (`[B, K, D]`), and
        `beta` times the item regulariser. `item_offset`: a training-only logit offset per item (see
        `next_item_loss`)."""
        inputs, targets, negatives = self._pad(inputs), self._pad(targets), self._pad(negatives)
        picked, picked_targets, picked_negatives, students, groups = [], [], [], [], self.by_length(inputs)
        for idx, width in groups:
            states = self.user_states(inputs[idx, -width:])
            where = targets[idx, -width:] != 0
            picked.append(states[where])
            picked_targets.append(targets[idx, -width:][where])
            picked_negatives.append(negatives[idx, -width:][where])
            students.append(states[:, -1])
        n_targets = int((targets != 0).sum())
        total = self.next_item_loss(
            torch.cat(picked), torch.cat(picked_targets), torch.cat(picked_negatives), loss, shared, item_offset
        ) / max(n_targets, 1)
        if (similar is not None or teacher_vectors is not None) and alpha > 0:
            student = in_original_order(students, [idx for idx, _ in groups])
            if teacher_vectors is None:
                assert similar is not None
                teacher_vectors = self.teachers(similar, student.shape[0], similar_index)
            total = total + alpha * distill_loss(student, teacher_vectors, distill, temperature)
        if beta > 0 and self.views == "both":
            total = total + beta * self.item_regulariser(targets[targets != 0], temperature)
        return total

    def next_item_loss(
        self,
        states: torch.Tensor,
        targets: torch.Tensor,
        negatives: torch.Tensor,
        loss: str = "bce",
        shared: SharedNegatives | None = None,
        item_offset: torch.Tensor | None = None,
    ) -> torch.Tensor:
        """The summed `loss` of `[N, D]` states against their `[N]` targets (and negatives, for bce).
        `item_offset` (`[n_items + 1]`): added to every item's logit in training only (logit
        adjustment, see `logit_adjustment`), as one more coordinate of the states and item vectors."""
        if item_offset is not None:
            states = torch.cat([states, states.new_ones(len(states), 1)], dim=1)

        def vectors_of(items: torch.Tensor) -> torch.Tensor:
            vectors = self.item_vectors(items)
            return vectors if item_offset is None else torch.cat([vectors, item_offset[items, None]], dim=1)

        objective = NEXT_ITEM_LOSSES.get(loss)
        if objective is None:
            raise ValueError(f"loss must be one of {', '.join(NEXT_ITEM_LOSSES)}, not {loss!r}")
        return objective(LossInputs(states, targets, negatives, shared, vectors_of, self.n_items))

    forward = training_loss  # so DistributedDataParallel wraps the training step

    def teachers(self, similar: torch.Tensor, users: int, index: torch.Tensor | None = None) -> torch.Tensor:
        """`[users, k, D]`: the representations of each user's `k` similar users, without autograd and
        without dropout: a teacher is a target, never trained through (the original applies dropout to
        it, which only adds noise to the target). `similar`: their sequences, `[users·k, L]`, or, with
        `index` (`[users·k]`), the distinct ones that `index` picks from: a user who is a neighbour of
        several users in the batch is encoded once (the same vector, as there is no dropout)."""
        vectors = self.frozen_user_vectors(similar)
        if index is not None:
            vectors = vectors[index]
        return vectors.view(users, -1, vectors.shape[-1])

    def frozen_user_vectors(self, sequences: torch.Tensor) -> torch.Tensor:
        """`user_vector` without autograd and without dropout (the teachers' vectors)."""
        was_training = self.training
        self.eval()
        with torch.no_grad():
            vectors = self.user_vector(sequences)
        self.train(was_training)
        return vectors

    def item_regulariser(self, items: torch.Tensor, temperature: float = 1.0) -> torch.Tensor:
        """Contrastive alignment of the two views of the batch's distinct items: an item's ID
        embedding is paired with its adapted semantic embedding against the other items'."""
        unique = torch.unique(items)
        return info_nce(self.item_id(unique), self.semantic_items(unique), temperature)
