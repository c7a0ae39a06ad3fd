"""The CUDA kernels of the fused attention, run on the CPU: csrc/cuda/attention_kernels.cuh compiled with
the host compiler over a small emulation of warps (tests/cuda_emulation/simt.h: a lane per thread,
shuffles as barriers), then compared with the PyTorch twin. It checks the kernels' own logic (indexing,
the online softmax, the shuffles, the dk/dv pass, the dropout decisions) where no GPU is at hand; on a
GPU, tests/test_ops.py runs the compiled kernels themselves."""

import ctypes
import shutil
import subprocess
from pathlib import Path

import pytest

torch = pytest.importorskip("torch")

from llmesr.ops import masked_attention_reference  # noqa: E402
from llmesr.ops.loader import CSRC  # noqa: E402

HERE = Path(__file__).parent / "cuda_emulation"
CXX = shutil.which("c++") or shutil.which("g++")
pytestmark = pytest.mark.skipif(CXX is None, reason="no C++ compiler")


@pytest.fixture(scope="module")
def kernels(tmp_path_factory):
    library = tmp_path_factory.mktemp("emulation") / "attention.so"
    cmd = [CXX, "-std=c++20", "-O1", "-shared", "-fPIC", "-pthread", f"-I{CSRC}", str(HERE / "attention.cpp")]
    done = subprocess.run([*cmd, "-o", str(library)], capture_output=True, text=True, timeout=600)
    assert done.returncode == 0, done.stderr[-4000:]
    return ctypes.CDLL(str(library))


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
