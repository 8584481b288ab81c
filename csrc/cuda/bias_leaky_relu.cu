// bias_leaky_relu on CUDA. Forward: one elementwise pass, 16-byte accesses where aligned.
// Backward: one pass that writes grad_x and reduces grad_bias per channel at the same time
// (block partial sums; a second tiny launch adds the partials in a fixed order only when the
// work was split across blocks). Math: csrc/bias_leaky_relu.h.
#include <ATen/Dispatch.h>
#include <ATen/ops/empty.h>
#include <torch/library.h>

#include "bias_leaky_relu.h"
#include "cuda/launch.cuh"

namespace fastgan {
namespace {

using cuda::AlignedVec;
constexpr int kThreads = 256;
constexpr int64_t kSmallWork = 1 << 18;  // below this one block pass per channel tile suffices
constexpr int kRowLanes = 16;            // threadIdx.y extent of the rows kernel

// ROWS: memory order is (outer, C) (inner == 1): the VEC elements of an access are VEC
// consecutive channels. Otherwise the VEC elements share channel (i / inner) % C.
template <typename scalar_t, typename bias_t, int VEC, bool ROWS, typename index_t>
__global__ void forward_kernel(const scalar_t* __restrict__ x, const bias_t* __restrict__ b, scalar_t* __restrict__ y,
                               index_t nvec, index_t C, index_t inner, acc_t<scalar_t> pos, acc_t<scalar_t> neg) {
  using acc = acc_t<scalar_t>;
  using V = AlignedVec<scalar_t, VEC>;
  for (index_t v = blockIdx.x * blockDim.x + threadIdx.x; v < nvec; v += gridDim.x * blockDim.x) {
    const index_t i = v * VEC;
    const V in = reinterpret_cast<const V*>(x)[v];
    V out;
    if (ROWS) {
      const index_t c0 = i % C;
#pragma unroll
      for (int k = 0; k < VEC; ++k) {
        const acc t = acc(in.v[k]) + (b ? acc(b[c0 + k]) : acc(0));
        out.v[k] = scalar_t(bias_act::forward<scalar_t>(t, pos, neg));
      }
    } else {
      const acc bc = b ? acc(b[(i / inner) % C]) : acc(0);
#pragma unroll
      for (int k = 0; k < VEC; ++k) out.v[k] = scalar_t(bias_act::forward<scalar_t>(acc(in.v[k]) + bc, pos, neg));
    }
    reinterpret_cast<V*>(y)[v] = out;
  }
}

// grad_x only (no bias gradient wanted): elementwise.
template <typename scalar_t, int VEC, typename index_t>
__global__ void backward_elementwise_kernel(const scalar_t* __restrict__ g, const scalar_t* __restrict__ y,
                                            scalar_t* __restrict__ gx, index_t nvec, acc_t<scalar_t> pos,
                                            acc_t<scalar_t> neg) {
  using acc = acc_t<scalar_t>;
  using V = AlignedVec<scalar_t, VEC>;
  for (index_t v = blockIdx.x * blockDim.x + threadIdx.x; v < nvec; v += gridDim.x * blockDim.x) {
    const V gv = reinterpret_cast<const V*>(g)[v], yv = reinterpret_cast<const V*>(y)[v];
    V out;
#pragma unroll
    for (int k = 0; k < VEC; ++k) out.v[k] = scalar_t(bias_act::backward(acc(gv.v[k]), acc(yv.v[k]), pos, neg));
    reinterpret_cast<V*>(gx)[v] = out;
  }
}

// (outer, C) rows. Block (32, kRowLanes): threadIdx.x spans 32*VEC columns, threadIdx.y strides the
// rows of this block's chunk (blockIdx.y). Each block writes its column sums to
// partial[blockIdx.y][col], or straight to gb when there is one chunk.
template <typename scalar_t, typename bias_t, int VEC, typename index_t>
__global__ void backward_rows_kernel(const scalar_t* __restrict__ g, const scalar_t* __restrict__ y,
                                     scalar_t* __restrict__ gx, acc_t<scalar_t>* __restrict__ partial,
                                     bias_t* __restrict__ gb, index_t rows, index_t C, index_t rows_per_chunk,
                                     acc_t<scalar_t> pos, acc_t<scalar_t> neg) {
  using acc = acc_t<scalar_t>;
  using V = AlignedVec<scalar_t, VEC>;
  __shared__ acc sums[kRowLanes][32 * VEC];
  const index_t col = (index_t(blockIdx.x) * 32 + threadIdx.x) * VEC;
  const index_t r0 = index_t(blockIdx.y) * rows_per_chunk;
  const index_t r1 = r0 + rows_per_chunk < rows ? r0 + rows_per_chunk : rows;
  acc s[VEC];
#pragma unroll
  for (int k = 0; k < VEC; ++k) s[k] = acc(0);
  if (col < C) {
    for (index_t r = r0 + threadIdx.y; r < r1; r += blockDim.y) {
      const index_t off = (r * C + col) / VEC;
      const V gv = reinterpret_cast<const V*>(g)[off], yv = reinterpret_cast<const V*>(y)[off];
      V out;
#pragma unroll
      for (int k = 0; k < VEC; ++k) {
        const acc d = bias_act::backward(acc(gv.v[k]), acc(yv.v[k]), pos, neg);
        out.v[k] = scalar_t(d);
        s[k] += d;
      }
      reinterpret_cast<V*>(gx)[off] = out;
    }
  }
#pragma unroll
  for (int k = 0; k < VEC; ++k) sums[threadIdx.y][threadIdx.x * VEC + k] = s[k];
  __syncthreads();
  if (threadIdx.y == 0 && col < C) {
#pragma unroll
    for (int k = 0; k < VEC; ++k) {
      acc t = acc(0);
      for (int j = 0; j < kRowLanes; ++j) t += sums[j][threadIdx.x * VEC + k];
      if (partial)
        partial[index_t(blockIdx.y) * C + col + k] = t;
      else
        gb[col + k] = bias_t(t);
    }
  }
}

// (outer, C, inner) planes: block (c = blockIdx.x, chunk of outer = blockIdx.y) walks its
// channel's planes with VEC-wide accesses and reduces the sum over the block.
template <typename scalar_t, typename bias_t, int VEC, typename index_t>
__global__ void backward_planes_kernel(const scalar_t* __restrict__ g, const scalar_t* __restrict__ y,
                                       scalar_t* __restrict__ gx, acc_t<scalar_t>* __restrict__ partial,
                                       bias_t* __restrict__ gb, index_t outer, index_t C, index_t inner,
                                       index_t outer_per_chunk, acc_t<scalar_t> pos, acc_t<scalar_t> neg) {
  using acc = acc_t<scalar_t>;
  using V = AlignedVec<scalar_t, VEC>;
  __shared__ acc shared[32];
  const index_t c = blockIdx.x;
  const index_t n0 = index_t(blockIdx.y) * outer_per_chunk;
  const index_t n1 = n0 + outer_per_chunk < outer ? n0 + outer_per_chunk : outer;
  const index_t per_plane = inner / VEC;
  const index_t total = (n1 - n0) * per_plane;
  acc s = acc(0);
  for (index_t t = threadIdx.x; t < total; t += blockDim.x) {
    const index_t n = n0 + t / per_plane;
    const index_t off = ((n * C + c) * inner) / VEC + t % per_plane;
    const V gv = reinterpret_cast<const V*>(g)[off], yv = reinterpret_cast<const V*>(y)[off];
    V out;
#pragma unroll
    for (int k = 0; k < VEC; ++k) {
      const acc d = bias_act::backward(acc(gv.v[k]), acc(yv.v[k]), pos, neg);
      out.v[k] = scalar_t(d);
      s += d;
    }
    reinterpret_cast<V*>(gx)[off] = out;
  }
  s = cuda::block_sum(s, shared);
  if (threadIdx.x == 0) {
    if (partial)
      partial[index_t(blockIdx.y) * C + c] = s;
    else
      gb[c] = bias_t(s);
  }
}

// gb[c] = sum over chunks of partial[chunk][c], in chunk order (deterministic).
template <typename scalar_t, typename bias_t, typename index_t>
__global__ void sum_partials_kernel(const acc_t<scalar_t>* __restrict__ partial, bias_t* __restrict__ gb,
                                    index_t chunks, index_t C) {
  for (index_t c = blockIdx.x * blockDim.x + threadIdx.x; c < C; c += gridDim.x * blockDim.x) {
    acc_t<scalar_t> t = 0;
    for (index_t q = 0; q < chunks; ++q) t += partial[q * C + c];
    gb[c] = bias_t(t);
  }
}

template <typename scalar_t, typename bias_t, typename index_t>
void launch_forward(const at::Tensor& x, const bias_t* b, at::Tensor& y, double slope, double scale) {
  const auto geo = channel_geometry(x);
  const auto stream = c10::cuda::getCurrentCUDAStream();
  const scalar_t* xp = x.const_data_ptr<scalar_t>();
  scalar_t* yp = y.mutable_data_ptr<scalar_t>();
  const bool rows = geo.inner == 1;
  const int vec = cuda::vec_width<scalar_t>({xp, yp}, rows ? geo.channels : geo.inner);
  const acc_t<scalar_t> pos = scale, neg = slope * scale;
  const int64_t n = x.numel();
  auto go = [&](auto vec_tag, auto rows_tag) {
    constexpr int V = decltype(vec_tag)::value;
    constexpr bool R = decltype(rows_tag)::value;
    forward_kernel<scalar_t, bias_t, V, R, index_t>
        <<<cuda::grid_for(n / V, kThreads), kThreads, 0, stream>>>(xp, b, yp, n / V, geo.channels, geo.inner, pos, neg);
  };
  constexpr int W = 16 / sizeof(scalar_t);
  if (vec == W) {
    rows ? go(std::integral_constant<int, W>{}, std::true_type{})
         : go(std::integral_constant<int, W>{}, std::false_type{});
  } else {
    rows ? go(std::integral_constant<int, 1>{}, std::true_type{})
         : go(std::integral_constant<int, 1>{}, std::false_type{});
  }
  C10_CUDA_KERNEL_LAUNCH_CHECK();
}

template <typename scalar_t, typename bias_t, typename index_t>
void launch_backward(const at::Tensor& g, const at::Tensor& y, at::Tensor& gx, at::Tensor& gb, bool need_bias_grad,
                     double slope, double scale) {
  using acc = acc_t<scalar_t>;
  const auto geo = channel_geometry(y);
  const auto stream = c10::cuda::getCurrentCUDAStream();
  const scalar_t* gp = g.const_data_ptr<scalar_t>();
  const scalar_t* yp = y.const_data_ptr<scalar_t>();
  scalar_t* gxp = gx.mutable_data_ptr<scalar_t>();
  const acc pos = scale, neg = slope * scale;
  const int64_t n = y.numel(), C = geo.channels;
  constexpr int W = 16 / sizeof(scalar_t);

  if (!need_bias_grad) {
    const int vec = cuda::vec_width<scalar_t>({gp, yp, gxp}, n);
    auto go = [&](auto vec_tag) {
      constexpr int V = decltype(vec_tag)::value;
      backward_elementwise_kernel<scalar_t, V, index_t>
          <<<cuda::grid_for(n / V, kThreads), kThreads, 0, stream>>>(gp, yp, gxp, n / V, pos, neg);
    };
    vec == W ? go(std::integral_constant<int, W>{}) : go(std::integral_constant<int, 1>{});
    C10_CUDA_KERNEL_LAUNCH_CHECK();
    return;
  }

  bias_t* gbp = gb.mutable_data_ptr<bias_t>();
  const int sms = cuda::sm_count();
  int64_t chunks = 1, per_chunk = 0, tiles = 0;
  const bool rows = geo.inner == 1;
  const int vec = cuda::vec_width<scalar_t>({gp, yp, gxp}, rows ? C : geo.inner);
  if (rows) {
    tiles = cuda::ceil_div(C, 32 * vec);
    if (n > kSmallWork) chunks = std::min(cuda::ceil_div(2 * sms, tiles), cuda::ceil_div(geo.outer, kRowLanes));
    chunks = std::max<int64_t>(chunks, 1);
    per_chunk = cuda::ceil_div(geo.outer, chunks);
    chunks = cuda::ceil_div(geo.outer, per_chunk);
  } else {
    if (n > kSmallWork) chunks = std::min(cuda::ceil_div(2 * sms, C), geo.outer);
    chunks = std::max<int64_t>(chunks, 1);
    per_chunk = cuda::ceil_div(geo.outer, chunks);
    chunks = cuda::ceil_div(geo.outer, per_chunk);
  }
  at::Tensor partial;
  acc* pp = nullptr;
  if (chunks > 1) {
    partial = at::empty({chunks * C}, y.options().dtype(c10::CppTypeToScalarType<acc>::value));
    pp = partial.mutable_data_ptr<acc>();
  }
  auto go = [&](auto vec_tag) {
    constexpr int V = decltype(vec_tag)::value;
    if (rows) {
      backward_rows_kernel<scalar_t, bias_t, V, index_t>
          <<<dim3(unsigned(cuda::ceil_div(C, 32 * V)), unsigned(chunks)), dim3(32, kRowLanes), 0, stream>>>(
              gp, yp, gxp, pp, gbp, geo.outer, C, per_chunk, pos, neg);
    } else {
      backward_planes_kernel<scalar_t, bias_t, V, index_t>
          <<<dim3(unsigned(C), unsigned(chunks)), kThreads, 0, stream>>>(gp, yp, gxp, pp, gbp, geo.outer, C, geo.inner,
                                                                         per_chunk, pos, neg);
    }
  };
  vec == W ? go(std::integral_constant<int, W>{}) : go(std::integral_constant<int, 1>{});
  C10_CUDA_KERNEL_LAUNCH_CHECK();
  if (chunks > 1) {
    sum_partials_kernel<scalar_t, bias_t, index_t>
        <<<unsigned(cuda::ceil_div(C, kThreads)), kThreads, 0, stream>>>(pp, gbp, chunks, C);
    C10_CUDA_KERNEL_LAUNCH_CHECK();
  }
}

at::Tensor bias_leaky_relu_cuda(const at::Tensor& x_, const std::optional<at::Tensor>& bias, double negative_slope,
                                double scale) {
  check_bias_leaky_relu_args(x_, bias, negative_slope, scale);
  const auto layout = out_layout(x_);
  const at::Tensor x = x_.contiguous(layout);
  const c10::cuda::CUDAGuard guard(x.device());
  at::Tensor y = at::empty(x.sizes(), x.options().memory_format(layout));
  const bool has_bias = bias.has_value() && bias->defined();
  const at::Tensor b = has_bias ? bias->contiguous() : at::Tensor();
  if (x.numel() == 0) return y;
  AT_DISPATCH_FLOATING_TYPES_AND2(at::kHalf, at::kBFloat16, x.scalar_type(), "bias_leaky_relu_cuda", [&] {
    with_bias_type<scalar_t>(has_bias && b.scalar_type() != x.scalar_type(), [&](auto* tag) {
      using bias_t = std::remove_pointer_t<decltype(tag)>;
      const bias_t* bp = has_bias ? b.const_data_ptr<bias_t>() : nullptr;
      // 32-bit indices where every offset and a grid-stride step past the end fit (as the other kernels)
      if (x.numel() <= INT32_MAX / 2)
        launch_forward<scalar_t, bias_t, int32_t>(x, bp, y, negative_slope, scale);
      else
        launch_forward<scalar_t, bias_t, int64_t>(x, bp, y, negative_slope, scale);
    });
  });
  return y;
}

std::tuple<at::Tensor, at::Tensor> bias_leaky_relu_backward_cuda(const at::Tensor& grad_, const at::Tensor& y_,
                                                                 double negative_slope, double scale,
                                                                 std::optional<at::ScalarType> bias_dtype) {
  check_bias_leaky_relu_backward_args(grad_, y_, bias_dtype);
  const bool need_bias_grad = bias_dtype.has_value();
  const auto layout = out_layout(y_);
  const at::Tensor y = y_.contiguous(layout), grad = grad_.contiguous(layout);
  const c10::cuda::CUDAGuard guard(y.device());
  at::Tensor gx = at::empty(y.sizes(), y.options().memory_format(layout));
  at::Tensor gb = at::empty({need_bias_grad ? y.size(1) : 0}, y.options().dtype(bias_dtype.value_or(y.scalar_type())));
  if (y.numel() == 0) {
    if (need_bias_grad) gb.zero_();
    return {gx, gb};
  }
  AT_DISPATCH_FLOATING_TYPES_AND2(at::kHalf, at::kBFloat16, y.scalar_type(), "bias_leaky_relu_backward_cuda", [&] {
    with_bias_type<scalar_t>(gb.scalar_type() != y.scalar_type(), [&](auto* tag) {
      using bias_t = std::remove_pointer_t<decltype(tag)>;
      // 32-bit indices where (outer * C * inner) and the row offsets fit
      if (y.numel() <= INT32_MAX / 2)
        launch_backward<scalar_t, bias_t, int32_t>(grad, y, gx, gb, need_bias_grad, negative_slope, scale);
      else
        launch_backward<scalar_t, bias_t, int64_t>(grad, y, gx, gb, need_bias_grad, negative_slope, scale);
    });
  });
  return {gx, gb};
}

}  // namespace

TORCH_LIBRARY_IMPL(fastgan, CUDA, m) {
  m.impl("bias_leaky_relu", &bias_leaky_relu_cuda);
  m.impl("bias_leaky_relu_backward", &bias_leaky_relu_backward_cuda);
}

}  // namespace fastgan
