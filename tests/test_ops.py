"""The fused operators against their PyTorch twins: opcheck, gradcheck in float64, random shapes
(K = 1, one row, odd widths, a zero row; for attention a fully padded row, length 1, odd head sizes,
dropout; for dropout odd shapes, strides and thread counts), torch.compile, and the reference fallback.
float32 tolerance: rtol 1e-5 / atol 1e-6 on losses and gradients (sums reordered); attention outputs
and gradients rtol 1e-4 / atol 1e-5 (sums of up to L products reordered)."""

import os
import subprocess
import sys

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
from llmesr.ops.attention import keep_mask  # noqa: E402
from llmesr.ops.dropout import keep_elements  # noqa: E402

native = pytest.mark.skipif(not native_ops_loaded(), reason="the native ops did not build here")
KIND = {"kd": 0, "cl": 1}


def inputs(b, k, d, dtype=torch.float32, seed=0, device="cpu"):
    g = torch.Generator().manual_seed(seed)
    student = torch.randn(b, d, generator=g, dtype=dtype).to(device).requires_grad_()
    teachers = torch.randn(b, k, d, generator=g, dtype=dtype).to(device)
    return student, teachers


@native
@pytest.mark.parametrize("kind", ["kd", "cl"])
@pytest.mark.parametrize("b, k, d", [(128, 10, 128), (1, 1, 7), (5, 1, 3), (33, 4, 65)])
def test_matches_the_reference(kind, b, k, d):
    student, teachers = inputs(b, k, d, seed=b * k + d)
    got = distill_loss(student, teachers, kind, 0.5)
    want = distill_loss_reference(student, teachers, kind, 0.5)
    torch.testing.assert_close(got, want, rtol=1e-5, atol=1e-6)
    (g_got,) = torch.autograd.grad(got, student)
    (g_want,) = torch.autograd.grad(want, student)
    torch.testing.assert_close(g_got, g_want, rtol=1e-5, atol=1e-6)


@native
@pytest.mark.parametrize("kind", ["kd", "cl"])
def test_a_zero_student_row_stays_finite(kind):
    student, teachers = inputs(4, 3, 8)
    with torch.no_grad():
        student[2] = 0
    got = distill_loss(student, teachers, kind)
    (grad,) = torch.autograd.grad(got, student)
    want = distill_loss_reference(student, teachers, kind)
    (g_want,) = torch.autograd.grad(want, student)
    torch.testing.assert_close(got, want)
    torch.testing.assert_close(grad, g_want)
    assert torch.isfinite(grad).all()


@native
@pytest.mark.parametrize("kind", ["kd", "cl"])
def test_gradcheck_float64(kind):
    student, teachers = inputs(6, 3, 5, dtype=torch.float64)
    assert torch.autograd.gradcheck(lambda s: torch.ops.llmesr.distill(s, teachers, KIND[kind], 0.7)[0], (student,))


@native
@pytest.mark.parametrize("kind", ["kd", "cl"])
def test_opcheck(kind):
    student, teachers = inputs(6, 3, 5)
    torch.library.opcheck(torch.ops.llmesr.distill.default, (student, teachers, KIND[kind], 0.7))
    grad = torch.tensor(1.3)
    _, mean, probs = torch.ops.llmesr.distill(student.detach(), teachers, KIND[kind], 0.7)
    args = (grad, student.detach(), mean, probs, KIND[kind], 0.7)
    torch.library.opcheck(torch.ops.llmesr.distill_backward.default, args)


@native
def test_torch_compile_fullgraph():
    student, teachers = inputs(8, 2, 4)
    compiled = torch.compile(lambda s, t: distill_loss(s, t, "kd") * 2, fullgraph=True, backend="eager")
    torch.testing.assert_close(compiled(student, teachers), 2 * distill_loss_reference(student, teachers))


@native
def test_bad_shapes_raise_a_clear_error():
    with pytest.raises(RuntimeError, match="do not match student"):
        torch.ops.llmesr.distill(torch.randn(3, 4), torch.randn(3, 2, 5), 0, 1.0)
    with pytest.raises(ValueError, match="must be 'kd' or 'cl'"):
        distill_loss(torch.randn(3, 4), torch.randn(3, 2, 4), "mse")


@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs CUDA")
@pytest.mark.parametrize("dtype", [torch.float32, torch.bfloat16, torch.float16])
@pytest.mark.parametrize("kind", ["kd", "cl"])
def test_cuda_matches_a_float32_reference(kind, dtype):
    assert native_ops_loaded()
    student, teachers = inputs(128, 10, 128, dtype=dtype, device="cuda")
    got = distill_loss(student, teachers, kind)
    (g_got,) = torch.autograd.grad(got, student)
    s32 = student.detach().float().requires_grad_()
    want = distill_loss_reference(s32, teachers.float(), kind)
    (g_want,) = torch.autograd.grad(want, s32)
    tol = {torch.float32: 1e-5, torch.bfloat16: 2e-2, torch.float16: 5e-3}[dtype]
    torch.testing.assert_close(got.float(), want, rtol=tol, atol=tol)
    torch.testing.assert_close(g_got.float(), g_want, rtol=tol, atol=tol * 1e-2)


def attention_inputs(b, length, heads, dim, dtype=torch.float32, seed=0, device="cpu"):
    """q, k, v `[B, L, H, Dh]` (k and v strided views of one projection, as the model makes them) and
    lengths cycling through 0 (a fully padded row), 1, the full length and values between."""
    g = torch.Generator().manual_seed(seed)
    q = torch.randn(b, length, heads, dim, generator=g, dtype=dtype).to(device).requires_grad_()
    kv = torch.randn(b, length, 2, heads, dim, generator=g, dtype=dtype).to(device).requires_grad_()
    cycle = [length, 0, 1, max(1, length // 2), length - 1]
    lengths = torch.tensor([cycle[i % len(cycle)] for i in range(b)], device=device)
    return q, kv, lengths


# The CPU op runs rows shorter than 48 as loops and longer ones as matrix products: both are covered.
ATTENTION_SHAPES = [(5, 7, 2, 5), (3, 1, 1, 3), (6, 12, 3, 4), (4, 33, 1, 64), (5, 70, 2, 16)]


@native
@pytest.mark.parametrize("causal", [True, False])
@pytest.mark.parametrize("dropout", [0.0, 0.3])
@pytest.mark.parametrize("b, length, heads, dim", ATTENTION_SHAPES)
def test_attention_matches_the_reference(b, length, heads, dim, causal, dropout):
    q, kv, lengths = attention_inputs(b, length, heads, dim, seed=b + length)
    k, v = kv.unbind(2)
    got = torch.ops.llmesr.attention(q, k, v, lengths, causal, dropout, 1234)[0]
    want = masked_attention_reference(q, k, v, lengths, causal, dropout, 1234)
    torch.testing.assert_close(got, want, rtol=1e-4, atol=1e-5)
    grad = torch.randn_like(got)
    grads = zip(torch.autograd.grad(got, (q, kv), grad), torch.autograd.grad(want, (q, kv), grad), strict=True)
    for g_got, g_want in grads:
        torch.testing.assert_close(g_got, g_want, rtol=1e-4, atol=1e-5)
    padded = torch.arange(length) < (length - lengths)[:, None]
    assert (got[padded] == 0).all()


@native
@pytest.mark.parametrize("causal", [True, False])
@pytest.mark.parametrize("dropout", [0.0, 0.4])
@pytest.mark.parametrize("b, length", [(5, 6), (1, 70)])
def test_attention_gradcheck_float64(b, length, causal, dropout):
    q, kv, lengths = attention_inputs(b, length, 2, 3, dtype=torch.float64)
    assert torch.autograd.gradcheck(
        lambda q, kv: torch.ops.llmesr.attention(q, *kv.unbind(2), lengths, causal, dropout, 99)[0], (q, kv)
    )


@native
@pytest.mark.parametrize("causal", [True, False])
def test_attention_opcheck(causal):
    q, kv, lengths = attention_inputs(4, 6, 2, 3)
    k, v = (t.detach().requires_grad_() for t in kv.unbind(2))
    args = (q, k, v, lengths, causal, 0.25, 7)
    torch.library.opcheck(torch.ops.llmesr.attention.default, args)
    out, lse = torch.ops.llmesr.attention(*args)
    grad = torch.randn_like(out)
    backward_args = (grad, q.detach(), k.detach(), v.detach(), out.detach(), lse, lengths, causal, 0.25, 7)
    torch.library.opcheck(torch.ops.llmesr.attention_backward.default, backward_args)


@native
def test_attention_under_torch_compile_fullgraph():
    q, kv, lengths = attention_inputs(4, 6, 2, 3)
    k, v = kv.unbind(2)
    compiled = torch.compile(lambda *a: masked_attention(*a) * 2, fullgraph=True, backend="eager")
    torch.testing.assert_close(compiled(q, k, v, lengths, True), 2 * masked_attention_reference(q, k, v, lengths, True))


def test_dropout_keeps_the_expected_share_without_pattern():
    keep = keep_mask(seed=3, batch=8, heads=2, length=64, p=0.3)
    assert keep.float().mean().item() == pytest.approx(0.7, abs=0.01)
    assert keep.float().mean(dim=(0, 1, 2)).std() < 0.03  # no key column favoured
    assert not torch.equal(keep, keep_mask(seed=4, batch=8, heads=2, length=64, p=0.3))


def test_attention_dropout_is_seeded_by_torch():
    q, kv, lengths = attention_inputs(4, 6, 2, 3)
    k, v = kv.unbind(2)
    runs = []
    for _ in range(2):
        torch.manual_seed(11)
        runs.append(masked_attention(q, k, v, lengths, True, 0.5))
    torch.testing.assert_close(runs[0], runs[1], rtol=0, atol=0)
    assert not torch.equal(runs[0], masked_attention(q, k, v, lengths, True, 0.5))


@native
def test_attention_bad_inputs_raise_a_clear_error():
    q, kv, lengths = attention_inputs(4, 6, 2, 3)
    k, v = kv.unbind(2)
    with pytest.raises(RuntimeError, match="must match q"):
        torch.ops.llmesr.attention(q, k[:, :5], v, lengths, True, 0.0, 0)
    with pytest.raises(RuntimeError, match=r"lengths\[1\] = 7 is not in \[0, 6\]"):
        torch.ops.llmesr.attention(q, k, v, torch.tensor([1, 7, 0, 2]), True, 0.0, 0)
    with pytest.raises(ValueError, match=r"dropout must be in \[0, 1\)"):
        masked_attention(q, k, v, lengths, True, 1.0)


@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs CUDA")
@pytest.mark.parametrize("dtype", [torch.float32, torch.bfloat16, torch.float16])
@pytest.mark.parametrize("causal", [True, False])
@pytest.mark.parametrize("dropout", [0.0, 0.3])
@pytest.mark.parametrize("b, length, heads, dim", [*ATTENTION_SHAPES, (64, 200, 2, 32)])
def test_attention_cuda_matches_a_float32_reference(b, length, heads, dim, causal, dropout, dtype):
    assert native_ops_loaded()
    q, kv, lengths = attention_inputs(b, length, heads, dim, dtype=dtype, device="cuda")
    k, v = kv.unbind(2)
    got = torch.ops.llmesr.attention(q, k, v, lengths, causal, dropout, 5)[0]
    grad = torch.randn_like(got)
    g_got = torch.autograd.grad(got, (q, kv), grad)
    q32, kv32 = (t.detach().float().requires_grad_() for t in (q, kv))
    want = masked_attention_reference(q32, *kv32.unbind(2), lengths, causal, dropout, 5)
    g_want = torch.autograd.grad(want, (q32, kv32), grad.float())
    tol = {torch.float32: 1e-4, torch.bfloat16: 3e-2, torch.float16: 5e-3}[dtype]
    torch.testing.assert_close(got.float(), want, rtol=tol, atol=tol)
    for a, b_ in zip(g_got, g_want, strict=True):
        torch.testing.assert_close(a.float(), b_, rtol=tol, atol=tol * 10)


@native
@pytest.mark.parametrize("dtype", [torch.float32, torch.float64, torch.bfloat16])
@pytest.mark.parametrize("shape", [(1,), (3, 5), (200, 64), (7, 33, 5)])
def test_dropout_matches_the_reference(shape, dtype):
    x = torch.randn(shape, dtype=dtype).requires_grad_()
    got = torch.ops.llmesr.dropout(x, 0.3, 4321)
    want = hashed_dropout_reference(x, 0.3, 4321)
    tol = 1e-2 if dtype == torch.bfloat16 else 1e-6
    torch.testing.assert_close(got, want, rtol=tol, atol=tol)
    assert torch.equal(got == 0, want == 0)  # the same decisions
    grad = torch.randn_like(got)
    torch.testing.assert_close(*(torch.autograd.grad(y, x, grad)[0] for y in (got, want)), rtol=tol, atol=tol)


@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs CUDA")
@pytest.mark.parametrize("dtype", [torch.float32, torch.bfloat16, torch.float16])
def test_dropout_cuda_matches_the_reference(dtype):
    assert native_ops_loaded()
    x = torch.randn(257, 130, dtype=dtype, device="cuda")
    got, want = torch.ops.llmesr.dropout(x, 0.3, 4321), hashed_dropout_reference(x.float(), 0.3, 4321)
    assert torch.equal(got == 0, want == 0)
    torch.testing.assert_close(got.float(), want, rtol=1e-2, atol=1e-2)


@native
def test_dropout_gradcheck_opcheck_compile_and_strides():
    x = torch.randn(6, 5, dtype=torch.float64, requires_grad=True)
    assert torch.autograd.gradcheck(lambda x: torch.ops.llmesr.dropout(x, 0.4, 9), (x,))
    torch.library.opcheck(torch.ops.llmesr.dropout.default, (torch.randn(6, 5, requires_grad=True), 0.4, 9))
    compiled = torch.compile(lambda x: torch.ops.llmesr.dropout(x, 0.4, 9) * 2, fullgraph=True, backend="eager")
    torch.testing.assert_close(compiled(x), 2 * hashed_dropout_reference(x, 0.4, 9))
    t = torch.randn(5, 6).T  # not contiguous: decisions follow the row-major order of its shape
    torch.testing.assert_close(torch.ops.llmesr.dropout(t, 0.4, 9), hashed_dropout_reference(t, 0.4, 9))


@native
def test_dropout_does_not_depend_on_the_thread_count():
    x = torch.randn(300_000)
    threads = torch.get_num_threads()
    try:
        torch.set_num_threads(1)
        one = torch.ops.llmesr.dropout(x, 0.5, 77)
        torch.set_num_threads(2)
        two = torch.ops.llmesr.dropout(x, 0.5, 77)
    finally:
        torch.set_num_threads(threads)
    assert torch.equal(one, two)


def test_dropout_keeps_the_expected_share_and_is_seeded_by_torch():
    assert keep_elements(seed=5, numel=100_000, p=0.3).float().mean().item() == pytest.approx(0.7, abs=0.005)
    x = torch.ones(1000)
    runs = []
    for _ in range(2):
        torch.manual_seed(3)
        runs.append(hashed_dropout(x, 0.5))
    assert torch.equal(runs[0], runs[1]) and not torch.equal(runs[0], hashed_dropout(x, 0.5))
    assert hashed_dropout(x, 0.0) is x
    with pytest.raises(ValueError, match=r"dropout must be in \[0, 1\)"):
        hashed_dropout(x, 1.0)


def test_reference_mode_needs_no_compiler():
    code = "from llmesr.ops import native_ops_loaded; print(native_ops_loaded())"
    out = subprocess.run(
        [sys.executable, "-c", code], env={**os.environ, "LLMESR_OPS": "ref"}, capture_output=True, text=True
    )
    assert out.stdout.strip() == "False", out.stderr
    bad = subprocess.run(
        [sys.executable, "-c", code], env={**os.environ, "LLMESR_OPS": "fast"}, capture_output=True, text=True
    )
    assert "LLMESR_OPS must be one of" in bad.stderr


@native
def test_one_epoch_with_native_ops_ends_like_the_reference(tmp_path):
    """A short training run with the fused ops and the same run with the reference ops (in a fresh
    process, LLMESR_OPS=ref) end within float tolerance of each other."""
    import json

    from llmesr import prepare_synthetic
    from llmesr.embed import embed_dataset
    from llmesr.encoders import HashingEncoder

    data = tmp_path / "syn"
    prepare_synthetic(data, n_users=120, n_items=50, seed=5)
    embed_dataset(data, HashingEncoder(16), k=10, hidden=8)
    losses = {}
    for mode in ("auto", "ref"):
        out = tmp_path / mode
        cmd = [sys.executable, "-m", "llmesr.cli.train", "--data", str(data), "--out", str(out), "--epochs", "1"]
        cmd += ["--hidden", "8", "--max-len", "20", "--batch-size", "32", "--n-negatives", "20", "-q"]
        done = subprocess.run(cmd, env={**os.environ, "LLMESR_OPS": mode}, capture_output=True, text=True)
        assert done.returncode == 0, done.stderr[-2000:]
        losses[mode] = json.loads((out / "metrics.json").read_text())["history"][0]["loss"]
    assert losses["auto"] == pytest.approx(losses["ref"], rel=1e-4)
