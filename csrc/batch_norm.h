// batch_norm (+ LeakyReLU): y = act((x - mean) * invstd * weight + bias), statistics per
// channel (dim 1) over every other dim.
// The math here is what both the CPU and the CUDA kernels run: the per-element functions are
// templates that the CUDA kernels and the CPU's scalar tails call with T = float/double and the
// CPU's vector loops with T = at::vec::Vectorized (common.h's lane-wise primitives), so the CPU
// tests exercise the GPU's formulas.
//
// Statistics are shifted sums: each channel subtracts an estimate of its mean, s = the mean
// of its first few values (channel_shift), before summing (x - s) and (x - s)^2 in acc_t. The
// sums merge by adding (chunks, blocks, threads all use the same s), and a channel with mean 1e4 and std 1
// sums O(1) values, not O(1e4) ones. The forward also normalizes relative to s:
// y = (x - s) * scale + shift, shift = bias - (mean - s) * scale, so the large mean never
// enters a float32 product either.
//
// Without an activation the kernels run the same code with neg_gain 1: z * 1 is exactly z.
#pragma once

#include <array>
#include <optional>
#include <tuple>

#include "common.h"

namespace fastgan {
namespace bn {

// Per-channel coefficients that the elementwise passes read, in acc_t, laid out [k][C].
// Forward: y = act((x - kShift) * kScale + kOffset).
// Backward: z = (x - kMean) * kZScale + kZOffset (the pre-activation, for the mask),
// dz = dy * gain(z), dx = kK1 * dz + kK2 * (x - kMean) + kK3.
enum : int { kShift = 0, kScale = 1, kOffset = 2, kForwardCoefs = 3 };
enum : int { kMean = 0, kZScale = 1, kZOffset = 2, kK1 = 3, kK2 = 4, kK3 = 5, kBackwardCoefs = 6 };

// The shift of channel c's shifted sums: the mean of its first (up to) 8 values in memory
// order, so that sum(x - s) stays a random walk instead of drifting by (mean - s) per value.
// Every block and chunk computes the same s, so their sums merge by adding.
template <typename acc, typename scalar_t>
FASTGAN_HD acc channel_shift(const scalar_t* x, int64_t c, int64_t outer, int64_t channels, int64_t inner) {
  const int64_t stride = inner == 1 ? channels : 1;
  const int64_t avail = inner == 1 ? outer : inner;
  const int64_t n = avail < 8 ? avail : 8;
  acc s = acc(0);
  for (int64_t k = 0; k < n; ++k) s += acc(x[c * inner + k * stride]);
  return s / acc(n);
}

// The LeakyReLU's slope at z (1 for z > 0, as torch.nn.functional.leaky_relu: z == 0 takes
// the negative slope).
template <typename T>
FASTGAN_HD T gain(T z, T neg_gain) {
  return where(z > T(0), T(1), neg_gain);
}

template <typename T>
FASTGAN_HD T act(T z, T neg_gain) {
  return z * gain(z, neg_gain);
}

// The elementwise steps, one value (or vector of values) at a time, with the channel's
// coefficients (kShift ... kK3 above) as arguments.
// Forward sums: s1 += d, s2 += d^2 (fused), d = x - shift.
template <typename T>
FASTGAN_HD void add_sums(T x, T shift, T& s1, T& s2) {
  const T d = x - shift;
  s1 += d;
  s2 = fma_(d, d, s2);
}

// Forward output: act((x - shift) * scale + offset).
template <typename T>
FASTGAN_HD T forward(T x, T shift, T scale, T offset, T neg_gain) {
  return act((x - shift) * scale + offset, neg_gain);
}

// Backward: dz = dy * gain(z), z = xm * zscale + zoffset the pre-activation, xm = x - mean.
template <typename T>
FASTGAN_HD T grad_z(T xm, T dy, T zscale, T zoffset, T neg_gain) {
  return dy * gain(xm * zscale + zoffset, neg_gain);
}

// Backward sums: sa += dz, sb += dz * xm (fused).
template <typename T>
FASTGAN_HD void add_grad_sums(T x, T dy, T mean, T zscale, T zoffset, T neg_gain, T& sa, T& sb) {
  const T xm = x - mean;
  const T dz = grad_z(xm, dy, zscale, zoffset, neg_gain);
  sa += dz;
  sb = fma_(dz, xm, sb);
}

// Backward output: dx = k1 * dz + k2 * xm + k3, as two fused steps. (Written k1 * dz + k2 * xm + k3,
// the compiler fused one of the two products, which one depending on the code around it: the
// vector loop and its scalar tail did not always round alike.)
template <typename T>
FASTGAN_HD T grad_x(T x, T dy, T mean, T zscale, T zoffset, T neg_gain, T k1, T k2, T k3) {
  const T xm = x - mean;
  return fma_(k1, grad_z(xm, dy, zscale, zoffset, neg_gain), fma_(k2, xm, k3));
}

// Forward finalize of one channel from its shifted sums s1 = sum(x - s), s2 = sum((x - s)^2)
// over m values. Writes the coefficients, the saved mean / invstd, and updates the running
// stats (torch's convention: running = (1 - momentum) * running + momentum * batch, with the
// unbiased variance) when rmean / rvar are not null.
template <typename T>
FASTGAN_HD void finalize_stats(T s1, T s2, T m, T shift, T w, T b, T eps, T momentum, T* rmean, T* rvar, T* save_mean,
                               T* save_invstd, T* scale, T* offset) {
  const T dmean = s1 / m;
  T var = s2 / m - dmean * dmean;
  var = var < T(0) ? T(0) : var;  // rounding below 0 is clamped; a NaN stays NaN, as in torch
  using std::sqrt;
  const T invstd = T(1) / sqrt(var + eps);
  const T mean = shift + dmean;
  if (rmean) *rmean = (T(1) - momentum) * *rmean + momentum * mean;
  if (rvar) *rvar = (T(1) - momentum) * *rvar + momentum * (var * m / (m - T(1)));
  *save_mean = mean;
  *save_invstd = invstd;
  *scale = w * invstd;
  *offset = b - dmean * *scale;
}

// Eval mode: the running stats are the statistics (shift 0).
template <typename T>
FASTGAN_HD void finalize_eval(T rmean, T rvar, T w, T b, T eps, T* save_mean, T* save_invstd, T* scale, T* offset) {
  using std::sqrt;
  const T invstd = T(1) / sqrt(rvar + eps);
  *save_mean = rmean;
  *save_invstd = invstd;
  *scale = w * invstd;
  *offset = b - rmean * *scale;
}

// Backward finalize of one channel from sa = sum(dz), sb = sum(dz * (x - mean)) over m
// values: grad_weight = sum(dz * xhat), grad_bias = sum(dz), and dx's coefficients.
// Training: dx = w * invstd * (dz - mean(dz) - xhat * mean(dz * xhat)); eval: w * invstd * dz.
template <typename T>
FASTGAN_HD void finalize_backward(T sa, T sb, T m, T w, T invstd, bool training, T* gw, T* gb, T* k1, T* k2, T* k3) {
  const T dw = sb * invstd;
  *gw = dw;
  *gb = sa;
  *k1 = w * invstd;
  *k2 = training ? -*k1 * invstd * dw / m : T(0);
  *k3 = training ? -*k1 * sa / m : T(0);
}

}  // namespace bn

inline bool present(const std::optional<at::Tensor>& t) {
  return t.has_value() && t->defined();
}

// A per-channel tensor as a contiguous acc_t tensor: itself where it already is one (so the
// kernel can update running stats in place), else a converted copy.
inline at::Tensor as_acc(const std::optional<at::Tensor>& t, at::ScalarType acc) {
  if (!present(t)) return at::Tensor();
  if (t->scalar_type() == acc && t->is_contiguous()) return *t;
  return t->to(acc).contiguous();
}

template <typename T>
T* ptr_or_null(const at::Tensor& t) {
  return t.defined() ? t.mutable_data_ptr<T>() : nullptr;
}

template <typename T>
const T* const_ptr_or_null(const at::Tensor& t) {
  return t.defined() ? t.const_data_ptr<T>() : nullptr;
}

// After training: running stats that as_acc had to convert (another dtype or layout) were
// updated in the copy; copy them back into the caller's tensors.
inline void write_back_running_stats(const at::Tensor& rm, const at::Tensor& rv,
                                     const std::optional<at::Tensor>& running_mean,
                                     const std::optional<at::Tensor>& running_var) {
  if (!rm.defined()) return;
  if (!rm.is_same(*running_mean)) running_mean->copy_(rm);
  if (!rv.is_same(*running_var)) running_var->copy_(rv);
}

// Host-side checks, shared by the CPU and CUDA kernels (fastgan/ops/batch_norm.py:check_args
// says the same in Python for the fake kernel and the reference fallback). The per-channel
// tensors: common.h's check_channel_vector (x's dtype, or float32 for half x).
inline void check_batch_norm_args(const at::Tensor& x, const std::optional<at::Tensor>& weight,
                                  const std::optional<at::Tensor>& bias, const std::optional<at::Tensor>& running_mean,
                                  const std::optional<at::Tensor>& running_var, bool training, double momentum,
                                  double eps, std::optional<double> negative_slope,
                                  const std::optional<at::Tensor>& num_batches_tracked) {
  constexpr const char* op = "batch_norm";
  check_float_tensor(op, "x", x);
  TORCH_CHECK_VALUE(x.dim() >= 2, op, ": x must have at least 2 dims (N, C, ...), got shape ", x.sizes());
  TORCH_CHECK_VALUE(!training || x.numel() > 0, op,
                    ": x must not be empty when training (an empty batch has no statistics), got shape ", x.sizes());
  if (present(weight)) check_channel_vector(op, "weight", *weight, x, x.size(1));
  if (present(bias)) check_channel_vector(op, "bias", *bias, x, x.size(1));
  TORCH_CHECK_VALUE(present(running_mean) == present(running_var), op,
                    ": running_mean and running_var must either both be None or neither be None");
  if (present(running_mean)) check_channel_vector(op, "running_mean", *running_mean, x, x.size(1));
  if (present(running_var)) check_channel_vector(op, "running_var", *running_var, x, x.size(1));
  if (present(num_batches_tracked)) {
    const at::Tensor& n = *num_batches_tracked;
    TORCH_CHECK_TYPE(n.scalar_type() == at::kLong, op, ": num_batches_tracked must be int64, got ", n.scalar_type());
    TORCH_CHECK_VALUE(n.numel() == 1, op, ": num_batches_tracked must hold one number, got shape ", n.sizes());
    TORCH_CHECK_VALUE(n.device() == x.device(), op, ": num_batches_tracked must be on x's device ", x.device(),
                      ", got ", n.device());
  }
  TORCH_CHECK_VALUE(training || present(running_mean), op,
                    ": running_mean and running_var must be given when training is False");
  TORCH_CHECK_VALUE(!training || x.numel() / x.size(1) > 1, op,
                    ": Expected more than 1 value per channel when training, got input size ", x.sizes());
  check_number(op, "momentum", momentum, -INFINITY, false);
  check_number(op, "eps", eps, 0.0, false);
  TORCH_CHECK_VALUE(!training || eps > 0, op, ": eps must be > 0 when training (a constant channel's ",
                    "variance is 0), got ", eps);
  if (negative_slope.has_value()) check_number(op, "negative_slope", *negative_slope, -INFINITY, false);
}

inline void check_batch_norm_backward_args(const at::Tensor& grad, const at::Tensor& x, const at::Tensor& save_mean,
                                           const at::Tensor& save_invstd) {
  constexpr const char* op = "batch_norm_backward";
  check_float_tensor(op, "x", x);
  TORCH_CHECK_VALUE(x.dim() >= 2, op, ": x must have at least 2 dims, got ", x.sizes());
  TORCH_CHECK_VALUE(grad.sizes() == x.sizes(), op, ": grad must have x's shape ", x.sizes(), ", got ", grad.sizes());
  TORCH_CHECK_TYPE(grad.scalar_type() == x.scalar_type(), op, ": grad must have x's dtype ", x.scalar_type(), ", got ",
                   grad.scalar_type());
  TORCH_CHECK_VALUE(grad.device() == x.device(), op, ": grad must be on x's device ", x.device(), ", got ",
                    grad.device());
  const auto acc = x.scalar_type() == at::kDouble ? at::kDouble : at::kFloat;
  for (const auto& [name, t] :
       {std::pair<const char*, const at::Tensor&>{"save_mean", save_mean}, {"save_invstd", save_invstd}}) {
    TORCH_CHECK_VALUE(t.dim() == 1 && t.numel() == x.size(1), op, ": ", name, " must have shape (", x.size(1),
                      ",), got ", t.sizes());
    TORCH_CHECK_TYPE(t.scalar_type() == acc, op, ": ", name, " must be ", acc, ", got ", t.scalar_type());
    TORCH_CHECK_VALUE(t.device() == x.device(), op, ": ", name, " must be on x's device ", x.device(), ", got ",
                      t.device());
  }
}

// The tensors of one batch_norm call, checked and prepared alike on the CPU and CUDA: x in its
// output layout, the outputs, and the parameters and running stats as acc-type tensors.
struct BatchNormForward {
  at::Tensor x, y, save_mean, save_invstd, w, b, rm, rv;
  int64_t* num_batches_tracked;  // null unless training with one given: the kernel adds 1
};

inline BatchNormForward prepare_batch_norm(const at::Tensor& x_, const std::optional<at::Tensor>& weight,
                                           const std::optional<at::Tensor>& bias,
                                           const std::optional<at::Tensor>& running_mean,
                                           const std::optional<at::Tensor>& running_var, bool training, double momentum,
                                           double eps, std::optional<double> negative_slope,
                                           const std::optional<at::Tensor>& num_batches_tracked) {
  check_batch_norm_args(x_, weight, bias, running_mean, running_var, training, momentum, eps, negative_slope,
                        num_batches_tracked);
  const auto layout = out_layout(x_);
  BatchNormForward t;
  t.x = x_.contiguous(layout);
  const auto acc = t.x.scalar_type() == at::kDouble ? at::kDouble : at::kFloat;
  const int64_t C = t.x.size(1);
  t.y = at::empty(t.x.sizes(), t.x.options().memory_format(layout));
  t.save_mean = at::empty({C}, t.x.options().dtype(acc));
  t.save_invstd = at::empty({C}, t.x.options().dtype(acc));
  t.w = as_acc(weight, acc);
  t.b = as_acc(bias, acc);
  t.rm = as_acc(running_mean, acc);
  t.rv = as_acc(running_var, acc);
  t.num_batches_tracked =
      training && present(num_batches_tracked) ? num_batches_tracked->mutable_data_ptr<int64_t>() : nullptr;
  return t;
}

// An empty batch (eval mode only: training rejects it) runs no kernel (a CUDA grid cannot be
// empty): the saved statistics are the running ones, as the eval kernels save them. True if so.
inline bool empty_batch_norm(const BatchNormForward& t, double eps) {
  if (t.x.numel() != 0) return false;
  t.save_mean.copy_(t.rm);
  t.save_invstd.copy_(t.rv).add_(eps).rsqrt_();
  return true;
}

// The same for batch_norm_backward; outputs not asked for in output_mask are empty, shape (0,).
struct BatchNormBackward {
  at::Tensor x, grad, w, b, mean, invstd, dx, gw, gb;
};

inline BatchNormBackward prepare_batch_norm_backward(const at::Tensor& grad_, const at::Tensor& x_,
                                                     const std::optional<at::Tensor>& weight,
                                                     const std::optional<at::Tensor>& bias, const at::Tensor& save_mean,
                                                     const at::Tensor& save_invstd, std::array<bool, 3> output_mask) {
  check_batch_norm_backward_args(grad_, x_, save_mean, save_invstd);
  constexpr const char* op = "batch_norm_backward";
  if (present(weight)) check_channel_vector(op, "weight", *weight, x_, x_.size(1));
  if (present(bias)) check_channel_vector(op, "bias", *bias, x_, x_.size(1));
  const auto layout = out_layout(x_);
  BatchNormBackward t;
  t.x = x_.contiguous(layout);
  t.grad = grad_.contiguous(layout);
  const auto acc = t.x.scalar_type() == at::kDouble ? at::kDouble : at::kFloat;
  const int64_t C = t.x.size(1);
  t.w = as_acc(weight, acc);
  t.b = as_acc(bias, acc);
  t.mean = save_mean.contiguous();
  t.invstd = save_invstd.contiguous();
  t.dx = output_mask[0] ? at::empty(t.x.sizes(), t.x.options().memory_format(layout)) : at::empty({0}, t.x.options());
  t.gw = at::empty({output_mask[1] ? C : 0}, t.x.options().dtype(acc));
  t.gb = at::empty({output_mask[2] ? C : 0}, t.x.options().dtype(acc));
  return t;
}

// The backward of an empty batch: dx is empty, the parameters' gradients (sums over no
// elements) are 0; no kernel runs. True if so.
inline bool empty_batch_norm_backward(const BatchNormBackward& t) {
  if (t.x.numel() != 0) return false;
  t.gw.zero_();
  t.gb.zero_();
  return true;
}

// (dx, grad_weight, grad_bias), the parameter gradients in the parameters' dtype (x's, or
// float32 for mixed precision).
inline std::tuple<at::Tensor, at::Tensor, at::Tensor> finish_batch_norm_backward(
    const BatchNormBackward& t, const std::optional<at::Tensor>& weight, const std::optional<at::Tensor>& bias) {
  at::Tensor gw = t.gw, gb = t.gb;
  if (present(weight) && weight->scalar_type() != gw.scalar_type()) gw = gw.to(weight->scalar_type());
  if (present(bias) && bias->scalar_type() != gb.scalar_type()) gb = gb.to(bias->scalar_type());
  return {t.dx, gw, gb};
}

}  // namespace fastgan
