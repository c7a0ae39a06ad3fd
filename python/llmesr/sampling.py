"""Seeded sampling over a prepared dataset, in the Rust core: evaluation negatives and training
batches. One seed gives the same numbers whatever the thread count or batch composition (every user
draws from its own stream)."""

from __future__ import annotations

import numpy as np

from llmesr import _native
from llmesr.data import Dataset


def eval_negatives(ds: Dataset, n_neg: int = 100, seed: int = 0) -> np.ndarray:
    """For the sampled evaluation protocol: `n_neg` distinct items per user that the user never
    interacted with, as int32 `[n_users + 1, n_neg]` (row 0 = padding). Drawn once per seed, so every
    model is ranked against the same candidates."""
    return _native.eval_negatives(ds.indptr, ds.train_end, ds.items, ds.n_items, int(n_neg), int(seed))


def sasrec_batch(
    ds: Dataset, users: np.ndarray, max_len: int = 200, seed: int = 0, epoch: int = 0
) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Next-item training rows for `users`: inputs (training history without its last item), targets
    (shifted by one) and one negative per target, int32 `[len(users), L]`, left-padded with 0, where L
    is the longest input of the batch capped at `max_len` (no padding beyond what the batch needs)."""
    users = np.ascontiguousarray(users, dtype=np.uint32)
    return _native.sasrec_batch(
        users, ds.indptr, ds.train_end, ds.items, ds.n_items, int(max_len), int(seed), int(epoch)
    )
