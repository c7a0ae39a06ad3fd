// The type sums run in: double for double inputs, float otherwise (half types included). Plain C++,
// shared by the CPU code and the CUDA kernels (and their CPU emulation, tests/cuda_emulation).
#pragma once

#include <type_traits>

namespace llmesr {

template <typename scalar_t>
using acc_t = std::conditional_t<std::is_same_v<scalar_t, double>, double, float>;

}  // namespace llmesr
