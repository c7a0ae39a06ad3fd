// The kernel of llmesr::dropout (csrc/cuda/dropout_kernels.cuh), compiled for the CPU over the emulation
// in simt.h, behind a C interface for tests/test_cuda_emulation.py. Float and double only.
#include "simt.h"

#include "cuda/dropout_kernels.cuh"

using namespace llmesr::dropout_kernels;

#define LLMESR_EMULATED(T, suffix)                                                                                \
  extern "C" void dropout_##suffix(const T* x, T* out, int64_t n, double p, uint32_t seed, unsigned blocks) {     \
    simt::launch(dim3{blocks, 1, 1}, kThreads, [&] {                                                              \
      dropout_kernel<T>(x, out, n, seed, llmesr::dropout_threshold(p), 1.0 / (1.0 - p));                          \
    });                                                                                                           \
  }

LLMESR_EMULATED(float, f32)
LLMESR_EMULATED(double, f64)
