// adam_ on the CPU: each parameter's elements in parallel chunks. Math: csrc/adam.h.
#include <ATen/Dispatch.h>
#include <ATen/Parallel.h>
#include <torch/library.h>

#include <cmath>

#include "adam.h"

namespace fastgan {
namespace {

void adam_cpu(at::TensorList params, at::TensorList grads, at::TensorList exp_avgs, at::TensorList exp_avg_sqs,
              const at::Tensor& step, double lr, double beta1, double beta2, double eps, double weight_decay) {
  check_adam_args(params, grads, exp_avgs, exp_avg_sqs, step, lr, beta1, beta2, eps, weight_decay);
  if (params.empty()) return;
  const double s = step.item<double>();
  TORCH_CHECK_VALUE(s >= 1, "adam_: step must be >= 1 (it counts this step), got ", s);
  const double step_size = lr / (1 - std::pow(beta1, s)), bc2_sqrt = std::sqrt(1 - std::pow(beta2, s));
  for (size_t i = 0; i < params.size(); ++i) {
    AT_DISPATCH_FLOATING_TYPES(params[i].scalar_type(), "adam_cpu", [&] {
      scalar_t* p = params[i].mutable_data_ptr<scalar_t>();
      const scalar_t* g = grads[i].const_data_ptr<scalar_t>();
      scalar_t* m = exp_avgs[i].mutable_data_ptr<scalar_t>();
      scalar_t* v = exp_avg_sqs[i].mutable_data_ptr<scalar_t>();
      at::parallel_for(0, params[i].numel(), 16384, [&](int64_t b, int64_t e) {
        for (int64_t j = b; j < e; ++j) {
          adam::update<scalar_t>(p[j], g[j], m[j], v[j], beta1, beta2, step_size, bc2_sqrt, eps, weight_decay);
        }
      });
    });
  }
}

}  // namespace

TORCH_LIBRARY_IMPL(fastgan, CPU, m) { m.impl("adam_", &adam_cpu); }

}  // namespace fastgan
