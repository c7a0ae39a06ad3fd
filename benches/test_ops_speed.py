"""The fused distillation loss against its PyTorch eager reference on CPU, forward + backward, at the
paper's shapes (batch 128, 10 teachers, user vectors of 2 x 64), both kinds.

    pytest benches/test_ops_speed.py --benchmark-only -s
"""

from __future__ import annotations

import os
import time

import pytest

torch = pytest.importorskip("torch")

from llmesr.ops import distill_loss, distill_loss_reference, native_ops_loaded  # noqa: E402

ROUNDS = int(os.environ.get("LLMESR_BENCH_ROUNDS", "5"))
CALLS = 200


def step(fn, student, teachers, kind):
    loss = fn(student, teachers, kind, 1.0)
    loss.backward()


def timed(fn, student, teachers, kind) -> float:
    t = time.perf_counter()
    for _ in range(CALLS):
        step(fn, student, teachers, kind)
    return (time.perf_counter() - t) / CALLS


@pytest.mark.skipif(not native_ops_loaded(), reason="the native ops did not build here")
@pytest.mark.parametrize("kind", ["kd", "cl"])
def test_distill_loss_vs_eager(benchmark, kind):
    torch.manual_seed(0)
    student = torch.randn(128, 128, requires_grad=True)
    teachers = torch.randn(128, 10, 128)
    for fn in (distill_loss, distill_loss_reference):
        step(fn, student, teachers, kind)  # warm up
    fused, eager = [], []
    for _ in range(ROUNDS):  # alternate, keep each one's best
        fused.append(timed(distill_loss, student, teachers, kind))
        eager.append(timed(distill_loss_reference, student, teachers, kind))
    ratio = min(eager) / min(fused)
    benchmark.extra_info.update(fused_us=min(fused) * 1e6, eager_us=min(eager) * 1e6, speedup=ratio)
    print(f"\ndistill {kind}: fused {min(fused) * 1e6:.0f} us, eager {min(eager) * 1e6:.0f} us -> {ratio:.2f}x")
    benchmark.pedantic(step, args=(distill_loss, student, teachers, kind), rounds=20, iterations=10)
