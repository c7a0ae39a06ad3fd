// CUDA implementation of llmesr::distill (see cpu/distill.cpp for the math): kd through the two kernels
// of distill_kernels.cuh; cl's B x B logits through cuBLAS via ATen.
#include "../distill.h"
#include "distill_kernels.cuh"

#include <ATen/ATen.h>
#include <ATen/Dispatch.h>
#include <ATen/cuda/CUDAContext.h>
#include <c10/cuda/CUDAGuard.h>
#include <torch/library.h>

namespace {

using namespace llmesr::distill_kernels;

template <typename scalar_t>
at::ScalarType acc_dtype() {
  return std::is_same_v<scalar_t, double> ? at::kDouble : at::kFloat;
}

int blocks_for(int64_t n) { return static_cast<int>(std::min<int64_t>((n + kThreads - 1) / kThreads, 4096)); }

std::tuple<at::Tensor, at::Tensor, at::Tensor> distill_cuda(const at::Tensor& student, const at::Tensor& teachers,
                                                            int64_t kind, double temperature) {
  llmesr::check_distill(student, teachers);
  TORCH_CHECK(kind == 0 || kind == 1, "distill: kind must be 0 (kd) or 1 (cl)");
  const c10::cuda::CUDAGuard guard(student.device());
  auto s = student.contiguous();
  auto t = teachers.contiguous();
  if (kind == 1) {
    auto mean = t.mean(1);
    const auto dtype = llmesr::compute_dtype(s);
    auto [loss, probs] = llmesr::cl_forward(s.to(dtype), mean.to(dtype), temperature);
    return {loss.to(s.scalar_type()), mean, probs};
  }
  const int64_t b = s.size(0), k = t.size(1), d = s.size(1);
  auto mean = at::empty_like(s);
  at::Tensor total;
  auto stream = at::cuda::getCurrentCUDAStream();
  AT_DISPATCH_FLOATING_TYPES_AND2(at::kHalf, at::kBFloat16, s.scalar_type(), "distill_kd_cuda", [&] {
    total = at::zeros({}, s.options().dtype(acc_dtype<scalar_t>()));
    kd_forward_kernel<scalar_t><<<blocks_for(b * d), kThreads, 0, stream>>>(
        s.data_ptr<scalar_t>(), t.data_ptr<scalar_t>(), mean.data_ptr<scalar_t>(),
        total.data_ptr<llmesr::acc_t<scalar_t>>(), b, k, d);
  });
  C10_CUDA_KERNEL_LAUNCH_CHECK();
  auto no_probs = at::empty({0}, s.options().dtype(llmesr::compute_dtype(s)));
  return {(total / static_cast<double>(b * d)).to(s.scalar_type()), mean, no_probs};
}

at::Tensor distill_backward_cuda(const at::Tensor& grad, const at::Tensor& student, const at::Tensor& teacher_mean,
                                 const at::Tensor& probs, int64_t kind, double temperature) {
  llmesr::check_distill_backward(student, teacher_mean, probs, kind);
  const c10::cuda::CUDAGuard guard(student.device());
  auto s = student.contiguous();
  auto mean = teacher_mean.contiguous();
  if (kind == 1) {
    const auto dtype = llmesr::compute_dtype(s);
    return llmesr::cl_grad(grad.to(dtype), s.to(dtype), mean.to(dtype), probs, temperature).to(s.scalar_type());
  }
  auto out = at::empty_like(s);
  auto stream = at::cuda::getCurrentCUDAStream();
  AT_DISPATCH_FLOATING_TYPES_AND2(at::kHalf, at::kBFloat16, s.scalar_type(), "distill_kd_backward_cuda", [&] {
    auto g = grad.to(acc_dtype<scalar_t>()).contiguous();
    kd_backward_kernel<scalar_t><<<blocks_for(s.numel()), kThreads, 0, stream>>>(
        g.data_ptr<llmesr::acc_t<scalar_t>>(), s.data_ptr<scalar_t>(), mean.data_ptr<scalar_t>(),
        out.data_ptr<scalar_t>(), s.numel());
  });
  C10_CUDA_KERNEL_LAUNCH_CHECK();
  return out;
}

}  // namespace

TORCH_LIBRARY_IMPL(llmesr, CUDA, m) {
  m.impl("distill", &distill_cuda);
  m.impl("distill_backward", &distill_backward_cuda);
}
