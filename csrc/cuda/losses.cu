// BCE with logits and the GAN losses on CUDA. Math: csrc/losses.h.
//
// Forward, reduced (mean/sum, gan_d_loss, gan_g_loss): ONE launch. Each block sums its
// grid-stride share of one or two segments (gan_d_loss: real, then fake) and reduces over the
// block; with one block (every GAN batch up to 4096 logits) thread 0 writes the loss. With
// more blocks each writes its two partial sums, and the last block to finish (a counter
// bumped after a __threadfence) adds all partials in block order and writes the loss. The
// tree is fixed by the launch shape, which depends only on the sizes and the GPU: the same
// input gives the same bits every run. No float atomics.
// Forward 'none' and every backward: one elementwise launch over both segments, 16-byte
// accesses where every pointer allows. A scalar incoming gradient is read on the device (no
// host sync).
// The kernels take the term (losses::Term: a GAN loss kind's) as a template argument;
// bce_with_logits is Term::Bce.
#include <ATen/Dispatch.h>
#include <ATen/ops/empty.h>
#include <torch/library.h>

#include <algorithm>

#include "cuda/launch.cuh"
#include "losses.h"

namespace fastgan {
namespace {

using cuda::AlignedVec;
using losses::Reduction;
using losses::Segment;
using losses::Term;
constexpr int kThreads = 256;
constexpr int kItemsPerThread = 16;  // below this many elements per thread, fewer blocks

// VEC elements of p from element i (a multiple of VEC; p 16-byte aligned when VEC > 1), as
// acc; the number v where p is null.
template <typename scalar_t, int VEC, typename index_t>
__device__ __forceinline__ void load_or(const scalar_t* p, index_t i, acc_t<scalar_t> v, acc_t<scalar_t> (&out)[VEC]) {
  if (p == nullptr) {
#pragma unroll
    for (int k = 0; k < VEC; ++k) out[k] = v;
    return;
  }
  const AlignedVec<scalar_t, VEC> in = *reinterpret_cast<const AlignedVec<scalar_t, VEC>*>(p + i);
#pragma unroll
  for (int k = 0; k < VEC; ++k) out[k] = acc_t<scalar_t>(in.v[k]);
}

template <typename scalar_t>
__device__ __forceinline__ acc_t<scalar_t> at_or(const scalar_t* p, int64_t i, acc_t<scalar_t> v) {
  return p ? acc_t<scalar_t>(p[i]) : v;
}

// This thread's sum of the weighted losses of s: vectors v = tid, tid + stride, ... then the
// n % VEC tail elements one by one.
template <Term K, typename scalar_t, int VEC, typename index_t>
__device__ __forceinline__ acc_t<scalar_t> segment_sum(const Segment<scalar_t>& s, index_t tid, index_t stride) {
  using acc = acc_t<scalar_t>;
  const index_t n = index_t(s.n), nvec = n / VEC;
  acc sum = acc(0);
  for (index_t v = tid; v < nvec; v += stride) {
    const index_t i = v * VEC;
    acc x[VEC], t[VEC], w[VEC], pw[VEC];
    load_or<scalar_t, VEC>(s.x, i, acc(0), x);
    load_or<scalar_t, VEC>(s.t, i, s.tv, t);
    load_or<scalar_t, VEC>(s.w, i, acc(1), w);
    load_or<scalar_t, VEC>(s.pw, i, acc(1), pw);
#pragma unroll
    for (int k = 0; k < VEC; ++k) sum += losses::term_loss<K>(x[k], t[k], w[k], pw[k]);
  }
  for (index_t i = nvec * VEC + tid; i < n; i += stride) {
    sum += losses::term_loss<K>(acc(s.x[i]), at_or(s.t, i, s.tv), at_or(s.w, i, acc(1)), at_or(s.pw, i, acc(1)));
  }
  return sum;
}

// out = s0.scale * sum(s0) + s1.scale * sum(s1) (s1.n == 0: one segment). With gridDim.x > 1,
// `partial` holds 2 * gridDim.x sums and `counter` a zeroed unsigned.
template <Term K, typename scalar_t, typename out_t, int VEC, typename index_t>
__global__ void __launch_bounds__(kThreads)
    reduce_kernel(Segment<scalar_t> s0, Segment<scalar_t> s1, acc_t<scalar_t>* __restrict__ partial,
                  unsigned* __restrict__ counter, out_t* __restrict__ out) {
  using acc = acc_t<scalar_t>;
  __shared__ acc shared[32];
  __shared__ bool is_last;
  const index_t tid = index_t(blockIdx.x) * blockDim.x + threadIdx.x;
  const index_t stride = index_t(gridDim.x) * blockDim.x;
  acc a0 = segment_sum<K, scalar_t, VEC, index_t>(s0, tid, stride);
  acc a1 = s1.n > 0 ? segment_sum<K, scalar_t, VEC, index_t>(s1, tid, stride) : acc(0);
  a0 = cuda::block_sum(a0, shared);
  a1 = cuda::block_sum(a1, shared);
  if (gridDim.x == 1) {
    if (threadIdx.x == 0) *out = out_t(a0 * s0.scale + a1 * s1.scale);
    return;
  }
  if (threadIdx.x == 0) {
    partial[2 * blockIdx.x] = a0;
    partial[2 * blockIdx.x + 1] = a1;
    __threadfence();  // the partials are visible to every block before the count says so
    is_last = atomicAdd(counter, 1u) == gridDim.x - 1;
  }
  __syncthreads();
  if (!is_last) return;  // uniform over the block
  __threadfence();
  acc b0 = acc(0), b1 = acc(0);
  for (unsigned b = threadIdx.x; b < gridDim.x; b += blockDim.x) {
    b0 += __ldcg(partial + 2 * b);  // from L2: other blocks wrote them
    b1 += __ldcg(partial + 2 * b + 1);
  }
  b0 = cuda::block_sum(b0, shared);
  b1 = cuda::block_sum(b1, shared);
  if (threadIdx.x == 0) *out = out_t(b0 * s0.scale + b1 * s1.scale);
}

// GRAD = false: out = the weighted loss of each element of s.
// GRAD = true: out = G * dloss/dx with G = ge[i] where ge is given, else g.
// vector_at: the VEC elements from i (a multiple of VEC); element_at: element i.
template <Term K, typename scalar_t, bool GRAD, int VEC, typename index_t>
__device__ __forceinline__ void vector_at(const Segment<scalar_t>& s, scalar_t* __restrict__ out,
                                          const scalar_t* __restrict__ ge, acc_t<scalar_t> g, index_t i) {
  using acc = acc_t<scalar_t>;
  using V = AlignedVec<scalar_t, VEC>;
  acc x[VEC], t[VEC], w[VEC], pw[VEC], gv[VEC];
  load_or<scalar_t, VEC>(s.x, i, acc(0), x);
  load_or<scalar_t, VEC>(s.t, i, s.tv, t);
  load_or<scalar_t, VEC>(s.w, i, acc(1), w);
  load_or<scalar_t, VEC>(s.pw, i, acc(1), pw);
  if (GRAD) load_or<scalar_t, VEC>(ge, i, g, gv);
  V o;
#pragma unroll
  for (int k = 0; k < VEC; ++k) {
    o.v[k] = scalar_t(GRAD ? gv[k] * losses::term_grad<K>(x[k], t[k], w[k], pw[k])
                           : losses::term_loss<K>(x[k], t[k], w[k], pw[k]));
  }
  *reinterpret_cast<V*>(out + i) = o;
}

template <Term K, typename scalar_t, bool GRAD, typename index_t>
__device__ __forceinline__ void element_at(const Segment<scalar_t>& s, scalar_t* __restrict__ out,
                                           const scalar_t* __restrict__ ge, acc_t<scalar_t> g, index_t i) {
  using acc = acc_t<scalar_t>;
  const acc x = s.x[i], t = at_or(s.t, i, s.tv), w = at_or(s.w, i, acc(1)), pw = at_or(s.pw, i, acc(1));
  out[i] = scalar_t(GRAD ? at_or(ge, i, g) * losses::term_grad<K>(x, t, w, pw) : losses::term_loss<K>(x, t, w, pw));
}

// Both segments in one launch: a grid-stride loop over their vectors laid end to end, then
// the n % VEC tail elements of each, one per thread. ge: the elementwise incoming gradient
// (reduction 'none', segment 0 only); gs: the scalar one (a reduced loss), times each
// segment's scale.
template <Term K, typename scalar_t, typename grad_t, bool GRAD, int VEC, typename index_t>
__global__ void __launch_bounds__(kThreads)
    elementwise_kernel(Segment<scalar_t> s0, Segment<scalar_t> s1, scalar_t* __restrict__ out0,
                       scalar_t* __restrict__ out1, const scalar_t* __restrict__ ge, const grad_t* __restrict__ gs) {
  using acc = acc_t<scalar_t>;
  const index_t tid = index_t(blockIdx.x) * blockDim.x + threadIdx.x;
  const index_t stride = index_t(gridDim.x) * blockDim.x;
  const acc g = gs ? acc(*gs) : acc(0);
  const acc g0 = g * s0.scale, g1 = g * s1.scale;
  const index_t nv0 = index_t(s0.n) / VEC, nv1 = index_t(s1.n) / VEC;
  for (index_t u = tid; u < nv0 + nv1; u += stride) {
    if (u < nv0)
      vector_at<K, scalar_t, GRAD, VEC, index_t>(s0, out0, ge, g0, u * VEC);
    else
      vector_at<K, scalar_t, GRAD, VEC, index_t>(s1, out1, nullptr, g1, (u - nv0) * VEC);
  }
  const index_t r0 = index_t(s0.n) - nv0 * VEC, r1 = index_t(s1.n) - nv1 * VEC;  // each < VEC
  if (tid < r0)
    element_at<K, scalar_t, GRAD, index_t>(s0, out0, ge, g0, nv0 * VEC + tid);
  else if (tid < r0 + r1)
    element_at<K, scalar_t, GRAD, index_t>(s1, out1, nullptr, g1, nv1 * VEC + (tid - r0));
}

template <typename scalar_t>
Segment<scalar_t> no_segment() {
  return {nullptr, nullptr, nullptr, nullptr, acc_t<scalar_t>(0), acc_t<scalar_t>(0), 0};
}

// 16 bytes per access where every pointer of both segments (and the outputs) is aligned.
template <typename scalar_t>
bool can_vectorize(const Segment<scalar_t>& s0, const Segment<scalar_t>& s1, std::initializer_list<const void*> more) {
  constexpr int W = 16 / int(sizeof(scalar_t));
  for (const Segment<scalar_t>* s : {&s0, &s1}) {
    if (cuda::vec_width<scalar_t>({s->x, s->t, s->w, s->pw}, 0) != W) return false;
  }
  return cuda::vec_width<scalar_t>(more, 0) == W;
}

// 32-bit indices where every index and index + stride fits.
template <typename scalar_t>
bool fits_int32(const Segment<scalar_t>& s0, const Segment<scalar_t>& s1) {
  return s0.n + s1.n <= INT32_MAX / 2;
}

template <typename scalar_t, typename out_t, Term K = Term::Bce>
void launch_reduce(const Segment<scalar_t>& s0, const Segment<scalar_t>& s1, out_t* out,
                   const at::TensorOptions& options) {
  using acc = acc_t<scalar_t>;
  const auto stream = c10::cuda::getCurrentCUDAStream();
  const int64_t total = s0.n + s1.n;
  const int64_t blocks = std::min<int64_t>(cuda::ceil_div(total, int64_t(kThreads) * kItemsPerThread),
                                           int64_t(cuda::sm_count()) * 8);  // 2048 threads per SM
  at::Tensor workspace;
  acc* partial = nullptr;
  unsigned* counter = nullptr;
  if (blocks > 1) {
    const int64_t partial_bytes = blocks * 2 * int64_t(sizeof(acc));  // a multiple of 8
    workspace = at::empty({partial_bytes + 16}, options.dtype(at::kByte));
    partial = reinterpret_cast<acc*>(workspace.mutable_data_ptr<uint8_t>());
    counter = reinterpret_cast<unsigned*>(workspace.mutable_data_ptr<uint8_t>() + partial_bytes);
    C10_CUDA_CHECK(cudaMemsetAsync(counter, 0, sizeof(unsigned), stream));
  }
  const bool vec = can_vectorize(s0, s1, {});
  const bool i32 = fits_int32(s0, s1);
  constexpr int W = 16 / int(sizeof(scalar_t));
  auto go = [&](auto vec_tag, auto index_tag) {
    constexpr int V = decltype(vec_tag)::value;
    using index_t = decltype(index_tag);
    reduce_kernel<K, scalar_t, out_t, V, index_t>
        <<<unsigned(std::max<int64_t>(blocks, 1)), kThreads, 0, stream>>>(s0, s1, partial, counter, out);
  };
  if (vec) {
    i32 ? go(std::integral_constant<int, W>{}, int32_t{}) : go(std::integral_constant<int, W>{}, int64_t{});
  } else {
    i32 ? go(std::integral_constant<int, 1>{}, int32_t{}) : go(std::integral_constant<int, 1>{}, int64_t{});
  }
  C10_CUDA_KERNEL_LAUNCH_CHECK();
}

template <typename scalar_t, typename grad_t, bool GRAD, Term K = Term::Bce>
void launch_elementwise(const Segment<scalar_t>& s0, const Segment<scalar_t>& s1, scalar_t* out0, scalar_t* out1,
                        const scalar_t* ge, const grad_t* gs) {
  const auto stream = c10::cuda::getCurrentCUDAStream();
  const bool vec = can_vectorize(s0, s1, {out0, out1, ge});
  const bool i32 = fits_int32(s0, s1);
  constexpr int W = 16 / int(sizeof(scalar_t));
  const int64_t total = s0.n + s1.n;
  auto go = [&](auto vec_tag, auto index_tag) {
    constexpr int V = decltype(vec_tag)::value;
    using index_t = decltype(index_tag);
    elementwise_kernel<K, scalar_t, grad_t, GRAD, V, index_t>
        <<<cuda::grid_for(cuda::ceil_div(total, V), kThreads), kThreads, 0, stream>>>(s0, s1, out0, out1, ge, gs);
  };
  if (vec) {
    i32 ? go(std::integral_constant<int, W>{}, int32_t{}) : go(std::integral_constant<int, W>{}, int64_t{});
  } else {
    i32 ? go(std::integral_constant<int, 1>{}, int32_t{}) : go(std::integral_constant<int, 1>{}, int64_t{});
  }
  C10_CUDA_KERNEL_LAUNCH_CHECK();
}

// Backward with a scalar incoming gradient of logits' dtype or of the accumulation dtype.
template <typename scalar_t, Term K = Term::Bce>
void launch_scalar_grad(const Segment<scalar_t>& s0, const Segment<scalar_t>& s1, scalar_t* out0, scalar_t* out1,
                        const at::Tensor& grad) {
  if (grad.scalar_type() == c10::CppTypeToScalarType<scalar_t>::value) {
    launch_elementwise<scalar_t, scalar_t, true, K>(s0, s1, out0, out1, nullptr, grad.const_data_ptr<scalar_t>());
  } else {
    using acc = acc_t<scalar_t>;
    launch_elementwise<scalar_t, acc, true, K>(s0, s1, out0, out1, nullptr, grad.const_data_ptr<acc>());
  }
}

at::Tensor bce_with_logits_cuda(const at::Tensor& logits, const std::optional<at::Tensor>& target, double target_value,
                                const std::optional<at::Tensor>& weight, const std::optional<at::Tensor>& pos_weight,
                                c10::string_view reduction) {
  const BceArgs a = prepare_bce_args("bce_with_logits", logits, target, target_value, weight, pos_weight,
                                     std::string_view(reduction.data(), reduction.size()));
  const c10::cuda::CUDAGuard guard(a.x.device());
  const bool none = a.reduction == Reduction::None;
  at::Tensor out = none ? at::empty(a.x.sizes(), a.x.options()) : at::empty({}, a.x.options());
  AT_DISPATCH_FLOATING_TYPES_AND2(at::kHalf, at::kBFloat16, a.x.scalar_type(), "bce_with_logits_cuda", [&] {
    const auto seg = losses::segment_of<scalar_t>(a);
    if (none) {
      launch_elementwise<scalar_t, scalar_t, false>(seg, no_segment<scalar_t>(), out.mutable_data_ptr<scalar_t>(),
                                                    nullptr, nullptr, nullptr);
    } else {
      launch_reduce<scalar_t, scalar_t>(seg, no_segment<scalar_t>(), out.mutable_data_ptr<scalar_t>(), a.x.options());
    }
  });
  return out;
}

at::Tensor bce_with_logits_backward_cuda(const at::Tensor& grad_, const at::Tensor& logits,
                                         const std::optional<at::Tensor>& target, double target_value,
                                         const std::optional<at::Tensor>& weight,
                                         const std::optional<at::Tensor>& pos_weight, c10::string_view reduction) {
  constexpr const char* op = "bce_with_logits_backward";
  const BceArgs a = prepare_bce_args(op, logits, target, target_value, weight, pos_weight,
                                     std::string_view(reduction.data(), reduction.size()));
  const bool none = a.reduction == Reduction::None;
  const at::Tensor grad = prepare_loss_grad(op, grad_, a.x, none);
  const c10::cuda::CUDAGuard guard(a.x.device());
  at::Tensor gx = at::empty(a.x.sizes(), a.x.options());
  AT_DISPATCH_FLOATING_TYPES_AND2(at::kHalf, at::kBFloat16, a.x.scalar_type(), "bce_with_logits_backward_cuda", [&] {
    const auto seg = losses::segment_of<scalar_t>(a);
    if (none) {
      launch_elementwise<scalar_t, scalar_t, true>(seg, no_segment<scalar_t>(), gx.mutable_data_ptr<scalar_t>(),
                                                   nullptr, grad.const_data_ptr<scalar_t>(), nullptr);
    } else {
      launch_scalar_grad<scalar_t>(seg, no_segment<scalar_t>(), gx.mutable_data_ptr<scalar_t>(), nullptr, grad);
    }
  });
  return gx;
}

at::Tensor gan_d_loss_cuda(const at::Tensor& real_, const at::Tensor& fake_, double real_label, double fake_label,
                           int64_t kind_) {
  const losses::Kind kind = check_gan_d_loss_args(real_, fake_, real_label, fake_label, kind_);
  const c10::cuda::CUDAGuard guard(real_.device());
  const at::Tensor real = real_.contiguous(), fake = fake_.contiguous();
  at::Tensor out = at::empty({}, real.options().dtype(loss_acc_dtype(real)));
  AT_DISPATCH_FLOATING_TYPES_AND2(at::kHalf, at::kBFloat16, real.scalar_type(), "gan_d_loss_cuda", [&] {
    losses::with_term(losses::d_term(kind), [&](auto term) {
      launch_reduce<scalar_t, acc_t<scalar_t>, decltype(term)::value>(
          losses::d_real_segment<scalar_t>(real, kind, real_label),
          losses::d_fake_segment<scalar_t>(fake, kind, fake_label), out.mutable_data_ptr<acc_t<scalar_t>>(),
          real.options());
    });
  });
  return out;
}

std::tuple<at::Tensor, at::Tensor> gan_d_loss_backward_cuda(const at::Tensor& grad_, const at::Tensor& real_,
                                                            const at::Tensor& fake_, double real_label,
                                                            double fake_label, int64_t kind_) {
  const losses::Kind kind = check_gan_d_loss_args(real_, fake_, real_label, fake_label, kind_);
  const at::Tensor grad = prepare_loss_grad("gan_d_loss_backward", grad_, real_, false);
  const c10::cuda::CUDAGuard guard(real_.device());
  const at::Tensor real = real_.contiguous(), fake = fake_.contiguous();
  at::Tensor gr = at::empty(real.sizes(), real.options()), gf = at::empty(fake.sizes(), fake.options());
  AT_DISPATCH_FLOATING_TYPES_AND2(at::kHalf, at::kBFloat16, real.scalar_type(), "gan_d_loss_backward_cuda", [&] {
    losses::with_term(losses::d_term(kind), [&](auto term) {
      launch_scalar_grad<scalar_t, decltype(term)::value>(losses::d_real_segment<scalar_t>(real, kind, real_label),
                                                          losses::d_fake_segment<scalar_t>(fake, kind, fake_label),
                                                          gr.mutable_data_ptr<scalar_t>(),
                                                          gf.mutable_data_ptr<scalar_t>(), grad);
    });
  });
  return {gr, gf};
}

at::Tensor gan_g_loss_cuda(const at::Tensor& fake_, double real_label, int64_t kind_) {
  const losses::Kind kind = check_gan_g_loss_args(fake_, real_label, kind_);
  const c10::cuda::CUDAGuard guard(fake_.device());
  const at::Tensor fake = fake_.contiguous();
  at::Tensor out = at::empty({}, fake.options().dtype(loss_acc_dtype(fake)));
  AT_DISPATCH_FLOATING_TYPES_AND2(at::kHalf, at::kBFloat16, fake.scalar_type(), "gan_g_loss_cuda", [&] {
    losses::with_term(losses::g_term(kind), [&](auto term) {
      launch_reduce<scalar_t, acc_t<scalar_t>, decltype(term)::value>(
          losses::g_segment<scalar_t>(fake, kind, real_label), no_segment<scalar_t>(),
          out.mutable_data_ptr<acc_t<scalar_t>>(), fake.options());
    });
  });
  return out;
}

at::Tensor gan_g_loss_backward_cuda(const at::Tensor& grad_, const at::Tensor& fake_, double real_label,
                                    int64_t kind_) {
  const losses::Kind kind = check_gan_g_loss_args(fake_, real_label, kind_);
  const at::Tensor grad = prepare_loss_grad("gan_g_loss_backward", grad_, fake_, false);
  const c10::cuda::CUDAGuard guard(fake_.device());
  const at::Tensor fake = fake_.contiguous();
  at::Tensor gf = at::empty(fake.sizes(), fake.options());
  AT_DISPATCH_FLOATING_TYPES_AND2(at::kHalf, at::kBFloat16, fake.scalar_type(), "gan_g_loss_backward_cuda", [&] {
    losses::with_term(losses::g_term(kind), [&](auto term) {
      launch_scalar_grad<scalar_t, decltype(term)::value>(losses::g_segment<scalar_t>(fake, kind, real_label),
                                                          no_segment<scalar_t>(), gf.mutable_data_ptr<scalar_t>(),
                                                          nullptr, grad);
    });
  });
  return gf;
}

}  // namespace

TORCH_LIBRARY_IMPL(fastgan, CUDA, m) {
  m.impl("bce_with_logits", &bce_with_logits_cuda);
  m.impl("bce_with_logits_backward", &bce_with_logits_backward_cuda);
  m.impl("gan_d_loss", &gan_d_loss_cuda);
  m.impl("gan_d_loss_backward", &gan_d_loss_backward_cuda);
  m.impl("gan_g_loss", &gan_g_loss_cuda);
  m.impl("gan_g_loss_backward", &gan_g_loss_backward_cuda);
}

}  // namespace fastgan
