// adam_ on the CPU: each parameter's elements in parallel chunks, at::vec vectors with a scalar
// tail (one pass over param, grad and both moments, like the CUDA kernel). Math: csrc/adam.h.
#include <ATen/Dispatch.h>
#include <ATen/Parallel.h>
#include <torch/library.h>

#include <cmath>

#include "adam.h"
#include "cpu/vec_io.h"

namespace fastgan {
namespace {

void adam_cpu(at::TensorList params, at::TensorList grads, at::TensorList exp_avgs, at::TensorList exp_avg_sqs,
              const at::Tensor& step, double lr, double beta1, double beta2, double eps, double weight_decay) {
  check_adam_args(params, grads, exp_avgs, exp_avg_sqs, step, lr, beta1, beta2, eps, weight_decay);
  if (params.empty()) return;
  const double s = step.item<double>();
  TORCH_CHECK_VALUE(s >= 1, "adam_: step must be >= 1 (it counts this step), got ", s);
  const double step_size = lr / (1 - std::pow(beta1, s)), bc2_sqrt = std::sqrt(1 - std::pow(beta2, s));
  const bool decay = weight_decay != 0;
  for (size_t i = 0; i < params.size(); ++i) {
    AT_DISPATCH_FLOATING_TYPES(params[i].scalar_type(), "adam_cpu", [&] {
      using Vec = cpu::Vectorized<scalar_t>;
      const scalar_t b1 = beta1, b2 = beta2, ss = step_size, bc = bc2_sqrt, ep = eps, wd = weight_decay;
      const Vec vb1(b1), vb2(b2), vss(ss), vbc(bc), vep(ep), vwd(wd);
      scalar_t* p = params[i].mutable_data_ptr<scalar_t>();
      const scalar_t* g = grads[i].const_data_ptr<scalar_t>();
      scalar_t* m = exp_avgs[i].mutable_data_ptr<scalar_t>();
      scalar_t* v = exp_avg_sqs[i].mutable_data_ptr<scalar_t>();
      // parallel over whole vectors, the scalar tail after them: each element is computed the same
      // way (vector or scalar code, which may round differently) whatever the thread count
      const int64_t n = params[i].numel(), W = Vec::size(), nvec = n / W;
      at::parallel_for(0, nvec, 16384 / W, [&](int64_t b, int64_t e) {
        for (int64_t j = b * W; j < e * W; j += W) {
          Vec pj = Vec::loadu(p + j), mj = Vec::loadu(m + j), vj = Vec::loadu(v + j);
          adam::update<Vec>(pj, Vec::loadu(g + j), mj, vj, vb1, vb2, vss, vbc, vep, vwd, decay);
          pj.store(p + j);
          mj.store(m + j);
          vj.store(v + j);
        }
      });
      for (int64_t j = nvec * W; j < n; ++j)
        adam::update<scalar_t>(p[j], g[j], m[j], v[j], b1, b2, ss, bc, ep, wd, decay);
    });
  }
}

}  // namespace

TORCH_LIBRARY_IMPL(fastgan, CPU, m) {
  m.impl("adam_", &adam_cpu);
}

}  // namespace fastgan
