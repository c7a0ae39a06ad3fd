// The dropout decisions of llmesr's ops: a counter-based hash of (seed, position), so the backward
// regenerates them instead of storing them. Attention hashes (seed, row, query, key); the plain dropout
// op (seed, flat element index). Plain C++ (no ATen), usable on the host, on
// the device and in the CPU emulation of the CUDA kernels (tests/cuda_emulation); the PyTorch twins
// (llmesr/ops/attention.py, dropout.py) compute the same on int64 tensors.
#pragma once

#include <algorithm>
#include <cstdint>

#ifdef __CUDACC__
#define LLMESR_HD __host__ __device__ __forceinline__
#else
#define LLMESR_HD inline
#endif

namespace llmesr {

// MurmurHash3's finaliser.
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

// Plain dropout keeps element n (its flat index) when this is at least the threshold.
LLMESR_HD uint32_t dropout_element_key(uint32_t seed, int64_t n) {
  const uint64_t u = static_cast<uint64_t>(n);
  return fmix32(seed ^ fmix32(static_cast<uint32_t>(u) ^ fmix32(static_cast<uint32_t>(u >> 32))));
}

inline uint32_t dropout_threshold(double p) {
  return static_cast<uint32_t>(std::min(p * 4294967296.0, 4294967295.0));
}

}  // namespace llmesr
