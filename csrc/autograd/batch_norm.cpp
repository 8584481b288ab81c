// Autograd for batch_norm, in C++ (for the same reason as bias_leaky_relu's: no Python frame
// or Python autograd node per call at GAN sizes).
//
// First order: the backward is the op fastgan::batch_norm_backward (two fused passes that
// recompute the LeakyReLU's mask from x and the saved statistics; nothing but x, weight, bias
// and the two (C,) statistics is saved).
//
// Double backward: batch_norm_backward's own backward differentiates a reference expression of
// the first-order gradients, written in ATen ops, with torch::autograd::grad inside the
// backward (create_graph when the caller asked for it, so it is differentiable again). Why not
// a closed form: batch norm's second derivative (torch's batchnorm_double_backward) is some 80
// lines of per-term algebra before the LeakyReLU's mask, and second order is rare in GAN
// training (gradient penalties) and not on the hot path. The expression is exact: the mask is
// piecewise constant, and invstd is rebuilt from x so that its value is the saved one and its
// derivatives are those of rsqrt(var(x) + eps) (see reference_backward).
#include <ATen/TensorOperators.h>
#include <ATen/core/dispatch/Dispatcher.h>
#include <ATen/ops/rsqrt.h>
#include <ATen/ops/where.h>
#include <torch/autograd.h>
#include <torch/library.h>

#include <array>

namespace fastgan {
namespace {

using torch::autograd::AutogradContext;
using torch::autograd::variable_list;

using ForwardOut = std::tuple<at::Tensor, at::Tensor, at::Tensor>;

ForwardOut forward_op(const at::Tensor& x, const std::optional<at::Tensor>& weight,
                      const std::optional<at::Tensor>& bias, const std::optional<at::Tensor>& running_mean,
                      const std::optional<at::Tensor>& running_var, bool training, double momentum, double eps,
                      std::optional<double> slope, const std::optional<at::Tensor>& num_batches_tracked) {
  static auto op =
      c10::Dispatcher::singleton()
          .findSchemaOrThrow("fastgan::batch_norm", "")
          .typed<ForwardOut(const at::Tensor&, const std::optional<at::Tensor>&, const std::optional<at::Tensor>&,
                            const std::optional<at::Tensor>&, const std::optional<at::Tensor>&, bool, double, double,
                            std::optional<double>, const std::optional<at::Tensor>&)>();
  return op.call(x, weight, bias, running_mean, running_var, training, momentum, eps, slope, num_batches_tracked);
}

ForwardOut backward_op(const at::Tensor& grad, const at::Tensor& x, const std::optional<at::Tensor>& weight,
                       const std::optional<at::Tensor>& bias, const at::Tensor& mean, const at::Tensor& invstd,
                       bool training, std::optional<double> slope, std::array<bool, 3> mask) {
  static auto op = c10::Dispatcher::singleton()
                       .findSchemaOrThrow("fastgan::batch_norm_backward", "")
                       .typed<ForwardOut(const at::Tensor&, const at::Tensor&, const std::optional<at::Tensor>&,
                                         const std::optional<at::Tensor>&, const at::Tensor&, const at::Tensor&, bool,
                                         std::optional<double>, std::array<bool, 3>)>();
  return op.call(grad, x, weight, bias, mean, invstd, training, slope, mask);
}

std::optional<at::Tensor> opt(const at::Tensor& t) {
  return t.defined() ? std::optional<at::Tensor>(t) : std::nullopt;
}

// An optional that holds an undefined tensor is absent.
std::optional<at::Tensor> opt_defined(const std::optional<at::Tensor>& t) {
  return t.has_value() && t->defined() ? t : std::nullopt;
}

void save_slope(AutogradContext* ctx, std::optional<double> slope) {
  ctx->saved_data["has_slope"] = slope.has_value();
  ctx->saved_data["slope"] = slope.value_or(1.0);
}

std::optional<double> load_slope(AutogradContext* ctx) {
  if (!ctx->saved_data["has_slope"].toBool()) return std::nullopt;
  return ctx->saved_data["slope"].toDouble();
}

// The first-order gradients (dx, dweight, dbias) as a differentiable ATen expression of
// (grad, x, weight, bias), in the statistics' dtype.
std::array<at::Tensor, 3> reference_backward(const at::Tensor& grad, const at::Tensor& x, const at::Tensor& weight,
                                             const at::Tensor& bias, const at::Tensor& save_mean,
                                             const at::Tensor& save_invstd, bool training,
                                             std::optional<double> slope) {
  const auto acc = save_mean.scalar_type();
  std::vector<int64_t> shape(x.dim(), 1), dims;
  shape[1] = -1;
  for (int64_t d = 0; d < x.dim(); ++d) {
    if (d != 1) dims.push_back(d);
  }
  const double m = x.size(1) ? double(x.numel() / x.size(1)) : 0.0;  // (C = 0: an empty eval batch)
  const at::Tensor xa = x.to(acc), ga = grad.to(acc);
  const at::Tensor w = weight.defined() ? weight.to(acc).view(shape) : at::Tensor();
  const at::Tensor b = bias.defined() ? bias.to(acc).view(shape) : at::Tensor();
  at::Tensor mean, invstd;
  if (training) {
    mean = xa.mean(dims, true);
    const at::Tensor var = (xa - mean).pow(2).mean(dims, true);
    // value: the saved invstd; derivatives: those of rsqrt(var + eps), as var + eps = invstd^-2
    invstd = at::rsqrt(var - var.detach() + save_invstd.view(shape).pow(-2));
  } else {
    mean = save_mean.view(shape);
    invstd = save_invstd.view(shape);
  }
  const at::Tensor xhat = (xa - mean) * invstd;
  at::Tensor dz = ga;
  if (slope.has_value()) {
    at::Tensor gain;
    {
      at::NoGradGuard no_grad;
      at::Tensor z = w.defined() ? xhat * w : xhat;
      if (b.defined()) z = z + b;
      // (two scalars would make a default-dtype (float32) tensor: 0.2f, not 0.2, in float64)
      gain = at::where(z > 0, at::scalar_tensor(1.0, z.options()), at::scalar_tensor(*slope, z.options()));
    }
    dz = ga * gain;
  }
  const at::Tensor db = dz.sum(dims, true), dw = (dz * xhat).sum(dims, true);
  const at::Tensor k = w.defined() ? w * invstd : invstd;
  const at::Tensor dx = training ? k * (dz - db / m - xhat * (dw / m)) : k * dz;
  return {dx, dw.view({-1}), db.view({-1})};
}

// (grad, x, weight, bias, save_mean, save_invstd) -> (grad_x, grad_weight, grad_bias)
struct BatchNormBackward : public torch::autograd::Function<BatchNormBackward> {
  static variable_list forward(AutogradContext* ctx, const at::Tensor& grad, const at::Tensor& x,
                               const std::optional<at::Tensor>& weight, const std::optional<at::Tensor>& bias,
                               const at::Tensor& save_mean, const at::Tensor& save_invstd, bool training,
                               std::optional<double> slope, std::array<bool, 3> mask) {
    at::AutoDispatchBelowADInplaceOrView guard;
    auto [dx, dw, db] = backward_op(grad, x, weight, bias, save_mean, save_invstd, training, slope, mask);
    ctx->save_for_backward(
        {grad, x, weight.value_or(at::Tensor()), bias.value_or(at::Tensor()), save_mean, save_invstd});
    ctx->saved_data["training"] = training;
    save_slope(ctx, slope);
    for (int i = 0; i < 3; ++i) ctx->saved_data["mask" + std::to_string(i)] = mask[i];
    ctx->set_materialize_grads(false);  // backward skips the outputs without a gradient
    return {dx, dw, db};
  }

  static variable_list backward(AutogradContext* ctx, variable_list gg) {
    const auto saved = ctx->get_saved_variables();
    // needs_input_grad counts the tensors given (an absent weight or bias is no input);
    // the returned list has one entry per argument
    //
    // The expression is built on aliases of the inputs, not on the inputs themselves: an input
    // may depend on another (the incoming grad on x, when the loss is a nonlinear function of
    // this batch norm's output), and autograd::grad over the inputs would then also follow
    // grad's own graph back to x, counting that path here and again in the outer backward.
    // An alias is where the inner backward stops; its identity node keeps the result
    // connected to the inputs for the next order.
    const bool create_graph = at::GradMode::is_enabled();
    at::AutoGradMode enable_grad(true);
    std::vector<at::Tensor> inputs;
    std::vector<int> which;
    std::array<at::Tensor, 4> args = {saved[0], saved[1], saved[2], saved[3]};
    for (int i = 0, edge = 0; i < 4; ++i) {
      if (!saved[i].defined()) continue;
      if (ctx->needs_input_grad(edge++)) {
        args[i] = saved[i].alias();
        inputs.push_back(args[i]);
        which.push_back(i);
      }
    }
    variable_list out(9);
    if (inputs.empty()) return out;
    const auto ref = reference_backward(args[0], args[1], args[2], args[3], saved[4], saved[5],
                                        ctx->saved_data["training"].toBool(), load_slope(ctx));
    // the vector-Jacobian product with gg as grad_outputs (not folded into a scalar: gg may
    // depend on this very node's output, and the inner backward must not run it again)
    std::vector<at::Tensor> outputs, grad_outputs;
    for (int i = 0; i < 3; ++i) {
      if (!ctx->saved_data["mask" + std::to_string(i)].toBool() || !gg[i].defined()) continue;
      if (!ref[i].requires_grad()) continue;
      outputs.push_back(ref[i]);
      grad_outputs.push_back(gg[i].to(ref[i].scalar_type()));
    }
    if (outputs.empty()) return out;
    const auto grads = torch::autograd::grad(outputs, inputs, grad_outputs, /*retain_graph=*/true, create_graph,
                                             /*allow_unused=*/true);
    for (size_t j = 0; j < which.size(); ++j) out[which[j]] = grads[j];
    return out;
  }
};

struct BatchNorm : public torch::autograd::Function<BatchNorm> {
  static variable_list forward(AutogradContext* ctx, const at::Tensor& x, const std::optional<at::Tensor>& weight,
                               const std::optional<at::Tensor>& bias, const std::optional<at::Tensor>& running_mean,
                               const std::optional<at::Tensor>& running_var, bool training, double momentum, double eps,
                               std::optional<double> slope, const std::optional<at::Tensor>& num_batches_tracked) {
    at::AutoDispatchBelowADInplaceOrView guard;
    auto [y, mean, invstd] =
        forward_op(x, weight, bias, running_mean, running_var, training, momentum, eps, slope, num_batches_tracked);
    if (training) {  // the op wrote the running stats: tell autograd, as torch's batch norm does
      for (const auto* t : {&running_mean, &running_var, &num_batches_tracked}) {
        if (t->has_value() && (*t)->defined() && !(*t)->is_inference()) torch::autograd::impl::bump_version(**t);
      }
    }
    ctx->save_for_backward({x, weight.value_or(at::Tensor()), bias.value_or(at::Tensor()), mean, invstd});
    ctx->mark_non_differentiable({mean, invstd});
    // mean and invstd never get a gradient: without this autograd would fill a zero tensor for
    // each of them on every backward (two memset kernels per batch norm per step)
    ctx->set_materialize_grads(false);
    ctx->saved_data["training"] = training;
    save_slope(ctx, slope);
    return {y, mean, invstd};
  }

  static variable_list backward(AutogradContext* ctx, variable_list grads) {
    const auto saved = ctx->get_saved_variables();
    // needs_input_grad counts the tensors given: an absent weight shifts bias's index
    const bool has_w = saved[1].defined(), has_b = saved[2].defined();
    const std::array<bool, 3> mask = {ctx->needs_input_grad(0), has_w && ctx->needs_input_grad(1),
                                      has_b && ctx->needs_input_grad(has_w ? 2 : 1)};
    variable_list out(10);  // one per forward argument
    if (!grads[0].defined() || !(mask[0] || mask[1] || mask[2])) return out;
    auto r = BatchNormBackward::apply(grads[0], saved[0], opt(saved[1]), opt(saved[2]), saved[3], saved[4],
                                      ctx->saved_data["training"].toBool(), load_slope(ctx), mask);
    for (int i = 0; i < 3; ++i) {
      if (mask[i]) out[i] = r[i];
    }
    return out;
  }
};

ForwardOut batch_norm_autograd(const at::Tensor& x, const std::optional<at::Tensor>& weight,
                               const std::optional<at::Tensor>& bias, const std::optional<at::Tensor>& running_mean,
                               const std::optional<at::Tensor>& running_var, bool training, double momentum, double eps,
                               std::optional<double> slope, const std::optional<at::Tensor>& num_batches_tracked) {
  auto out = BatchNorm::apply(x, opt_defined(weight), opt_defined(bias), running_mean, running_var, training, momentum,
                              eps, slope, num_batches_tracked);
  return {out[0], out[1], out[2]};
}

ForwardOut batch_norm_backward_autograd(const at::Tensor& grad, const at::Tensor& x,
                                        const std::optional<at::Tensor>& weight, const std::optional<at::Tensor>& bias,
                                        const at::Tensor& save_mean, const at::Tensor& save_invstd, bool training,
                                        std::optional<double> slope, std::array<bool, 3> mask) {
  auto out = BatchNormBackward::apply(grad, x, opt_defined(weight), opt_defined(bias), save_mean, save_invstd, training,
                                      slope, mask);
  return {out[0], out[1], out[2]};
}

}  // namespace

TORCH_LIBRARY_IMPL(fastgan, Autograd, m) {
  m.impl("batch_norm", &batch_norm_autograd);
  m.impl("batch_norm_backward", &batch_norm_backward_autograd);
}

}  // namespace fastgan
