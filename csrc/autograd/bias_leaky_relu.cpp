// Autograd for bias_leaky_relu, in C++.
//
// Why C++ and not torch.library.register_autograd: at GAN sizes the op is bound by per-call
// host overhead, not bytes. A Python autograd formula adds a Python frame and a Python
// autograd.Function node to every call (forward and backward); a C++ autograd kernel keeps
// the whole call in the dispatcher. benchmarks/test_dispatch.py measures the two.
//
// Double backward: grad_x = grad * gain(y) is linear in grad and piecewise constant in y, so
// the backward of the backward is the same backward again (StyleGAN2's bias_act does this),
// and it is differentiable to any order.
#include <ATen/TensorOperators.h>
#include <ATen/core/dispatch/Dispatcher.h>
#include <torch/autograd.h>
#include <torch/library.h>

namespace fastgan {
namespace {

using torch::autograd::AutogradContext;
using torch::autograd::variable_list;

at::Tensor forward_op(const at::Tensor& x, const std::optional<at::Tensor>& bias, double slope, double scale) {
  static auto op = c10::Dispatcher::singleton()
                       .findSchemaOrThrow("fastgan::bias_leaky_relu", "")
                       .typed<at::Tensor(const at::Tensor&, const std::optional<at::Tensor>&, double, double)>();
  return op.call(x, bias, slope, scale);
}

using BiasDtype = std::optional<at::ScalarType>;  // the bias gradient's dtype; none: no bias gradient

std::tuple<at::Tensor, at::Tensor> backward_op(const at::Tensor& grad, const at::Tensor& y, double slope, double scale,
                                               BiasDtype bias_dtype) {
  static auto op =
      c10::Dispatcher::singleton()
          .findSchemaOrThrow("fastgan::bias_leaky_relu_backward", "")
          .typed<std::tuple<at::Tensor, at::Tensor>(const at::Tensor&, const at::Tensor&, double, double, BiasDtype)>();
  return op.call(grad, y, slope, scale, bias_dtype);
}

// (grad, y) -> (grad_x, grad_bias)
struct BiasLeakyReluBackward : public torch::autograd::Function<BiasLeakyReluBackward> {
  static variable_list forward(AutogradContext* ctx, const at::Tensor& grad, const at::Tensor& y, double slope,
                               double scale, BiasDtype bias_dtype) {
    at::AutoDispatchBelowADInplaceOrView guard;
    auto [gx, gb] = backward_op(grad, y, slope, scale, bias_dtype);
    ctx->save_for_backward({y});
    ctx->saved_data["slope"] = slope;
    ctx->saved_data["scale"] = scale;
    return {gx, gb};
  }

  static variable_list backward(AutogradContext* ctx, variable_list gg) {
    const at::Tensor y = ctx->get_saved_variables()[0];
    // grad_x and grad_bias both read grad through gain(y): fold grad_bias's incoming
    // gradient (float32 for a float32 bias of half y) into grad_x's (broadcast along dim 1)
    // and apply gain once.
    at::Tensor g = gg[0];
    if (gg[1].defined() && gg[1].numel() > 0) {
      std::vector<int64_t> shape(y.dim(), 1);
      shape[1] = -1;
      const at::Tensor gb = gg[1].to(y.scalar_type()).view(shape);
      g = g.defined() ? g + gb : gb.expand(y.sizes());
    }
    at::Tensor ggrad;
    if (g.defined()) {
      ggrad = BiasLeakyReluBackward::apply(g, y, ctx->saved_data["slope"].toDouble(),
                                           ctx->saved_data["scale"].toDouble(), BiasDtype())[0];
    }
    return {ggrad, at::Tensor(), at::Tensor(), at::Tensor(), at::Tensor()};
  }
};

struct BiasLeakyRelu : public torch::autograd::Function<BiasLeakyRelu> {
  static at::Tensor forward(AutogradContext* ctx, const at::Tensor& x, const std::optional<at::Tensor>& bias,
                            double slope, double scale) {
    at::AutoDispatchBelowADInplaceOrView guard;
    at::Tensor y = forward_op(x, bias, slope, scale);
    ctx->save_for_backward({y});
    ctx->saved_data["slope"] = slope;
    ctx->saved_data["scale"] = scale;
    // the bias's dtype, for its gradient (-1: no bias)
    ctx->saved_data["bias_dtype"] =
        bias.has_value() && bias->defined() ? static_cast<int64_t>(bias->scalar_type()) : int64_t(-1);
    return y;
  }

  static variable_list backward(AutogradContext* ctx, variable_list grads) {
    const at::Tensor y = ctx->get_saved_variables()[0];
    const int64_t saved = ctx->saved_data["bias_dtype"].toInt();
    const bool bias_grad = saved >= 0 && ctx->needs_input_grad(1);
    const BiasDtype bias_dtype = bias_grad ? BiasDtype(static_cast<at::ScalarType>(saved)) : BiasDtype();
    const double slope = ctx->saved_data["slope"].toDouble(), scale = ctx->saved_data["scale"].toDouble();
    if (!grads[0].defined()) return {at::Tensor(), at::Tensor(), at::Tensor(), at::Tensor()};
    if (!at::GradMode::is_enabled()) {  // plain backward (no create_graph): skip the autograd node
      at::AutoDispatchBelowADInplaceOrView guard;
      auto [gx, gb] = backward_op(grads[0], y, slope, scale, bias_dtype);
      return {gx, bias_grad ? gb : at::Tensor(), at::Tensor(), at::Tensor()};
    }
    auto out = BiasLeakyReluBackward::apply(grads[0], y, slope, scale, bias_dtype);
    return {out[0], bias_grad ? out[1] : at::Tensor(), at::Tensor(), at::Tensor()};
  }
};

at::Tensor bias_leaky_relu_autograd(const at::Tensor& x, const std::optional<at::Tensor>& bias, double slope,
                                    double scale) {
  return BiasLeakyRelu::apply(x, bias, slope, scale);
}

std::tuple<at::Tensor, at::Tensor> bias_leaky_relu_backward_autograd(const at::Tensor& grad, const at::Tensor& y,
                                                                     double slope, double scale, BiasDtype bias_dtype) {
  auto out = BiasLeakyReluBackward::apply(grad, y, slope, scale, bias_dtype);
  return {out[0], out[1]};
}

}  // namespace

TORCH_LIBRARY_IMPL(fastgan, Autograd, m) {
  m.impl("bias_leaky_relu", &bias_leaky_relu_autograd);
  m.impl("bias_leaky_relu_backward", &bias_leaky_relu_backward_autograd);
}

}  // namespace fastgan
