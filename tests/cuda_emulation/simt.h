// Just enough of CUDA's execution model to run llmesr's CUDA kernels on the CPU, for tests: a block's
// threads are real threads, a warp's 32 lanes meet at a barrier at every shuffle and __syncwarp (the
// block's threads at __syncthreads), atomics are std::atomic_ref, and blocks run one after another (so
// one buffer, or a static array, serves as the block's shared memory). A thread that skips a barrier
// its warp or block takes deadlocks, as it would be undefined on a GPU. `__shared__` is left to the
// including file: empty for `extern __shared__` buffers it defines, `static` for fixed-size arrays.
#pragma once

#include <algorithm>
#include <atomic>
#include <barrier>
#include <cmath>
#include <cstdint>
#include <memory>
#include <thread>
#include <vector>

struct dim3 {
  unsigned x = 1, y = 1, z = 1;
};

namespace simt {
struct Warp {
  std::barrier<> meet{32};
  double exchange[32];
};
inline thread_local dim3 thread_index, block_index;
inline thread_local Warp* warp = nullptr;
inline thread_local std::barrier<>* block = nullptr;
inline dim3 grid_dim, block_dim;

template <typename T>
T exchange(T value, int source) {
  const unsigned lane = thread_index.x % 32;
  warp->exchange[lane] = static_cast<double>(value);  // float and double both fit exactly
  warp->meet.arrive_and_wait();
  const T out = static_cast<T>(warp->exchange[source]);
  warp->meet.arrive_and_wait();  // nobody writes again before everyone has read
  return out;
}

// Runs kernel() once per thread of the grid (x then y), block after block.
template <typename Kernel>
void launch(dim3 grid, unsigned threads, Kernel kernel) {
  grid_dim = grid;
  block_dim = {threads, 1, 1};
  for (unsigned by = 0; by < grid.y; ++by) {
    for (unsigned bx = 0; bx < grid.x; ++bx) {
      std::barrier<> block_barrier(threads);
      std::vector<std::unique_ptr<Warp>> warps;
      for (unsigned w = 0; w < threads / 32; ++w) warps.push_back(std::make_unique<Warp>());
      std::vector<std::thread> lanes;
      for (unsigned t = 0; t < threads; ++t) {
        lanes.emplace_back([&, t] {
          thread_index = {t, 0, 0};
          block_index = {bx, by, 0};
          warp = warps[t / 32].get();
          block = &block_barrier;
          kernel();
        });
      }
      for (auto& lane : lanes) lane.join();
    }
  }
}
}  // namespace simt

#define threadIdx (simt::thread_index)
#define blockIdx (simt::block_index)
#define blockDim (simt::block_dim)
#define gridDim (simt::grid_dim)
#define __global__
#define __device__
#define __host__
#define __forceinline__ inline
#define __align__(n)

template <typename T>
T __shfl_sync(unsigned, T value, int source) {
  return simt::exchange(value, source);
}
template <typename T>
T __shfl_xor_sync(unsigned, T value, int mask) {
  return simt::exchange(value, static_cast<int>(simt::thread_index.x % 32) ^ mask);
}
inline void __syncwarp() { simt::warp->meet.arrive_and_wait(); }
inline void __syncthreads() { simt::block->arrive_and_wait(); }
template <typename T>
T atomicAdd(T* address, T value) {
  return std::atomic_ref<T>(*address).fetch_add(value);
}
inline float __expf(float x) { return std::exp(x); }
inline float __logf(float x) { return std::log(x); }
inline double rsqrt(double x) { return 1.0 / std::sqrt(x); }
using std::exp;
using std::log;
using std::max;
