// adam_: one Adam step (no amsgrad) for a list of parameters, the update torch's fused Adam
// makes, in one pass over param, grad, exp_avg and exp_avg_sq. Shared by CPU and CUDA.
#pragma once

#include <ATen/core/Tensor.h>

#include <cmath>
#include <type_traits>

#include "common.h"

namespace fastgan {
namespace adam {

// sqrt of a float/double, or of an at::vec::Vectorized (the CPU kernel's vector body).
template <typename T>
FASTGAN_HD T root(T v) {
#ifdef __CUDA_ARCH__
  return sqrt(v);
#else
  if constexpr (std::is_floating_point_v<T>)
    return std::sqrt(v);
  else
    return v.sqrt();
#endif
}

// step_size = lr / (1 - beta1^step), bc2_sqrt = sqrt(1 - beta2^step). T is a float/double or
// a CPU vector of them; decay (weight_decay != 0) is decided once by the caller, not per lane.
template <typename T>
FASTGAN_HD void update(T& p, T g, T& m, T& v, T beta1, T beta2, T step_size, T bc2_sqrt, T eps, T weight_decay,
                       bool decay) {
  if (decay) g += weight_decay * p;  // L2 penalty, as torch.optim.Adam
  m = beta1 * m + (T(1) - beta1) * g;
  v = beta2 * v + (T(1) - beta2) * g * g;
  p -= step_size * m / (root(v) / bc2_sqrt + eps);
}

}  // namespace adam

// The kernels walk each tensor as one flat array, so a parameter may be in any dense memory
// format (channels_last convolution weights) as long as its gradient and state lie the same way.
// Strides of size-1 dimensions do not move any element, so they may differ.
inline bool same_dense_layout(const at::Tensor& t, const at::Tensor& p) {
  if (!t.is_non_overlapping_and_dense()) return false;
  for (int64_t d = 0; d < p.dim(); ++d)
    if (p.size(d) > 1 && t.stride(d) != p.stride(d)) return false;
  return true;
}

inline void check_adam_args(at::TensorList params, at::TensorList grads, at::TensorList exp_avgs,
                            at::TensorList exp_avg_sqs, const at::Tensor& step, double lr, double beta1, double beta2,
                            double eps, double weight_decay) {
  constexpr const char* op = "adam_";
  const size_t n = params.size();
  TORCH_CHECK_VALUE(grads.size() == n && exp_avgs.size() == n && exp_avg_sqs.size() == n, op,
                    ": params, grads, exp_avgs and exp_avg_sqs must have the same length, got ", n, ", ", grads.size(),
                    ", ", exp_avgs.size(), ", ", exp_avg_sqs.size());
  for (size_t i = 0; i < n; ++i) {
    const at::Tensor& p = params[i];
    const auto s = p.scalar_type();
    TORCH_CHECK_TYPE(s == at::kFloat || s == at::kDouble, op, ": params[", i, "] must be float32 or float64, got ", s);
    TORCH_CHECK_VALUE(p.is_non_overlapping_and_dense(), op, ": params[", i,
                      "] must be dense (contiguous in some memory format), got strides ", p.strides());
    for (const auto& [name, t] : {std::pair<const char*, const at::Tensor*>{"grads", &grads[i]},
                                  {"exp_avgs", &exp_avgs[i]},
                                  {"exp_avg_sqs", &exp_avg_sqs[i]}}) {
      TORCH_CHECK_VALUE(t->sizes() == p.sizes(), op, ": ", name, "[", i, "] must have params[", i, "]'s shape ",
                        p.sizes(), ", got ", t->sizes());
      TORCH_CHECK_TYPE(t->scalar_type() == s, op, ": ", name, "[", i, "] must have params[", i, "]'s dtype ", s,
                       ", got ", t->scalar_type());
      TORCH_CHECK_VALUE(t->device() == p.device(), op, ": ", name, "[", i, "] must be on params[", i, "]'s device ",
                        p.device(), ", got ", t->device());
      TORCH_CHECK_VALUE(same_dense_layout(*t, p), op, ": ", name, "[", i, "] must have params[", i,
                        "]'s memory layout (strides ", p.strides(), "), got strides ", t->strides());
    }
    TORCH_CHECK_VALUE(p.device() == params[0].device(), op, ": params[", i, "] must be on params[0]'s device ",
                      params[0].device(), ", got ", p.device());
    TORCH_CHECK_TYPE(s == params[0].scalar_type(), op, ": params[", i, "] must have params[0]'s dtype");
  }
  TORCH_CHECK_VALUE(step.numel() == 1, op, ": step must hold one number, got shape ", step.sizes());
  check_number(op, "lr", lr, 0.0, false);
  TORCH_CHECK_VALUE(beta1 >= 0 && beta1 < 1, op, ": beta1 must be in [0, 1), got ", beta1);
  TORCH_CHECK_VALUE(beta2 >= 0 && beta2 < 1, op, ": beta2 must be in [0, 1), got ", beta2);
  check_number(op, "eps", eps, 0.0, false);
  check_number(op, "weight_decay", weight_decay, 0.0, false);
}

}  // namespace fastgan
