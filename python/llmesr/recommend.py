"""Serving a trained run: the top-k next items for histories, the history itself excluded.

    from llmesr.recommend import Recommender
    rec = Recommender("runs/llmesr-sasrec-42")
    items, scores = rec.recommend([[3, 17, 42]], k=10)            # dataset ids (1..n_items)
    items, scores = rec.recommend([["B0001", "B0042"]], raw=True)  # the ids of the source files

The adapter's output is precomputed for every item when the run loads, so a recommendation costs what
plain SASRec costs: table lookups, the encoder, and one matrix product with the item table.
"""

from __future__ import annotations

import math
import os
from collections.abc import Sequence
from pathlib import Path

import numpy as np
import torch

from llmesr.data import load_dataset, load_embeddings
from llmesr.errors import SettingsError
from llmesr.locks import folder_lock
from llmesr.models import LLMESR
from llmesr.runs import BEST, build_model, check_inputs, load_config, load_weights


class Recommender:
    """A trained model from a run folder written by `llmesr-train` (best weights, config.json); the
    dataset folder it was trained on must still exist (the semantic table and id maps live there).
    `popularity_penalty` (gamma): scores minus gamma * log(1 + training popularity), to serve more of
    the long tail (0: the model's own scores; None: the run's own, which its test metrics were measured
    with: `--popularity-penalty`)."""

    def __init__(
        self, run_dir: str | os.PathLike[str], device: str = "cpu", popularity_penalty: float | None = None
    ) -> None:

        run = Path(run_dir)
        if not (run / BEST).exists():
            raise FileNotFoundError(f"{run} has no {BEST}: not a finished run folder")
        with folder_lock(run, exclusive=False):  # its config and weights as one set
            self.config = load_config(run)
            check_inputs(run, self.config, "train again on the new data, or restore the data the run was trained on")
            ds = load_dataset(self.config.data)
            tables = load_embeddings(self.config.data) if self.config.model.method == "llmesr" else None
            self.model: LLMESR = build_model(self.config, ds.n_items, tables)
            load_weights(run / BEST, self.model)
        self.model.to(device).eval()
        self.model.freeze_items()
        self.device = torch.device(device)
        self.n_items = ds.n_items
        with torch.no_grad():
            self.item_table = self.model.item_vectors(torch.arange(ds.n_items + 1, device=self.device))
        # Towards the long tail: every item's score minus gamma * log(1 + training popularity), as
        # llmesr.evaluate.PopularityDebiased (`llmesr-report --tail-curve` measures the trade-off).
        if popularity_penalty is None:
            popularity_penalty = self.config.evaluation.popularity_penalty or 0.0
        self.popularity_penalty = float(popularity_penalty)
        if not math.isfinite(self.popularity_penalty):
            raise SettingsError(f"popularity_penalty must be a finite number, not {popularity_penalty}")
        self.item_offset = -self.popularity_penalty * torch.log1p(
            torch.from_numpy(ds.train_popularity.astype(np.float32))
        ).to(self.device)
        self.popularity = torch.from_numpy(ds.train_popularity.astype(np.float32)).to(self.device)
        self.raw_ids = ds.item_ids()
        self._index = {raw: i for i, raw in enumerate(self.raw_ids) if raw is not None}

    def _ids(self, history: Sequence[int | str], raw: bool) -> list[int]:
        if raw:
            unknown = [x for x in history if str(x) != x or x not in self._index]
            if unknown:
                raise KeyError(f"unknown item ids: {unknown[:5]}")
            return [self._index[str(x)] for x in history]
        bad = [x for x in history if isinstance(x, bool | np.bool_) or not isinstance(x, int | np.integer)]
        if bad:
            raise TypeError(f"item ids must be integers, found {bad[0]!r} ({type(bad[0]).__name__})")
        ids = [int(x) for x in history]
        if any(not 1 <= i <= self.n_items for i in ids):
            raise SettingsError(f"item ids must be in 1..{self.n_items}")
        return ids

    @staticmethod
    def _left_padded(rows: list[list[int]]) -> np.ndarray:
        out = np.zeros((len(rows), max(1, max(len(r) for r in rows))), dtype=np.int64)
        for i, r in enumerate(rows):
            out[i, out.shape[1] - len(r) :] = r
        return out

    @torch.no_grad()
    def recommend(
        self, histories: Sequence[Sequence[int | str]], k: int = 10, raw: bool = False
    ) -> tuple[np.ndarray | list[list[str | None]], np.ndarray]:
        """Top-`k` items for each history (oldest item first), best first, and their scores. With
        `raw=True`, histories and results use the source files' item ids.

        The model reads the last `max_len` items; every item of the history is excluded from the
        results. A row with fewer than `k` items left ends with item 0 (None with `raw`) scored -inf.
        An empty history has nothing for the model to read: it gets the most popular items (their
        training interaction counts as scores)."""
        if k < 1 or k > self.n_items:
            raise SettingsError(f"k must be between 1 and the number of items ({self.n_items}), not {k}")
        rows = [self._ids(h, raw) for h in histories]
        if not rows:
            return ([] if raw else np.zeros((0, k), dtype=np.int64)), np.zeros((0, k), dtype=np.float32)
        seqs = torch.from_numpy(self._left_padded([r[-self.model.max_len :] for r in rows])).to(self.device)
        scores = self.model.user_vector(seqs) @ self.item_table.T + self.item_offset
        empty = torch.tensor([not r for r in rows], device=self.device)
        scores[empty] = self.popularity.to(scores.dtype)
        scores[:, 0] = -torch.inf
        seen = torch.from_numpy(self._left_padded(rows)).to(self.device)
        scores.scatter_(1, seen, -torch.inf)  # the whole history, beyond max_len too
        top = scores.topk(k, dim=1)
        items, values = top.indices.cpu().numpy(), top.values.cpu().numpy()
        items[np.isneginf(values)] = 0  # no candidate left for these places
        if raw:
            return [[self.raw_ids[i] for i in row] for row in items], values
        return items, values
