// The kd kernels of llmesr::distill (csrc/cuda/distill_kernels.cuh), compiled for the CPU over the
// emulation in simt.h, behind a C interface for tests/test_cuda_emulation.py. Float and double only.
#include "simt.h"

#define __shared__ static  // the kernels' fixed-size block buffers (blocks run one at a time)

#include "cuda/distill_kernels.cuh"

using namespace llmesr::distill_kernels;

namespace {

unsigned blocks_for(int64_t n, int64_t most) {
  return static_cast<unsigned>(std::min<int64_t>((n + kThreads - 1) / kThreads, most));
}

}  // namespace

// `most_blocks` caps the grid as distill.cu does (4096), lowered in tests so that the grid-stride loops
// and the cross-block atomics are exercised.
#define LLMESR_EMULATED(T, suffix)                                                                                \
  extern "C" void kd_forward_##suffix(const T* student, const T* teachers, T* mean, T* total, int64_t b,         \
                                      int64_t k, int64_t d, int64_t most_blocks) {                                \
    simt::launch(dim3{blocks_for(b * d, most_blocks), 1, 1}, kThreads,                                            \
                 [&] { kd_forward_kernel<T>(student, teachers, mean, total, b, k, d); });                         \
  }                                                                                                               \
  extern "C" void kd_backward_##suffix(const T* grad, const T* student, const T* mean, T* out, int64_t n,         \
                                       int64_t most_blocks) {                                                     \
    simt::launch(dim3{blocks_for(n, most_blocks), 1, 1}, kThreads,                                                \
                 [&] { kd_backward_kernel<T>(grad, student, mean, out, n); });                                    \
  }

LLMESR_EMULATED(float, f32)
LLMESR_EMULATED(double, f64)
