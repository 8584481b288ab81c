// CUDA helpers shared by every op family: aligned vector access, launch sizing and block
// reductions. Light headers only (c10/cuda, not ATen/cuda/CUDAContext.h).
#pragma once

#include <c10/cuda/CUDAException.h>
#include <c10/cuda/CUDAGuard.h>
#include <c10/cuda/CUDAStream.h>
#include <cuda_runtime.h>

#include <cstdint>

#include "common.h"

namespace fastgan {
namespace cuda {

// N elements moved as one 16-byte (or narrower) access.
template <typename T, int N>
struct alignas(sizeof(T) * N) AlignedVec {
  T v[N];
};

// Elements per 16-byte access, or 1 where the pointers or the row length forbid it.
template <typename scalar_t>
inline int vec_width(std::initializer_list<const void*> ptrs, int64_t row_len) {
  constexpr int w = 16 / sizeof(scalar_t);
  for (const void* p : ptrs) {
    if (p != nullptr && reinterpret_cast<std::uintptr_t>(p) % 16 != 0) return 1;
  }
  return row_len % w == 0 ? w : 1;
}

// Multiprocessors of the current device, asked once per device.
inline int sm_count() {
  static int cached[64] = {0};
  int device = 0;
  C10_CUDA_CHECK(cudaGetDevice(&device));
  int& count = cached[device & 63];
  if (count == 0) {
    C10_CUDA_CHECK(cudaDeviceGetAttribute(&count, cudaDevAttrMultiProcessorCount, device));
  }
  return count;
}

inline int64_t ceil_div(int64_t a, int64_t b) {
  return (a + b - 1) / b;
}

// Grid for a grid-stride loop over n items with `threads` per block: enough blocks to fill
// the GPU several times over, no more.
inline unsigned grid_for(int64_t n, int threads) {
  const int64_t most = int64_t(sm_count()) * 32;
  const int64_t want = ceil_div(n, threads);
  return unsigned(want < 1 ? 1 : (want < most ? want : most));
}

template <typename T>
__device__ __forceinline__ T warp_sum(T v) {
#pragma unroll
  for (int o = 16; o > 0; o >>= 1) v += __shfl_down_sync(0xffffffffu, v, o);
  return v;
}

// Sum over the block (blockDim.x a multiple of 32, at most 1024); the result is valid in
// thread 0. `shared` holds 32 values. Deterministic: a fixed tree for a fixed launch shape.
template <typename T>
__device__ __forceinline__ T block_sum(T v, T* shared) {
  const int lane = threadIdx.x & 31, warp = threadIdx.x >> 5;
  v = warp_sum(v);
  __syncthreads();  // `shared` may still be read from a previous call
  if (lane == 0) shared[warp] = v;
  __syncthreads();
  const int warps = blockDim.x >> 5;
  v = threadIdx.x < warps ? shared[threadIdx.x] : T(0);
  if (warp == 0) v = warp_sum(v);
  return v;
}

}  // namespace cuda
}  // namespace fastgan
