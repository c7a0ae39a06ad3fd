// The kernel of llmesr::dropout on CUDA (launched from dropout.cu): a grid-stride loop, each element
// kept and scaled or zeroed by the hash of (seed, flat index). Plain CUDA C++ without ATen, so that
// tests/cuda_emulation can run it on the CPU.
#pragma once

#include <cstdint>

#include "../accumulate.h"
#include "../dropout_hash.h"

namespace llmesr::dropout_kernels {

constexpr int kThreads = 256;

template <typename scalar_t>
__global__ void dropout_kernel(const scalar_t* __restrict__ x, scalar_t* __restrict__ out, int64_t n, uint32_t seed,
                               uint32_t threshold, double keep_scale) {
  using opmath = acc_t<scalar_t>;
  const opmath scale = static_cast<opmath>(keep_scale);
  for (int64_t i = static_cast<int64_t>(blockIdx.x) * blockDim.x + threadIdx.x; i < n;
       i += static_cast<int64_t>(gridDim.x) * blockDim.x) {
    const bool kept = llmesr::dropout_element_key(seed, i) >= threshold;
    out[i] = kept ? static_cast<scalar_t>(static_cast<opmath>(x[i]) * scale) : scalar_t(0);
  }
}

}  // namespace llmesr::dropout_kernels
