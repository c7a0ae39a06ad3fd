// The CUDA kernels of llmesr::attention (csrc/cuda/attention_kernels.cuh), compiled for the CPU over the
// emulation in simt.h, behind a C interface for tests/test_cuda_emulation.py. Float and double only
// (half types need the GPU's conversions).
#include "simt.h"

#define __shared__  // the kernels' one buffer is `extern __shared__`, defined here

namespace llmesr::attention_kernels {
alignas(16) unsigned char smem[1 << 16];  // the dynamic shared memory the kernels declare extern
}

#include "cuda/attention_kernels.cuh"

using namespace llmesr::attention_kernels;

namespace {

template <typename T>
void forward(const T* q, const T* k, const T* v, const int64_t* lengths, T* out, T* lse, int64_t batch,
             int64_t length, int64_t heads, int64_t dim, int causal, double dropout, uint32_t seed) {
  const Shape s = make_shape(length, heads, dim, causal != 0, dropout, seed);
  with_chunks(dim, [&]<int kChunks>() {
    simt::launch(grid_of(batch, length, heads), kWarps * 32,
                 [&] { forward_kernel<T, kChunks>(q, k, v, lengths, out, lse, s); });
  });
}

template <typename T>
void backward(const T* grad, const T* q, const T* k, const T* v, const T* out, const T* lse, const int64_t* lengths,
              T* dq, T* dk, T* dv, int64_t batch, int64_t length, int64_t heads, int64_t dim, int causal,
              double dropout, uint32_t seed) {
  const Shape s = make_shape(length, heads, dim, causal != 0, dropout, seed);
  std::vector<T> row_dot(batch * heads * length);
  with_chunks(dim, [&]<int kChunks>() {
    simt::launch(grid_of(batch, length, heads), kWarps * 32, [&] {
      backward_query_kernel<T, kChunks>(grad, q, k, v, out, lse, lengths, row_dot.data(), dq, s);
    });
    simt::launch(grid_of(batch, length, heads), kWarps * 32, [&] {
      backward_key_kernel<T, kChunks>(grad, q, k, v, lse, lengths, row_dot.data(), dk, dv, s);
    });
  });
}

}  // namespace

#define LLMESR_EMULATED(T, suffix)                                                                                 \
  extern "C" void attention_forward_##suffix(const T* q, const T* k, const T* v, const int64_t* lengths, T* out,  \
                                             T* lse, int64_t b, int64_t l, int64_t h, int64_t d, int causal,       \
                                             double dropout, uint32_t seed) {                                     \
    forward<T>(q, k, v, lengths, out, lse, b, l, h, d, causal, dropout, seed);                                    \
  }                                                                                                                \
  extern "C" void attention_backward_##suffix(const T* grad, const T* q, const T* k, const T* v, const T* out,    \
                                              const T* lse, const int64_t* lengths, T* dq, T* dk, T* dv, int64_t b, \
                                              int64_t l, int64_t h, int64_t d, int causal, double dropout,         \
                                              uint32_t seed) {                                                     \
    backward<T>(grad, q, k, v, out, lse, lengths, dq, dk, dv, b, l, h, d, causal, dropout, seed);                 \
  }

LLMESR_EMULATED(float, f32)
LLMESR_EMULATED(double, f64)
