"""Leave-one-out evaluation of a trained model, both protocols:

- `full`: the target is ranked among all items, the items of the user's own history (the model input)
  excluded, except the target itself when the user had consumed it before;
- `sampled` (the paper's): the target is ranked against the user's stored negatives
  (`llmesr.sampling.eval_negatives`, drawn once per seed so every model sees the same candidates).

Ties count against the target by default (`ties`, see `llmesr.metrics.target_ranks`). Item vectors
(the adapter's output included) are computed once per call, for both protocols.
"""

from __future__ import annotations

import contextlib
import itertools
from collections.abc import Iterator
from typing import Any, Protocol

import numpy as np
import torch
from tqdm import tqdm

from llmesr.data import Dataset
from llmesr.errors import SettingsError
from llmesr.metrics import TOP_K, GroupedMetrics, Groups, target_ranks
from llmesr.sampling import histories


class Scorer(Protocol):
    """What `evaluate` needs of a model: a user vector from each history, item vectors, its input
    length, and the Module methods that switch dropout off and find its device."""

    training: bool
    max_len: int

    def user_vector(self, sequences: torch.Tensor) -> torch.Tensor: ...
    def item_vectors(self, items: torch.Tensor) -> torch.Tensor: ...
    def eval(self) -> Any: ...
    def train(self, mode: bool = True) -> Any: ...
    def parameters(self) -> Iterator[torch.nn.Parameter]: ...
    def buffers(self) -> Iterator[torch.Tensor]: ...


@torch.no_grad()
def evaluate(
    model: Scorer,
    ds: Dataset,
    *,
    split: str = "test",
    protocol: str = "full",
    negatives: np.ndarray | None = None,
    users: np.ndarray | None = None,
    groups: Groups | None = None,
    max_len: int | None = None,
    batch_size: int = 256,
    ties: str = "pessimistic",
    top_lists: bool = True,
    progress: str | None = None,
    user_vectors: torch.Tensor | None = None,
) -> GroupedMetrics:
    """Metrics of `model` (anything with `user_vector(sequences)` and `item_vectors(items)`) over
    `users` (default: every user with a validation and test item), as mergeable sums. `groups`: the
    long-tail groups of this split (`Groups.of(ds, split=split)` by default). `max_len`: the longest
    input, by default the model's own (`model.max_len`). `top_lists`: count each user's top 10 (full
    protocol) for the beyond-accuracy figures; model selection reads NDCG only and skips it. `progress`:
    a progress bar of that name on stderr, gone when done. `user_vectors`: the model's vectors of
    `users` for this split, computed earlier (`users_vectors`), so that several scorings of one model
    (`llmesr-report --tail-curve`) run the sequence encoder once."""
    if split not in ("valid", "test"):
        raise SettingsError(f"split must be 'valid' or 'test', not {split!r}")
    if protocol not in ("full", "sampled"):
        raise SettingsError(f"protocol must be 'full' or 'sampled', not {protocol!r}")
    if protocol == "sampled" and negatives is None:
        raise SettingsError("the sampled protocol needs the stored negatives (llmesr.sampling.eval_negatives)")
    if users is None:
        users = np.flatnonzero(ds.test > 0)
    if max_len is None:
        max_len = model.max_len
    result = GroupedMetrics(groups or Groups.of(ds, split=split))
    was_training = model.training
    model.eval()
    device = next(itertools.chain(model.parameters(), model.buffers())).device
    # A model that offers it computes its per-item work (LLM-ESR's adapter) once for the whole pass.
    with getattr(model, "cached_items", contextlib.nullcontext)():
        all_items = require_finite(model.item_vectors(torch.arange(ds.n_items + 1, device=device)), "item vectors")
        starts = range(0, len(users), batch_size)
        for start in tqdm(starts, desc=progress, disable=progress is None, leave=False, unit="batch"):
            batch = np.asarray(users[start : start + batch_size])
            targets = (ds.valid if split == "valid" else ds.test)[batch].astype(np.int64)
            seq_t = model_inputs(ds, batch, split, max_len, device)
            if user_vectors is None:
                vectors = require_finite(model.user_vector(seq_t), "user vectors")
            else:
                vectors = require_finite(user_vectors[start : start + batch_size].to(device), "user vectors")
            if protocol == "full":
                scores = vectors @ all_items.T
                target_t = torch.from_numpy(targets).to(device)[:, None]
                target_scores = scores.gather(1, target_t)
                scores[:, 0] = -torch.inf
                scores.scatter_(1, seq_t, -torch.inf)  # the input history is not a candidate...
                scores.scatter_(1, target_t, target_scores)  # ...but a target seen before still is
                if top_lists:
                    result.recommend(scores.topk(TOP_K, dim=1).indices.cpu().numpy())
                ranks = target_ranks(scores.cpu().numpy(), targets, ties)
            else:
                assert negatives is not None
                candidates = torch.from_numpy(np.concatenate([targets[:, None], negatives[batch]], axis=1)).to(device)
                sampled_scores = (vectors[:, None, :] * all_items[candidates.long()]).sum(-1)
                ranks = target_ranks(sampled_scores.cpu().numpy(), 0, ties)
            result.add(batch, targets, ranks)
    model.train(was_training)
    return result


@torch.no_grad()
def users_vectors(
    model: Scorer, ds: Dataset, users: np.ndarray, split: str = "test", batch_size: int = 256
) -> torch.Tensor:
    """`model.user_vector` of each of `users` from its input for `split`, `[len(users), d]`: what
    `evaluate(..., user_vectors=)` reuses."""
    was_training = model.training
    model.eval()
    device = next(itertools.chain(model.parameters(), model.buffers())).device
    out = []
    with getattr(model, "cached_items", contextlib.nullcontext)():  # per-item work once, as `evaluate` does
        for start in range(0, len(users), batch_size):
            inputs = model_inputs(ds, np.asarray(users[start : start + batch_size]), split, model.max_len, device)
            out.append(require_finite(model.user_vector(inputs), "user vectors"))
    model.train(was_training)
    return torch.cat(out)


def model_inputs(ds: Dataset, users: np.ndarray, split: str, max_len: int, device: torch.device) -> torch.Tensor:
    """The histories `users` are scored from: the training history predicts the validation item; with
    the validation item, the test item."""
    seqs = histories(ds, users, "train" if split == "valid" else "test", max_len)
    return torch.from_numpy(seqs.astype(np.int64)).to(device)


def require_finite(vectors: torch.Tensor, what: str) -> torch.Tensor:
    """A model whose vectors hold NaN or inf has diverged: its ranks would be meaningless (a NaN score
    ties with everything), so evaluation refuses rather than report them."""
    if not torch.isfinite(vectors).all():
        raise SettingsError(f"the model's {what} hold NaN or infinite values (diverged training? try a lower --lr)")
    return vectors


class Popularity(torch.nn.Module):
    """The most-popular baseline in the shape `evaluate` expects: every user scores every item by its
    number of training interactions (ties count against the target, as for any model). `max_len`: how
    much of the history it is given, i.e. excludes (the model's it is compared with)."""

    def __init__(self, ds: Dataset, max_len: int = 200) -> None:
        super().__init__()
        self.max_len = max_len
        self.popularity: torch.Tensor
        self.register_buffer("popularity", torch.from_numpy(ds.train_popularity.astype(np.float32))[:, None])

    def user_vector(self, sequences: torch.Tensor) -> torch.Tensor:
        return torch.ones(len(sequences), 1, device=sequences.device)

    def item_vectors(self, items: torch.Tensor) -> torch.Tensor:
        return self.popularity[items]


class PopularityDebiased(torch.nn.Module):
    """An inference-time adjustment towards the long tail: `model`'s scores minus
    `gamma * log(1 + training popularity)` for every item (gamma 0: the model itself). Exact as a dot
    product: the user vector gains a coordinate `-gamma`, the item vectors `log(1 + popularity)`, so
    both protocols and serving use it unchanged."""

    def __init__(self, model: Scorer, ds: Dataset, gamma: float) -> None:
        super().__init__()
        self.model, self.gamma = model, float(gamma)
        self.max_len = model.max_len
        self.train(model.training)  # a new Module trains; `evaluate` restores this mode to `model` too
        log_pop = np.log1p(ds.train_popularity.astype(np.float64)).astype(np.float32)
        self.log_popularity: torch.Tensor
        self.register_buffer("log_popularity", torch.from_numpy(log_pop)[:, None])

    def user_vector(self, sequences: torch.Tensor) -> torch.Tensor:
        return self.extend(self.model.user_vector(sequences))

    def extend(self, vectors: torch.Tensor) -> torch.Tensor:
        """The model's user vectors as this scorer's (one more coordinate, `-gamma`)."""
        return torch.cat([vectors, torch.full_like(vectors[:, :1], -self.gamma)], dim=1)

    def item_vectors(self, items: torch.Tensor) -> torch.Tensor:
        vectors = self.model.item_vectors(items)
        return torch.cat([vectors, self.log_popularity[items]], dim=1)


class TextNeighbours(torch.nn.Module):
    """A text-only baseline in the shape `evaluate` expects: items ranked by the cosine similarity of
    their text embedding (`item_table`, `[n_items + 1, d]`, row 0 padding) to the mean embedding of the
    user's last `recent` input items. No training, no collaborative signal: what the text alone says."""

    def __init__(self, item_table: np.ndarray, max_len: int = 200, recent: int = 1) -> None:
        super().__init__()
        self.max_len, self.recent = max_len, recent
        table = torch.from_numpy(np.array(item_table, dtype=np.float32))  # a copy: the table may be read-only
        self.unit: torch.Tensor
        self.register_buffer("unit", table / table.norm(dim=1, keepdim=True).clamp_min(1e-12))

    def user_vector(self, sequences: torch.Tensor) -> torch.Tensor:
        recent = sequences[:, -self.recent :]  # histories are right-aligned, padding (0) on the left
        return self.unit[recent].sum(1) / (recent > 0).sum(1, keepdim=True).clamp_min(1)

    def item_vectors(self, items: torch.Tensor) -> torch.Tensor:
        return self.unit[items]
