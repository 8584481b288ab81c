// bias_leaky_relu on the CPU: one vectorized pass forward; one pass backward that writes
// grad_x and reduces grad_bias at the same time. Math: csrc/bias_leaky_relu.h, whose templates
// both the vector loops (T = Vec) and their scalar tails (T = acc) call.
#include <ATen/Dispatch.h>
#include <ATen/Parallel.h>
#include <ATen/ops/empty.h>
#include <ATen/ops/zeros.h>
#include <torch/library.h>

#include <algorithm>
#include <vector>

#include "bias_leaky_relu.h"
#include "cpu/vec_io.h"

namespace fastgan {
namespace {

constexpr int64_t kGrain = 32768;  // elements per parallel task, as ATen's GRAIN_SIZE

template <typename scalar_t, typename bias_t>
void forward_kernel(const scalar_t* x, const bias_t* b, scalar_t* y, ChannelGeometry g, double slope, double scale) {
  using IO = cpu::VecIO<scalar_t>;
  using acc = typename IO::acc;
  using Vec = typename IO::Vec;
  const acc pos = acc(scale), neg = acc(slope * scale);
  const Vec vpos(pos), vneg(neg);
  auto bias_at = [&](int64_t c) { return b ? acc(b[c]) : acc(0); };

  if (g.inner == 1) {  // rows of C channels: the bias varies along the row
    const int64_t C = g.channels;
    at::parallel_for(0, g.outer, std::max<int64_t>(1, kGrain / std::max<int64_t>(C, 1)), [&](int64_t r0, int64_t r1) {
      for (int64_t r = r0; r < r1; ++r) {
        const scalar_t* xr = x + r * C;
        scalar_t* yr = y + r * C;
        int64_t c = 0;
        for (; c + IO::size <= C; c += IO::size) {
          Vec v = IO::load(xr + c);
          if (b) v = v + cpu::VecIO<bias_t>::load(b + c);  // the same Vec type: checked by the caller
          IO::store(yr + c, bias_act::forward<scalar_t>(v, vpos, vneg));
        }
        for (; c < C; ++c) yr[c] = bias_act::forward<scalar_t>(acc(xr[c]) + bias_at(c), pos, neg);
      }
    });
    return;
  }
  // blocks of `inner` elements share one channel
  const int64_t inner = g.inner;
  at::parallel_for(0, g.outer * g.channels, std::max<int64_t>(1, kGrain / inner), [&](int64_t k0, int64_t k1) {
    for (int64_t k = k0; k < k1; ++k) {
      const acc bk = bias_at(k % g.channels);
      const Vec vb(bk);
      const scalar_t* xk = x + k * inner;
      scalar_t* yk = y + k * inner;
      int64_t j = 0;
      for (; j + IO::size <= inner; j += IO::size) {
        const Vec v = IO::load(xk + j) + vb;
        IO::store(yk + j, bias_act::forward<scalar_t>(v, vpos, vneg));
      }
      for (; j < inner; ++j) yk[j] = bias_act::forward<scalar_t>(acc(xk[j]) + bk, pos, neg);
    }
  });
}

// grad_x = grad * gain(y); grad_bias[c] = sum of grad_x over every dim but 1, accumulated
// in acc (float for half types) and stored in the bias's type. Partial sums per fixed chunk
// (up to kMaxChunks chunks of at least kMinChunkRows rows, set by the shape alone, or about
// cpu::kChunkElems elements of a channel's planes), added in order: the result depends only on
// the input, not on the thread count, and float32 sums stay short.
constexpr int64_t kMaxChunks = 64, kMinChunkRows = 8;
template <typename scalar_t, typename bias_t>
void backward_kernel(const scalar_t* gr, const scalar_t* y, scalar_t* gx, bias_t* gb, ChannelGeometry g, double slope,
                     double scale) {
  using IO = cpu::VecIO<scalar_t>;
  using acc = typename IO::acc;
  using Vec = typename IO::Vec;
  const acc pos = acc(scale), neg = acc(slope * scale);
  const Vec vpos(pos), vneg(neg);
  const int64_t C = g.channels;

  if (g.inner == 1) {
    // rows per chunk (one each without a bias gradient): a batch of 64 still splits in 8 tasks
    const int64_t want = std::min(kMaxChunks, (g.outer + kMinChunkRows - 1) / kMinChunkRows);
    const int64_t rows = gb ? std::max<int64_t>(1, (g.outer + want - 1) / std::max<int64_t>(want, 1)) : 1;
    const int64_t chunks = std::max<int64_t>(1, (g.outer + rows - 1) / rows);
    std::vector<acc> partial(gb ? chunks * C : 0, acc(0));
    at::parallel_for(
        0, chunks, std::max<int64_t>(1, kGrain / std::max<int64_t>(rows * C, 1)), [&](int64_t q0, int64_t q1) {
          for (int64_t q = q0; q < q1; ++q) {
            const int64_t r0 = q * rows, r1 = std::min(g.outer, r0 + rows);
            acc* part = gb ? partial.data() + q * C : nullptr;
            for (int64_t r = r0; r < r1; ++r) {
              const int64_t off = r * C;
              int64_t c = 0;
              for (; c + IO::size <= C; c += IO::size) {
                const Vec d = bias_act::backward(IO::load(gr + off + c), IO::load(y + off + c), vpos, vneg);
                IO::store(gx + off + c, d);
                if (part) (Vec::loadu(part + c) + d).store(part + c);
              }
              for (; c < C; ++c) {
                const acc d = bias_act::backward(acc(gr[off + c]), acc(y[off + c]), pos, neg);
                gx[off + c] = d;
                if (part) part[c] += d;
              }
            }
          }
        });
    if (gb) {  // the chunks' partials added in chunk order, whole vectors of channels at a time
      std::vector<acc> total(C, acc(0));
      for (int64_t q = 0; q < chunks; ++q) {
        const acc* part = partial.data() + q * C;
        int64_t c = 0;
        for (; c + Vec::size() <= C; c += Vec::size())
          (Vec::loadu(total.data() + c) + Vec::loadu(part + c)).store(total.data() + c);
        for (; c < C; ++c) total[c] += part[c];
      }
      for (int64_t c = 0; c < C; ++c) gb[c] = bias_t(total[c]);
    }
    return;
  }
  // NC*-contiguous: each channel's elements are `outer` blocks of `inner`; one task per channel
  const int64_t inner = g.inner;
  at::parallel_for(
      0, C, std::max<int64_t>(1, kGrain / std::max<int64_t>(inner * g.outer, 1)), [&](int64_t c0, int64_t c1) {
        const int64_t per = cpu::planes_per_chunk(inner);
        for (int64_t c = c0; c < c1; ++c) {
          acc total = 0;
          for (int64_t n0 = 0; n0 < g.outer; n0 += per) {
            Vec vsum(acc(0));
            acc ssum = 0;
            for (int64_t n = n0; n < std::min(n0 + per, g.outer); ++n) {
              const int64_t off = (n * C + c) * inner;
              int64_t j = 0;
              for (; j + IO::size <= inner; j += IO::size) {
                const Vec d = bias_act::backward(IO::load(gr + off + j), IO::load(y + off + j), vpos, vneg);
                IO::store(gx + off + j, d);
                vsum = vsum + d;
              }
              for (; j < inner; ++j) {
                const acc d = bias_act::backward(acc(gr[off + j]), acc(y[off + j]), pos, neg);
                gx[off + j] = d;
                ssum += d;
              }
            }
            total += cpu::sum_lanes(vsum) + ssum;
          }
          if (gb) gb[c] = bias_t(total);
        }
      });
}

at::Tensor bias_leaky_relu_cpu(const at::Tensor& x_, const std::optional<at::Tensor>& bias, double negative_slope,
                               double scale) {
  check_bias_leaky_relu_args(x_, bias, negative_slope, scale);
  const auto layout = out_layout(x_);
  const at::Tensor x = x_.contiguous(layout);
  at::Tensor y = at::empty(x.sizes(), x.options().memory_format(layout));
  const bool has_bias = bias.has_value() && bias->defined();
  const at::Tensor b = has_bias ? bias->contiguous() : at::Tensor();
  if (x.numel() == 0) return y;
  AT_DISPATCH_FLOATING_TYPES_AND2(at::kHalf, at::kBFloat16, x.scalar_type(), "bias_leaky_relu_cpu", [&] {
    with_bias_type<scalar_t>(has_bias && b.scalar_type() != x.scalar_type(), [&](auto* tag) {
      using bias_t = std::remove_pointer_t<decltype(tag)>;
      forward_kernel<scalar_t, bias_t>(x.const_data_ptr<scalar_t>(), has_bias ? b.const_data_ptr<bias_t>() : nullptr,
                                       y.mutable_data_ptr<scalar_t>(), channel_geometry(x), negative_slope, scale);
    });
  });
  return y;
}

std::tuple<at::Tensor, at::Tensor> bias_leaky_relu_backward_cpu(const at::Tensor& grad_, const at::Tensor& y_,
                                                                double negative_slope, double scale,
                                                                std::optional<at::ScalarType> bias_dtype) {
  check_bias_leaky_relu_backward_args(grad_, y_, bias_dtype);
  const bool need_bias_grad = bias_dtype.has_value();
  const auto layout = out_layout(y_);
  const at::Tensor y = y_.contiguous(layout), grad = grad_.contiguous(layout);
  at::Tensor gx = at::empty(y.sizes(), y.options().memory_format(layout));
  at::Tensor gb = need_bias_grad ? at::zeros({y.size(1)}, y.options().dtype(*bias_dtype)) : at::empty({0}, y.options());
  if (y.numel() == 0) return {gx, gb};
  AT_DISPATCH_FLOATING_TYPES_AND2(at::kHalf, at::kBFloat16, y.scalar_type(), "bias_leaky_relu_backward_cpu", [&] {
    with_bias_type<scalar_t>(gb.scalar_type() != y.scalar_type(), [&](auto* tag) {
      using bias_t = std::remove_pointer_t<decltype(tag)>;
      backward_kernel<scalar_t, bias_t>(
          grad.const_data_ptr<scalar_t>(), y.const_data_ptr<scalar_t>(), gx.mutable_data_ptr<scalar_t>(),
          need_bias_grad ? gb.mutable_data_ptr<bias_t>() : nullptr, channel_geometry(y), negative_slope, scale);
    });
  });
  return {gx, gb};
}

}  // namespace

TORCH_LIBRARY_IMPL(fastgan, CPU, m) {
  m.impl("bias_leaky_relu", &bias_leaky_relu_cpu);
  m.impl("bias_leaky_relu_backward", &bias_leaky_relu_backward_cpu);
}

}  // namespace fastgan
