// adam_ on CUDA: every element of every parameter in one launch (up to kMaxTensors tensors
// a launch), a thread per element. torch's fused Adam gives each 65536-element chunk one
// block, so an MLP GAN's 1.5M parameters keep only ~25 of 132 multiprocessors busy; here the
// whole GPU works on them. The step count is read on the device (CUDA-graph capturable).
// Math: csrc/adam.h.
#include <ATen/Dispatch.h>
#include <torch/library.h>

#include "adam.h"
#include "cuda/launch.cuh"

namespace fastgan {
namespace {

constexpr int kMaxTensors = 24;
constexpr int kThreads = 256;

template <typename T>
struct AdamList {
  T* p[kMaxTensors];
  const T* g[kMaxTensors];
  T* m[kMaxTensors];
  T* v[kMaxTensors];
  int64_t end[kMaxTensors];  // cumulative element counts
  int n;
};

template <typename T>
__global__ void adam_kernel(AdamList<T> L, const float* __restrict__ step, T lr, T beta1, T beta2, T eps,
                            T weight_decay) {
  const T s = T(*step);
  const T step_size = lr / (T(1) - pow(beta1, s));
  const T bc2_sqrt = adam::root(T(1) - pow(beta2, s));
  const bool decay = weight_decay != T(0);
  const int64_t total = L.end[L.n - 1];
  for (int64_t i = int64_t(blockIdx.x) * blockDim.x + threadIdx.x; i < total; i += int64_t(gridDim.x) * blockDim.x) {
    int t = 0;
    while (i >= L.end[t]) ++t;
    const int64_t j = i - (t ? L.end[t - 1] : 0);
    T p = L.p[t][j], m = L.m[t][j], v = L.v[t][j];
    adam::update<T>(p, L.g[t][j], m, v, beta1, beta2, step_size, bc2_sqrt, eps, weight_decay, decay);
    L.p[t][j] = p;
    L.m[t][j] = m;
    L.v[t][j] = v;
  }
}

void adam_cuda(at::TensorList params, at::TensorList grads, at::TensorList exp_avgs, at::TensorList exp_avg_sqs,
               const at::Tensor& step, double lr, double beta1, double beta2, double eps, double weight_decay) {
  check_adam_args(params, grads, exp_avgs, exp_avg_sqs, step, lr, beta1, beta2, eps, weight_decay);
  if (params.empty()) return;
  TORCH_CHECK_VALUE(step.device() == params[0].device() && step.scalar_type() == at::kFloat,
                    "adam_: step must be a float32 tensor on the parameters' device ", params[0].device(), ", got ",
                    step.scalar_type(), " on ", step.device());
  const c10::cuda::CUDAGuard guard(params[0].device());
  const auto stream = c10::cuda::getCurrentCUDAStream();
  AT_DISPATCH_FLOATING_TYPES(params[0].scalar_type(), "adam_cuda", [&] {
    // up to kMaxTensors non-empty parameters per launch; i walks the list once (a launch's window
    // may be longer than kMaxTensors when it skips empty parameters)
    for (size_t i = 0; i < params.size();) {
      AdamList<scalar_t> L{};
      int64_t total = 0;
      L.n = 0;
      for (; i < params.size() && L.n < kMaxTensors; ++i) {
        if (params[i].numel() == 0) continue;
        L.p[L.n] = params[i].mutable_data_ptr<scalar_t>();
        L.g[L.n] = grads[i].const_data_ptr<scalar_t>();
        L.m[L.n] = exp_avgs[i].mutable_data_ptr<scalar_t>();
        L.v[L.n] = exp_avg_sqs[i].mutable_data_ptr<scalar_t>();
        total += params[i].numel();
        L.end[L.n++] = total;
      }
      if (L.n == 0) continue;
      adam_kernel<scalar_t><<<cuda::grid_for(total, kThreads), kThreads, 0, stream>>>(
          L, step.const_data_ptr<float>(), scalar_t(lr), scalar_t(beta1), scalar_t(beta2), scalar_t(eps),
          scalar_t(weight_decay));
      C10_CUDA_KERNEL_LAUNCH_CHECK();
    }
  });
}

}  // namespace

TORCH_LIBRARY_IMPL(fastgan, CUDA, m) {
  m.impl("adam_", &adam_cuda);
}

}  // namespace fastgan
