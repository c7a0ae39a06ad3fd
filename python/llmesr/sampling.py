"""Seeded sampling over a prepared dataset, in the Rust core: evaluation negatives, model inputs and
training batches. One seed gives the same numbers whatever the thread count or batch composition
(every user draws from its own stream). Every array is left-padded with item 0 and only as wide as
the longest row it holds (at most `max_len`), so no work is spent on padding beyond that."""

from __future__ import annotations

import numpy as np

from llmesr import _native
from llmesr.config import choices_of
from llmesr.data import Dataset
from llmesr.errors import SettingsError


def _users(users: np.ndarray) -> np.ndarray:
    return np.ascontiguousarray(users, dtype=np.uint32)


def eval_negatives(ds: Dataset, n_neg: int = 100, seed: int = 0) -> np.ndarray:
    """For the sampled evaluation protocol: `n_neg` distinct items per user that the user never
    interacted with, as int32 `[n_users + 1, n_neg]` (row 0 = padding). Drawn once per seed, so every
    model is ranked against the same candidates."""
    return _native.eval_negatives(ds.native, int(n_neg), int(seed))


def histories(ds: Dataset, users: np.ndarray, split: str = "train", max_len: int = 200) -> np.ndarray:
    """Model inputs, int32 `[len(users), L]`: the training history (`split="train"`: the input that
    predicts the validation item), or the training history plus the validation item (`"test"`)."""
    extra = {"train": 0, "valid": 0, "test": 1}.get(split)
    if extra is None:
        raise SettingsError(f"split must be 'train', 'valid' or 'test', not {split!r}")
    return _native.histories(ds.native, _users(users), extra, int(max_len))


NEGATIVES = choices_of("negatives")


def negative_weights(ds: Dataset, negatives: str) -> np.ndarray | None:
    """Cumulative weights of items 1..n_items for training negatives: None draws uniformly;
    "popularity" in proportion to training popularity + 1 (an item never seen in training can still
    be drawn). Either way a negative is never in the user's training history."""
    if negatives == "uniform":
        return None
    if negatives == "popularity":
        return np.cumsum(ds.train_popularity[1:] + 1.0)
    raise SettingsError(f"negatives must be one of {', '.join(NEGATIVES)}, not {negatives!r}")


def negative_distribution(ds: Dataset, negatives: str) -> np.ndarray:
    """Q: the probability of each item 0..n_items (0 for padding) in a draw of training negatives."""
    weights = negative_weights(ds, negatives)
    cumulative = np.arange(1.0, ds.n_items + 1) if weights is None else weights
    q = np.diff(cumulative, prepend=0.0)
    return np.concatenate([[0.0], q / q.sum()])


def shared_negatives(q: np.ndarray, count: int, seed: int, epoch: int, step: int) -> np.ndarray:
    """`count` items drawn from `q` with replacement for one batch of the `sampled` loss (shared by all
    its targets; a draw may hold a user's own items, which is what the log-Q correction expects),
    a function of (seed, epoch, step) alone."""
    rng = np.random.default_rng([seed, epoch, step, 0x5A3])
    return rng.choice(len(q), size=count, p=q).astype(np.int64)


def sasrec_batch(
    ds: Dataset, users: np.ndarray, max_len: int = 200, seed: int = 0, epoch: int = 0, negatives: str = "uniform"
) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Next-item training rows for `users`: inputs (training history without its last item), targets
    (shifted by one) and one negative per target, int32 `[len(users), L]`."""
    weights = negative_weights(ds, negatives)
    return _native.sasrec_batch(ds.native, _users(users), int(max_len), weights, int(seed), int(epoch))


def bert4rec_batch(
    ds: Dataset,
    users: np.ndarray,
    max_len: int = 200,
    mask_prob: float = 0.6,
    seed: int = 0,
    epoch: int = 0,
    negatives: str = "uniform",
) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Masked-item training rows for `users`: the training history with each item replaced by the
    mask token `n_items + 1` with probability `mask_prob` (at least one per row), the masked items as
    targets (0 elsewhere) and one negative per target, int32 `[len(users), L]`."""
    return _native.bert4rec_batch(
        ds.native,
        _users(users),
        int(max_len),
        float(mask_prob),
        negative_weights(ds, negatives),
        int(seed),
        int(epoch),
    )
