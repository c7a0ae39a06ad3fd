"""The fused operators against their PyTorch eager references, forward + backward, at the paper's
shapes; on CUDA (when present) also against `torch.compile` of the reference.
- distillation loss: batch 128, 10 teachers, user vectors of 2 x 64, both kinds;
- dropout: a [51200, 64] activation (256 rows x 200 positions x hidden 64), p 0.5, forward + backward,
  against `torch.nn.functional.dropout` and the hashed twin;
- masked attention: 128 users' two views stacked (256 rows), length up to 200, hidden 64 in 1 or 2
  heads, causal, dropout 0.5 (training) and 0 (no dropout); rows all 200 long, or of lengths spread
  uniformly over 1..200. Besides the twin (`masked_attention_reference`, explicit math), also against
  PyTorch's own fused `scaled_dot_product_attention` under the equivalent boolean mask.

    pytest benches/test_ops_speed.py --benchmark-only -s
"""

from __future__ import annotations

import os
import time

import pytest

torch = pytest.importorskip("torch")

from llmesr.ops import (  # noqa: E402
    distill_loss,
    distill_loss_reference,
    hashed_dropout,
    hashed_dropout_reference,
    masked_attention,
    masked_attention_reference,
    native_ops_loaded,
)
from llmesr.ops.attention import valid_positions  # noqa: E402

ROUNDS = int(os.environ.get("LLMESR_BENCH_ROUNDS", "5"))
CALLS = 200
ATTENTION_CALLS = int(os.environ.get("LLMESR_BENCH_ATTENTION_CALLS", "3"))


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


def sdpa_attention(q, k, v, lengths, causal, dropout=0.0):
    """PyTorch's fused attention under the [B, 1, L, L] boolean mask that means the same (a padded
    query attends to itself so that its softmax is defined)."""
    length = q.shape[1]
    valid = valid_positions(lengths, length)
    allowed = valid[:, None, None, :].expand(-1, 1, length, -1)
    if causal:
        allowed = allowed & torch.ones(length, length, dtype=torch.bool, device=q.device).tril()
    allowed = allowed | torch.eye(length, dtype=torch.bool, device=q.device)
    q, k, v = (t.transpose(1, 2) for t in (q, k, v))
    return torch.nn.functional.scaled_dot_product_attention(q, k, v, attn_mask=allowed, dropout_p=dropout).transpose(
        1, 2
    )


def attention_inputs(heads: int, lengths: str, device: str = "cpu", dtype=torch.float32):
    g = torch.Generator().manual_seed(0)
    rows, length, dim = 256, 200, 64 // heads
    q, k, v = (torch.randn(rows, length, heads, dim, generator=g).to(device, dtype).requires_grad_() for _ in range(3))
    lens = torch.full((rows,), length) if lengths == "full" else torch.randint(1, length + 1, (rows,), generator=g)
    return q, k, v, lens.to(device)


def attention_step(fn, inputs, dropout):
    fn(*inputs, True, dropout).sum().backward()


def time_attention(fn, inputs, dropout) -> float:
    sync = torch.cuda.synchronize if inputs[0].is_cuda else (lambda: None)
    sync()
    t = time.perf_counter()
    for _ in range(ATTENTION_CALLS):
        attention_step(fn, inputs, dropout)
    sync()
    return (time.perf_counter() - t) / ATTENTION_CALLS


def compare_attention(impls: dict, inputs, dropout) -> dict[str, float]:
    for fn in impls.values():
        attention_step(fn, inputs, dropout)  # warm up (and compile)
    times: dict[str, list[float]] = {name: [] for name in impls}
    for _ in range(ROUNDS):  # alternate, keep each one's best
        for name, fn in impls.items():
            times[name].append(time_attention(fn, inputs, dropout))
    return {name: min(t) * 1e3 for name, t in times.items()}


@pytest.mark.skipif(not native_ops_loaded(), reason="the native ops did not build here")
@pytest.mark.parametrize("dropout", [0.5, 0.0])
@pytest.mark.parametrize("lengths", ["full", "spread"])
@pytest.mark.parametrize("heads", [1, 2])
def test_attention_vs_eager(benchmark, heads, lengths, dropout):
    inputs = attention_inputs(heads, lengths)
    best = compare_attention(
        {"fused": masked_attention, "eager": masked_attention_reference, "sdpa": sdpa_attention}, inputs, dropout
    )
    benchmark.extra_info.update(**{f"{k}_ms": v for k, v in best.items()})
    print(
        f"\nattention {heads} head(s), rows {lengths}, dropout {dropout}: fused {best['fused']:.1f} ms, "
        f"eager {best['eager']:.1f} ms ({best['eager'] / best['fused']:.2f}x), "
        f"sdpa {best['sdpa']:.1f} ms ({best['sdpa'] / best['fused']:.2f}x)"
    )
    benchmark.pedantic(attention_step, args=(masked_attention, inputs, dropout), rounds=1, iterations=1)


@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs CUDA")
@pytest.mark.parametrize("dtype", [torch.float32, torch.bfloat16])
@pytest.mark.parametrize("dropout", [0.5, 0.0])
@pytest.mark.parametrize("lengths", ["full", "spread"])
@pytest.mark.parametrize("heads", [1, 2])
def test_attention_cuda_vs_eager_and_compiled(benchmark, heads, lengths, dropout, dtype):
    assert native_ops_loaded()
    inputs = attention_inputs(heads, lengths, "cuda", dtype)
    impls = {
        "fused": masked_attention,
        "eager": masked_attention_reference,
        "compiled": torch.compile(masked_attention_reference),
        "sdpa": sdpa_attention,
    }
    best = compare_attention(impls, inputs, dropout)
    benchmark.extra_info.update(device=torch.cuda.get_device_name(), **{f"{k}_ms": v for k, v in best.items()})
    print(
        f"\n{torch.cuda.get_device_name()} attention {heads} head(s), {dtype}, rows {lengths}, dropout {dropout}: "
        + ", ".join(f"{name} {ms:.3f} ms ({ms / best['fused']:.2f}x)" for name, ms in best.items())
    )
    benchmark.pedantic(attention_step, args=(masked_attention, inputs, dropout), rounds=1, iterations=1)


@pytest.mark.skipif(not native_ops_loaded(), reason="the native ops did not build here")
def test_dropout_vs_torch(benchmark):
    x = torch.randn(51200, 64, requires_grad=True)
    impls = {
        "fused": lambda: hashed_dropout(x, 0.5).sum().backward(),
        "torch": lambda: torch.nn.functional.dropout(x, 0.5, True).sum().backward(),
        "twin": lambda: hashed_dropout_reference(x, 0.5, 7).sum().backward(),
    }
    for fn in impls.values():
        fn()
    times: dict[str, list[float]] = {name: [] for name in impls}
    for _ in range(ROUNDS):
        for name, fn in impls.items():
            t = time.perf_counter()
            for _ in range(10):
                fn()
            times[name].append((time.perf_counter() - t) / 10)
    best = {name: min(t) * 1e3 for name, t in times.items()}
    benchmark.extra_info.update(**{f"{k}_ms": v for k, v in best.items()})
    print(
        f"\ndropout [51200, 64] p 0.5: fused {best['fused']:.1f} ms, torch {best['torch']:.1f} ms "
        f"({best['torch'] / best['fused']:.2f}x), twin {best['twin']:.1f} ms ({best['twin'] / best['fused']:.2f}x)"
    )
    benchmark.pedantic(impls["fused"], rounds=1, iterations=1)
