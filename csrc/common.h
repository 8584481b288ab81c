// Shared by every op family: the host/device function macro, the accumulation type,
// argument checks with messages that name the argument, and the channel geometry of a
// tensor laid out (N, C, *) in contiguous or channels_last memory.
#pragma once

#include <ATen/core/Tensor.h>
#include <c10/util/Exception.h>

#include <cmath>
#include <type_traits>

#if defined(__CUDACC__)
#define FASTGAN_HD __host__ __device__ __forceinline__
#else
#define FASTGAN_HD inline
#endif

namespace fastgan {

// Half types compute in float; float and double in themselves.
template <typename scalar_t>
using acc_t = std::conditional_t<std::is_same_v<scalar_t, double>, double, float>;

// Lane-wise primitives of the shared math (csrc/*.h): each formula there is one template over T,
// and these are the only steps that are spelled twice. T is a float or double on the device and
// on the host (the CUDA kernels, the CPU kernels' scalar tails); the CPU kernels' vector loops run
// the same templates with T = at::vec::Vectorized<float or double>, whose forms are VecMath<T> in
// cpu/vec_io.h (host code only: nvcc never sees them). Each vector form is the scalar one lane by
// lane (NaN and -0.0 included); exp_ and log1p_ are SLEEF's where libm's are the scalars'.
template <typename T>
struct VecMath;  // cpu/vec_io.h: the at::vec::Vectorized forms

// cond ? a : b, lane by lane; cond is a bool, or for vectors a comparison's lane mask.
template <typename M, typename T>
FASTGAN_HD T where(const M& cond, T a, T b) {
  if constexpr (std::is_floating_point_v<T>)
    return cond ? a : b;
  else
    return VecMath<T>::where(cond, a, b);
}

// a * b + c in one rounding where at::vec's fmadd is fused (AVX2/AVX512 builds, and CUDA's fma),
// else two, like the generic at::vec::fmadd: the scalar tail rounds as the vector body does.
template <typename T>
FASTGAN_HD T fma_(T a, T b, T c) {
  if constexpr (!std::is_floating_point_v<T>) {
    return VecMath<T>::fma(a, b, c);
  } else {
#if defined(__CUDA_ARCH__) || defined(__FMA__)
    if constexpr (std::is_same_v<T, float>)
      return ::fmaf(a, b, c);
    else
      return ::fma(a, b, c);
#else
    return a * b + c;
#endif
  }
}

template <typename T>
FASTGAN_HD T abs_(T v) {
  if constexpr (std::is_same_v<T, float>)
    return ::fabsf(v);
  else if constexpr (std::is_same_v<T, double>)
    return ::fabs(v);
  else
    return VecMath<T>::abs(v);
}

template <typename T>
FASTGAN_HD T exp_(T v) {
  if constexpr (std::is_same_v<T, float>)
    return ::expf(v);
  else if constexpr (std::is_same_v<T, double>)
    return ::exp(v);
  else
    return VecMath<T>::exp(v);
}

template <typename T>
FASTGAN_HD T log1p_(T v) {
  if constexpr (std::is_same_v<T, float>)
    return ::log1pf(v);
  else if constexpr (std::is_same_v<T, double>)
    return ::log1p(v);
  else
    return VecMath<T>::log1p(v);
}

inline void check_float_tensor(const char* op, const char* name, const at::Tensor& t) {
  const auto s = t.scalar_type();
  TORCH_CHECK_TYPE(s == at::kFloat || s == at::kDouble || s == at::kHalf || s == at::kBFloat16, op, ": ", name,
                   " must be float32, float64, float16 or bfloat16, got ", s);
}

inline bool is_half(at::ScalarType s) {
  return s == at::kHalf || s == at::kBFloat16;
}

// The dtypes a per-channel parameter (or its gradient) may have for an x of dtype `x`: x's own
// or, for float16/bfloat16 x, float32, the parameters of a model under autocast, read as they
// are (torch's mixed-precision batch norm does the same).
inline bool param_dtype_ok(at::ScalarType t, at::ScalarType x) {
  return t == x || (is_half(x) && t == at::kFloat);
}

// A 1-D per-channel tensor (a bias, batch-norm parameters and statistics) with `channels`
// elements on x's device, in a dtype param_dtype_ok allows.
inline void check_channel_vector(const char* op, const char* name, const at::Tensor& t, const at::Tensor& x,
                                 int64_t channels) {
  check_float_tensor(op, name, t);
  TORCH_CHECK_VALUE(t.dim() == 1 && t.numel() == channels, op, ": ", name, " must have shape (", channels,
                    ",) (x.shape[1]), got ", t.sizes());
  TORCH_CHECK_TYPE(param_dtype_ok(t.scalar_type(), x.scalar_type()), op, ": ", name, " must have x's dtype ",
                   x.scalar_type(), is_half(x.scalar_type()) ? " (or float32)" : "", ", got ", t.scalar_type());
  TORCH_CHECK_VALUE(t.device() == x.device(), op, ": ", name, " must be on x's device ", x.device(), ", got ",
                    t.device());
}

inline void check_number(const char* op, const char* name, double v, double minimum, bool exclusive) {
  TORCH_CHECK_VALUE(std::isfinite(v), op, ": ", name, " must be finite, got ", v);
  TORCH_CHECK_VALUE(exclusive ? v > minimum : v >= minimum, op, ": ", name, " must be ",
                    exclusive ? "> " : ">= ", minimum, ", got ", v);
}

// The memory format of outputs shaped like x: channels_last (4-D) and channels_last_3d (5-D)
// are kept, as torch's modules keep them; anything else is made contiguous
// (fastgan/ops/_checks.py:out_layout says the same to the fake kernels).
inline at::MemoryFormat out_layout(const at::Tensor& x) {
  if (x.dim() == 4 && !x.is_contiguous() && x.is_contiguous(at::MemoryFormat::ChannelsLast)) {
    return at::MemoryFormat::ChannelsLast;
  }
  if (x.dim() == 5 && !x.is_contiguous() && x.is_contiguous(at::MemoryFormat::ChannelsLast3d)) {
    return at::MemoryFormat::ChannelsLast3d;
  }
  return at::MemoryFormat::Contiguous;
}

// A tensor dense in out_layout(t), seen in memory order as (outer, channels, inner):
// element i belongs to channel (i / inner) % channels. channels_last(_3d) has inner == 1.
struct ChannelGeometry {
  int64_t outer, channels, inner;
};

inline ChannelGeometry channel_geometry(const at::Tensor& t) {
  const int64_t c = t.size(1);
  if (out_layout(t) != at::MemoryFormat::Contiguous || t.dim() == 2) {
    return {c == 0 ? 0 : t.numel() / c, c, 1};
  }
  int64_t inner = 1;
  for (int64_t d = 2; d < t.dim(); ++d) inner *= t.size(d);
  return {t.size(0), c, inner};
}

}  // namespace fastgan
