// Load and store at::vec::Vectorized<acc_t<scalar_t>> chunks from scalar_t memory, so one
// vector loop serves float and double (as themselves) and half/bfloat16 (widened to float).
#pragma once

#include <ATen/cpu/vec/functional.h>
#include <ATen/cpu/vec/vec.h>

#include <algorithm>

#include "common.h"

namespace fastgan {
namespace cpu {

using at::vec::Vectorized;

template <typename scalar_t, typename = void>
struct VecIO {  // float, double
  using acc = scalar_t;
  using Vec = Vectorized<scalar_t>;
  static constexpr int64_t size = Vec::size();
  static Vec load(const scalar_t* p) { return Vec::loadu(p); }
  static void store(scalar_t* p, const Vec& v) { v.store(p); }
};

template <typename scalar_t>
struct VecIO<scalar_t, std::enable_if_t<at::vec::is_reduced_floating_point_v<scalar_t>>> {
  using acc = float;
  using Vec = Vectorized<float>;
  static constexpr int64_t size = Vec::size();
  static Vec load(const scalar_t* p) {
    Vec out;
    at::vec::load_to_float<scalar_t>(p, out);
    return out;
  }
  static void store(scalar_t* p, const Vec& v) { at::vec::convert_from_float<scalar_t>(v, v).store(p, size); }
};

// The sum of a vector's lanes, in lane order (deterministic).
template <typename T>
inline T sum_lanes(const Vectorized<T>& v) {
  T lanes[Vectorized<T>::size()];
  v.store(lanes);
  T s = T(0);
  for (int64_t l = 0; l < Vectorized<T>::size(); ++l) s += lanes[l];
  return s;
}

// Planes per partial sum when a channel's planes (N, C, inner) are reduced: sums of about
// kChunkElems elements each, added in order, rather than one running sum over N * inner
// (float32 stops growing at 2^24); the same for every thread count.
constexpr int64_t kChunkElems = 4096;
inline int64_t planes_per_chunk(int64_t inner) {
  return std::max<int64_t>(1, kChunkElems / std::max<int64_t>(inner, 1));
}

}  // namespace cpu

// The vector forms of common.h's lane-wise primitives, so that the shared math (csrc/*.h) runs
// on whole at::vec vectors: the CPU kernels' vector loops call the same templates as their
// scalar tails and the CUDA kernels. A comparison of two Vectorized gives a lane mask (all bits
// set where true, so a NaN lane compares false, as in the scalar ternary); blendv(b, a, mask)
// takes a where the mask is set.
template <typename T>
struct VecMath<at::vec::Vectorized<T>> {
  using Vec = at::vec::Vectorized<T>;
  static inline Vec where(const Vec& mask, const Vec& a, const Vec& b) { return Vec::blendv(b, a, mask); }
  static inline Vec fma(const Vec& a, const Vec& b, const Vec& c) { return at::vec::fmadd(a, b, c); }
  static inline Vec abs(const Vec& v) { return v.abs(); }
  static inline Vec exp(const Vec& v) { return v.exp(); }
  static inline Vec log1p(const Vec& v) { return v.log1p(); }
};

}  // namespace fastgan
