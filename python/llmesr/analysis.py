"""Why tail items miss the top 10, and what serving them costs (`llmesr-report --tail-curve`):

- `score_parts`: LLM-ESR's score is <u_id, e_id> + <u_sem, adapter(e_llm)>; the two parts' means for
  tail and head targets, and for each user's top-ranked item, show which view ranks the tail down;
- `tail_tradeoff`: test metrics under full ranking as the inference-time popularity adjustment
  (`llmesr.evaluate.PopularityDebiased`: scores minus gamma * log(1 + popularity)) grows: overall
  NDCG@10 against tail-item HR@10, with coverage and the tail share of the top-10 lists.
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np
import torch

from llmesr.baselines import groups_of
from llmesr.data import load_dataset
from llmesr.evaluate import PopularityDebiased, evaluate, users_vectors
from llmesr.metrics import GroupedMetrics, Groups
from llmesr.recommend import Recommender
from llmesr.sampling import histories


def _loaded(run_dir: str | Path) -> tuple[Recommender, Any, Groups]:
    rec = Recommender(run_dir)
    cfg = rec.config
    ds = load_dataset(cfg.data)
    return rec, ds, groups_of(cfg, ds, "test")


def penalised_results(rec: Recommender, ds: Any, groups: Groups, gammas: Sequence[float]) -> list[GroupedMetrics]:
    """The test metrics of `rec`'s model under full ranking, one per gamma, with scores minus gamma *
    log(1 + training popularity). The sequence encoder runs once: each gamma only re-ranks (its user
    vectors are the model's plus one coordinate)."""
    users = np.flatnonzero(ds.test > 0)
    vectors = users_vectors(rec.model, ds, users, "test")
    results = []
    for gamma in gammas:
        model = PopularityDebiased(rec.model, ds, gamma)
        results.append(
            evaluate(
                model,
                ds,
                split="test",
                protocol="full",
                users=users,
                groups=groups,
                ties=rec.config.evaluation.ties or "pessimistic",
                user_vectors=model.extend(vectors),
            )
        )
    return results


def tail_tradeoff(run_dir: str | Path, gammas: Sequence[float]) -> list[dict[str, float | None]]:
    """One row per gamma: overall NDCG@10, tail- and head-item HR@10 (test, full ranking), coverage@10,
    the tail share and mean popularity of the top-10 lists (`penalised_results`)."""
    rec, ds, groups = _loaded(run_dir)
    rows = []
    for gamma, result in zip(gammas, penalised_results(rec, ds, groups, gammas), strict=True):
        m = result.result()
        rows.append(
            {
                "gamma": float(gamma),
                "overall_NDCG@10": m["overall"]["NDCG@10"],
                "tail_item_HR@10": m["tail_item"]["HR@10"],
                "head_item_HR@10": m["head_item"]["HR@10"],
                "coverage@10": m["overall"].get("coverage@10"),
                "tail_share@10": m["overall"].get("tail_share@10"),
                "mean_popularity@10": m["overall"].get("mean_popularity@10"),
            }
        )
    return rows


@torch.no_grad()
def score_parts(run_dir: str | Path, batch_size: int = 512) -> dict[str, dict[str, float]]:
    """Mean ID-view and semantic-view parts of the score (test inputs, full catalogue) for the tail and
    head targets and for each user's top-ranked item; a one-view model reports its one part."""
    rec, ds, groups = _loaded(run_dir)
    model = rec.model
    hidden = model.hidden
    views = ["id", "semantic"] if model.views == "both" else [model.views]
    table = rec.item_table
    users = np.flatnonzero(ds.test > 0)
    sums: dict[str, dict[str, float]] = {k: dict.fromkeys(views, 0.0) for k in ("tail_target", "head_target", "top1")}
    counts = dict.fromkeys(sums, 0)
    tail_item = torch.from_numpy(ds.train_popularity < groups.tail_item_pop)
    for start in range(0, len(users), batch_size):
        batch = users[start : start + batch_size]
        seqs = torch.from_numpy(histories(ds, batch, "test", rec.model.max_len).astype(np.int64))
        u = model.user_vector(seqs)
        targets = torch.from_numpy(ds.test[batch].astype(np.int64))
        scores = u @ table.T
        scores[:, 0] = -torch.inf
        scores.scatter_(1, seqs, -torch.inf)
        top1 = scores.argmax(dim=1)
        for name, items, rows in (
            ("tail_target", targets, tail_item[targets]),
            ("head_target", targets, ~tail_item[targets]),
            ("top1", top1, torch.ones_like(targets, dtype=torch.bool)),
        ):
            for i, view in enumerate(views):
                part = (u[:, i * hidden : (i + 1) * hidden] * table[items, i * hidden : (i + 1) * hidden]).sum(-1)
                sums[name][view] += float(part[rows].sum())
            counts[name] += int(rows.sum())
    return {
        name: {view: (v / counts[name] if counts[name] else float("nan")) for view, v in parts.items()}
        | {"count": counts[name]}
        for name, parts in sums.items()
    }
