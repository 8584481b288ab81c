// batch_norm (+ LeakyReLU) on CUDA. Forward and backward run the same three-step plan:
//   1. reduce two sums per channel (forward: sum(x - s), sum((x - s)^2) with s a shift near
//      the channel's mean; backward: sum(dz), sum(dz * (x - mean)) with dz = dy * gain(z)),
//   2. finalize each channel (statistics, running stats, grad_weight / grad_bias and the
//      coefficients of step 3),
//   3. one elementwise pass (forward: y; backward: dx).
// (s: the mean of the channel's first few values, bn::channel_shift.)
// Small inputs (and any input whose reduction is not split) run all three in ONE launch: each
// block owns whole channels, reduces them, finalizes in shared memory and applies (the second
// read of x comes from L1/L2). Large inputs split the reduction over blocks of rows (chunks):
// the reduce kernel writes per-chunk partial sums, a finalize kernel adds them in chunk order
// (deterministic: no atomics), and an elementwise kernel applies.
// Two geometries, both without per-channel launches:
//   rows   (outer, C), inner == 1 (2-D and channels_last): block (32, 8), each thread owns VEC
//          adjacent channels (one 16-byte access) and strides over the rows of its chunk;
//   planes (outer, C, inner) (contiguous N, C, L / H, W): block 256 per (channel, chunk).
// Math: csrc/batch_norm.h.
#include <ATen/Dispatch.h>
#include <ATen/ops/empty.h>
#include <torch/library.h>

#include "batch_norm.h"
#include "cuda/launch.cuh"

namespace fastgan {
namespace {

using cuda::AlignedVec;
constexpr int kThreads = 256;
constexpr int kRowsX = 32, kRowsY = 8;   // rows kernels' block
constexpr int64_t kSmallWork = 1 << 18;  // at most this many elements: one fused launch

// Everything the kernels read and write. acc pointers are (C,) arrays in acc_t; null = absent.
template <typename scalar_t>
struct Args {
  using acc = acc_t<scalar_t>;
  const scalar_t* x;
  const scalar_t* dy;  // backward only
  scalar_t* out;       // y (forward) or dx (backward); null when dx is not wanted
  const acc* w;
  const acc* b;
  acc* rmean;  // forward: updated in training (null: not tracked), read in eval
  acc* rvar;
  int64_t* num_batches_tracked;  // forward in training: + 1, by channel 0's finalize (null: none)
  acc* save_mean;                // forward writes, backward reads
  acc* save_invstd;
  acc* gw;  // backward outputs; null when not wanted
  acc* gb;
  acc* partial;  // [chunk][2][C] when the reduction is split
  acc* coef;     // [k][C] coefficients of the elementwise pass when it is a separate launch
  int64_t outer, C, inner, per_chunk;
  acc m, momentum, eps, neg;
  bool training;
};

template <bool BWD>
constexpr int num_coefs() {
  return BWD ? int(bn::kBackwardCoefs) : int(bn::kForwardCoefs);
}

// The per-channel constants the reduction needs: forward the shift s (0 in eval), backward
// mean and the pre-activation's scale and offset.
template <bool BWD, typename scalar_t>
__device__ __forceinline__ void channel_pre(const Args<scalar_t>& a, int64_t c, acc_t<scalar_t>* k) {
  using acc = acc_t<scalar_t>;
  if constexpr (BWD) {
    k[bn::kMean] = a.save_mean[c];
    k[bn::kZScale] = (a.w ? a.w[c] : acc(1)) * a.save_invstd[c];
    k[bn::kZOffset] = a.b ? a.b[c] : acc(0);
  } else {
    k[bn::kShift] = a.training ? bn::channel_shift<acc>(a.x, c, a.outer, a.C, a.inner) : acc(0);
  }
}

// Statistics, running stats, grad_weight / grad_bias and the elementwise coefficients of one
// channel from its two sums. Runs once per channel.
template <bool BWD, typename scalar_t>
__device__ __forceinline__ void channel_finalize(const Args<scalar_t>& a, int64_t c, acc_t<scalar_t> s1,
                                                 acc_t<scalar_t> s2, acc_t<scalar_t>* k) {
  using acc = acc_t<scalar_t>;
  const acc w = a.w ? a.w[c] : acc(1), b = a.b ? a.b[c] : acc(0);
  if constexpr (BWD) {
    acc gw, gb;
    bn::finalize_backward<acc>(s1, s2, a.m, w, a.save_invstd[c], a.training, &gw, &gb, &k[bn::kK1], &k[bn::kK2],
                               &k[bn::kK3]);
    if (a.gw) a.gw[c] = gw;
    if (a.gb) a.gb[c] = gb;
  } else if (a.training) {
    if (c == 0 && a.num_batches_tracked) ++*a.num_batches_tracked;  // once per call: one finalize per channel
    bn::finalize_stats<acc>(s1, s2, a.m, k[bn::kShift], w, b, a.eps, a.momentum, a.rmean ? a.rmean + c : nullptr,
                            a.rvar ? a.rvar + c : nullptr, a.save_mean + c, a.save_invstd + c, &k[bn::kScale],
                            &k[bn::kOffset]);
  } else {
    bn::finalize_eval<acc>(a.rmean[c], a.rvar[c], w, b, a.eps, a.save_mean + c, a.save_invstd + c, &k[bn::kScale],
                           &k[bn::kOffset]);
  }
}

// One element's step with its channel's coefficients k: the same functions the CPU kernels run.
template <bool BWD, typename acc>
__device__ __forceinline__ void element_sums(acc xv, acc dyv, const acc* k, acc neg, acc& s1, acc& s2) {
  if constexpr (BWD)
    bn::add_grad_sums(xv, dyv, k[bn::kMean], k[bn::kZScale], k[bn::kZOffset], neg, s1, s2);
  else
    bn::add_sums(xv, k[bn::kShift], s1, s2);
}

template <bool BWD, typename acc>
__device__ __forceinline__ acc element_apply(acc xv, acc dyv, const acc* k, acc neg) {
  if constexpr (BWD) {
    return bn::grad_x(xv, dyv, k[bn::kMean], k[bn::kZScale], k[bn::kZOffset], neg, k[bn::kK1], k[bn::kK2], k[bn::kK3]);
  } else {
    return bn::forward(xv, k[bn::kShift], k[bn::kScale], k[bn::kOffset], neg);
  }
}

// rows: grid (column tiles of 32 * VEC channels, chunks of rows), block (32, 8). FUSED (one
// chunk): reduce, finalize in shared memory, apply. Otherwise write partial[chunk][2][C].
template <typename scalar_t, int VEC, bool BWD, bool FUSED, typename index_t>
__global__ void __launch_bounds__(kRowsX* kRowsY) rows_kernel(const Args<scalar_t> a) {
  using acc = acc_t<scalar_t>;
  using V = AlignedVec<scalar_t, VEC>;
  constexpr int K = num_coefs<BWD>();
  constexpr int W = kRowsX * VEC;
  __shared__ acc sums[2][kRowsY][W];
  __shared__ acc coefs[FUSED ? K : 1][FUSED ? W : 1];
  const index_t C = index_t(a.C), rows = index_t(a.outer), per_chunk = index_t(a.per_chunk);
  const index_t col = (index_t(blockIdx.x) * kRowsX + threadIdx.x) * VEC;
  const bool active = col < C;  // C % VEC == 0 (launch_plan): a tile is all in or all out
  const index_t r0 = index_t(blockIdx.y) * per_chunk;
  const index_t r1 = r0 + per_chunk < rows ? r0 + per_chunk : rows;
  acc k[VEC][K];
  acc s1[VEC], s2[VEC];
#pragma unroll
  for (int v = 0; v < VEC; ++v) s1[v] = s2[v] = acc(0);
  if (active) {
#pragma unroll
    for (int v = 0; v < VEC; ++v) channel_pre<BWD>(a, int64_t(col) + v, k[v]);
    for (index_t r = r0 + threadIdx.y; r < r1; r += kRowsY) {
      const index_t o = (r * C + col) / VEC;
      const V xv = reinterpret_cast<const V*>(a.x)[o];
      V dv;
      if constexpr (BWD) dv = reinterpret_cast<const V*>(a.dy)[o];
#pragma unroll
      for (int v = 0; v < VEC; ++v) {
        element_sums<BWD, acc>(acc(xv.v[v]), BWD ? acc(dv.v[v]) : acc(0), k[v], a.neg, s1[v], s2[v]);
      }
    }
  }
#pragma unroll
  for (int v = 0; v < VEC; ++v) {
    sums[0][threadIdx.y][threadIdx.x * VEC + v] = s1[v];
    sums[1][threadIdx.y][threadIdx.x * VEC + v] = s2[v];
  }
  __syncthreads();
  if (threadIdx.y == 0 && active) {
#pragma unroll
    for (int v = 0; v < VEC; ++v) {
      acc t1 = acc(0), t2 = acc(0);
#pragma unroll
      for (int j = 0; j < kRowsY; ++j) {
        t1 += sums[0][j][threadIdx.x * VEC + v];
        t2 += sums[1][j][threadIdx.x * VEC + v];
      }
      if constexpr (FUSED) {
        channel_finalize<BWD>(a, int64_t(col) + v, t1, t2, k[v]);
#pragma unroll
        for (int q = 0; q < K; ++q) coefs[q][threadIdx.x * VEC + v] = k[v][q];
      } else {
        a.partial[(int64_t(blockIdx.y) * 2) * a.C + col + v] = t1;
        a.partial[(int64_t(blockIdx.y) * 2 + 1) * a.C + col + v] = t2;
      }
    }
  }
  if constexpr (FUSED) {
    __syncthreads();  // uniform: every thread reaches it
    if (active && a.out != nullptr) {
#pragma unroll
      for (int v = 0; v < VEC; ++v) {
#pragma unroll
        for (int q = 0; q < K; ++q) k[v][q] = coefs[q][threadIdx.x * VEC + v];
      }
      for (index_t r = r0 + threadIdx.y; r < r1; r += kRowsY) {
        const index_t o = (r * C + col) / VEC;
        const V xv = reinterpret_cast<const V*>(a.x)[o];
        V dv;
        if constexpr (BWD) dv = reinterpret_cast<const V*>(a.dy)[o];
        V out;
#pragma unroll
        for (int v = 0; v < VEC; ++v) {
          out.v[v] = scalar_t(element_apply<BWD, acc>(acc(xv.v[v]), BWD ? acc(dv.v[v]) : acc(0), k[v], a.neg));
        }
        reinterpret_cast<V*>(a.out)[o] = out;
      }
    }
  }
}

// planes: grid (C, chunks of outer), block kThreads; each block walks its channel's planes in
// its chunk with VEC-wide accesses (inner % VEC == 0). FUSED as in rows_kernel.
template <typename scalar_t, int VEC, bool BWD, bool FUSED, typename index_t>
__global__ void __launch_bounds__(kThreads) planes_kernel(const Args<scalar_t> a) {
  using acc = acc_t<scalar_t>;
  using V = AlignedVec<scalar_t, VEC>;
  constexpr int K = num_coefs<BWD>();
  __shared__ acc shared[32];
  __shared__ acc coefs[K];
  const index_t c = blockIdx.x, C = index_t(a.C), inner = index_t(a.inner), outer = index_t(a.outer);
  const index_t n0 = index_t(blockIdx.y) * index_t(a.per_chunk);
  const index_t n1 = n0 + index_t(a.per_chunk) < outer ? n0 + index_t(a.per_chunk) : outer;
  const index_t per_plane = inner / VEC;
  const index_t total = (n1 - n0) * per_plane;
  acc k[K];
  channel_pre<BWD>(a, int64_t(c), k);
  acc s1 = acc(0), s2 = acc(0);
  for (index_t t = threadIdx.x; t < total; t += blockDim.x) {
    const index_t o = ((n0 + t / per_plane) * C + c) * per_plane + t % per_plane;
    const V xv = reinterpret_cast<const V*>(a.x)[o];
    V dv;
    if constexpr (BWD) dv = reinterpret_cast<const V*>(a.dy)[o];
#pragma unroll
    for (int v = 0; v < VEC; ++v) element_sums<BWD, acc>(acc(xv.v[v]), BWD ? acc(dv.v[v]) : acc(0), k, a.neg, s1, s2);
  }
  s1 = cuda::block_sum(s1, shared);
  s2 = cuda::block_sum(s2, shared);
  if (threadIdx.x == 0) {  // block_sum's result is valid in thread 0
    if constexpr (FUSED) {
      channel_finalize<BWD>(a, int64_t(c), s1, s2, k);
#pragma unroll
      for (int q = 0; q < K; ++q) coefs[q] = k[q];
    } else {
      a.partial[(int64_t(blockIdx.y) * 2) * a.C + c] = s1;
      a.partial[(int64_t(blockIdx.y) * 2 + 1) * a.C + c] = s2;
    }
  }
  if constexpr (FUSED) {
    __syncthreads();  // uniform: every thread reaches it
    if (a.out != nullptr) {
#pragma unroll
      for (int q = 0; q < K; ++q) k[q] = coefs[q];
      for (index_t t = threadIdx.x; t < total; t += blockDim.x) {
        const index_t o = ((n0 + t / per_plane) * C + c) * per_plane + t % per_plane;
        const V xv = reinterpret_cast<const V*>(a.x)[o];
        V dv;
        if constexpr (BWD) dv = reinterpret_cast<const V*>(a.dy)[o];
        V out;
#pragma unroll
        for (int v = 0; v < VEC; ++v) {
          out.v[v] = scalar_t(element_apply<BWD, acc>(acc(xv.v[v]), BWD ? acc(dv.v[v]) : acc(0), k, a.neg));
        }
        reinterpret_cast<V*>(a.out)[o] = out;
      }
    }
  }
}

// One thread per channel: add the chunks' partial sums in chunk order (when need_sums),
// finalize, and store the coefficients for apply_kernel in coef[k][C].
template <typename scalar_t, bool BWD>
__global__ void finalize_kernel(const Args<scalar_t> a, int64_t chunks, bool need_sums) {
  using acc = acc_t<scalar_t>;
  constexpr int K = num_coefs<BWD>();
  for (int64_t c = int64_t(blockIdx.x) * blockDim.x + threadIdx.x; c < a.C; c += int64_t(gridDim.x) * blockDim.x) {
    acc k[K];
    channel_pre<BWD>(a, c, k);
    acc s1 = acc(0), s2 = acc(0);
    if (need_sums) {
      for (int64_t q = 0; q < chunks; ++q) {
        s1 += a.partial[(q * 2) * a.C + c];
        s2 += a.partial[(q * 2 + 1) * a.C + c];
      }
    }
    channel_finalize<BWD>(a, c, s1, s2, k);
#pragma unroll
    for (int q = 0; q < K; ++q) a.coef[q * a.C + c] = k[q];
  }
}

// Elementwise y / dx from coef[k][C]. ROWS: the VEC elements of an access are VEC adjacent
// channels; otherwise they share channel (i / inner) % C.
template <typename scalar_t, int VEC, bool BWD, bool ROWS, typename index_t>
__global__ void __launch_bounds__(kThreads) apply_kernel(const Args<scalar_t> a, index_t nvec) {
  using acc = acc_t<scalar_t>;
  using V = AlignedVec<scalar_t, VEC>;
  constexpr int K = num_coefs<BWD>();
  const index_t C = index_t(a.C), inner = index_t(a.inner);
  for (index_t v = index_t(blockIdx.x) * blockDim.x + threadIdx.x; v < nvec; v += index_t(gridDim.x) * blockDim.x) {
    const index_t i = v * VEC;
    const V xv = reinterpret_cast<const V*>(a.x)[v];
    V dv;
    if constexpr (BWD) dv = reinterpret_cast<const V*>(a.dy)[v];
    V out;
    acc k[K];
    if constexpr (ROWS) {
      const index_t c0 = i % C;
#pragma unroll
      for (int e = 0; e < VEC; ++e) {
#pragma unroll
        for (int q = 0; q < K; ++q) k[q] = a.coef[int64_t(q) * a.C + c0 + e];
        out.v[e] = scalar_t(element_apply<BWD, acc>(acc(xv.v[e]), BWD ? acc(dv.v[e]) : acc(0), k, a.neg));
      }
    } else {
      const index_t c = (i / inner) % C;
#pragma unroll
      for (int q = 0; q < K; ++q) k[q] = a.coef[int64_t(q) * a.C + c];
#pragma unroll
      for (int e = 0; e < VEC; ++e) {
        out.v[e] = scalar_t(element_apply<BWD, acc>(acc(xv.v[e]), BWD ? acc(dv.v[e]) : acc(0), k, a.neg));
      }
    }
    reinterpret_cast<V*>(a.out)[v] = out;
  }
}

// Runs the plan for one direction. need_sums: step 1 is needed (forward training; backward
// when grad_weight / grad_bias is wanted or in training). `like` gives the options for the
// scratch buffers.
template <typename scalar_t, bool BWD, typename index_t>
void launch(Args<scalar_t> a, const at::Tensor& like, bool need_sums) {
  using acc = acc_t<scalar_t>;
  constexpr int K = num_coefs<BWD>();
  constexpr int W = 16 / sizeof(scalar_t);
  const auto stream = c10::cuda::getCurrentCUDAStream();
  const int sms = cuda::sm_count();
  const bool rows = a.inner == 1;
  const int64_t n = a.outer * a.C * a.inner, C = a.C;
  const int vec = cuda::vec_width<scalar_t>({a.x, a.dy, a.out}, rows ? C : a.inner);
  const auto acc_options =
      like.options().dtype(c10::CppTypeToScalarType<acc>::value).memory_format(at::MemoryFormat::Contiguous);

  // chunks of rows (rows) or of outer (planes); 1 = the fused single launch
  int64_t chunks = 1;
  bool narrow = false;  // rows, fused: scalar accesses for more column tiles (more blocks)
  if (need_sums) {
    if (rows) {
      const int64_t tiles = cuda::ceil_div(C, int64_t(kRowsX) * vec);
      if (n > kSmallWork) {
        chunks = std::min(cuda::ceil_div(4 * sms, tiles), cuda::ceil_div(a.outer, 4 * kRowsY));
      } else {
        narrow = vec > 1 && tiles < sms;
      }
    } else if (n > kSmallWork) {
      chunks = std::min(cuda::ceil_div(4 * sms, C), a.outer);
    }
    chunks = std::max<int64_t>(chunks, 1);
  }
  a.per_chunk = cuda::ceil_div(a.outer, chunks);
  chunks = cuda::ceil_div(a.outer, a.per_chunk);

  auto by_vec = [&](int v, auto&& f) {
    if (v == W)
      f(std::integral_constant<int, W>{});
    else
      f(std::integral_constant<int, 1>{});
  };

  if (need_sums && chunks == 1) {  // one launch: reduce, finalize and apply
    by_vec(narrow ? 1 : vec, [&](auto vt) {
      constexpr int V = decltype(vt)::value;
      if (rows) {
        rows_kernel<scalar_t, V, BWD, true, index_t>
            <<<dim3(unsigned(cuda::ceil_div(C, int64_t(kRowsX) * V)), 1), dim3(kRowsX, kRowsY), 0, stream>>>(a);
      } else {
        planes_kernel<scalar_t, V, BWD, true, index_t><<<dim3(unsigned(C), 1), kThreads, 0, stream>>>(a);
      }
    });
    C10_CUDA_KERNEL_LAUNCH_CHECK();
    return;
  }

  at::Tensor partial, coef = at::empty({K * C}, acc_options);
  a.coef = coef.mutable_data_ptr<acc>();
  if (need_sums) {
    partial = at::empty({chunks * 2 * C}, acc_options);
    a.partial = partial.mutable_data_ptr<acc>();
    by_vec(vec, [&](auto vt) {
      constexpr int V = decltype(vt)::value;
      if (rows) {
        rows_kernel<scalar_t, V, BWD, false, index_t>
            <<<dim3(unsigned(cuda::ceil_div(C, int64_t(kRowsX) * V)), unsigned(chunks)), dim3(kRowsX, kRowsY), 0,
               stream>>>(a);
      } else {
        planes_kernel<scalar_t, V, BWD, false, index_t>
            <<<dim3(unsigned(C), unsigned(chunks)), kThreads, 0, stream>>>(a);
      }
    });
    C10_CUDA_KERNEL_LAUNCH_CHECK();
  }
  finalize_kernel<scalar_t, BWD><<<unsigned(cuda::ceil_div(C, kThreads)), kThreads, 0, stream>>>(a, chunks, need_sums);
  C10_CUDA_KERNEL_LAUNCH_CHECK();
  if (a.out == nullptr) return;
  const int ev = cuda::vec_width<scalar_t>({a.x, a.dy, a.out}, rows ? C : a.inner);
  by_vec(ev, [&](auto vt) {
    constexpr int V = decltype(vt)::value;
    const index_t nvec = index_t(n / V);
    if (rows) {
      apply_kernel<scalar_t, V, BWD, true, index_t><<<cuda::grid_for(nvec, kThreads), kThreads, 0, stream>>>(a, nvec);
    } else {
      apply_kernel<scalar_t, V, BWD, false, index_t><<<cuda::grid_for(nvec, kThreads), kThreads, 0, stream>>>(a, nvec);
    }
  });
  C10_CUDA_KERNEL_LAUNCH_CHECK();
}

std::tuple<at::Tensor, at::Tensor, at::Tensor> batch_norm_cuda(
    const at::Tensor& x_, const std::optional<at::Tensor>& weight, const std::optional<at::Tensor>& bias,
    const std::optional<at::Tensor>& running_mean, const std::optional<at::Tensor>& running_var, bool training,
    double momentum, double eps, std::optional<double> negative_slope,
    const std::optional<at::Tensor>& num_batches_tracked) {
  const c10::cuda::CUDAGuard guard(x_.device());
  const BatchNormForward t = prepare_batch_norm(x_, weight, bias, running_mean, running_var, training, momentum, eps,
                                                negative_slope, num_batches_tracked);
  if (empty_batch_norm(t, eps)) return {t.y, t.save_mean, t.save_invstd};
  const at::Tensor& x = t.x;
  const auto geo = channel_geometry(x);
  AT_DISPATCH_FLOATING_TYPES_AND2(at::kHalf, at::kBFloat16, x.scalar_type(), "batch_norm_cuda", [&] {
    using acc = acc_t<scalar_t>;
    Args<scalar_t> a{};
    a.x = x.const_data_ptr<scalar_t>();
    a.dy = nullptr;
    a.out = t.y.mutable_data_ptr<scalar_t>();
    a.w = const_ptr_or_null<acc>(t.w);
    a.b = const_ptr_or_null<acc>(t.b);
    a.rmean = ptr_or_null<acc>(t.rm);
    a.rvar = ptr_or_null<acc>(t.rv);
    a.num_batches_tracked = t.num_batches_tracked;
    a.save_mean = t.save_mean.mutable_data_ptr<acc>();
    a.save_invstd = t.save_invstd.mutable_data_ptr<acc>();
    a.outer = geo.outer;
    a.C = geo.channels;
    a.inner = geo.inner;
    a.m = acc(geo.outer * geo.inner);
    a.momentum = acc(momentum);
    a.eps = acc(eps);
    a.neg = acc(negative_slope.has_value() ? *negative_slope : 1.0);
    a.training = training;
    // 32-bit indices where every element offset (and a grid-stride step past the end) fits
    if (x.numel() <= INT32_MAX / 2)
      launch<scalar_t, false, int32_t>(a, x, training);
    else
      launch<scalar_t, false, int64_t>(a, x, training);
  });
  if (training) write_back_running_stats(t.rm, t.rv, running_mean, running_var);
  return {t.y, t.save_mean, t.save_invstd};
}

std::tuple<at::Tensor, at::Tensor, at::Tensor> batch_norm_backward_cuda(
    const at::Tensor& grad_, const at::Tensor& x_, const std::optional<at::Tensor>& weight,
    const std::optional<at::Tensor>& bias, const at::Tensor& save_mean_, const at::Tensor& save_invstd_, bool training,
    std::optional<double> negative_slope, std::array<bool, 3> output_mask) {
  const c10::cuda::CUDAGuard guard(x_.device());
  const BatchNormBackward t =
      prepare_batch_norm_backward(grad_, x_, weight, bias, save_mean_, save_invstd_, output_mask);
  if (empty_batch_norm_backward(t)) return finish_batch_norm_backward(t, weight, bias);
  const at::Tensor& x = t.x;
  const auto geo = channel_geometry(x);
  AT_DISPATCH_FLOATING_TYPES_AND2(at::kHalf, at::kBFloat16, x.scalar_type(), "batch_norm_backward_cuda", [&] {
    using acc = acc_t<scalar_t>;
    Args<scalar_t> a{};
    a.x = x.const_data_ptr<scalar_t>();
    a.dy = t.grad.const_data_ptr<scalar_t>();
    a.out = output_mask[0] ? t.dx.mutable_data_ptr<scalar_t>() : nullptr;
    a.w = const_ptr_or_null<acc>(t.w);
    a.b = const_ptr_or_null<acc>(t.b);
    a.save_mean = const_cast<acc*>(t.mean.const_data_ptr<acc>());  // read only in the backward
    a.save_invstd = const_cast<acc*>(t.invstd.const_data_ptr<acc>());
    a.gw = output_mask[1] ? t.gw.mutable_data_ptr<acc>() : nullptr;
    a.gb = output_mask[2] ? t.gb.mutable_data_ptr<acc>() : nullptr;
    a.outer = geo.outer;
    a.C = geo.channels;
    a.inner = geo.inner;
    a.m = acc(geo.outer * geo.inner);
    a.neg = acc(negative_slope.has_value() ? *negative_slope : 1.0);
    a.training = training;
    const bool need_sums = output_mask[1] || output_mask[2] || (output_mask[0] && training);
    if (!need_sums && !output_mask[0]) return;
    if (x.numel() <= INT32_MAX / 2)
      launch<scalar_t, true, int32_t>(a, x, need_sums);
    else
      launch<scalar_t, true, int64_t>(a, x, need_sums);
  });
  return finish_batch_norm_backward(t, weight, bias);
}

}  // namespace

TORCH_LIBRARY_IMPL(fastgan, CUDA, m) {
  m.impl("batch_norm", &batch_norm_cuda);
  m.impl("batch_norm_backward", &batch_norm_backward_cuda);
}

}  // namespace fastgan
