// BCE with logits and the GAN losses on the CPU. Forward: one vectorized pass that writes the
// elementwise losses (reduction 'none') or sums them; backward: one vectorized pass that
// writes dloss/dlogits. Math: csrc/losses.h, whose templates both the vector loops (T = Vec)
// and their scalar tails (T = acc) call. The passes take the term (losses::Term: a GAN loss
// kind's) as a template argument; bce_with_logits is Term::Bce.
//
// Sums are deterministic and independent of the thread count: the elements are cut into
// fixed chunks of kChunk, each chunk is summed in a fixed order (vector lanes, then lanes
// in order, then the tail), and the chunk sums are added in chunk order.
#include <ATen/Dispatch.h>
#include <ATen/Parallel.h>
#include <ATen/ops/empty.h>
#include <torch/library.h>

#include <algorithm>
#include <vector>

#include "cpu/vec_io.h"
#include "losses.h"

namespace fastgan {
namespace {

using losses::Reduction;
using losses::Segment;
using losses::Term;
constexpr int64_t kChunk = 16384;  // elements per partial sum (a multiple of every vector size)
constexpr int64_t kGrain = 32768;  // elements per parallel task in the elementwise passes

// Loads of the optional inputs: the tensor where given, else the number.
template <typename IO, typename scalar_t>
inline typename IO::Vec load_or(const scalar_t* p, int64_t i, typename IO::acc v) {
  return p ? IO::load(p + i) : typename IO::Vec(v);
}

template <typename scalar_t>
inline acc_t<scalar_t> at_or(const scalar_t* p, int64_t i, acc_t<scalar_t> v) {
  return p ? acc_t<scalar_t>(p[i]) : v;
}

// Sum of the weighted losses of elements [i0, i1) of s.
template <Term K, typename scalar_t>
acc_t<scalar_t> chunk_sum(const Segment<scalar_t>& s, int64_t i0, int64_t i1) {
  using IO = cpu::VecIO<scalar_t>;
  using acc = typename IO::acc;
  using Vec = typename IO::Vec;
  Vec vsum(acc(0));
  int64_t i = i0;
  for (; i + IO::size <= i1; i += IO::size) {
    const Vec x = IO::load(s.x + i), t = load_or<IO>(s.t, i, s.tv), pw = load_or<IO>(s.pw, i, acc(1));
    vsum = vsum + losses::term_loss<K>(x, t, load_or<IO>(s.w, i, acc(1)), pw);
  }
  acc lanes[IO::size];
  vsum.store(lanes);
  acc sum = 0;
  for (int64_t l = 0; l < IO::size; ++l) sum += lanes[l];
  for (; i < i1; ++i) {
    sum += losses::term_loss<K>(acc(s.x[i]), at_or(s.t, i, s.tv), at_or(s.w, i, acc(1)), at_or(s.pw, i, acc(1)));
  }
  return sum;
}

// scale0 * sum(segment 0) + scale1 * sum(segment 1), each sum over fixed chunks.
template <Term K, typename scalar_t>
acc_t<scalar_t> reduce(const Segment<scalar_t>* segs, int nseg) {
  using acc = acc_t<scalar_t>;
  int64_t first[3] = {0, 0, 0};  // chunk index where each segment starts
  for (int k = 0; k < nseg; ++k) first[k + 1] = first[k] + (segs[k].n + kChunk - 1) / kChunk;
  const int64_t chunks = first[nseg];
  std::vector<acc> partial(chunks);
  auto work = [&](int64_t q0, int64_t q1) {
    for (int64_t q = q0; q < q1; ++q) {
      const int k = q >= first[1] ? 1 : 0;
      const int64_t i0 = (q - first[k]) * kChunk;
      partial[q] = chunk_sum<K>(segs[k], i0, std::min(i0 + kChunk, segs[k].n));
    }
  };
  if (chunks <= 2)
    work(0, chunks);  // a GAN batch: no thread pool round trip
  else
    at::parallel_for(0, chunks, 1, work);
  acc total = 0;
  for (int k = 0; k < nseg; ++k) {
    acc s = 0;
    for (int64_t q = first[k]; q < first[k + 1]; ++q) s += partial[q];
    total += s * segs[k].scale;
  }
  return total;
}

// GRAD = false: out = the weighted loss of each element (reduction 'none').
// GRAD = true: out = G * dloss/dx, with G = ge[i] (reduction 'none') or gs * s.scale.
template <typename scalar_t, bool GRAD, Term K = Term::Bce>
void elementwise(const Segment<scalar_t>& s, scalar_t* out, const scalar_t* ge, acc_t<scalar_t> gs) {
  using IO = cpu::VecIO<scalar_t>;
  using acc = typename IO::acc;
  using Vec = typename IO::Vec;
  const acc g_all = gs * s.scale;
  auto work = [&](int64_t i0, int64_t i1) {
    int64_t i = i0;
    for (; i + IO::size <= i1; i += IO::size) {
      const Vec x = IO::load(s.x + i), t = load_or<IO>(s.t, i, s.tv), w = load_or<IO>(s.w, i, acc(1));
      const Vec pw = load_or<IO>(s.pw, i, acc(1));
      IO::store(out + i, GRAD ? losses::term_grad<K>(x, t, w, pw) * load_or<IO>(ge, i, g_all)
                              : losses::term_loss<K>(x, t, w, pw));
    }
    for (; i < i1; ++i) {
      const acc x = s.x[i], t = at_or(s.t, i, s.tv), w = at_or(s.w, i, acc(1)), pw = at_or(s.pw, i, acc(1));
      out[i] = GRAD ? losses::term_grad<K>(x, t, w, pw) * at_or(ge, i, g_all) : losses::term_loss<K>(x, t, w, pw);
    }
  };
  if (s.n <= kGrain)
    work(0, s.n);
  else
    at::parallel_for(0, s.n, kGrain, work);
}

// A 0-dim (one element) tensor's value.
double scalar_value(const at::Tensor& t) {
  double v = 0;
  AT_DISPATCH_FLOATING_TYPES_AND2(at::kHalf, at::kBFloat16, t.scalar_type(), "scalar_value",
                                  [&] { v = double(*t.const_data_ptr<scalar_t>()); });
  return v;
}

at::Tensor bce_with_logits_cpu(const at::Tensor& logits, const std::optional<at::Tensor>& target, double target_value,
                               const std::optional<at::Tensor>& weight, const std::optional<at::Tensor>& pos_weight,
                               c10::string_view reduction) {
  const BceArgs a = prepare_bce_args("bce_with_logits", logits, target, target_value, weight, pos_weight,
                                     std::string_view(reduction.data(), reduction.size()));
  const bool none = a.reduction == Reduction::None;
  at::Tensor out = none ? at::empty(a.x.sizes(), a.x.options()) : at::empty({}, a.x.options());
  AT_DISPATCH_FLOATING_TYPES_AND2(at::kHalf, at::kBFloat16, a.x.scalar_type(), "bce_with_logits_cpu", [&] {
    const auto seg = losses::segment_of<scalar_t>(a);
    if (none)
      elementwise<scalar_t, false>(seg, out.mutable_data_ptr<scalar_t>(), nullptr, 0);
    else
      *out.mutable_data_ptr<scalar_t>() = scalar_t(reduce<Term::Bce>(&seg, 1));
  });
  return out;
}

at::Tensor bce_with_logits_backward_cpu(const at::Tensor& grad_, const at::Tensor& logits,
                                        const std::optional<at::Tensor>& target, double target_value,
                                        const std::optional<at::Tensor>& weight,
                                        const std::optional<at::Tensor>& pos_weight, c10::string_view reduction) {
  constexpr const char* op = "bce_with_logits_backward";
  const BceArgs a = prepare_bce_args(op, logits, target, target_value, weight, pos_weight,
                                     std::string_view(reduction.data(), reduction.size()));
  const bool none = a.reduction == Reduction::None;
  const at::Tensor grad = prepare_loss_grad(op, grad_, a.x, none);
  at::Tensor gx = at::empty(a.x.sizes(), a.x.options());
  AT_DISPATCH_FLOATING_TYPES_AND2(at::kHalf, at::kBFloat16, a.x.scalar_type(), "bce_with_logits_backward_cpu", [&] {
    const auto seg = losses::segment_of<scalar_t>(a);
    elementwise<scalar_t, true>(seg, gx.mutable_data_ptr<scalar_t>(), none ? grad.const_data_ptr<scalar_t>() : nullptr,
                                none ? 0 : acc_t<scalar_t>(scalar_value(grad)));
  });
  return gx;
}

at::Tensor gan_d_loss_cpu(const at::Tensor& real_, const at::Tensor& fake_, double real_label, double fake_label,
                          int64_t kind_) {
  const losses::Kind kind = check_gan_d_loss_args(real_, fake_, real_label, fake_label, kind_);
  const at::Tensor real = real_.contiguous(), fake = fake_.contiguous();
  at::Tensor out = at::empty({}, real.options().dtype(loss_acc_dtype(real)));
  AT_DISPATCH_FLOATING_TYPES_AND2(at::kHalf, at::kBFloat16, real.scalar_type(), "gan_d_loss_cpu", [&] {
    const Segment<scalar_t> segs[2] = {losses::d_real_segment<scalar_t>(real, kind, real_label),
                                       losses::d_fake_segment<scalar_t>(fake, kind, fake_label)};
    losses::with_term(losses::d_term(kind), [&](auto term) {
      *out.mutable_data_ptr<acc_t<scalar_t>>() = reduce<decltype(term)::value>(segs, 2);
    });
  });
  return out;
}

std::tuple<at::Tensor, at::Tensor> gan_d_loss_backward_cpu(const at::Tensor& grad_, const at::Tensor& real_,
                                                           const at::Tensor& fake_, double real_label,
                                                           double fake_label, int64_t kind_) {
  const losses::Kind kind = check_gan_d_loss_args(real_, fake_, real_label, fake_label, kind_);
  const at::Tensor real = real_.contiguous(), fake = fake_.contiguous();
  const at::Tensor grad = prepare_loss_grad("gan_d_loss_backward", grad_, real, false);
  at::Tensor gr = at::empty(real.sizes(), real.options()), gf = at::empty(fake.sizes(), fake.options());
  AT_DISPATCH_FLOATING_TYPES_AND2(at::kHalf, at::kBFloat16, real.scalar_type(), "gan_d_loss_backward_cpu", [&] {
    const acc_t<scalar_t> g = scalar_value(grad);
    losses::with_term(losses::d_term(kind), [&](auto term) {
      constexpr Term K = decltype(term)::value;
      elementwise<scalar_t, true, K>(losses::d_real_segment<scalar_t>(real, kind, real_label),
                                     gr.mutable_data_ptr<scalar_t>(), nullptr, g);
      elementwise<scalar_t, true, K>(losses::d_fake_segment<scalar_t>(fake, kind, fake_label),
                                     gf.mutable_data_ptr<scalar_t>(), nullptr, g);
    });
  });
  return {gr, gf};
}

at::Tensor gan_g_loss_cpu(const at::Tensor& fake_, double real_label, int64_t kind_) {
  const losses::Kind kind = check_gan_g_loss_args(fake_, real_label, kind_);
  const at::Tensor fake = fake_.contiguous();
  at::Tensor out = at::empty({}, fake.options().dtype(loss_acc_dtype(fake)));
  AT_DISPATCH_FLOATING_TYPES_AND2(at::kHalf, at::kBFloat16, fake.scalar_type(), "gan_g_loss_cpu", [&] {
    const auto seg = losses::g_segment<scalar_t>(fake, kind, real_label);
    losses::with_term(losses::g_term(kind), [&](auto term) {
      *out.mutable_data_ptr<acc_t<scalar_t>>() = reduce<decltype(term)::value>(&seg, 1);
    });
  });
  return out;
}

at::Tensor gan_g_loss_backward_cpu(const at::Tensor& grad_, const at::Tensor& fake_, double real_label, int64_t kind_) {
  const losses::Kind kind = check_gan_g_loss_args(fake_, real_label, kind_);
  const at::Tensor fake = fake_.contiguous();
  const at::Tensor grad = prepare_loss_grad("gan_g_loss_backward", grad_, fake, false);
  at::Tensor gf = at::empty(fake.sizes(), fake.options());
  AT_DISPATCH_FLOATING_TYPES_AND2(at::kHalf, at::kBFloat16, fake.scalar_type(), "gan_g_loss_backward_cpu", [&] {
    losses::with_term(losses::g_term(kind), [&](auto term) {
      elementwise<scalar_t, true, decltype(term)::value>(losses::g_segment<scalar_t>(fake, kind, real_label),
                                                         gf.mutable_data_ptr<scalar_t>(), nullptr,
                                                         acc_t<scalar_t>(scalar_value(grad)));
    });
  });
  return gf;
}

}  // namespace

TORCH_LIBRARY_IMPL(fastgan, CPU, m) {
  m.impl("bce_with_logits", &bce_with_logits_cpu);
  m.impl("bce_with_logits_backward", &bce_with_logits_backward_cpu);
  m.impl("gan_d_loss", &gan_d_loss_cpu);
  m.impl("gan_d_loss_backward", &gan_d_loss_backward_cpu);
  m.impl("gan_g_loss", &gan_g_loss_cpu);
  m.impl("gan_g_loss_backward", &gan_g_loss_backward_cpu);
}

}  // namespace fastgan
