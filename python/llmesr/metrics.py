"""Ranking metrics for next-item evaluation: HR, NDCG and MRR at several cut-offs, overall and by
long-tail group, kept as sums and counts so that shards (DDP ranks, batches) add up exactly.

Ties are counted pessimistically: a candidate scoring exactly as high as the target ranks above it, so
a model that scores everything equally gets the worst rank, not the best.
"""

from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np

from llmesr.data import Dataset, pareto_threshold
from llmesr.errors import SettingsError

CUTOFFS = (5, 10, 20)
GROUPS = ("overall", "tail_user", "head_user", "tail_item", "head_item")  # the headline groups


def target_ranks(scores: np.ndarray, target: np.ndarray | int = 0, ties: str = "pessimistic") -> np.ndarray:
    """1-based rank of each row's target among the row's candidates.

    `scores` is `[rows, candidates]`; `target` the target's column (one per row, or the same for all;
    the sampled protocol puts it in column 0). Candidates to ignore (e.g. items of the user's history in
    the full protocol) should be scored `-inf` by the caller. `ties`: "pessimistic" counts a candidate
    scoring as high as the target above it; "optimistic" below it (the original code sorts the target,
    in column 0, first among equals). A NaN target score ranks last either way."""
    scores = np.asarray(scores)
    rows = np.arange(scores.shape[0])
    target = np.broadcast_to(np.asarray(target), rows.shape)
    t = scores[rows, target][:, None]
    if ties == "pessimistic":
        above = (scores >= t).sum(axis=1)  # includes the target itself
    elif ties == "optimistic":
        above = (scores > t).sum(axis=1) + 1
    else:
        raise SettingsError(f"ties must be 'pessimistic' or 'optimistic', not {ties!r}")
    return np.where(np.isnan(t[:, 0]), scores.shape[1], above).astype(np.int64)


@dataclass
class MetricSums:
    """Sums of HR@k, NDCG@k and MRR@k over evaluated rows, and their count."""

    cutoffs: tuple[int, ...] = CUTOFFS
    sums: dict[str, float] = field(default_factory=dict)
    count: int = 0

    def __post_init__(self) -> None:
        for k in self.cutoffs:  # every key from the start: shards always share one layout
            for m in ("HR", "NDCG", "MRR"):
                self.sums.setdefault(f"{m}@{k}", 0.0)

    def add(self, ranks: np.ndarray) -> None:
        ranks = np.asarray(ranks)
        for k in self.cutoffs:
            hit = ranks <= k
            values = {
                f"HR@{k}": hit.sum(),
                f"NDCG@{k}": (hit / np.log2(ranks + 1.0)).sum(),
                f"MRR@{k}": (hit / ranks).sum(),
            }
            for name, v in values.items():
                self.sums[name] = self.sums.get(name, 0.0) + float(v)
        self.count += int(ranks.size)

    def merge(self, other: MetricSums) -> None:
        for name, v in other.sums.items():
            self.sums[name] = self.sums.get(name, 0.0) + v
        self.count += other.count

    def means(self) -> dict[str, float | None]:
        """Each metric's mean; None for an empty group (JSON has no NaN)."""
        return {name: (v / self.count if self.count else None) for name, v in sorted(self.sums.items())}


N_BINS = 5  # the paper's finer breakdowns: five groups by history length and by item popularity


def quantile_edges(values: np.ndarray, bins: int = N_BINS) -> list[int]:
    """The `bins - 1` inner edges splitting `values` into groups of about equal size: value v falls in
    group `searchsorted(edges, v, "right")` (0-based). Ties keep a value in one group, so groups of a
    skewed distribution can be uneven, or empty."""
    if len(values) == 0:
        return [0] * (bins - 1)
    return [int(np.quantile(values, q, method="higher")) for q in np.arange(1, bins) / bins]


USER_GROUPS = ("input", "history")


def user_lengths(ds: Dataset, definition: str = "input", split: str = "test") -> np.ndarray:
    """`[n_users + 1]`: the length that puts each user in a group. "input" (the paper's): the length of
    the model's input for `split` (the training history for validation, plus the validation item for
    test); "history": the whole history, validation and test items included."""
    if definition == "history":
        return ds.lengths
    if definition != "input":
        raise SettingsError(f"user groups must be one of {', '.join(USER_GROUPS)}, not {definition!r}")
    if split not in ("valid", "test"):
        raise SettingsError(f"split must be 'valid' or 'test', not {split!r}")
    return ds.train_end - ds.indptr[:-1] + (split == "test")


@dataclass(frozen=True)
class Groups:
    """Long-tail groups: tail users have a length (`user_lengths`) below `tail_user_len`; tail items
    fewer than `tail_item_pop` training interactions (both default to the Pareto rule of
    `pareto_threshold`). Finer: `length_1..5` by the user's length and `popularity_1..5` by the target
    item's training popularity, split at the quintiles of all users' lengths and all items'
    popularities (`length_edges`, `popularity_edges`; group 1 is the shortest / least popular).
    Thresholds and edges come from the test split's lengths, so validation and test share them."""

    tail_user_len: int
    tail_item_pop: int
    user_length: np.ndarray  # [n_users + 1], for the split evaluated
    item_popularity: np.ndarray  # [n_items + 1]
    length_edges: tuple[int, ...] = ()
    popularity_edges: tuple[int, ...] = ()
    user_groups: str = "input"

    @classmethod
    def of(
        cls,
        ds: Dataset,
        tail_user_len: int | None = None,
        tail_item_pop: int | None = None,
        user_groups: str = "input",
        split: str = "test",
    ) -> Groups:
        lengths, pop = user_lengths(ds, user_groups, "test"), ds.train_popularity
        return cls(
            tail_user_len=pareto_threshold(lengths[1:]) if tail_user_len is None else tail_user_len,
            tail_item_pop=pareto_threshold(pop[1:]) if tail_item_pop is None else tail_item_pop,
            user_length=user_lengths(ds, user_groups, split),
            item_popularity=pop,
            length_edges=tuple(quantile_edges(lengths[1:])),
            popularity_edges=tuple(quantile_edges(pop[1:])),
            user_groups=user_groups,
        )

    def describe(self) -> dict[str, object]:
        """What metrics.json records of the groups."""
        return {
            "user_groups": self.user_groups,
            "tail_user_len": self.tail_user_len,
            "tail_item_pop": self.tail_item_pop,
            "length_edges": list(self.length_edges),
            "popularity_edges": list(self.popularity_edges),
        }

    def names(self) -> list[str]:
        return (
            list(GROUPS)
            + [f"length_{i}" for i in range(1, N_BINS + 1)]
            + [f"popularity_{i}" for i in range(1, N_BINS + 1)]
        )

    def masks(self, users: np.ndarray, targets: np.ndarray) -> dict[str, np.ndarray]:
        tail_user = self.user_length[users] < self.tail_user_len
        tail_item = self.item_popularity[targets] < self.tail_item_pop
        length_bin = np.searchsorted(np.array(self.length_edges, dtype=np.int64), self.user_length[users], "right")
        pop_bin = np.searchsorted(
            np.array(self.popularity_edges, dtype=np.int64), self.item_popularity[targets], "right"
        )
        return {
            "overall": np.ones(len(users), dtype=bool),
            "tail_user": tail_user,
            "head_user": ~tail_user,
            "tail_item": tail_item,
            "head_item": ~tail_item,
            **{f"length_{i + 1}": length_bin == i for i in range(N_BINS)},
            **{f"popularity_{i + 1}": pop_bin == i for i in range(N_BINS)},
        }


TOP_K = 10  # the cut-off of the beyond-accuracy figures


class GroupedMetrics:
    """`MetricSums` per long-tail group; `add` takes the evaluated users, their targets and ranks.
    `recommend` takes the users' top-10 lists (full protocol), kept as how often each item was
    recommended, from which `result` adds to "overall" what the field checks beside accuracy:
    catalogue coverage@10 (the share of items in at least one list), the tail items' share of all
    recommendations, and the mean training popularity of recommended items."""

    def __init__(self, groups: Groups, cutoffs: tuple[int, ...] = CUTOFFS) -> None:
        self.groups = groups
        self.by_group = {g: MetricSums(cutoffs) for g in groups.names()}
        self.recommended = np.zeros(len(groups.item_popularity), dtype=np.float64)  # item 0 never counts
        self.users: list[np.ndarray] = []  # each evaluated user's rank, for paired tests between runs
        self.ranks: list[np.ndarray] = []

    def add(self, users: np.ndarray, targets: np.ndarray, ranks: np.ndarray) -> None:
        for name, mask in self.groups.masks(np.asarray(users), np.asarray(targets)).items():
            self.by_group[name].add(np.asarray(ranks)[mask])
        self.users.append(np.asarray(users, dtype=np.int64))
        self.ranks.append(np.asarray(ranks, dtype=np.int64))

    def per_user(self) -> tuple[np.ndarray, np.ndarray]:
        """(users, ranks), sorted by user."""
        users = np.concatenate(self.users) if self.users else np.zeros(0, np.int64)
        ranks = np.concatenate(self.ranks) if self.ranks else np.zeros(0, np.int64)
        order = np.argsort(users, kind="stable")
        return users[order], ranks[order]

    def recommend(self, top: np.ndarray) -> None:
        """`top`: `[users, k]` item ids, each user's highest-scored candidates."""
        np.add.at(self.recommended, np.asarray(top).ravel(), 1.0)

    def merge(self, other: GroupedMetrics) -> None:
        for name, sums in other.by_group.items():
            self.by_group[name].merge(sums)
        self.recommended += other.recommended
        self.users += other.users
        self.ranks += other.ranks

    def beyond_accuracy(self) -> dict[str, float | None]:
        counts, pop = self.recommended[1:], self.groups.item_popularity[1:]
        total = counts.sum()
        if total == 0:
            return {}
        return {
            f"coverage@{TOP_K}": float((counts > 0).mean()),
            f"tail_share@{TOP_K}": float(counts[pop < self.groups.tail_item_pop].sum() / total),
            f"mean_popularity@{TOP_K}": float((counts * pop).sum() / total),
        }

    def result(self) -> dict[str, dict[str, float | None]]:
        out = {name: sums.means() | {"count": sums.count} for name, sums in self.by_group.items()}
        out["overall"] |= self.beyond_accuracy()
        return out
