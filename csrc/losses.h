// BCE with logits and the GAN losses: bce_with_logits, gan_d_loss, gan_g_loss.
// The GAN losses come in the kinds of fastgan.ops.LOSS_KINDS (see Kind below); the BCE is
// bce's, the others' terms are term_loss's.
//
// Per element, with logit x, target t, weight w and pos_weight pw:
//   loss(x) = w * ((1 - t) * x + c * softplus(-x)),         c = 1 + (pw - 1) * t
//   dloss/dx = w * ((1 - t) - c * sigmoid(-x))
// computed stably from e = exp(-|x|), which lies in (0, 1] for every finite x:
//   softplus(-x) = log1p(e) + max(-x, 0),  sigmoid(-x) = x >= 0 ? e / (1 + e) : 1 / (1 + e)
// so |x| up to 1e4 (and beyond) gives no inf and no NaN, and the gradient at saturation is
// exact: w * (1 - t) as x -> +inf (sigmoid(-x) = 0), -w * pw * t as x -> -inf (sigmoid(-x) = 1).
//
// The math here is what both the CPU and the CUDA kernels run: each function is one template
// that the CUDA kernels and the CPU's scalar tails call with T = float/double and the CPU's
// vector loops with T = at::vec::Vectorized (common.h's lane-wise primitives: exp_ and log1p_
// are SLEEF's in the vector loops, libm's / CUDA's in the scalar code).
#pragma once

#include <string_view>

#include "common.h"

namespace fastgan {
namespace losses {

// softplus(-x) = log(1 + exp(-x)), never overflowing.
template <typename T>
FASTGAN_HD T softplus_neg(T x) {
  const T e = exp_(T(0) - abs_(x));
  return log1p_(e) + where(x < T(0), T(0) - x, T(0));
}

// sigmoid(-x) = 1 - sigmoid(x), never overflowing and exact (0 or 1) at saturation.
template <typename T>
FASTGAN_HD T sigmoid_neg(T x) {
  const T e = exp_(T(0) - abs_(x));
  const T r = T(1) / (T(1) + e);
  return where(x >= T(0), e * r, r);
}

// The weight of the positive term: 1 + (pw - 1) * t (1 without pos_weight).
template <typename T>
FASTGAN_HD T pos_coef(T t, T pw) {
  return T(1) + (pw - T(1)) * t;
}

// Unweighted loss from x, t, c = pos_coef(t, pw) and sp = softplus(-x).
template <typename T>
FASTGAN_HD T loss(T x, T t, T c, T sp) {
  return (T(1) - t) * x + c * sp;
}

// Unweighted dloss/dx from t, c and sn = sigmoid(-x).
template <typename T>
FASTGAN_HD T dloss(T t, T c, T sn) {
  return (T(1) - t) - c * sn;
}

// One element, weighted: the forward term and dloss/dx.
template <typename T>
FASTGAN_HD T element_loss(T x, T t, T w, T pw) {
  return w * loss(x, t, pos_coef(t, pw), softplus_neg(x));
}

template <typename T>
FASTGAN_HD T element_grad(T x, T t, T w, T pw) {
  return w * dloss(t, pos_coef(t, pw), sigmoid_neg(x));
}

enum class Reduction : int { None = 0, Mean = 1, Sum = 2 };

// The kind argument of gan_d_loss / gan_g_loss: the index in fastgan.ops.LOSS_KINDS.
enum class Kind : int64_t { Bce = 0, Hinge = 1, Lsgan = 2, Wgan = 3 };

// What one segment of a GAN loss sums per element, given the segment's parameter p (its tv):
//   Bce:     the BCE against the label p (element_loss, unweighted)
//   Hinge:   relu(1 - p * x), p = +1 (D's real) or -1 (D's fake)
//   Square:  (x - p)^2 / 2,   p = 1 (D's real, G's fake) or 0 (D's fake)
//   Linear:  -p * x,          p = +1 (D's real, G's fake) or -1 (D's fake)
// A kind's D segments share one term (the kernels take it as a template argument, so bce's
// code is what it was); d_term/g_term and the *_param functions below map kinds to terms.
enum class Term : int { Bce, Hinge, Square, Linear };

// t is p for every term but Bce; w and pw are Bce's (1 for the GAN losses).
template <Term K, typename T>
FASTGAN_HD T term_loss(T x, T t, T w, T pw) {
  if constexpr (K == Term::Bce) {
    return element_loss(x, t, w, pw);
  } else if constexpr (K == Term::Hinge) {
    const T u = T(1) - t * x;
    return where(u > T(0), u, T(0));
  } else if constexpr (K == Term::Square) {
    const T d = x - t;
    return d * d * T(0.5);
  } else {
    return (T(0) - t) * x;
  }
}

// dloss/dx; relu's derivative at its kink is 0, as torch's.
template <Term K, typename T>
FASTGAN_HD T term_grad(T x, T t, T w, T pw) {
  if constexpr (K == Term::Bce) {
    return element_grad(x, t, w, pw);
  } else if constexpr (K == Term::Hinge) {
    return where(T(1) - t * x > T(0), T(0) - t, T(0));
  } else if constexpr (K == Term::Square) {
    return x - t;
  } else {
    return T(0) - t;
  }
}

// D's term (real and fake alike) and G's: hinge's G loss is wgan's, -mean fake.
inline Term d_term(Kind k) {
  constexpr Term terms[] = {Term::Bce, Term::Hinge, Term::Square, Term::Linear};
  return terms[int(k)];
}

inline Term g_term(Kind k) {
  constexpr Term terms[] = {Term::Bce, Term::Linear, Term::Square, Term::Linear};
  return terms[int(k)];
}

// The segment parameters: bce's labels, the other kinds' fixed signs and targets.
inline double real_param(Kind k, double real_label) {
  return k == Kind::Bce ? real_label : 1.0;
}

inline double fake_param(Kind k, double fake_label) {
  return k == Kind::Bce ? fake_label : k == Kind::Lsgan ? 0.0 : -1.0;
}

// f(std::integral_constant<Term, t>{}): a runtime term to the kernels' template argument.
template <typename F>
inline void with_term(Term t, F&& f) {
  switch (t) {
    case Term::Bce:
      return f(std::integral_constant<Term, Term::Bce>{});
    case Term::Hinge:
      return f(std::integral_constant<Term, Term::Hinge>{});
    case Term::Square:
      return f(std::integral_constant<Term, Term::Square>{});
    case Term::Linear:
      return f(std::integral_constant<Term, Term::Linear>{});
  }
}

}  // namespace losses

inline losses::Kind parse_kind(const char* op, int64_t kind) {
  TORCH_CHECK_VALUE(kind >= 0 && kind <= 3, op,
                    ": kind must be 0 ('bce'), 1 ('hinge'), 2 ('lsgan') or 3 ('wgan'), got ", kind);
  return losses::Kind(kind);
}

inline losses::Reduction parse_reduction(const char* op, std::string_view r) {
  if (r == "mean") return losses::Reduction::Mean;
  if (r == "sum") return losses::Reduction::Sum;
  TORCH_CHECK_VALUE(r == "none", op, ": reduction must be 'none', 'mean' or 'sum', got '", r, "'");
  return losses::Reduction::None;
}

inline void check_logits(const char* op, const char* name, const at::Tensor& x) {
  check_float_tensor(op, name, x);
  TORCH_CHECK_VALUE(x.numel() > 0, op, ": ", name, " must not be empty, got shape ", x.sizes());
}

inline void check_label(const char* op, const char* name, double v) {
  TORCH_CHECK_VALUE(std::isfinite(v) && v >= 0.0 && v <= 1.0, op, ": ", name, " must be in [0, 1], got ", v);
}

// t has x's dtype and device (the shape rule is the caller's).
inline void check_like(const char* op, const char* name, const at::Tensor& t, const char* xname, const at::Tensor& x) {
  check_float_tensor(op, name, t);
  TORCH_CHECK_TYPE(t.scalar_type() == x.scalar_type(), op, ": ", name, " must have ", xname, "' dtype ",
                   x.scalar_type(), ", got ", t.scalar_type());
  TORCH_CHECK_VALUE(t.device() == x.device(), op, ": ", name, " must be on ", xname, "' device ", x.device(), ", got ",
                    t.device());
}

// t broadcasts to x's shape without changing it (torch's rule for weight and pos_weight).
inline void check_broadcastable(const char* op, const char* name, const at::Tensor& t, const at::Tensor& x) {
  bool ok = t.dim() <= x.dim();
  for (int64_t d = 1; ok && d <= t.dim(); ++d) {
    const int64_t s = t.size(-d);
    ok = s == 1 || s == x.size(-d);
  }
  TORCH_CHECK_VALUE(ok, op, ": ", name, " of shape ", t.sizes(), " must broadcast to logits' shape ", x.sizes());
}

// The arguments of bce_with_logits, checked and laid out for the kernels: logits and target
// contiguous; weight and pos_weight (where given) expanded to logits' shape and contiguous.
// A float target stays a number.
struct BceArgs {
  at::Tensor x, t, w, pw;
  double target_value;
  losses::Reduction reduction;
};

inline BceArgs prepare_bce_args(const char* op, const at::Tensor& logits, const std::optional<at::Tensor>& target,
                                double target_value, const std::optional<at::Tensor>& weight,
                                const std::optional<at::Tensor>& pos_weight, std::string_view reduction) {
  BceArgs a;
  a.reduction = parse_reduction(op, reduction);
  check_logits(op, "logits", logits);
  a.x = logits.contiguous();
  a.target_value = target_value;
  if (target.has_value() && target->defined()) {
    check_like(op, "target", *target, "logits", logits);
    TORCH_CHECK_VALUE(target->sizes() == logits.sizes(), op, ": target must have logits' shape ", logits.sizes(),
                      ", got ", target->sizes());
    a.t = target->contiguous();
  } else {
    check_label(op, "target", target_value);
  }
  if (weight.has_value() && weight->defined()) {
    check_like(op, "weight", *weight, "logits", logits);
    check_broadcastable(op, "weight", *weight, logits);
    a.w = weight->expand(logits.sizes()).contiguous();
  }
  if (pos_weight.has_value() && pos_weight->defined()) {
    check_like(op, "pos_weight", *pos_weight, "logits", logits);
    check_broadcastable(op, "pos_weight", *pos_weight, logits);
    a.pw = pos_weight->expand(logits.sizes()).contiguous();
  }
  return a;
}

namespace losses {
// One run of n elements whose losses are summed (or written) together: the kernels take one
// segment (bce_with_logits, gan_g_loss) or two (gan_d_loss: real, then fake). Null t, w or pw
// stand for the number tv, 1 and 1.
template <typename scalar_t>
struct Segment {
  const scalar_t* x;
  const scalar_t* t;
  const scalar_t* w;
  const scalar_t* pw;
  acc_t<scalar_t> tv;
  acc_t<scalar_t> scale;  // the factor of the segment's sum and of its gradient: 1/n or 1
  int64_t n;
};

// Segments from host tensors (contiguous, as prepare_bce_args leaves them).
template <typename scalar_t>
inline Segment<scalar_t> segment_of(const at::Tensor& x, const at::Tensor& t, double tv, const at::Tensor& w,
                                    const at::Tensor& pw, Reduction r) {
  auto ptr = [](const at::Tensor& a) { return a.defined() ? a.const_data_ptr<scalar_t>() : nullptr; };
  const int64_t n = x.numel();
  const double scale = r == Reduction::Mean ? 1.0 / double(n) : 1.0;
  return {ptr(x), ptr(t), ptr(w), ptr(pw), acc_t<scalar_t>(tv), acc_t<scalar_t>(scale), n};
}

template <typename scalar_t>
inline Segment<scalar_t> segment_of(const BceArgs& a) {
  return segment_of<scalar_t>(a.x, a.t, a.target_value, a.w, a.pw, a.reduction);
}

// A mean against a constant label (the GAN losses).
template <typename scalar_t>
inline Segment<scalar_t> label_segment(const at::Tensor& x, double label) {
  return segment_of<scalar_t>(x, at::Tensor(), label, at::Tensor(), at::Tensor(), Reduction::Mean);
}

}  // namespace losses

// grad of a bce_with_logits backward: logits' shape for reduction 'none', else a number
// (a 0-dim tensor of logits' dtype or of the accumulation dtype).
inline at::Tensor prepare_loss_grad(const char* op, const at::Tensor& grad, const at::Tensor& x, bool elementwise) {
  check_float_tensor(op, "grad", grad);
  TORCH_CHECK_VALUE(grad.device() == x.device(), op, ": grad must be on logits' device ", x.device(), ", got ",
                    grad.device());
  if (elementwise) {
    TORCH_CHECK_VALUE(grad.sizes() == x.sizes(), op, ": grad must have logits' shape ", x.sizes(), ", got ",
                      grad.sizes());
    TORCH_CHECK_TYPE(grad.scalar_type() == x.scalar_type(), op, ": grad must have logits' dtype ", x.scalar_type(),
                     ", got ", grad.scalar_type());
    return grad.contiguous();
  }
  TORCH_CHECK_VALUE(grad.numel() == 1, op, ": grad must have one element, got shape ", grad.sizes());
  const auto acc = x.scalar_type() == at::kDouble ? at::kDouble : at::kFloat;
  // the kernels read a scalar grad as logits' dtype or as the accumulation dtype
  return grad.scalar_type() == x.scalar_type() || grad.scalar_type() == acc ? grad : grad.to(acc);
}

// The dtype of the GAN losses' value: float32 for half types (float64 for float64).
inline at::ScalarType loss_acc_dtype(const at::Tensor& x) {
  return x.scalar_type() == at::kDouble ? at::kDouble : at::kFloat;
}

// Labels are bce's: another kind with a label other than the default is an error, not ignored.
inline void check_kind_label(const char* op, losses::Kind kind, const char* name, double v, double dflt) {
  TORCH_CHECK_VALUE(kind == losses::Kind::Bce || v == dflt, op, ": ", name, " applies to kind 'bce' only, got ", name,
                    "=", v, " with kind ", int64_t(kind));
}

inline losses::Kind check_gan_d_loss_args(const at::Tensor& real, const at::Tensor& fake, double real_label,
                                          double fake_label, int64_t kind_) {
  constexpr const char* op = "gan_d_loss";
  const losses::Kind kind = parse_kind(op, kind_);
  check_logits(op, "real_logits", real);
  check_logits(op, "fake_logits", fake);
  check_like(op, "fake_logits", fake, "real_logits", real);
  check_label(op, "real_label", real_label);
  check_label(op, "fake_label", fake_label);
  check_kind_label(op, kind, "real_label", real_label, 1.0);
  check_kind_label(op, kind, "fake_label", fake_label, 0.0);
  return kind;
}

inline losses::Kind check_gan_g_loss_args(const at::Tensor& fake, double real_label, int64_t kind_) {
  constexpr const char* op = "gan_g_loss";
  const losses::Kind kind = parse_kind(op, kind_);
  check_logits(op, "fake_logits", fake);
  check_label(op, "real_label", real_label);
  check_kind_label(op, kind, "real_label", real_label, 1.0);
  return kind;
}

namespace losses {
// The segments of a GAN loss of kind k, as the kernels sum them.
template <typename scalar_t>
inline Segment<scalar_t> d_real_segment(const at::Tensor& x, Kind k, double real_label) {
  return label_segment<scalar_t>(x, real_param(k, real_label));
}

template <typename scalar_t>
inline Segment<scalar_t> d_fake_segment(const at::Tensor& x, Kind k, double fake_label) {
  return label_segment<scalar_t>(x, fake_param(k, fake_label));
}

template <typename scalar_t>
inline Segment<scalar_t> g_segment(const at::Tensor& x, Kind k, double real_label) {
  return label_segment<scalar_t>(x, real_param(k, real_label));
}
}  // namespace losses

}  // namespace fastgan
