// batch_norm (+ LeakyReLU) on the CPU.
// Forward, training: one pass for the shifted sums, one pass that normalizes and activates;
// eval: the normalizing pass only. Backward: one pass for the two sums (sum dz and
// sum dz * (x - mean), dz = dy * gain(z)), one pass that writes dx. Channels split into
// (outer, C) rows (2-D, channels_last) are summed by fixed chunks of rows, vectorized along C;
// (outer, C, inner) planes run one task per channel that sums, finalizes and applies while
// the channel is in cache. Math: csrc/batch_norm.h, whose per-element templates both the vector
// loops (T = Vec) and their scalar tails (T = acc) call.
#include <ATen/Dispatch.h>
#include <ATen/Parallel.h>
#include <ATen/ops/empty.h>
#include <torch/library.h>

#include <algorithm>
#include <vector>

#include "batch_norm.h"
#include "cpu/vec_io.h"

namespace fastgan {
namespace {

constexpr int64_t kGrain = 32768;  // elements per parallel task, as ATen's GRAIN_SIZE

// Row chunks for a (rows, C) reduction: kChunkRows rows each, summed into their own partials
// and added in chunk order. Short float sums (a two-level sum instead of one long running
// sum) keep float32 statistics accurate, and the result does not depend on the thread count.
constexpr int64_t kChunkRows = 64;
inline int64_t row_chunks(int64_t rows) {
  return std::max<int64_t>(1, (rows + kChunkRows - 1) / kChunkRows);
}
// The same for a channel's planes: cpu::planes_per_chunk.

// Adds the chunks' two per-channel partial sums (chunk q holds [sum1(C), sum2(C)]) in chunk
// order and hands each channel's totals to finalize(c, sum1, sum2).
template <typename acc, typename F>
void fold_partials(const std::vector<acc>& partial, int64_t chunks, int64_t C, F&& finalize) {
  for (int64_t c = 0; c < C; ++c) {
    acc s1 = 0, s2 = 0;
    for (int64_t q = 0; q < chunks; ++q) {
      s1 += partial[q * 2 * C + c];
      s2 += partial[q * 2 * C + C + c];
    }
    finalize(c, s1, s2);
  }
}

// Per-channel parameters the kernels read: weight / bias / running stats as acc_t, null where
// absent.
template <typename acc>
struct Params {
  const acc* w;
  const acc* b;
  acc* rmean;  // running stats: read in eval, updated in training; null when not tracked
  acc* rvar;
  acc* save_mean;
  acc* save_invstd;
  acc momentum, eps, neg;  // neg: the LeakyReLU's negative slope, 1 without one
  bool training;
  acc w_at(int64_t c) const { return w ? w[c] : acc(1); }
  acc b_at(int64_t c) const { return b ? b[c] : acc(0); }
};

// y = act((x - shift) * scale + offset) over n elements of one channel (vectorized, constants).
template <typename scalar_t, typename acc>
void apply_forward_block(const scalar_t* x, scalar_t* y, int64_t n, acc shift, acc scale, acc offset, acc neg) {
  using IO = cpu::VecIO<scalar_t>;
  using Vec = typename IO::Vec;
  const Vec vs(shift), va(scale), vo(offset), vneg(neg);
  int64_t j = 0;
  for (; j + IO::size <= n; j += IO::size) IO::store(y + j, bn::forward(IO::load(x + j), vs, va, vo, vneg));
  for (; j < n; ++j) y[j] = bn::forward<acc>(acc(x[j]), shift, scale, offset, neg);
}

template <typename scalar_t>
void forward_kernel(const scalar_t* x, scalar_t* y, ChannelGeometry g, const Params<acc_t<scalar_t>>& p) {
  using IO = cpu::VecIO<scalar_t>;
  using acc = typename IO::acc;
  using Vec = typename IO::Vec;
  const int64_t C = g.channels;
  const acc m = acc(g.outer * g.inner);
  std::vector<acc> coef(bn::kForwardCoefs * C);
  acc* shift = coef.data() + bn::kShift * C;
  acc* scale = coef.data() + bn::kScale * C;
  acc* offset = coef.data() + bn::kOffset * C;
  auto finalize = [&](int64_t c, acc s1, acc s2) {
    if (p.training) {
      bn::finalize_stats<acc>(s1, s2, m, shift[c], p.w_at(c), p.b_at(c), p.eps, p.momentum,
                              p.rmean ? p.rmean + c : nullptr, p.rvar ? p.rvar + c : nullptr, p.save_mean + c,
                              p.save_invstd + c, scale + c, offset + c);
    } else {
      shift[c] = acc(0);
      bn::finalize_eval<acc>(p.rmean[c], p.rvar[c], p.w_at(c), p.b_at(c), p.eps, p.save_mean + c, p.save_invstd + c,
                             scale + c, offset + c);
    }
  };

  if (g.inner > 1) {  // planes: one task per channel sums, finalizes and normalizes
    const int64_t inner = g.inner;
    at::parallel_for(
        0, C, std::max<int64_t>(1, kGrain / std::max<int64_t>(g.outer * inner, 1)), [&](int64_t c0, int64_t c1) {
          for (int64_t c = c0; c < c1; ++c) {
            acc s1 = 0, s2 = 0;
            if (p.training) {
              shift[c] = bn::channel_shift<acc>(x, c, g.outer, C, inner);
              const Vec vs(shift[c]);
              const int64_t per = cpu::planes_per_chunk(inner);
              for (int64_t n0 = 0; n0 < g.outer; n0 += per) {  // per plane, per chunk, then in total
                Vec v1(acc(0)), v2(acc(0));
                acc t1 = 0, t2 = 0;
                for (int64_t n = n0; n < std::min(n0 + per, g.outer); ++n) {
                  const scalar_t* xk = x + (n * C + c) * inner;
                  Vec l1(acc(0)), l2(acc(0));
                  int64_t j = 0;
                  for (; j + IO::size <= inner; j += IO::size) bn::add_sums(IO::load(xk + j), vs, l1, l2);
                  v1 = v1 + l1;
                  v2 = v2 + l2;
                  for (; j < inner; ++j) bn::add_sums<acc>(acc(xk[j]), shift[c], t1, t2);
                }
                s1 += cpu::sum_lanes(v1) + t1;
                s2 += cpu::sum_lanes(v2) + t2;
              }
            }
            finalize(c, s1, s2);
            for (int64_t n = 0; n < g.outer; ++n) {
              const int64_t off = (n * C + c) * inner;
              apply_forward_block<scalar_t, acc>(x + off, y + off, inner, shift[c], scale[c], offset[c], p.neg);
            }
          }
        });
    return;
  }

  // rows of C channels: partial sums per chunk of rows, added in chunk order
  const int64_t rows = g.outer;
  if (p.training) {
    for (int64_t c = 0; c < C; ++c) shift[c] = bn::channel_shift<acc>(x, c, rows, C, int64_t(1));
    const int64_t chunks = row_chunks(rows);
    std::vector<acc> partial(chunks * 2 * C, acc(0));
    at::parallel_for(0, chunks, std::max<int64_t>(1, kGrain / (kChunkRows * C)), [&](int64_t q0, int64_t q1) {
      for (int64_t q = q0; q < q1; ++q) {
        acc* p1 = partial.data() + q * 2 * C;
        acc* p2 = p1 + C;
        for (int64_t r = q * kChunkRows; r < std::min(rows, (q + 1) * kChunkRows); ++r) {
          const scalar_t* xr = x + r * C;
          int64_t c = 0;
          for (; c + IO::size <= C; c += IO::size) {
            Vec s1 = Vec::loadu(p1 + c), s2 = Vec::loadu(p2 + c);
            bn::add_sums(IO::load(xr + c), Vec::loadu(shift + c), s1, s2);
            s1.store(p1 + c);
            s2.store(p2 + c);
          }
          for (; c < C; ++c) bn::add_sums<acc>(acc(xr[c]), shift[c], p1[c], p2[c]);
        }
      }
    });
    fold_partials(partial, chunks, C, finalize);
  } else {
    for (int64_t c = 0; c < C; ++c) finalize(c, acc(0), acc(0));
  }
  const Vec vneg(p.neg);
  at::parallel_for(0, rows, std::max<int64_t>(1, kGrain / std::max<int64_t>(C, 1)), [&](int64_t r0, int64_t r1) {
    for (int64_t r = r0; r < r1; ++r) {
      const scalar_t* xr = x + r * C;
      scalar_t* yr = y + r * C;
      int64_t c = 0;
      for (; c + IO::size <= C; c += IO::size) {
        IO::store(yr + c, bn::forward(IO::load(xr + c), Vec::loadu(shift + c), Vec::loadu(scale + c),
                                      Vec::loadu(offset + c), vneg));
      }
      for (; c < C; ++c) yr[c] = bn::forward<acc>(acc(xr[c]), shift[c], scale[c], offset[c], p.neg);
    }
  });
}

// Backward coefficients and outputs, in acc_t.
template <typename acc>
struct BackwardParams {
  const acc* w;
  const acc* b;
  const acc* mean;
  const acc* invstd;
  acc* gw;  // null where not wanted
  acc* gb;
  acc neg;
  bool training;
  acc w_at(int64_t c) const { return w ? w[c] : acc(1); }
  acc b_at(int64_t c) const { return b ? b[c] : acc(0); }
};

template <typename scalar_t>
void backward_kernel(const scalar_t* dy, const scalar_t* x, scalar_t* dx, ChannelGeometry g,
                     const BackwardParams<acc_t<scalar_t>>& p) {
  using IO = cpu::VecIO<scalar_t>;
  using acc = typename IO::acc;
  using Vec = typename IO::Vec;
  const int64_t C = g.channels;
  const acc m = acc(g.outer * g.inner);
  const bool need_sums = p.gw || p.gb || (dx && p.training);
  std::vector<acc> coef(bn::kBackwardCoefs * C);
  acc* cmean = coef.data() + bn::kMean * C;
  acc* zscale = coef.data() + bn::kZScale * C;
  acc* zoffset = coef.data() + bn::kZOffset * C;
  acc* k1 = coef.data() + bn::kK1 * C;
  acc* k2 = coef.data() + bn::kK2 * C;
  acc* k3 = coef.data() + bn::kK3 * C;
  for (int64_t c = 0; c < C; ++c) {
    cmean[c] = p.mean[c];
    zscale[c] = p.w_at(c) * p.invstd[c];
    zoffset[c] = p.b_at(c);
  }
  auto finalize = [&](int64_t c, acc sa, acc sb) {
    acc gw, gb;
    bn::finalize_backward<acc>(sa, sb, m, p.w_at(c), p.invstd[c], p.training, &gw, &gb, k1 + c, k2 + c, k3 + c);
    if (p.gw) p.gw[c] = gw;
    if (p.gb) p.gb[c] = gb;
  };
  const Vec vneg(p.neg);

  if (g.inner > 1) {  // planes: one task per channel
    const int64_t inner = g.inner;
    at::parallel_for(
        0, C, std::max<int64_t>(1, kGrain / std::max<int64_t>(g.outer * inner, 1)), [&](int64_t c0, int64_t c1) {
          for (int64_t c = c0; c < c1; ++c) {
            const acc mu = cmean[c], zs = zscale[c], zo = zoffset[c];
            const Vec vmu(mu), vzs(zs), vzo(zo);
            acc sa = 0, sb = 0;
            if (need_sums) {
              const int64_t per = cpu::planes_per_chunk(inner);
              for (int64_t n0 = 0; n0 < g.outer; n0 += per) {  // per plane, per chunk, then in total
                Vec va(acc(0)), vb(acc(0));
                acc ta = 0, tb = 0;
                for (int64_t n = n0; n < std::min(n0 + per, g.outer); ++n) {
                  const int64_t off = (n * C + c) * inner;
                  Vec la(acc(0)), lb(acc(0));
                  int64_t j = 0;
                  for (; j + IO::size <= inner; j += IO::size) {
                    bn::add_grad_sums(IO::load(x + off + j), IO::load(dy + off + j), vmu, vzs, vzo, vneg, la, lb);
                  }
                  va = va + la;
                  vb = vb + lb;
                  for (; j < inner; ++j) {
                    bn::add_grad_sums<acc>(acc(x[off + j]), acc(dy[off + j]), mu, zs, zo, p.neg, ta, tb);
                  }
                }
                sa += cpu::sum_lanes(va) + ta;
                sb += cpu::sum_lanes(vb) + tb;
              }
            }
            finalize(c, sa, sb);
            if (!dx) continue;
            const Vec vk1(k1[c]), vk2(k2[c]), vk3(k3[c]);
            for (int64_t n = 0; n < g.outer; ++n) {
              const int64_t off = (n * C + c) * inner;
              int64_t j = 0;
              for (; j + IO::size <= inner; j += IO::size) {
                IO::store(dx + off + j, bn::grad_x(IO::load(x + off + j), IO::load(dy + off + j), vmu, vzs, vzo, vneg,
                                                   vk1, vk2, vk3));
              }
              for (; j < inner; ++j) {
                dx[off + j] =
                    bn::grad_x<acc>(acc(x[off + j]), acc(dy[off + j]), mu, zs, zo, p.neg, k1[c], k2[c], k3[c]);
              }
            }
          }
        });
    return;
  }

  const int64_t rows = g.outer;
  if (need_sums) {
    const int64_t chunks = row_chunks(rows);
    std::vector<acc> partial(chunks * 2 * C, acc(0));
    at::parallel_for(0, chunks, std::max<int64_t>(1, kGrain / (kChunkRows * C)), [&](int64_t q0, int64_t q1) {
      for (int64_t q = q0; q < q1; ++q) {
        acc* pa = partial.data() + q * 2 * C;
        acc* pb = pa + C;
        for (int64_t r = q * kChunkRows; r < std::min(rows, (q + 1) * kChunkRows); ++r) {
          const int64_t off = r * C;
          int64_t c = 0;
          for (; c + IO::size <= C; c += IO::size) {
            Vec sa = Vec::loadu(pa + c), sb = Vec::loadu(pb + c);
            bn::add_grad_sums(IO::load(x + off + c), IO::load(dy + off + c), Vec::loadu(cmean + c),
                              Vec::loadu(zscale + c), Vec::loadu(zoffset + c), vneg, sa, sb);
            sa.store(pa + c);
            sb.store(pb + c);
          }
          for (; c < C; ++c) {
            bn::add_grad_sums<acc>(acc(x[off + c]), acc(dy[off + c]), cmean[c], zscale[c], zoffset[c], p.neg, pa[c],
                                   pb[c]);
          }
        }
      }
    });
    fold_partials(partial, chunks, C, finalize);
  } else {
    for (int64_t c = 0; c < C; ++c) finalize(c, acc(0), acc(0));
  }
  if (!dx) return;
  at::parallel_for(0, rows, std::max<int64_t>(1, kGrain / std::max<int64_t>(C, 1)), [&](int64_t r0, int64_t r1) {
    for (int64_t r = r0; r < r1; ++r) {
      const int64_t off = r * C;
      int64_t c = 0;
      for (; c + IO::size <= C; c += IO::size) {
        IO::store(dx + off + c, bn::grad_x(IO::load(x + off + c), IO::load(dy + off + c), Vec::loadu(cmean + c),
                                           Vec::loadu(zscale + c), Vec::loadu(zoffset + c), vneg, Vec::loadu(k1 + c),
                                           Vec::loadu(k2 + c), Vec::loadu(k3 + c)));
      }
      for (; c < C; ++c) {
        dx[off + c] = bn::grad_x<acc>(acc(x[off + c]), acc(dy[off + c]), cmean[c], zscale[c], zoffset[c], p.neg, k1[c],
                                      k2[c], k3[c]);
      }
    }
  });
}

std::tuple<at::Tensor, at::Tensor, at::Tensor> batch_norm_cpu(
    const at::Tensor& x_, const std::optional<at::Tensor>& weight, const std::optional<at::Tensor>& bias,
    const std::optional<at::Tensor>& running_mean, const std::optional<at::Tensor>& running_var, bool training,
    double momentum, double eps, std::optional<double> negative_slope,
    const std::optional<at::Tensor>& num_batches_tracked) {
  const BatchNormForward t = prepare_batch_norm(x_, weight, bias, running_mean, running_var, training, momentum, eps,
                                                negative_slope, num_batches_tracked);
  if (empty_batch_norm(t, eps)) return {t.y, t.save_mean, t.save_invstd};
  AT_DISPATCH_FLOATING_TYPES_AND2(at::kHalf, at::kBFloat16, t.x.scalar_type(), "batch_norm_cpu", [&] {
    using acc = acc_t<scalar_t>;
    Params<acc> p{const_ptr_or_null<acc>(t.w),
                  const_ptr_or_null<acc>(t.b),
                  ptr_or_null<acc>(t.rm),
                  ptr_or_null<acc>(t.rv),
                  t.save_mean.mutable_data_ptr<acc>(),
                  t.save_invstd.mutable_data_ptr<acc>(),
                  acc(momentum),
                  acc(eps),
                  acc(negative_slope.has_value() ? *negative_slope : 1.0),
                  training};
    forward_kernel<scalar_t>(t.x.const_data_ptr<scalar_t>(), t.y.mutable_data_ptr<scalar_t>(), channel_geometry(t.x),
                             p);
  });
  if (training) write_back_running_stats(t.rm, t.rv, running_mean, running_var);
  if (t.num_batches_tracked) ++*t.num_batches_tracked;
  return {t.y, t.save_mean, t.save_invstd};
}

std::tuple<at::Tensor, at::Tensor, at::Tensor> batch_norm_backward_cpu(
    const at::Tensor& grad_, const at::Tensor& x_, const std::optional<at::Tensor>& weight,
    const std::optional<at::Tensor>& bias, const at::Tensor& save_mean_, const at::Tensor& save_invstd_, bool training,
    std::optional<double> negative_slope, std::array<bool, 3> output_mask) {
  const BatchNormBackward t =
      prepare_batch_norm_backward(grad_, x_, weight, bias, save_mean_, save_invstd_, output_mask);
  if (empty_batch_norm_backward(t)) return finish_batch_norm_backward(t, weight, bias);
  AT_DISPATCH_FLOATING_TYPES_AND2(at::kHalf, at::kBFloat16, t.x.scalar_type(), "batch_norm_backward_cpu", [&] {
    using acc = acc_t<scalar_t>;
    BackwardParams<acc> p{const_ptr_or_null<acc>(t.w),
                          const_ptr_or_null<acc>(t.b),
                          t.mean.const_data_ptr<acc>(),
                          t.invstd.const_data_ptr<acc>(),
                          output_mask[1] ? t.gw.mutable_data_ptr<acc>() : nullptr,
                          output_mask[2] ? t.gb.mutable_data_ptr<acc>() : nullptr,
                          acc(negative_slope.has_value() ? *negative_slope : 1.0),
                          training};
    backward_kernel<scalar_t>(t.grad.const_data_ptr<scalar_t>(), t.x.const_data_ptr<scalar_t>(),
                              output_mask[0] ? t.dx.mutable_data_ptr<scalar_t>() : nullptr, channel_geometry(t.x), p);
  });
  return finish_batch_norm_backward(t, weight, bias);
}

}  // namespace

TORCH_LIBRARY_IMPL(fastgan, CPU, m) {
  m.impl("batch_norm", &batch_norm_cpu);
  m.impl("batch_norm_backward", &batch_norm_backward_cpu);
}

}  // namespace fastgan
