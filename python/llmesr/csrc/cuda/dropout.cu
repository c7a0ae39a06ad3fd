// CUDA implementation of llmesr::dropout (see cpu/dropout.cpp); the kernel is in dropout_kernels.cuh.
#include "dropout_kernels.cuh"

#include <ATen/ATen.h>
#include <ATen/Dispatch.h>
#include <ATen/cuda/CUDAContext.h>
#include <c10/cuda/CUDAGuard.h>
#include <torch/library.h>

#include <algorithm>

namespace {

using namespace llmesr::dropout_kernels;

at::Tensor dropout_cuda(const at::Tensor& x, double p, int64_t seed) {
  TORCH_CHECK(p >= 0 && p < 1, "dropout: p must be in [0, 1), got ", p);
  const c10::cuda::CUDAGuard guard(x.device());
  auto in = x.contiguous();
  auto out = at::empty_like(in);
  const int64_t n = in.numel();
  if (n == 0) return out;
  const int blocks = static_cast<int>(std::min<int64_t>((n + kThreads - 1) / kThreads, 65536));
  auto stream = at::cuda::getCurrentCUDAStream();
  AT_DISPATCH_FLOATING_TYPES_AND2(at::kHalf, at::kBFloat16, in.scalar_type(), "dropout_cuda", [&] {
    dropout_kernel<scalar_t><<<blocks, kThreads, 0, stream>>>(in.data_ptr<scalar_t>(), out.data_ptr<scalar_t>(), n,
                                                              static_cast<uint32_t>(seed),
                                                              llmesr::dropout_threshold(p), 1.0 / (1.0 - p));
  });
  C10_CUDA_KERNEL_LAUNCH_CHECK();
  return out;
}

}  // namespace

TORCH_LIBRARY_IMPL(llmesr, CUDA, m) { m.impl("dropout", &dropout_cuda); }
