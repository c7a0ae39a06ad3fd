// The kd kernels of llmesr::distill on CUDA (launched from distill.cu): the teachers' mean fused with
// the squared difference and a block reduction (forward), and the gradient from the saved mean
// (backward). Plain CUDA C++ without ATen, so that tests/cuda_emulation can run them on the CPU.
#pragma once

#include <cstdint>

#include "../accumulate.h"

namespace llmesr::distill_kernels {

constexpr int kThreads = 256;

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

}  // namespace llmesr::distill_kernels
