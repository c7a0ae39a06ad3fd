"""Full-ranking passes of LLM-ESR-SASRec.

The validation pass (full ranking of every user, both views, cross-attention, a 384-d
semantic table, the paper's settings otherwise): `evaluate` as training runs it (the last block computes
the last position only, the adapter once per pass, no top-10 lists) against the straightforward pass
over the same model (`llmesr.models.reference.user_vector`: every position of rows padded to max_len,
the adapter per batch, the top-10 lists counted), in the same process, on the built-in synthetic data
(LLMESR_BENCH_EVAL_USERS users, default 20,000; 1/5 as many items). Both must give the same NDCG@10.

The tail curve (`llmesr-report --tail-curve 0,0.25,0.5,1`): the encoder run once and each gamma only
re-ranked (`llmesr.analysis.tail_tradeoff`), against one whole pass of the debiased model per gamma; the
same rows from both.

    pytest benches/test_eval_speed.py --benchmark-only -s
"""

from __future__ import annotations

import os
import time

import numpy as np
import pytest
import torch

from llmesr import prepare_synthetic
from llmesr.evaluate import PopularityDebiased, evaluate, users_vectors
from llmesr.models import LLMESR, reference

from _synthetic_log import record

USERS = int(os.environ.get("LLMESR_BENCH_EVAL_USERS", "20000"))


class Straightforward(torch.nn.Module):
    """`model` scored the plain way: the full encoder pass, no per-pass item cache."""

    def __init__(self, model: LLMESR) -> None:
        super().__init__()
        self.model, self.max_len = model, model.max_len

    def user_vector(self, sequences: torch.Tensor) -> torch.Tensor:
        return reference.user_vector(self.model, sequences)

    def item_vectors(self, items: torch.Tensor) -> torch.Tensor:
        return self.model.item_vectors(items)


def dataset_and_model(tmp_path):
    ds = prepare_synthetic(tmp_path / "syn", n_users=USERS, n_items=max(100, USERS // 5), seed=0)
    torch.manual_seed(0)
    semantic = torch.randn(ds.n_items + 1, 384)
    semantic[0] = 0
    return ds, LLMESR(ds.n_items, torch.nn.functional.normalize(semantic, dim=1)).eval()


def side_by_side(ours, plain, ds, users: int, names: tuple[str, str], tolerance: float) -> dict:
    """`ours()` and `plain()` (each returning (seconds, value)) alternated twice so that machine noise hits
    both alike; their values equal within `tolerance`; each one's best time and the ratio."""
    runs: tuple[list, list] = ([], [])
    for _ in range(2):
        runs[0].append(ours())
        runs[1].append(plain())
    assert runs[0][0][1] == pytest.approx(runs[1][0][1], abs=tolerance)
    ours_s, plain_s = (min(s for s, _ in side) for side in runs)
    return {
        "users": users,
        "items": ds.n_items,
        "threads": torch.get_num_threads(),
        names[0]: round(ours_s, 2),
        names[1]: round(plain_s, 2),
        "speedup": round(plain_s / ours_s, 2),
    }


def test_validation_pass_vs_straightforward(benchmark, tmp_path):
    ds, model = dataset_and_model(tmp_path)

    def timed(scorer, top_lists: bool) -> tuple[float, float]:
        t = time.perf_counter()
        ndcg = evaluate(scorer, ds, split="valid", top_lists=top_lists).result()["overall"]["NDCG@10"]
        return time.perf_counter() - t, ndcg

    result = side_by_side(
        lambda: timed(model, False),
        lambda: timed(Straightforward(model), True),
        ds,
        int((ds.valid > 0).sum()),
        ("ours_s", "straightforward_s"),
        1e-6,
    )
    benchmark.pedantic(lambda: timed(model, False), rounds=1, iterations=1)
    record(benchmark, f"eval_{USERS}", result)


def test_tail_curve_encoder_once_vs_a_pass_per_gamma(benchmark, tmp_path):
    ds, model = dataset_and_model(tmp_path)
    users, gammas = np.flatnonzero(ds.test > 0), (0.0, 0.25, 0.5, 1.0)

    def ndcg(scorer, vectors=None) -> float:
        return evaluate(scorer, ds, users=users, user_vectors=vectors).result()["overall"]["NDCG@10"]

    def once() -> tuple[float, list[float]]:
        t = time.perf_counter()
        vectors = users_vectors(model, ds, users)
        rows = [ndcg(d, d.extend(vectors)) for d in (PopularityDebiased(model, ds, g) for g in gammas)]
        return time.perf_counter() - t, rows

    def per_gamma() -> tuple[float, list[float]]:
        t = time.perf_counter()
        rows = [ndcg(PopularityDebiased(model, ds, g)) for g in gammas]
        return time.perf_counter() - t, rows

    ours, plain = once(), per_gamma()
    assert ours[1] == pytest.approx(plain[1], abs=1e-9)
    benchmark.pedantic(once, rounds=1, iterations=1)
    result = {
        "users": len(users),
        "items": ds.n_items,
        "gammas": len(gammas),
        "threads": torch.get_num_threads(),
        "encoder_once_s": round(ours[0], 2),
        "pass_per_gamma_s": round(plain[0], 2),
        "speedup": round(plain[0] / ours[0], 2),
    }
    record(benchmark, f"tail_curve_{USERS}", result)


def test_epoch_end_one_encoder_pass_vs_two(benchmark, tmp_path):
    """What follows an LLM-ESR epoch with teachers="epoch": the next epoch's teacher table (10 similar
    users per user) and validation. Validation scoring from the table's rows (one encoder pass, as
    training runs it) against the teacher table and validation's own pass; the same NDCG@10."""
    from llmesr.batches import StepInputs
    from llmesr.config import TrainConfig

    ds, model = dataset_and_model(tmp_path)
    cfg = TrainConfig.of(data=str(tmp_path / "syn"), out=str(tmp_path / "run"))
    similar = np.random.default_rng(0).integers(1, ds.n_users + 1, size=(ds.n_users + 1, 10))
    inputs = StepInputs(cfg, ds, torch.device("cpu"), similar, None, None)
    train_users, valid_users = np.arange(1, ds.n_users + 1), np.flatnonzero(ds.valid > 0)

    def ndcg(table=None) -> float:
        vectors = None if table is None else table[torch.from_numpy(valid_users)]
        result = evaluate(model, ds, split="valid", users=valid_users, top_lists=False, user_vectors=vectors)
        return result.result()["overall"]["NDCG@10"]

    def one_pass() -> tuple[float, float]:
        t = time.perf_counter()
        value = ndcg(inputs.refresh_teachers(model, train_users, 1, also=valid_users))
        return time.perf_counter() - t, value

    def two_passes() -> tuple[float, float]:
        t = time.perf_counter()
        inputs.refresh_teachers(model, train_users, 1)
        value = ndcg()
        return time.perf_counter() - t, value

    result = side_by_side(one_pass, two_passes, ds, len(valid_users), ("one_pass_s", "two_passes_s"), 1e-9)
    benchmark.pedantic(one_pass, rounds=1, iterations=1)
    record(benchmark, f"epoch_end_{USERS}", result)
