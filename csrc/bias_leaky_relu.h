// bias_leaky_relu: y = leaky_relu(x + bias, slope) * scale.
// The math here is what both the CPU and the CUDA kernels run: each function is one template
// that the CUDA kernels and the CPU's scalar tails call with T = float/double and the CPU's
// vector loops with T = at::vec::Vectorized (common.h's lane-wise primitives), so the CPU tests
// exercise the GPU's formulas.
#pragma once

#include <limits>

#include "common.h"

namespace fastgan {
namespace bias_act {

// The slope of the activation at pre-activation v, times scale.
template <typename T>
FASTGAN_HD T gain(T v, T pos_gain, T neg_gain) {
  return where(v > T(0), pos_gain, neg_gain);
}

// The floor of a positive output of type out_t, in T. A positive v is stored as at least this:
// v * scale of a tiny v would otherwise round to 0 in half precision (or underflow in float32
// with scale < 1), and the backward, which reads the mask from y, would take the slope where
// torch takes 1. For float16 it is the first subnormal (which the backward reads as a normal
// float); for float32, bfloat16 and float64 the smallest normal number, since a subnormal y
// would read as 0 with flush-to-zero on (torch.set_flush_denormal). Moving such an output up to
// the floor is far below any value the activations carry.
// (T: out_t's acc type, or a vector of it.)
template <typename out_t, typename T>
FASTGAN_HD T tiny() {
  if constexpr (std::is_same_v<out_t, c10::Half>) {
    return T(acc_t<out_t>(std::numeric_limits<out_t>::denorm_min()));
  } else {
    return T(acc_t<out_t>(std::numeric_limits<out_t>::min()));
  }
}

// y stored as out_t (scalar_t; its acc type T computes it). A NaN v is not > 0: v * neg_gain.
template <typename out_t, typename T>
FASTGAN_HD T forward(T v, T pos_gain, T neg_gain) {
  const T y = v * pos_gain, lo = tiny<out_t, T>();
  return where(v > T(0), where(y < lo, lo, y), v * neg_gain);
}

// dL/dv from dL/dy and the saved output y: with scale > 0, slope >= 0 and forward's floor,
// y > 0 exactly where v > 0, so y carries the mask (v == 0 takes the slope, as torch's
// leaky_relu does).
template <typename T>
FASTGAN_HD T backward(T g, T y, T pos_gain, T neg_gain) {
  return g * gain(y, pos_gain, neg_gain);
}

}  // namespace bias_act

// Calls f(static_cast<bias_t*>(nullptr)) with bias_t the C++ type of the bias: scalar_t, or
// float where a half/bfloat16 x has a float32 bias (a model's parameter under autocast, read
// as it is rather than cast first: check_channel_vector allows no other mix).
template <typename scalar_t, typename F>
void with_bias_type(bool float_bias, const F& f) {
  if constexpr (!std::is_same_v<scalar_t, float> && !std::is_same_v<scalar_t, double>) {
    if (float_bias) return f(static_cast<float*>(nullptr));
  }
  f(static_cast<scalar_t*>(nullptr));
}

inline void check_bias_leaky_relu_args(const at::Tensor& x, const std::optional<at::Tensor>& bias,
                                       double negative_slope, double scale) {
  constexpr const char* op = "bias_leaky_relu";
  check_float_tensor(op, "x", x);
  TORCH_CHECK_VALUE(x.dim() >= 2, op, ": x must have at least 2 dims (N, C, ...), got shape ", x.sizes());
  if (bias.has_value() && bias->defined()) check_channel_vector(op, "bias", *bias, x, x.size(1));
  check_number(op, "negative_slope", negative_slope, 0.0, false);
  check_number(op, "scale", scale, 0.0, true);
}

// bias_dtype: the dtype of the bias gradient to return (the bias's), or none for no bias gradient.
inline void check_bias_leaky_relu_backward_args(const at::Tensor& grad, const at::Tensor& y,
                                                std::optional<at::ScalarType> bias_dtype) {
  constexpr const char* op = "bias_leaky_relu_backward";
  check_float_tensor(op, "y", y);
  TORCH_CHECK_VALUE(y.dim() >= 2, op, ": y must have at least 2 dims, got ", y.sizes());
  TORCH_CHECK_VALUE(grad.sizes() == y.sizes(), op, ": grad must have y's shape ", y.sizes(), ", got ", grad.sizes());
  TORCH_CHECK_TYPE(grad.scalar_type() == y.scalar_type(), op, ": grad must have y's dtype ", y.scalar_type(), ", got ",
                   grad.scalar_type());
  TORCH_CHECK_VALUE(grad.device() == y.device(), op, ": grad must be on y's device ", y.device(), ", got ",
                    grad.device());
  TORCH_CHECK_TYPE(!bias_dtype || param_dtype_ok(*bias_dtype, y.scalar_type()), op, ": bias_dtype must be y's dtype ",
                   y.scalar_type(), is_half(y.scalar_type()) ? " (or float32)" : "", ", got ", *bias_dtype);
}

}  // namespace fastgan
