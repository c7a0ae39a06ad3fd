"""The CUDA sources compile for sm_90 (H100/H200) without a GPU: nvcc and the CUDA headers come from
NVIDIA's PyPI wheels of the CUDA version torch was built with (.ci/run installs them into a folder
named by LLMESR_CUDA_TOOLKIT); torch's own headers come from the installed torch. On a machine with a
GPU the ops are also built and run by tests/test_ops.py."""

import os
import subprocess
import sysconfig
from pathlib import Path

import pytest

torch = pytest.importorskip("torch")

from torch.utils.cpp_extension import include_paths  # noqa: E402

from llmesr.ops.loader import CSRC  # noqa: E402

TOOLKIT = os.environ.get("LLMESR_CUDA_TOOLKIT")


def torch_cuda_include() -> list[str]:
    """Headers torch's CUDA build needs beyond the toolkit's (cuBLAS, cuSPARSE, ...): the NVIDIA wheels
    installed with torch."""
    import site

    return [str(p) for s in site.getsitepackages() for p in Path(s).glob("nvidia/cu*/include")]


@pytest.mark.skipif(not TOOLKIT, reason="LLMESR_CUDA_TOOLKIT (a folder with bin/nvcc) is not set")
@pytest.mark.parametrize("source", sorted((CSRC / "cuda").glob("*.cu")), ids=lambda p: p.name)
def test_cuda_source_compiles_for_sm90(source, tmp_path):
    toolkit = Path(TOOLKIT)
    includes = [
        *include_paths(),
        str(toolkit / "include"),
        str(toolkit / "include" / "cccl"),
        sysconfig.get_paths()["include"],
        *torch_cuda_include(),
    ]
    cmd = [
        str(toolkit / "bin" / "nvcc"),
        "-c",
        str(source),
        "-o",
        str(tmp_path / "out.o"),
        "-std=c++20",
        "-gencode=arch=compute_90,code=sm_90",
        "--expt-relaxed-constexpr",
        "-Xcompiler",
        "-fPIC",
        f"-D_GLIBCXX_USE_CXX11_ABI={int(torch._C._GLIBCXX_USE_CXX11_ABI)}",
        *(f"-I{p}" for p in includes),
    ]
    done = subprocess.run(cmd, capture_output=True, text=True, timeout=600)
    assert done.returncode == 0, done.stderr[-4000:]
    assert (tmp_path / "out.o").stat().st_size > 0
