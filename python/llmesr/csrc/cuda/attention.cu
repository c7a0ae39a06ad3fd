// CUDA implementation of llmesr::attention: argument checks and launches; the kernels (and how they
// work) are in attention_kernels.cuh.
#include "../attention.h"
#include "attention_kernels.cuh"

#include <ATen/Dispatch.h>
#include <ATen/cuda/CUDAContext.h>
#include <c10/cuda/CUDAGuard.h>
#include <torch/library.h>

namespace {

using namespace llmesr::attention_kernels;

Shape shape_of(const at::Tensor& q, bool causal, double dropout, int64_t seed) {
  TORCH_CHECK(q.size(3) <= kMaxDim, "attention: head size ", q.size(3), " is over the CUDA kernel's ", kMaxDim);
  return make_shape(q.size(1), q.size(2), q.size(3), causal, dropout, static_cast<uint32_t>(seed));
}

dim3 grid_for(const at::Tensor& q) { return grid_of(q.size(0), q.size(1), q.size(2)); }

std::tuple<at::Tensor, at::Tensor> attention_cuda(const at::Tensor& q_in, const at::Tensor& k_in,
                                                  const at::Tensor& v_in, const at::Tensor& lengths, bool causal,
                                                  double dropout, int64_t seed) {
  llmesr::check_attention(q_in, k_in, v_in, lengths, dropout);
  const c10::cuda::CUDAGuard guard(q_in.device());
  auto q = q_in.contiguous(), k = k_in.contiguous(), v = v_in.contiguous(), lens = lengths.contiguous();
  auto out = at::zeros_like(q);
  auto lse = at::zeros({q.size(0), q.size(2), q.size(1)}, q.options().dtype(llmesr::lse_dtype(q)));
  if (q.numel() == 0) return {out, lse};
  const Shape s = shape_of(q, causal, dropout, seed);
  auto stream = at::cuda::getCurrentCUDAStream();
  AT_DISPATCH_FLOATING_TYPES_AND2(at::kHalf, at::kBFloat16, q.scalar_type(), "attention_cuda", [&] {
    const size_t smem = kWarps * s.dim * sizeof(llmesr::acc_t<scalar_t>);
    with_chunks(s.dim, [&]<int kChunks>() {
      forward_kernel<scalar_t, kChunks><<<grid_for(q), kWarps * 32, smem, stream>>>(
          q.data_ptr<scalar_t>(), k.data_ptr<scalar_t>(), v.data_ptr<scalar_t>(), lens.data_ptr<int64_t>(),
          out.data_ptr<scalar_t>(), lse.data_ptr<llmesr::acc_t<scalar_t>>(), s);
    });
  });
  C10_CUDA_KERNEL_LAUNCH_CHECK();
  return {out, lse};
}

std::tuple<at::Tensor, at::Tensor, at::Tensor> attention_backward_cuda(
    const at::Tensor& grad_in, const at::Tensor& q_in, const at::Tensor& k_in, const at::Tensor& v_in,
    const at::Tensor& out_in, const at::Tensor& lse_in, const at::Tensor& lengths, bool causal, double dropout,
    int64_t seed) {
  llmesr::check_attention_backward(grad_in, q_in, k_in, v_in, out_in, lse_in, lengths, dropout);
  const c10::cuda::CUDAGuard guard(q_in.device());
  auto q = q_in.contiguous(), k = k_in.contiguous(), v = v_in.contiguous(), lens = lengths.contiguous();
  auto grad = grad_in.contiguous(), out = out_in.contiguous(), lse = lse_in.contiguous();
  auto dq = at::zeros_like(q), dk = at::zeros_like(k), dv = at::zeros_like(v);
  if (q.numel() == 0) return {dq, dk, dv};
  auto row_dot = at::zeros_like(lse);
  const Shape s = shape_of(q, causal, dropout, seed);
  auto stream = at::cuda::getCurrentCUDAStream();
  AT_DISPATCH_FLOATING_TYPES_AND2(at::kHalf, at::kBFloat16, q.scalar_type(), "attention_backward_cuda", [&] {
    using acc = llmesr::acc_t<scalar_t>;
    const size_t smem = 2 * kWarps * s.dim * sizeof(acc);
    with_chunks(s.dim, [&]<int kChunks>() {
      backward_query_kernel<scalar_t, kChunks><<<grid_for(q), kWarps * 32, smem, stream>>>(
          grad.data_ptr<scalar_t>(), q.data_ptr<scalar_t>(), k.data_ptr<scalar_t>(), v.data_ptr<scalar_t>(),
          out.data_ptr<scalar_t>(), lse.data_ptr<acc>(), lens.data_ptr<int64_t>(), row_dot.data_ptr<acc>(),
          dq.data_ptr<scalar_t>(), s);
      C10_CUDA_KERNEL_LAUNCH_CHECK();
      backward_key_kernel<scalar_t, kChunks><<<grid_for(q), kWarps * 32, smem, stream>>>(
          grad.data_ptr<scalar_t>(), q.data_ptr<scalar_t>(), k.data_ptr<scalar_t>(), v.data_ptr<scalar_t>(),
          lse.data_ptr<acc>(), lens.data_ptr<int64_t>(), row_dot.data_ptr<acc>(), dk.data_ptr<scalar_t>(),
          dv.data_ptr<scalar_t>(), s);
    });
  });
  C10_CUDA_KERNEL_LAUNCH_CHECK();
  return {dq, dk, dv};
}

}  // namespace

TORCH_LIBRARY_IMPL(llmesr, CUDA, m) {
  m.impl("attention", &attention_cuda);
  m.impl("attention_backward", &attention_backward_cuda);
}
