"""What every model is measured against, tested as a run of the same settings is: ranking by training
popularity, and by text similarity to the last input item (what the item text alone ranks)."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import numpy as np

from llmesr.config import TrainConfig
from llmesr.data import Dataset, load_dataset, load_embeddings
from llmesr.evaluate import Popularity, TextNeighbours, evaluate
from llmesr.metrics import Groups
from llmesr.sampling import eval_negatives


def popularity_metrics(cfg: TrainConfig) -> dict[str, Any]:
    """Test metrics of ranking by training popularity, with `cfg`'s groups, negatives and ties: the
    reference every model should beat."""
    return reference_metrics(cfg, lambda ds: Popularity(ds, cfg.model.max_len))


def text_neighbours_metrics(cfg: TrainConfig) -> dict[str, Any]:
    """Test metrics of the text-only baseline (`llmesr.evaluate.TextNeighbours`: the items whose text is
    most like the last input item's), with `cfg`'s groups, negatives and ties."""
    table = load_embeddings(cfg.data)["item_emb"]
    return reference_metrics(cfg, lambda ds: TextNeighbours(table, cfg.model.max_len))


def reference_metrics(cfg: TrainConfig, scorer: Callable[[Dataset], Any]) -> dict[str, Any]:
    """Test metrics of an untrained `scorer(ds)` under both protocols, as a run of `cfg` is tested."""
    ds = load_dataset(cfg.data)
    groups = groups_of(cfg, ds, "test")
    negatives = eval_negatives(ds, cfg.evaluation.n_negatives, seed=cfg.run.seed)
    users = np.flatnonzero(ds.test > 0)
    model = scorer(ds)
    return {
        protocol: evaluate(
            model,
            ds,
            protocol=protocol,
            negatives=negatives,
            users=users,
            groups=groups,
            ties=cfg.evaluation.ties or "pessimistic",
        ).result()
        for protocol in ("full", "sampled")
    }


def groups_of(cfg: TrainConfig, ds: Dataset, split: str) -> Groups:
    """The long-tail groups of `split`'s users and targets under `cfg`'s thresholds."""
    e = cfg.evaluation
    return Groups.of(ds, e.tail_user_len, e.tail_item_pop, e.user_groups, split)
