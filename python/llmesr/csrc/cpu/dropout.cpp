// CPU implementation of llmesr::dropout: each element kept (and scaled by 1 / (1 - p)) or zeroed by a
// hash of (seed, its flat index), so the result does not depend on the thread count and the backward is
// the same op applied to the gradient.
#include "../accumulate.h"
#include "../dropout_hash.h"

#include <ATen/ATen.h>
#include <ATen/Parallel.h>
#include <torch/library.h>

#include <algorithm>

namespace {

// Elements [lo, hi) of one thread. The index's high half (and its hash) is fixed within blocks that
// never cross a multiple of 2^32, so the per-element work is 32-bit integer arithmetic the compiler
// vectorises. Arguments by value: nothing the loops write can alias them.
template <typename scalar_t, typename opmath>
void dropout_range(const scalar_t* __restrict__ src, scalar_t* __restrict__ dst, int64_t lo, int64_t hi,
                   uint32_t seed, uint32_t threshold, opmath scale) {
  constexpr int64_t kBlock = 1024;
  uint32_t keys[kBlock];
  for (int64_t begin = lo, count = 0; begin < hi; begin += count) {
    const int64_t to_boundary = (int64_t(1) << 32) - static_cast<int64_t>(static_cast<uint32_t>(begin));
    count = std::min({kBlock, hi - begin, to_boundary});
    const uint32_t high = llmesr::fmix32(static_cast<uint32_t>(static_cast<uint64_t>(begin) >> 32));
    const uint32_t first = static_cast<uint32_t>(begin);
    for (int64_t j = 0; j < count; ++j) {
      keys[j] = llmesr::fmix32(seed ^ llmesr::fmix32((first + static_cast<uint32_t>(j)) ^ high));
    }
    for (int64_t j = 0; j < count; ++j) {
      const opmath kept = keys[j] >= threshold ? scale : opmath(0);
      dst[begin + j] = static_cast<scalar_t>(static_cast<opmath>(src[begin + j]) * kept);
    }
  }
}

at::Tensor dropout_cpu(const at::Tensor& x, double p, int64_t seed) {
  TORCH_CHECK(p >= 0 && p < 1, "dropout: p must be in [0, 1), got ", p);
  auto in = x.contiguous();
  auto out = at::empty_like(in);
  const uint32_t threshold = llmesr::dropout_threshold(p);
  AT_DISPATCH_FLOATING_TYPES_AND2(at::kHalf, at::kBFloat16, in.scalar_type(), "dropout_cpu", [&] {
    using opmath = llmesr::acc_t<scalar_t>;
    const scalar_t* src = in.data_ptr<scalar_t>();
    scalar_t* dst = out.data_ptr<scalar_t>();
    const opmath scale = static_cast<opmath>(1.0 / (1.0 - p));
    at::parallel_for(0, in.numel(), 1 << 15, [&](int64_t lo, int64_t hi) {
      dropout_range<scalar_t, opmath>(src, dst, lo, hi, static_cast<uint32_t>(seed), threshold, scale);
    });
  });
  return out;
}

}  // namespace

TORCH_LIBRARY_IMPL(llmesr, CPU, m) { m.impl("dropout", &dropout_cpu); }
