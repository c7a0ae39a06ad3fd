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
from contextlib import contextmanager, nullcontext
from typing import cast

import torch
from torch import nn

from llmesr.backbones import backbone as backbone_spec
from llmesr.models.compat import KeyMask, strategy
from llmesr.models.distillation import item_regulariser, teachers
from llmesr.models.encoder import SequenceEncoder
from llmesr.models.fusion import FUSIONS, Fusion
from llmesr.models.losses import LossInputs, SharedNegatives, next_item_loss
from llmesr.models.views import IdView, SemanticView
from llmesr.ops import distill_loss, native_ops_loaded

VIEWS = ("both", "id", "semantic")  # config.FusionSettings.views


# Weights written before the views and the fusion became parts of their own (older run folders) name
# them by their former paths; they load under the current ones.
RENAMED = (
    ("item_id.", "id_view.table."),
    ("adapter.", "semantic_view.adapter."),
    ("semantic_mask", "semantic_view.mask_vector"),
    ("cross.", "fusion.directions."),
)


def renamed_weights(state_dict: dict[str, torch.Tensor], prefix: str, *args: object) -> None:
    for key in list(state_dict):
        for old, new in RENAMED:
            if key.startswith(prefix + old):
                state_dict[prefix + new + key[len(prefix + old) :]] = state_dict.pop(key)


def in_original_order(parts: list[torch.Tensor], indices: list[torch.Tensor]) -> torch.Tensor:
    """Concatenates per-group rows and puts them back in the rows' original order."""
    return torch.cat(parts)[torch.argsort(torch.cat(indices))]


@torch.no_grad()
def original_init(model: LLMESR, keep_id_table: bool) -> None:
    """The original's initialisation: xavier_normal_ on every matrix (embeddings too), vectors
    (biases, LayerNorm) left as they are, a pretrained (PCA) ID table kept."""
    for name, param in model.named_parameters():
        if param.dim() >= 2 and not (keep_id_table and name.startswith("id_view.")):
            nn.init.xavier_normal_(param)
    if model.views != "semantic":
        model.id_view.table.weight[0].zero_()  # padding


def check_tables(n_items: int, semantic: torch.Tensor | None, views: str) -> None:
    if views not in VIEWS:
        raise ValueError(f"views must be one of {', '.join(VIEWS)}, not {views!r}")
    if views != "id" and semantic is None:
        raise ValueError(f"views={views!r} needs the semantic item table")
    if semantic is not None and semantic.shape[0] != n_items + 1:
        raise ValueError(f"the semantic table has {semantic.shape[0]} rows, expected {n_items + 1}")


class LLMESR(nn.Module):
    """Dual-view sequential recommender over `n_items` items (ids 1..n_items, 0 = padding).

    `semantic`: the frozen `[n_items + 1, d]` language-model item table (row 0 padding), needed unless
    `views="id"`; `id_init`: an optional `[n_items + 1, hidden]` initial ID table (the PCA of
    `semantic`; random when None). Bert4Rec adds a mask token, item `n_items + 1`.
    """

    id_view: IdView  # unless views="semantic"
    semantic_view: SemanticView  # unless views="id"
    fusion: Fusion  # how the views meet before the encoder (llmesr.models.fusion)

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
        fusion: str = "concat",
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
        check_tables(n_items, semantic, views)
        self.n_items, self.backbone, self.views, self.max_len, self.hidden = n_items, backbone, views, max_len, hidden
        self.compat = strategy(compat)  # how rows are read: ours, or the original code's (llmesr.models.compat)
        self.block = block
        # The original scales the input embeddings of its Transformers by sqrt(hidden) (both views, not
        # the scored item vectors), which balances them against the position embeddings.
        self.input_scale = hidden**0.5 if embed_scale and self.spec.scales_input else 1.0
        self.mask_token = n_items + 1  # only read by a backbone with spec.mask_token (Bert4Rec)
        if views != "semantic":
            self.id_view = IdView(n_items + 2, hidden, id_init)
        if views != "id":
            assert semantic is not None
            self.semantic_view = SemanticView(semantic, hidden, self.mask_token if self.spec.mask_token else None)
        if fusion not in FUSIONS:
            raise ValueError(f"fusion must be one of {', '.join(FUSIONS)}, not {fusion!r}")
        # One view has nothing to meet: concatenation (of one) whatever was asked.
        self.fusion = FUSIONS[fusion if views == "both" else "concat"](
            hidden, heads, dropout, original=self.compat.original
        )
        n_encoders = 1 if shared_encoder or views != "both" else 2
        self.encoders = nn.ModuleList(
            self.spec.build_encoder(hidden, max_len, layers, heads, dropout, compat=self.compat, block=block)
            for _ in range(n_encoders)
        )
        self._register_load_state_dict_pre_hook(renamed_weights)
        if init == "xavier":
            original_init(self, keep_id_table=id_init is not None)
        elif init != "normal":
            raise ValueError(f"init must be 'normal' or 'xavier', not {init!r}")

    # Item side.

    def view_embeddings(self, items: torch.Tensor) -> list[torch.Tensor]:
        """The item embeddings of each view, in the order [id, semantic]."""
        out = []
        if self.views != "semantic":
            out.append(self.id_view(items))
        if self.views != "id":
            out.append(self.semantic_view(items))
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
            self.semantic_view.freeze()

    @contextmanager
    def cached_items(self) -> Iterator[None]:
        """`freeze_items` for the length of a no-grad pass over many users (an evaluation, the epoch's
        teacher table), during which the weights do not change; the adapter's output per batch is
        the same rows of that table. Nothing inside may train: the adapter gets no gradient there. A
        model frozen for serving already has the table."""
        with self.semantic_view.frozen() if self.views != "id" else nullcontext():
            yield

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
        views = self.fusion(views, self.cross_mask(valid) if self.fusion.reads_mask else None)
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
        `similar_index`, see `distillation.teachers`), or towards precomputed `teacher_vectors` (`[B, K, D]`), and
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
        # The losses in float32 even where the encoder ran under bf16 autocast (`--precision`): their
        # softmaxes and sums lose too much in bfloat16.
        with torch.autocast(inputs.device.type, enabled=False):
            batch = LossInputs(
                torch.cat(picked).float(),
                torch.cat(picked_targets),
                torch.cat(picked_negatives),
                shared,
                self.item_vectors,
                self.n_items,
            )
            total = next_item_loss(batch, loss, item_offset) / max(n_targets, 1)
            if (similar is not None or teacher_vectors is not None) and alpha > 0:
                student = in_original_order(students, [idx for idx, _ in groups]).float()
                if teacher_vectors is None:
                    assert similar is not None
                    teacher_vectors = teachers(self, similar, student.shape[0], similar_index)
                total = total + alpha * distill_loss(student, teacher_vectors.float(), distill, temperature)
            if beta > 0 and self.views == "both":
                total = total + beta * item_regulariser(self, targets[targets != 0], temperature)
        return total

    forward = training_loss  # so DistributedDataParallel wraps the training step

    def frozen_user_vectors(self, sequences: torch.Tensor) -> torch.Tensor:
        """`user_vector` without autograd and without dropout (the teachers' vectors)."""
        was_training = self.training
        self.eval()
        with torch.no_grad():
            vectors = self.user_vector(sequences)
        self.train(was_training)
        return vectors
