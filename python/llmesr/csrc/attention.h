// What the CPU and CUDA implementations of llmesr::attention share: the argument checks and the
// dropout hash. Layout: q, k, v, out [B, L, H, Dh]; lse [B, H, L]; rows left-padded, row b's real
// items its last lengths[b] positions (llmesr/ops/attention.py has the semantics and the twin).
#pragma once

#include <ATen/ATen.h>

#include <algorithm>
#include <cstdint>

#ifdef __CUDACC__
#define LLMESR_HD __host__ __device__ __forceinline__
#else
#define LLMESR_HD inline
#endif

namespace llmesr {

// MurmurHash3's finaliser; the twin (attention.py) computes the same on int64 tensors.
LLMESR_HD uint32_t fmix32(uint32_t x) {
  x ^= x >> 16;
  x *= 0x85EBCA6Bu;
  x ^= x >> 13;
  x *= 0xC2B2AE35u;
  return x ^ (x >> 16);
}

// The hash key of query i of row (b, h): the keep decision of key j is
// fmix32(key ^ j * golden) >= threshold.
LLMESR_HD uint32_t dropout_row_key(uint32_t seed, int64_t row, int64_t length, int64_t i) {
  return fmix32(seed ^ fmix32(static_cast<uint32_t>(row * length + i)));
}

LLMESR_HD bool dropout_keeps(uint32_t row_key, int64_t j, uint32_t threshold) {
  return fmix32(row_key ^ (static_cast<uint32_t>(j) * 0x9E3779B9u)) >= threshold;
}

inline uint32_t dropout_threshold(double p) {
  return static_cast<uint32_t>(std::min(p * 4294967296.0, 4294967295.0));
}

inline void check_attention(const at::Tensor& q, const at::Tensor& k, const at::Tensor& v, const at::Tensor& lengths,
                            double dropout) {
  TORCH_CHECK(q.dim() == 4 && q.size(3) > 0, "attention: q must be [B, L, H, Dh], got ", q.sizes());
  TORCH_CHECK(k.sizes() == q.sizes() && v.sizes() == q.sizes(), "attention: k ", k.sizes(), " and v ", v.sizes(),
              " must match q ", q.sizes());
  TORCH_CHECK(k.scalar_type() == q.scalar_type() && v.scalar_type() == q.scalar_type(),
              "attention: q, k and v differ in dtype");
  TORCH_CHECK(lengths.dim() == 1 && lengths.size(0) == q.size(0) && lengths.scalar_type() == at::kLong,
              "attention: lengths must be int64 [B] with B = ", q.size(0));
  TORCH_CHECK(lengths.device() == q.device(), "attention: lengths must be on ", q.device());
  TORCH_CHECK(dropout >= 0 && dropout < 1, "attention: dropout must be in [0, 1), got ", dropout);
}

inline at::ScalarType lse_dtype(const at::Tensor& q) {
  return q.scalar_type() == at::kDouble ? at::kDouble : at::kFloat;
}

}  // namespace llmesr
