// The kernels of llmesr::attention on CUDA (launched from attention.cu). Memory-efficient: the forward
// keeps a running maximum and sum (online softmax) and saves only the log-sum-exp per query; the
// backward recomputes the weights from it. Nothing L x L is stored.
//
// One warp per query (forward, dq) or per key (dk, dv). Within a warp the lanes take 32 keys (or
// queries) at a time, each lane a whole dot product over the head dimension, and the weighted sums
// over those 32 go lane by lane with a shuffle, each lane owning head dimensions lane, lane + 32, ...
// Padded positions are skipped, not masked; lengths are clamped to [0, L] (a check would cost a sync).
//
// Plain CUDA C++ without ATen, so that tests/cuda_emulation can run these very kernels on the CPU.
#pragma once

#include <cmath>
#include <cstdint>

#include "../accumulate.h"
#include "../dropout_hash.h"

namespace llmesr::attention_kernels {

constexpr int kWarps = 8;  // warps (queries or keys) per block
constexpr int kMaxDim = 256;
constexpr unsigned kFull = 0xffffffffu;

__device__ __forceinline__ float exp_of(float x) { return __expf(x); }
__device__ __forceinline__ double exp_of(double x) { return exp(x); }
__device__ __forceinline__ float log_of(float x) { return __logf(x); }
__device__ __forceinline__ double log_of(double x) { return log(x); }

template <typename T>
__device__ __forceinline__ T warp_sum(T x) {
  for (int offset = 16; offset > 0; offset >>= 1) x += __shfl_xor_sync(kFull, x, offset);
  return x;
}

template <typename T>
__device__ __forceinline__ T warp_max(T x) {
  for (int offset = 16; offset > 0; offset >>= 1) x = max(x, __shfl_xor_sync(kFull, x, offset));
  return x;
}

// What every kernel needs to find its row: the layout is [B, L, H, Dh], contiguous.
struct Shape {
  int64_t length, heads, dim;
  bool causal;
  uint32_t seed, threshold;
  double keep_scale;  // 1 / (1 - p)
  bool dropout;

  __device__ int64_t offset(int64_t b, int64_t i, int64_t h) const { return ((b * length + i) * heads + h) * dim; }
  __device__ int64_t start_of(const int64_t* lengths, int64_t b) const {
    const int64_t n = lengths[b] < 0 ? 0 : (lengths[b] > length ? length : lengths[b]);
    return length - n;
  }
  // 1 / (1 - p) if dropout keeps weight (i, j) of row `task`, else 0; 1 without dropout.
  template <typename acc>
  __device__ acc factor(int64_t task, int64_t i, int64_t j) const {
    if (!dropout) return acc(1);
    const uint32_t key = llmesr::dropout_row_key(seed, task, length, i);
    return llmesr::dropout_keeps(key, j, threshold) ? static_cast<acc>(keep_scale) : acc(0);
  }
};

// The Shape of a call over [B, L, H, Dh] tensors, and its grid: a block per (row, head) and group of
// kWarps queries (or keys).
inline Shape make_shape(int64_t length, int64_t heads, int64_t dim, bool causal, double dropout, uint32_t seed) {
  return Shape{length, heads, dim, causal, seed, llmesr::dropout_threshold(dropout), 1.0 / (1.0 - dropout),
               dropout > 0};
}

inline dim3 grid_of(int64_t batch, int64_t length, int64_t heads) {
  return dim3(static_cast<unsigned>(batch * heads), static_cast<unsigned>((length + kWarps - 1) / kWarps));
}

// Loads vector x (Dh values at `src`, times `scale`) into this warp's shared buffer.
template <typename scalar_t, typename acc>
__device__ void load_vector(acc* dst, const scalar_t* src, int64_t dim, acc scale) {
  for (int64_t d = threadIdx.x % 32; d < dim; d += 32) dst[d] = static_cast<acc>(src[d]) * scale;
  __syncwarp();
}

template <typename scalar_t, typename acc>
__device__ acc dot(const acc* x, const scalar_t* y, int64_t dim) {
  acc total = 0;
  for (int64_t d = 0; d < dim; ++d) total += x[d] * static_cast<acc>(y[d]);
  return total;
}

// Adds the rows first, first + 1, ... (up to 32, before `end`) of x for row (b, h), each weighted by the
// value its lane holds (lane t: row first + t), into `sums`, whose chunk c is head dimension lane + 32 c.
// The weights travel by shuffle: every lane of the warp calls it.
template <typename scalar_t, typename acc, int kChunks>
__device__ void add_weighted_rows(acc (&sums)[kChunks], acc weight, const scalar_t* x, const Shape& s, int64_t b,
                                  int64_t h, int64_t first, int64_t end) {
  const int lane = threadIdx.x % 32, count = end - first < 32 ? static_cast<int>(end - first) : 32;
  for (int t = 0; t < count; ++t) {
    const acc w = __shfl_sync(kFull, weight, t);
    const scalar_t* row = x + s.offset(b, first + t, h);
    for (int c = 0; c < kChunks; ++c) {
      const int64_t d = lane + 32 * c;
      if (d < s.dim) sums[c] += w * static_cast<acc>(row[d]);
    }
  }
}

// Writes scale * sums (laid out as in add_weighted_rows) to the Dh values at `out`.
template <typename scalar_t, typename acc, int kChunks>
__device__ void store_row(scalar_t* out, const acc (&sums)[kChunks], acc scale, int64_t dim) {
  const int lane = threadIdx.x % 32;
  for (int c = 0; c < kChunks; ++c) {
    const int64_t d = lane + 32 * c;
    if (d < dim) out[d] = static_cast<scalar_t>(sums[c] * scale);
  }
}

template <typename scalar_t, int kChunks>
__global__ void forward_kernel(const scalar_t* __restrict__ q, const scalar_t* __restrict__ k,
                               const scalar_t* __restrict__ v, const int64_t* __restrict__ lengths,
                               scalar_t* __restrict__ out, acc_t<scalar_t>* __restrict__ lse, Shape s) {
  using acc = acc_t<scalar_t>;
  extern __shared__ __align__(16) unsigned char smem[];
  const int warp = threadIdx.x / 32, lane = threadIdx.x % 32;
  const int64_t task = blockIdx.x, b = task / s.heads, h = task % s.heads;
  const int64_t i = static_cast<int64_t>(blockIdx.y) * kWarps + warp, start = s.start_of(lengths, b);
  if (i >= s.length || i < start) return;  // a padded query: its output stays zero
  acc* qs = reinterpret_cast<acc*>(smem) + warp * s.dim;
  load_vector(qs, q + s.offset(b, i, h), s.dim, static_cast<acc>(rsqrt(static_cast<double>(s.dim))));
  const int64_t end = s.causal ? i + 1 : s.length;
  acc running_max = -INFINITY, total = 0, sums[kChunks] = {};
  for (int64_t j0 = start; j0 < end; j0 += 32) {
    const int64_t j = j0 + lane;
    const bool real = j < end;
    const acc score = real ? dot(qs, k + s.offset(b, j, h), s.dim) : acc(-INFINITY);
    const acc new_max = max(running_max, warp_max(score));  // finite: lane 0's key is real
    const acc weight = real ? exp_of(score - new_max) : acc(0);
    const acc correction = exp_of(running_max - new_max);
    total = total * correction + warp_sum(weight);
    const acc kept = real ? weight * s.factor<acc>(task, i, j) : acc(0);
    for (int c = 0; c < kChunks; ++c) sums[c] *= correction;
    add_weighted_rows(sums, kept, v, s, b, h, j0, end);
    running_max = new_max;
  }
  scalar_t* o = out + s.offset(b, i, h);
  for (int c = 0; c < kChunks; ++c) {
    const int64_t d = lane + 32 * c;
    if (d < s.dim) o[d] = static_cast<scalar_t>(sums[c] / total);
  }
  if (lane == 0) lse[task * s.length + i] = running_max + log_of(total);
}

// dq for one query per warp, and the softmax backward term dO_i . O_i (saved for the dk/dv kernel).
template <typename scalar_t, int kChunks>
__global__ void backward_query_kernel(const scalar_t* __restrict__ grad, const scalar_t* __restrict__ q,
                                      const scalar_t* __restrict__ k, const scalar_t* __restrict__ v,
                                      const scalar_t* __restrict__ out, const acc_t<scalar_t>* __restrict__ lse,
                                      const int64_t* __restrict__ lengths, acc_t<scalar_t>* __restrict__ row_dot,
                                      scalar_t* __restrict__ dq, Shape s) {
  using acc = acc_t<scalar_t>;
  extern __shared__ __align__(16) unsigned char smem[];
  const int warp = threadIdx.x / 32, lane = threadIdx.x % 32;
  const int64_t task = blockIdx.x, b = task / s.heads, h = task % s.heads;
  const int64_t i = static_cast<int64_t>(blockIdx.y) * kWarps + warp, start = s.start_of(lengths, b);
  if (i >= s.length || i < start) return;
  const acc scale = static_cast<acc>(rsqrt(static_cast<double>(s.dim)));
  acc* qs = reinterpret_cast<acc*>(smem) + 2 * warp * s.dim;
  acc* gs = qs + s.dim;
  const int64_t at = s.offset(b, i, h);
  load_vector(qs, q + at, s.dim, scale);
  load_vector(gs, grad + at, s.dim, acc(1));
  acc partial = 0;
  for (int64_t d = lane; d < s.dim; d += 32) partial += gs[d] * static_cast<acc>(out[at + d]);
  const acc od = warp_sum(partial);
  if (lane == 0) row_dot[task * s.length + i] = od;
  const acc log_total = lse[task * s.length + i];
  const int64_t end = s.causal ? i + 1 : s.length;
  acc sums[kChunks] = {};
  for (int64_t j0 = start; j0 < end; j0 += 32) {
    const int64_t j = j0 + lane;
    acc dscore = 0;
    if (j < end) {
      const acc weight = exp_of(dot(qs, k + s.offset(b, j, h), s.dim) - log_total);
      const acc dweight = dot(gs, v + s.offset(b, j, h), s.dim) * s.factor<acc>(task, i, j);
      dscore = weight * (dweight - od);
    }
    add_weighted_rows(sums, dscore, k, s, b, h, j0, end);
  }
  store_row(dq + at, sums, scale, s.dim);
}

// dk and dv for one key per warp: the sums over the queries that attend to it.
template <typename scalar_t, int kChunks>
__global__ void backward_key_kernel(const scalar_t* __restrict__ grad, const scalar_t* __restrict__ q,
                                    const scalar_t* __restrict__ k, const scalar_t* __restrict__ v,
                                    const acc_t<scalar_t>* __restrict__ lse, const int64_t* __restrict__ lengths,
                                    const acc_t<scalar_t>* __restrict__ row_dot, scalar_t* __restrict__ dk,
                                    scalar_t* __restrict__ dv, Shape s) {
  using acc = acc_t<scalar_t>;
  extern __shared__ __align__(16) unsigned char smem[];
  const int warp = threadIdx.x / 32, lane = threadIdx.x % 32;
  const int64_t task = blockIdx.x, b = task / s.heads, h = task % s.heads;
  const int64_t j = static_cast<int64_t>(blockIdx.y) * kWarps + warp, start = s.start_of(lengths, b);
  if (j >= s.length || j < start) return;  // a padded key gets no gradient
  const acc scale = static_cast<acc>(rsqrt(static_cast<double>(s.dim)));
  acc* ks = reinterpret_cast<acc*>(smem) + 2 * warp * s.dim;
  acc* vs = ks + s.dim;
  const int64_t at = s.offset(b, j, h);
  load_vector(ks, k + at, s.dim, scale);
  load_vector(vs, v + at, s.dim, acc(1));
  acc dk_sums[kChunks] = {}, dv_sums[kChunks] = {};
  const int64_t first = s.causal ? j : start;
  for (int64_t i0 = first; i0 < s.length; i0 += 32) {
    const int64_t i = i0 + lane;
    acc kept = 0, dscore = 0;
    if (i < s.length) {
      const acc weight = exp_of(dot(ks, q + s.offset(b, i, h), s.dim) - lse[task * s.length + i]);
      const acc f = s.factor<acc>(task, i, j);
      kept = weight * f;
      dscore = weight * (dot(vs, grad + s.offset(b, i, h), s.dim) * f - row_dot[task * s.length + i]);
    }
    add_weighted_rows(dv_sums, kept, grad, s, b, h, i0, s.length);
    add_weighted_rows(dk_sums, dscore, q, s, b, h, i0, s.length);
  }
  store_row(dk + at, dk_sums, scale, s.dim);
  store_row(dv + at, dv_sums, acc(1), s.dim);
}

// Calls `launch.template operator()<kChunks>()` with the fewest 32-wide chunks covering the head size.
template <typename Launch>
void with_chunks(int64_t dim, Launch&& launch) {
  if (dim <= 32) {
    launch.template operator()<1>();
  } else if (dim <= 64) {
    launch.template operator()<2>();
  } else if (dim <= 128) {
    launch.template operator()<4>();
  } else {
    launch.template operator()<8>();
  }
}

}  // namespace llmesr::attention_kernels
