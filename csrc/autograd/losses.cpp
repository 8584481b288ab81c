// Autograd for the losses, in C++ (csrc/autograd/bias_leaky_relu.cpp says why C++).
//
// First order: the forward op's backward is the fused backward op (bce_with_logits_backward,
// gan_d_loss_backward, gan_g_loss_backward): one kernel. A tensor target's gradient,
// w * (pos_weight - 1) * softplus(-x) - w * x times the incoming gradient, is rarely wanted
// (never in a GAN) and is written with ATen ops. As in torch, weight and pos_weight are not
// differentiable.
//
// Double backward: the backward ops' own backward is written with differentiable ATen ops
// (sigmoid, mul, sum) from the closed forms below, not with a second family of kernels: it is
// only run by gradgradcheck and gradient-penalty style training, where a few elementwise ops
// on a (B, 1) tensor cost nothing next to the network, and ATen's ops make every higher order
// differentiable too. With sn = sigmoid(-x), c = 1 + (pw - 1) * t, G the incoming gradient
// (times 1/N for a mean), and gx = G * w * ((1 - t) - c * sn):
//   d gx / d x = G * w * c * sn * (1 - sn)
//   d gx / d t = G * w * (-1 - (pw - 1) * sn)
//   d gx / d G = w * ((1 - t) - c * sn)   (summed and times 1/N for a reduced loss)
// The other GAN kinds' terms (losses.h:Term) are piecewise linear or quadratic in x: their
// dloss/dx is -p (Linear), -p where 1 - p * x > 0 (Hinge) or x - p (Square), and their
// second derivative 0, 0 and 1.
#include <ATen/TensorOperators.h>
#include <ATen/core/grad_mode.h>
#include <ATen/core/dispatch/Dispatcher.h>
#include <ATen/ops/full_like.h>
#include <ATen/ops/log_sigmoid.h>
#include <ATen/ops/sigmoid.h>
#include <ATen/ops/sum.h>
#include <torch/autograd.h>
#include <torch/library.h>

#include <string>

#include "losses.h"

namespace fastgan {
namespace {

using torch::autograd::AutogradContext;
using torch::autograd::variable_list;
using OptTensor = std::optional<at::Tensor>;

at::Tensor bce_op(const at::Tensor& x, const OptTensor& t, double tv, const OptTensor& w, const OptTensor& pw,
                  c10::string_view reduction) {
  static auto op = c10::Dispatcher::singleton()
                       .findSchemaOrThrow("fastgan::bce_with_logits", "")
                       .typed<at::Tensor(const at::Tensor&, const OptTensor&, double, const OptTensor&,
                                         const OptTensor&, c10::string_view)>();
  return op.call(x, t, tv, w, pw, reduction);
}

at::Tensor bce_backward_op(const at::Tensor& g, const at::Tensor& x, const OptTensor& t, double tv, const OptTensor& w,
                           const OptTensor& pw, c10::string_view reduction) {
  static auto op = c10::Dispatcher::singleton()
                       .findSchemaOrThrow("fastgan::bce_with_logits_backward", "")
                       .typed<at::Tensor(const at::Tensor&, const at::Tensor&, const OptTensor&, double,
                                         const OptTensor&, const OptTensor&, c10::string_view)>();
  return op.call(g, x, t, tv, w, pw, reduction);
}

at::Tensor gan_d_op(const at::Tensor& real, const at::Tensor& fake, double rl, double fl, int64_t kind) {
  static auto op = c10::Dispatcher::singleton()
                       .findSchemaOrThrow("fastgan::gan_d_loss", "")
                       .typed<at::Tensor(const at::Tensor&, const at::Tensor&, double, double, int64_t)>();
  return op.call(real, fake, rl, fl, kind);
}

std::tuple<at::Tensor, at::Tensor> gan_d_backward_op(const at::Tensor& g, const at::Tensor& real,
                                                     const at::Tensor& fake, double rl, double fl, int64_t kind) {
  static auto op = c10::Dispatcher::singleton()
                       .findSchemaOrThrow("fastgan::gan_d_loss_backward", "")
                       .typed<std::tuple<at::Tensor, at::Tensor>(const at::Tensor&, const at::Tensor&,
                                                                 const at::Tensor&, double, double, int64_t)>();
  return op.call(g, real, fake, rl, fl, kind);
}

at::Tensor gan_g_op(const at::Tensor& fake, double rl, int64_t kind) {
  static auto op = c10::Dispatcher::singleton()
                       .findSchemaOrThrow("fastgan::gan_g_loss", "")
                       .typed<at::Tensor(const at::Tensor&, double, int64_t)>();
  return op.call(fake, rl, kind);
}

at::Tensor gan_g_backward_op(const at::Tensor& g, const at::Tensor& fake, double rl, int64_t kind) {
  static auto op = c10::Dispatcher::singleton()
                       .findSchemaOrThrow("fastgan::gan_g_loss_backward", "")
                       .typed<at::Tensor(const at::Tensor&, const at::Tensor&, double, int64_t)>();
  return op.call(g, fake, rl, kind);
}

at::Tensor defined_or_null(const OptTensor& t) {
  return t.has_value() && t->defined() ? *t : at::Tensor();
}

// One BCE term's closed forms as differentiable ATen expressions (see the top of the file).
// t undefined: the constant label tv; w or pw undefined: 1.
struct Term {
  at::Tensor x, t, w, pw;
  double tv;

  at::Tensor target_minus_one_times(const at::Tensor& v) const {  // (pw - 1) * v, or undefined
    return pw.defined() ? (pw - 1) * v : at::Tensor();
  }
  at::Tensor weighted(const at::Tensor& v) const { return w.defined() ? v * w : v; }

  // dloss/dx = (1 - t) - c * sn, c * sn = sn + (pw - 1) * t * sn
  at::Tensor dloss(const at::Tensor& sn) const {
    at::Tensor d = t.defined() ? (1 - t) - sn : (1.0 - tv) - sn;
    const at::Tensor extra = target_minus_one_times(sn);
    if (extra.defined()) d = d - (t.defined() ? extra * t : extra * tv);
    return weighted(d);
  }
  // d2loss/dx2 = c * sn * (1 - sn)
  at::Tensor d2loss(const at::Tensor& sn) const {
    at::Tensor s = sn * (1 - sn);
    const at::Tensor extra = target_minus_one_times(s);
    if (extra.defined()) s = s + (t.defined() ? extra * t : extra * tv);
    return weighted(s);
  }
  // G * d(dloss/dx)/dt = G * (-1 - (pw - 1) * sn)
  at::Tensor times_d2loss_dt(const at::Tensor& G, const at::Tensor& sn) const {
    const at::Tensor extra = target_minus_one_times(sn);
    return weighted(extra.defined() ? G * (-1 - extra) : -G);
  }
  // dloss/dt = -x + (pw - 1) * softplus(-x), softplus(-x) = -log_sigmoid(x)
  at::Tensor dloss_dt() const {
    const at::Tensor extra = target_minus_one_times(at::log_sigmoid(x));
    return weighted(extra.defined() ? -x - extra : -x);
  }
};

// t / x.numel() for a mean (t itself otherwise). The count stays a SymInt, so that these
// formulas trace under torch.compile with dynamic shapes, where numel() is symbolic.
at::Tensor mean_scaled(const at::Tensor& t, losses::Reduction r, const at::Tensor& x) {
  return r == losses::Reduction::Mean ? t / c10::Scalar(x.sym_numel()) : t;
}

constexpr auto kMean = losses::Reduction::Mean;  // the GAN losses are means

// d(loss gradient)/d(grad) contracted with gg: gg * dloss elementwise, or its (mean-scaled)
// sum shaped and typed like grad.
at::Tensor grad_of_grad(const at::Tensor& gg, const at::Tensor& dloss, const at::Tensor& grad, losses::Reduction r,
                        const at::Tensor& x) {
  if (r == losses::Reduction::None) return gg * dloss;
  return mean_scaled(at::sum(gg * dloss, grad.scalar_type()), r, x).reshape_symint(grad.sym_sizes());
}

// (grad, logits, target, ...) -> dloss/dlogits
struct BceBackward : public torch::autograd::Function<BceBackward> {
  static at::Tensor forward(AutogradContext* ctx, const at::Tensor& grad, const at::Tensor& x, const OptTensor& t,
                            double tv, const OptTensor& w, const OptTensor& pw, const std::string& reduction) {
    at::AutoDispatchBelowADInplaceOrView guard;
    at::Tensor gx = bce_backward_op(grad, x, t, tv, w, pw, reduction);
    ctx->save_for_backward({grad, x, defined_or_null(t), defined_or_null(w), defined_or_null(pw)});
    ctx->saved_data["tv"] = tv;
    ctx->saved_data["reduction"] = reduction;
    return gx;
  }

  static variable_list backward(AutogradContext* ctx, variable_list ggs) {
    const auto saved = ctx->get_saved_variables();
    const at::Tensor& grad = saved[0];
    const Term term{saved[1], saved[2], saved[3], saved[4], ctx->saved_data["tv"].toDouble()};
    const std::string reduction = ctx->saved_data["reduction"].toStringRef();
    const auto r = parse_reduction("bce_with_logits_backward", reduction);
    const at::Tensor& gg = ggs[0];
    at::Tensor d_grad, d_x, d_t;
    if (gg.defined()) {
      const at::Tensor sn = at::sigmoid(-term.x);
      const at::Tensor G = gg * mean_scaled(grad, r, term.x);
      if (ctx->needs_input_grad(0)) d_grad = grad_of_grad(gg, term.dloss(sn), grad, r, term.x);
      if (ctx->needs_input_grad(1)) d_x = G * term.d2loss(sn);
      if (term.t.defined() && ctx->needs_input_grad(2)) d_t = term.times_d2loss_dt(G, sn);
    }
    return {d_grad, d_x, d_t, at::Tensor(), at::Tensor(), at::Tensor(), at::Tensor()};
  }
};

void check_not_differentiable(const OptTensor& t, const char* name) {
  const bool wants_grad = at::GradMode::is_enabled() && t.has_value() && t->defined() && t->requires_grad();
  TORCH_CHECK(!wants_grad, "bce_with_logits: ", name, " must not require grad: the loss is not differentiable in ",
              name, " (as in torch)");
}

struct Bce : public torch::autograd::Function<Bce> {
  static at::Tensor forward(AutogradContext* ctx, const at::Tensor& x, const OptTensor& t, double tv,
                            const OptTensor& w, const OptTensor& pw, const std::string& reduction) {
    at::AutoDispatchBelowADInplaceOrView guard;
    at::Tensor out = bce_op(x, t, tv, w, pw, reduction);
    ctx->save_for_backward({x, defined_or_null(t), defined_or_null(w), defined_or_null(pw)});
    ctx->saved_data["tv"] = tv;
    ctx->saved_data["reduction"] = reduction;
    return out;
  }

  static variable_list backward(AutogradContext* ctx, variable_list grads) {
    const auto saved = ctx->get_saved_variables();
    const at::Tensor &x = saved[0], &t = saved[1], &w = saved[2], &pw = saved[3];
    const double tv = ctx->saved_data["tv"].toDouble();
    const std::string reduction = ctx->saved_data["reduction"].toStringRef();
    auto opt = [](const at::Tensor& a) { return a.defined() ? OptTensor(a) : OptTensor(); };
    at::Tensor d_x, d_t;
    if (ctx->needs_input_grad(0)) d_x = BceBackward::apply(grads[0], x, opt(t), tv, opt(w), opt(pw), reduction);
    if (t.defined() && ctx->needs_input_grad(1)) {
      const auto r = parse_reduction("bce_with_logits", reduction);
      const at::Tensor G = mean_scaled(grads[0], r, x);
      d_t = G * Term{x, t, w, pw, tv}.dloss_dt();
    }
    return {d_x, d_t, at::Tensor(), at::Tensor(), at::Tensor(), at::Tensor()};
  }
};

// One segment of a GAN loss (x against the parameter p, losses.h:Term) for the double
// backward: dloss/dx, and G times d2loss/dx2 (undefined where that is 0).
struct GanTerm {
  losses::Term term;
  at::Tensor x;
  double p;

  at::Tensor dloss() const {
    switch (term) {
      case losses::Term::Bce:
        return Term{x, {}, {}, {}, p}.dloss(at::sigmoid(-x));
      case losses::Term::Hinge:
        return (x * -p + 1 > 0).to(x.scalar_type()) * -p;
      case losses::Term::Square:
        return x - p;
      case losses::Term::Linear:
        break;
    }
    return at::full_like(x, -p);
  }
  at::Tensor times_d2loss(const at::Tensor& G) const {
    if (term == losses::Term::Bce) return G * Term{x, {}, {}, {}, p}.d2loss(at::sigmoid(-x));
    return term == losses::Term::Square ? G : at::Tensor();
  }
};

// The segments' GanTerms of a kind: D's real and fake, G's fake.
GanTerm d_real_term(const at::Tensor& x, losses::Kind k, double rl) {
  return {losses::d_term(k), x, losses::real_param(k, rl)};
}
GanTerm d_fake_term(const at::Tensor& x, losses::Kind k, double fl) {
  return {losses::d_term(k), x, losses::fake_param(k, fl)};
}
GanTerm g_term(const at::Tensor& x, losses::Kind k, double rl) {
  return {losses::g_term(k), x, losses::real_param(k, rl)};
}

// (grad, real, fake) -> (dloss/dreal, dloss/dfake)
struct GanDBackward : public torch::autograd::Function<GanDBackward> {
  static variable_list forward(AutogradContext* ctx, const at::Tensor& grad, const at::Tensor& real,
                               const at::Tensor& fake, double rl, double fl, int64_t kind) {
    at::AutoDispatchBelowADInplaceOrView guard;
    auto [gr, gf] = gan_d_backward_op(grad, real, fake, rl, fl, kind);
    ctx->save_for_backward({grad, real, fake});
    ctx->saved_data["rl"] = rl;
    ctx->saved_data["fl"] = fl;
    ctx->saved_data["kind"] = kind;
    return {gr, gf};
  }

  static variable_list backward(AutogradContext* ctx, variable_list ggs) {
    const auto saved = ctx->get_saved_variables();
    const at::Tensor& grad = saved[0];
    const auto kind = losses::Kind(ctx->saved_data["kind"].toInt());
    const GanTerm terms[2] = {d_real_term(saved[1], kind, ctx->saved_data["rl"].toDouble()),
                              d_fake_term(saved[2], kind, ctx->saved_data["fl"].toDouble())};
    at::Tensor out[3];
    for (int k = 0; k < 2; ++k) {
      if (!ggs[k].defined()) continue;
      if (ctx->needs_input_grad(0)) {
        const at::Tensor d = grad_of_grad(ggs[k], terms[k].dloss(), grad, kMean, terms[k].x);
        out[0] = out[0].defined() ? out[0] + d : d;
      }
      if (ctx->needs_input_grad(1 + k)) {
        out[1 + k] = terms[k].times_d2loss(ggs[k] * mean_scaled(grad, kMean, terms[k].x));
      }
    }
    return {out[0], out[1], out[2], at::Tensor(), at::Tensor(), at::Tensor()};
  }
};

struct GanD : public torch::autograd::Function<GanD> {
  static at::Tensor forward(AutogradContext* ctx, const at::Tensor& real, const at::Tensor& fake, double rl, double fl,
                            int64_t kind) {
    at::AutoDispatchBelowADInplaceOrView guard;
    at::Tensor out = gan_d_op(real, fake, rl, fl, kind);
    ctx->save_for_backward({real, fake});
    ctx->saved_data["rl"] = rl;
    ctx->saved_data["fl"] = fl;
    ctx->saved_data["kind"] = kind;
    return out;
  }

  static variable_list backward(AutogradContext* ctx, variable_list grads) {
    const auto saved = ctx->get_saved_variables();
    auto g = GanDBackward::apply(grads[0], saved[0], saved[1], ctx->saved_data["rl"].toDouble(),
                                 ctx->saved_data["fl"].toDouble(), ctx->saved_data["kind"].toInt());
    return {ctx->needs_input_grad(0) ? g[0] : at::Tensor(), ctx->needs_input_grad(1) ? g[1] : at::Tensor(),
            at::Tensor(), at::Tensor(), at::Tensor()};
  }
};

// (grad, fake) -> dloss/dfake
struct GanGBackward : public torch::autograd::Function<GanGBackward> {
  static at::Tensor forward(AutogradContext* ctx, const at::Tensor& grad, const at::Tensor& fake, double rl,
                            int64_t kind) {
    at::AutoDispatchBelowADInplaceOrView guard;
    at::Tensor gf = gan_g_backward_op(grad, fake, rl, kind);
    ctx->save_for_backward({grad, fake});
    ctx->saved_data["rl"] = rl;
    ctx->saved_data["kind"] = kind;
    return gf;
  }

  static variable_list backward(AutogradContext* ctx, variable_list ggs) {
    const auto saved = ctx->get_saved_variables();
    const at::Tensor& grad = saved[0];
    const GanTerm term =
        g_term(saved[1], losses::Kind(ctx->saved_data["kind"].toInt()), ctx->saved_data["rl"].toDouble());
    at::Tensor d_grad, d_x;
    if (ggs[0].defined()) {
      if (ctx->needs_input_grad(0)) d_grad = grad_of_grad(ggs[0], term.dloss(), grad, kMean, term.x);
      if (ctx->needs_input_grad(1)) d_x = term.times_d2loss(ggs[0] * mean_scaled(grad, kMean, term.x));
    }
    return {d_grad, d_x, at::Tensor(), at::Tensor()};
  }
};

struct GanG : public torch::autograd::Function<GanG> {
  static at::Tensor forward(AutogradContext* ctx, const at::Tensor& fake, double rl, int64_t kind) {
    at::AutoDispatchBelowADInplaceOrView guard;
    at::Tensor out = gan_g_op(fake, rl, kind);
    ctx->save_for_backward({fake});
    ctx->saved_data["rl"] = rl;
    ctx->saved_data["kind"] = kind;
    return out;
  }

  static variable_list backward(AutogradContext* ctx, variable_list grads) {
    return {GanGBackward::apply(grads[0], ctx->get_saved_variables()[0], ctx->saved_data["rl"].toDouble(),
                                ctx->saved_data["kind"].toInt()),
            at::Tensor(), at::Tensor()};
  }
};

at::Tensor bce_with_logits_autograd(const at::Tensor& x, const OptTensor& t, double tv, const OptTensor& w,
                                    const OptTensor& pw, c10::string_view reduction) {
  check_not_differentiable(w, "weight");
  check_not_differentiable(pw, "pos_weight");
  return Bce::apply(x, t, tv, w, pw, std::string(reduction.data(), reduction.size()));
}

at::Tensor bce_with_logits_backward_autograd(const at::Tensor& g, const at::Tensor& x, const OptTensor& t, double tv,
                                             const OptTensor& w, const OptTensor& pw, c10::string_view reduction) {
  check_not_differentiable(w, "weight");
  check_not_differentiable(pw, "pos_weight");
  return BceBackward::apply(g, x, t, tv, w, pw, std::string(reduction.data(), reduction.size()));
}

at::Tensor gan_d_loss_autograd(const at::Tensor& real, const at::Tensor& fake, double rl, double fl, int64_t kind) {
  return GanD::apply(real, fake, rl, fl, kind);
}

std::tuple<at::Tensor, at::Tensor> gan_d_loss_backward_autograd(const at::Tensor& g, const at::Tensor& real,
                                                                const at::Tensor& fake, double rl, double fl,
                                                                int64_t kind) {
  auto out = GanDBackward::apply(g, real, fake, rl, fl, kind);
  return {out[0], out[1]};
}

at::Tensor gan_g_loss_autograd(const at::Tensor& fake, double rl, int64_t kind) {
  return GanG::apply(fake, rl, kind);
}

at::Tensor gan_g_loss_backward_autograd(const at::Tensor& g, const at::Tensor& fake, double rl, int64_t kind) {
  return GanGBackward::apply(g, fake, rl, kind);
}

}  // namespace

TORCH_LIBRARY_IMPL(fastgan, Autograd, m) {
  m.impl("bce_with_logits", &bce_with_logits_autograd);
  m.impl("bce_with_logits_backward", &bce_with_logits_backward_autograd);
  m.impl("gan_d_loss", &gan_d_loss_autograd);
  m.impl("gan_d_loss_backward", &gan_d_loss_backward_autograd);
  m.impl("gan_g_loss", &gan_g_loss_autograd);
  m.impl("gan_g_loss_backward", &gan_g_loss_backward_autograd);
}

}  // namespace fastgan
