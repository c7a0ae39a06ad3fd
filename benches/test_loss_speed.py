"""The `sampled` loss with many shared negatives: a repeated draw scored once (`losses.sampled_objective`,
each item a column weighted by its count) against every draw a column (`losses.sampled_softmax_loss` over
the raw draw, the straightforward form), forward and backward, on a Yelp-sized catalogue (20,033 items,
128-d vectors, ~1,150 targets per step as LLM-ESR-SASRec on Yelp has). Both give the same loss.

    pytest benches/test_loss_speed.py --benchmark-only -s
"""

from __future__ import annotations

import os
import time

import numpy as np
import pytest
import torch

from llmesr.models.losses import LossInputs, SharedNegatives, sampled_objective, sampled_softmax_loss
from llmesr.sampling import shared_negatives

from _synthetic_log import record

N_ITEMS, DIM, TARGETS = 20_033, 128, 1_150
DRAWS = [int(k) for k in os.environ.get("LLMESR_BENCH_LOSS_DRAWS", "2048,8192").split(",")]


@pytest.mark.parametrize("draws", DRAWS)
def test_sampled_loss_scores_each_drawn_item_once(benchmark, draws):
    g = torch.Generator().manual_seed(0)
    table = torch.randn(N_ITEMS + 1, DIM, generator=g, requires_grad=True)
    states = torch.randn(TARGETS, DIM, generator=g, requires_grad=True)
    targets = torch.randint(1, N_ITEMS + 1, (TARGETS,), generator=g)
    q = np.concatenate([[0.0], np.full(N_ITEMS, 1.0 / N_ITEMS)])
    items = torch.from_numpy(shared_negatives(q, draws, 1, 1, 1))
    shared = SharedNegatives(items, torch.from_numpy(np.log(np.maximum(q * draws, 1e-30))).float())

    def deduplicated() -> torch.Tensor:
        return sampled_objective(LossInputs(states, targets, targets, shared, lambda i: table[i], N_ITEMS))

    def every_draw() -> torch.Tensor:
        lq = shared.log_q
        return sampled_softmax_loss(states, table[targets], table[items], lq[targets], lq[items], targets, items)

    def timed(loss) -> tuple[float, float]:
        best, value = float("inf"), 0.0
        for _ in range(5):
            table.grad = states.grad = None
            t = time.perf_counter()
            out = loss()
            out.backward()
            best, value = min(best, time.perf_counter() - t), float(out.detach())
        return best, value

    ours, plain = timed(deduplicated), timed(every_draw)  # alternated: noise hits both alike
    ours, plain = min(ours, timed(deduplicated)), min(plain, timed(every_draw))
    assert ours[1] == pytest.approx(plain[1], rel=1e-5)
    benchmark.pedantic(deduplicated, rounds=1, iterations=1)
    record(
        benchmark,
        f"sampled_loss_{draws}",
        {
            "draws": draws,
            "columns": int(torch.unique(items).numel()),
            "items": N_ITEMS,
            "threads": torch.get_num_threads(),
            "deduplicated_ms": round(1e3 * ours[0], 1),
            "every_draw_ms": round(1e3 * plain[0], 1),
            "speedup": round(plain[0] / ours[0], 2),
        },
    )
