"""The CUDA kernels of the fused operators, run on the CPU: csrc/cuda/*_kernels.cuh compiled with the host
compiler over a small emulation of CUDA's threads (tests/cuda_emulation/simt.h: a thread per lane,
shuffles and __syncthreads as barriers, atomics), then compared with the PyTorch twins. It checks the
kernels' own logic (indexing, the online softmax, the shuffles, the dk/dv pass, the dropout decisions,
the grid-stride loops and the block reduction) where no GPU is at hand; on a GPU, tests/test_ops.py runs
the compiled kernels themselves."""

import ctypes
import shutil
import subprocess
from pathlib import Path

import pytest

torch = pytest.importorskip("torch")

from llmesr.ops import distill_loss_reference, hashed_dropout_reference, masked_attention_reference  # noqa: E402
from llmesr.ops.loader import CSRC  # noqa: E402

HERE = Path(__file__).parent / "cuda_emulation"
CXX = shutil.which("c++") or shutil.which("g++")
pytestmark = pytest.mark.skipif(CXX is None, reason="no C++ compiler")


def build(source: str, folder: Path) -> ctypes.CDLL:
    library = folder / f"{source}.so"
    cmd = [CXX, "-std=c++20", "-O1", "-shared", "-fPIC", "-pthread", f"-I{CSRC}", str(HERE / f"{source}.cpp")]
    done = subprocess.run([*cmd, "-o", str(library)], capture_output=True, text=True, timeout=600)
    assert done.returncode == 0, done.stderr[-4000:]
    return ctypes.CDLL(str(library))


@pytest.fixture(scope="module")
def kernels(tmp_path_factory):
    return build("attention", tmp_path_factory.mktemp("emulation"))


@pytest.fixture(scope="module")
def distill_kernels(tmp_path_factory):
    return build("distill", tmp_path_factory.mktemp("emulation"))


@pytest.fixture(scope="module")
def dropout_kernels(tmp_path_factory):
    return build("dropout", tmp_path_factory.mktemp("emulation"))


def pointer(t: torch.Tensor) -> ctypes.c_void_p:
    assert t.is_contiguous()
    return ctypes.c_void_p(t.data_ptr())


def run_kernels(kernels, q, k, v, lengths, causal, dropout, seed, grad):
    """The forward kernel, then the two backward kernels on `grad`: out, (dq, dk, dv)."""
    b, length, heads, dim = q.shape
    suffix = {torch.float32: "f32", torch.float64: "f64"}[q.dtype]
    out, lse = torch.zeros_like(q), torch.zeros(b, heads, length, dtype=q.dtype)
    sizes = [ctypes.c_int64(n) for n in (b, length, heads, dim)]
    flags = [ctypes.c_int(int(causal)), ctypes.c_double(dropout), ctypes.c_uint32(seed)]
    getattr(kernels, f"attention_forward_{suffix}")(*map(pointer, (q, k, v, lengths, out, lse)), *sizes, *flags)
    dq, dk, dv = torch.zeros_like(q), torch.zeros_like(k), torch.zeros_like(v)
    tensors = (grad, q, k, v, out, lse, lengths, dq, dk, dv)
    getattr(kernels, f"attention_backward_{suffix}")(*map(pointer, tensors), *sizes, *flags)
    return out, (dq, dk, dv)


# Head sizes 5, 40 and 70 take one, two and three 32-wide chunks per lane; length 40 spans two key tiles.
SHAPES = [(5, 7, 2, 5), (3, 1, 1, 3), (5, 40, 1, 40), (3, 12, 3, 70)]


@pytest.mark.parametrize("dtype", [torch.float64, torch.float32])
@pytest.mark.parametrize("causal", [True, False])
@pytest.mark.parametrize("dropout", [0.0, 0.3])
@pytest.mark.parametrize("b, length, heads, dim", SHAPES)
def test_cuda_kernels_match_the_reference(kernels, b, length, heads, dim, causal, dropout, dtype):
    g = torch.Generator().manual_seed(b * length + dim)
    q, k, v, grad = (torch.randn(b, length, heads, dim, generator=g, dtype=dtype) for _ in range(4))
    cycle = [length, 0, 1, max(1, length // 2), length - 1]  # a fully padded row, length 1, ...
    lengths = torch.tensor([cycle[i % len(cycle)] for i in range(b)])
    out, grads = run_kernels(kernels, q, k, v, lengths, causal, dropout, 77, grad)
    leaves = [t.clone().requires_grad_() for t in (q, k, v)]
    want = masked_attention_reference(*leaves, lengths, causal, dropout, 77)
    want_grads = torch.autograd.grad(want, leaves, grad)
    tol = {torch.float64: 1e-10, torch.float32: 1e-4}[dtype]
    torch.testing.assert_close(out, want.detach(), rtol=tol, atol=tol)
    for got, expected in zip(grads, want_grads, strict=True):
        torch.testing.assert_close(got, expected, rtol=tol, atol=tol)


@pytest.mark.parametrize("dtype", [torch.float64, torch.float32])
@pytest.mark.parametrize("b, k, d, most_blocks", [(33, 4, 65, 2), (1, 1, 7, 4096), (128, 10, 128, 3)])
def test_cuda_kd_kernels_match_the_reference(distill_kernels, b, k, d, most_blocks, dtype):
    g = torch.Generator().manual_seed(b + k + d)
    student, teachers = torch.randn(b, d, generator=g, dtype=dtype), torch.randn(b, k, d, generator=g, dtype=dtype)
    suffix = {torch.float32: "f32", torch.float64: "f64"}[dtype]
    mean, total = torch.zeros_like(student), torch.zeros((), dtype=dtype)
    sizes = [ctypes.c_int64(n) for n in (b, k, d, most_blocks)]
    getattr(distill_kernels, f"kd_forward_{suffix}")(*map(pointer, (student, teachers, mean, total)), *sizes)
    grad, out = torch.tensor(1.7, dtype=dtype), torch.zeros_like(student)
    n = [ctypes.c_int64(b * d), ctypes.c_int64(most_blocks)]
    getattr(distill_kernels, f"kd_backward_{suffix}")(*map(pointer, (grad, student, mean, out)), *n)

    leaf = student.clone().requires_grad_()
    want = distill_loss_reference(leaf, teachers, "kd")
    (want_grad,) = torch.autograd.grad(want * grad, leaf)
    tol = {torch.float64: 1e-10, torch.float32: 1e-5}[dtype]
    torch.testing.assert_close(mean, teachers.mean(1), rtol=tol, atol=tol)
    torch.testing.assert_close(total / (b * d), want.detach(), rtol=tol, atol=tol)
    torch.testing.assert_close(out, want_grad, rtol=tol, atol=tol)


@pytest.mark.parametrize("dtype", [torch.float64, torch.float32])
@pytest.mark.parametrize("n, blocks", [(1, 1), (1000, 2), (5000, 20)])
def test_cuda_dropout_kernel_matches_the_reference(dropout_kernels, n, blocks, dtype):
    x = torch.randn(n, dtype=dtype)
    out = torch.zeros_like(x)
    suffix = {torch.float32: "f32", torch.float64: "f64"}[dtype]
    args = (ctypes.c_int64(n), ctypes.c_double(0.3), ctypes.c_uint32(99), ctypes.c_uint(blocks))
    getattr(dropout_kernels, f"dropout_{suffix}")(pointer(x), pointer(out), *args)
    want = hashed_dropout_reference(x, 0.3, 99)
    assert torch.equal(out == 0, want == 0)
    torch.testing.assert_close(out, want)
