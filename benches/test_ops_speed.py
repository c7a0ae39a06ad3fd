"""The fused distillation loss against its PyTorch eager reference, forward + backward, at the paper's
shapes (batch 128, 10 teachers, user vectors of 2 x 64), both kinds; on CUDA (when present) also against
`torch.compile` of the reference.

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
    sync = torch.cuda.synchronize if student.is_cuda else (lambda: None)
    sync()
    t = time.perf_counter()
    for _ in range(CALLS):
        step(fn, student, teachers, kind)
    sync()
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


@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs CUDA")
@pytest.mark.parametrize("kind", ["kd", "cl"])
def test_distill_loss_cuda_vs_eager_and_compiled(benchmark, kind):
    assert native_ops_loaded()
    torch.manual_seed(0)
    student = torch.randn(128, 128, device="cuda", requires_grad=True)
    teachers = torch.randn(128, 10, 128, device="cuda")
    compiled = torch.compile(distill_loss_reference)
    impls = {"fused": distill_loss, "eager": distill_loss_reference, "compiled": compiled}
    for fn in impls.values():
        for _ in range(3):
            step(fn, student, teachers, kind)  # warm up (and compile)
    times: dict[str, list[float]] = {name: [] for name in impls}
    for _ in range(ROUNDS):
        for name, fn in impls.items():
            times[name].append(timed(fn, student, teachers, kind))
    best = {name: min(t) * 1e6 for name, t in times.items()}
    benchmark.extra_info.update(device=torch.cuda.get_device_name(), **{f"{k}_us": v for k, v in best.items()})
    print(
        f"\n{torch.cuda.get_device_name()} distill {kind}: fused {best['fused']:.1f} us, eager {best['eager']:.1f} us "
        f"({best['eager'] / best['fused']:.2f}x), compiled {best['compiled']:.1f} us ({best['compiled'] / best['fused']:.2f}x)"
    )
    benchmark.pedantic(step, args=(distill_loss, student, teachers, kind), rounds=20, iterations=10)
