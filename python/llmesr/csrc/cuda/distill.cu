// CUDA implementation of llmesr::distill (see cpu/distill.cpp for the math). kd runs as two
// kernels: the teachers' mean fused with the squared difference and a block reduction (forward),
// and the gradient from the saved mean (backward). cl's B x B logits go through cuBLAS via ATen.
#include "../distill.h"

#include <ATen/Dispatch.h>
#include <ATen/cuda/CUDAContext.h>
#include <c10/cuda/CUDAGuard.h>
#include <torch/library.h>
#include <ATen/ATen.h>

#include <type_traits>

namespace {

constexpr int kThreads = 256;
// Accumulation type: double for double, float otherwise (half and bfloat16 included).
template <typename scalar_t>
using acc_t = std::conditional_t<std::is_same_v<scalar_t, double>, double, float>;

template <typename scalar_t>
__device__ acc_t<scalar_t> teacher_mean_at(const scalar_t* teachers, int64_t row, int64_t col, int64_t k, int64_t d) {
  acc_t<scalar_t> acc = 0;
  for (int64_t i = 0; i < k; ++i) acc += static_cast<acc_t<scalar_t>>(teachers[(row * k + i) * d + col]);
  return acc / static_cast<acc_t<scalar_t>>(k);
}

// Writes the teachers' mean and adds the squared differences to the student into `total` (kd).
template <typename scalar_t>
__global__ void kd_forward_kernel(const scalar_t* student, const scalar_t* teachers, scalar_t* mean,
                                  acc_t<scalar_t>* total, int64_t b, int64_t k, int64_t d) {
  __shared__ acc_t<scalar_t> partial[kThreads];
  acc_t<scalar_t> acc = 0;
  for (int64_t i = blockIdx.x * blockDim.x + threadIdx.x; i < b * d; i += (int64_t)gridDim.x * blockDim.x) {
    const acc_t<scalar_t> m = teacher_mean_at(teachers, i / d, i % d, k, d);
    mean[i] = static_cast<scalar_t>(m);
    const acc_t<scalar_t> diff = static_cast<acc_t<scalar_t>>(student[i]) - m;
    acc += diff * diff;
  }
  partial[threadIdx.x] = acc;
  __syncthreads();
  for (int stride = blockDim.x / 2; stride > 0; stride >>= 1) {
    if (threadIdx.x < stride) partial[threadIdx.x] += partial[threadIdx.x + stride];
    __syncthreads();
  }
  if (threadIdx.x == 0) atomicAdd(total, partial[0]);
}

template <typename scalar_t>
__global__ void kd_backward_kernel(const acc_t<scalar_t>* grad, const scalar_t* student, const scalar_t* mean,
                                   scalar_t* out, int64_t n) {
  const acc_t<scalar_t> scale = 2 * grad[0] / static_cast<acc_t<scalar_t>>(n);
  for (int64_t i = blockIdx.x * blockDim.x + threadIdx.x; i < n; i += (int64_t)gridDim.x * blockDim.x) {
    out[i] = static_cast<scalar_t>(scale * (static_cast<acc_t<scalar_t>>(student[i]) - static_cast<acc_t<scalar_t>>(mean[i])));
  }
}

template <typename scalar_t>
at::ScalarType acc_dtype() {
  return std::is_same_v<scalar_t, double> ? at::kDouble : at::kFloat;
}

int blocks_for(int64_t n) { return static_cast<int>(std::min<int64_t>((n + kThreads - 1) / kThreads, 4096)); }

std::tuple<at::Tensor, at::Tensor> distill_cuda(const at::Tensor& student, const at::Tensor& teachers, int64_t kind,
                                                double temperature) {
  llmesr::check_distill(student, teachers);
  TORCH_CHECK(kind == 0 || kind == 1, "distill: kind must be 0 (kd) or 1 (cl)");
  const c10::cuda::CUDAGuard guard(student.device());
  auto s = student.contiguous();
  auto t = teachers.contiguous();
  if (kind == 1) {
    auto mean = t.mean(1);
    return {llmesr::cl_loss(s.to(at::kFloat), mean.to(at::kFloat), temperature).to(s.scalar_type()), mean};
  }
  const int64_t b = s.size(0), k = t.size(1), d = s.size(1);
  auto mean = at::empty_like(s);
  at::Tensor total;
  auto stream = at::cuda::getCurrentCUDAStream();
  AT_DISPATCH_FLOATING_TYPES_AND2(at::kHalf, at::kBFloat16, s.scalar_type(), "distill_kd_cuda", [&] {
    total = at::zeros({}, s.options().dtype(acc_dtype<scalar_t>()));
    kd_forward_kernel<scalar_t><<<blocks_for(b * d), kThreads, 0, stream>>>(
        s.data_ptr<scalar_t>(), t.data_ptr<scalar_t>(), mean.data_ptr<scalar_t>(), total.data_ptr<acc_t<scalar_t>>(),
        b, k, d);
  });
  C10_CUDA_KERNEL_LAUNCH_CHECK();
  return {(total / static_cast<double>(b * d)).to(s.scalar_type()), mean};
}

at::Tensor distill_backward_cuda(const at::Tensor& grad, const at::Tensor& student, const at::Tensor& teacher_mean,
                                 int64_t kind, double temperature) {
  llmesr::check_distill_backward(student, teacher_mean);
  const c10::cuda::CUDAGuard guard(student.device());
  auto s = student.contiguous();
  auto mean = teacher_mean.contiguous();
  if (kind == 1) {
    return llmesr::cl_grad(grad.to(at::kFloat), s.to(at::kFloat), mean.to(at::kFloat), temperature).to(s.scalar_type());
  }
  auto out = at::empty_like(s);
  auto stream = at::cuda::getCurrentCUDAStream();
  AT_DISPATCH_FLOATING_TYPES_AND2(at::kHalf, at::kBFloat16, s.scalar_type(), "distill_kd_backward_cuda", [&] {
    auto g = grad.to(acc_dtype<scalar_t>()).contiguous();
    kd_backward_kernel<scalar_t><<<blocks_for(s.numel()), kThreads, 0, stream>>>(
        g.data_ptr<acc_t<scalar_t>>(), s.data_ptr<scalar_t>(), mean.data_ptr<scalar_t>(), out.data_ptr<scalar_t>(),
        s.numel());
  });
  C10_CUDA_KERNEL_LAUNCH_CHECK();
  return out;
}

}  // namespace

TORCH_LIBRARY_IMPL(llmesr, CUDA, m) {
  m.impl("distill", &distill_cuda);
  m.impl("distill_backward", &distill_backward_cuda);
}
