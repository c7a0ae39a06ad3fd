"""A training step's inputs, built from the seeded samplers of the Rust core (`llmesr.sampling`): the
backbone's batch, the distillation's teachers (their histories, or vectors looked up in the epoch's
table) and the sampled loss's shared negatives. Every draw is a function of (seed, epoch, step)."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import numpy as np
import torch

from llmesr.backbones import backbone
from llmesr.config import TrainConfig
from llmesr.data import Dataset
from llmesr.models import LLMESR
from llmesr.models.losses import SharedNegatives
from llmesr.sampling import bert4rec_batch, histories, negative_distribution, sasrec_batch, shared_negatives

TEACHER_CHUNK = 1024  # users per forward pass when teachers="epoch" builds its table


def training_batch(cfg: TrainConfig, ds: Dataset, users: np.ndarray, epoch: int) -> tuple[np.ndarray, ...]:
    """(inputs, targets, negatives) for the backbone's loss: the next item at every position (SASRec,
    GRU4Rec) or at the last only (`next_item_targets`), or the masked positions' items (Bert4Rec)."""
    spec, m, negatives = backbone(cfg.model.backbone), cfg.model, cfg.objective.negatives
    if spec.batch == "masked":
        return bert4rec_batch(ds, users, m.max_len, m.mask_prob, cfg.run.seed, epoch, negatives)
    inputs, targets, negs = sasrec_batch(ds, users, m.max_len, cfg.run.seed, epoch, negatives)
    if cfg.objective.next_item_targets == "last":
        targets[:, :-1] = 0
        negs[:, :-1] = 0
    return inputs, targets, negs


@dataclass
class StepInputs:
    """Builds the model's arguments for a batch of users (`__call__`, named as `LLMESR.training_loss`'s)."""

    cfg: TrainConfig
    ds: Dataset
    device: torch.device
    similar: np.ndarray | None  # each user's similar users (the distillation's teachers)
    shared_q: np.ndarray | None  # loss="sampled": the negatives' distribution Q
    log_q: torch.Tensor | None  # log of each item's expected count in a draw
    teacher_table: torch.Tensor | None = None  # teachers="epoch": every teacher's vector at the epoch's start
    table_epoch: int = -1  # the epoch whose final weights computed `teacher_table`

    @classmethod
    def of(
        cls, cfg: TrainConfig, ds: Dataset, tables: dict[str, np.ndarray] | None, device: torch.device
    ) -> StepInputs:
        similar = None
        if tables is not None and cfg.uses_similar:
            similar = np.array(tables["similar_users"])[:, : cfg.distillation.n_similar]
        q = log_q = None
        if cfg.objective.loss == "sampled":
            q = negative_distribution(ds, cfg.objective.negatives)
            log_q = torch.from_numpy(np.log(np.maximum(q * cfg.objective.loss_negatives, 1e-30))).float().to(device)
        return cls(cfg, ds, device, similar, q, log_q)

    def __call__(self, users: np.ndarray, epoch: int, step: int) -> dict[str, Any]:
        cfg, ds = self.cfg, self.ds
        arrays = training_batch(cfg, ds, users, epoch)
        sim_rows = sim_index = None
        teacher_vectors = None
        if self.teacher_table is not None and self.similar is not None:
            teacher_vectors = self.teacher_table[torch.from_numpy(self.similar[users]).to(self.device, torch.long)]
        elif self.similar is not None:  # each distinct neighbour encoded once (see models.distillation.teachers)
            neighbours, sim_index = np.unique(self.similar[users].ravel(), return_inverse=True)
            sim_rows = histories(ds, neighbours, "train", cfg.model.max_len)
        inputs, targets, negs, sim, sim_idx = (
            None if a is None else torch.from_numpy(a).to(self.device, torch.long)
            for a in (*arrays, sim_rows, sim_index)
        )
        shared = None
        if self.shared_q is not None and self.log_q is not None:
            items = shared_negatives(self.shared_q, cfg.objective.loss_negatives, cfg.run.seed, epoch, step)
            shared = SharedNegatives(torch.from_numpy(items).to(self.device), self.log_q)
        return dict(
            inputs=inputs,
            targets=targets,
            negatives=negs,
            similar=sim,
            similar_index=sim_idx,
            teacher_vectors=teacher_vectors,
            shared=shared,
        )

    def refresh_teachers(
        self, model: LLMESR, train_users: np.ndarray, after_epoch: int, also: np.ndarray | None = None
    ) -> torch.Tensor | None:
        """teachers="epoch": the table `[n_users + 1, D]` of every user who teaches one of `train_users`,
        from their training history, by the model as `after_epoch` left it, without dropout or autograd
        (what a step would compute for them if the weights did not change during the epoch). Every rank
        computes the same table. The rows of the users in `also` are filled too (validation reads them:
        the same inputs and weights), after the teachers', so the teachers' rows are the same either way.
        Nothing to do without distillation (None)."""
        if self.similar is None:
            return None
        needed = np.unique(self.similar[train_users])
        table: torch.Tensor | None = None
        with model.cached_items():
            for users in (needed, np.setdiff1d(also, needed) if also is not None else needed[:0]):
                for start in range(0, len(users), TEACHER_CHUNK):
                    chunk = users[start : start + TEACHER_CHUNK]
                    rows = histories(self.ds, chunk, "train", self.cfg.model.max_len)
                    vectors = model.frozen_user_vectors(torch.from_numpy(rows).to(self.device, torch.long))
                    if table is None:
                        table = vectors.new_zeros(self.ds.n_users + 1, vectors.shape[1])
                    table[torch.from_numpy(chunk).to(self.device, torch.long)] = vectors
        self.teacher_table, self.table_epoch = table, after_epoch
        return table
