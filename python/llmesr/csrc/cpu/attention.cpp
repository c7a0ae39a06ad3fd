// CPU implementation of llmesr::attention. Each (row, head) is one task: its real positions form an
// n x n block (padding is skipped, not masked), whose products run as matrix multiplications and
// whose softmax, causal cut and dropout are one pass over the block while it sits in cache. Nothing
// of size L x L is kept: the backward recomputes the weights from the saved log-sum-exp.
#include "../attention.h"

#include <ATen/Parallel.h>
#include <torch/library.h>

#include <cmath>
#include <limits>
#include <vector>

namespace {

struct Problem {
  int64_t batch, length, heads, dim;
  bool causal;
  double dropout;
  uint32_t seed, threshold;

  Problem(const at::Tensor& q, bool causal, double dropout, int64_t seed)
      : batch(q.size(0)), length(q.size(1)), heads(q.size(2)), dim(q.size(3)), causal(causal), dropout(dropout),
        seed(static_cast<uint32_t>(seed)), threshold(llmesr::dropout_threshold(dropout)) {}

  // Row b's real positions of head h: an [n, Dh] view (rows strided by H * Dh).
  at::Tensor block(const at::Tensor& x, int64_t b, int64_t h, int64_t start) const {
    return x.select(0, b).narrow(0, start, length - start).select(1, h);
  }
};

std::vector<int64_t> checked_lengths(const at::Tensor& lengths, int64_t length) {
  auto values = lengths.contiguous();
  std::vector<int64_t> out(values.data_ptr<int64_t>(), values.data_ptr<int64_t>() + values.numel());
  for (size_t b = 0; b < out.size(); ++b) {
    TORCH_CHECK(out[b] >= 0 && out[b] <= length, "attention: lengths[", b, "] = ", out[b], " is not in [0, ", length,
                "]");
  }
  return out;
}

// In place on the n x n block `scores` (unscaled q.k): the weights exp(scale * s - lse) of the allowed
// keys, 0 elsewhere. `lse` is written (forward) or read (backward, `known_lse`). The exponentials run
// as one vectorised ATen call over the block; the loops around it are single passes.
template <typename scalar_t, typename acc_t>
void softmax_block(at::Tensor& scores, scalar_t scale, bool causal, acc_t* lse, bool known_lse) {
  constexpr scalar_t kNegInf = -std::numeric_limits<scalar_t>::infinity();
  const int64_t n = scores.size(0);
  scalar_t* s = scores.data_ptr<scalar_t>();
  std::vector<scalar_t> shift(n);
  for (int64_t i = 0; i < n; ++i) {
    scalar_t* row = s + i * n;
    const int64_t limit = causal ? i + 1 : n;
    shift[i] = known_lse ? static_cast<scalar_t>(lse[i]) : *std::max_element(row, row + limit) * scale;
    for (int64_t j = 0; j < limit; ++j) row[j] = row[j] * scale - shift[i];
    std::fill(row + limit, row + n, kNegInf);  // the causal cut: exp gives 0
  }
  scores.exp_();
  if (known_lse) return;
  for (int64_t i = 0; i < n; ++i) {
    scalar_t* row = s + i * n;
    const int64_t limit = causal ? i + 1 : n;
    scalar_t total = 0;
    for (int64_t j = 0; j < limit; ++j) total += row[j];
    const scalar_t inv = scalar_t(1) / total;
    for (int64_t j = 0; j < limit; ++j) row[j] *= inv;
    lse[i] = static_cast<acc_t>(shift[i]) + std::log(static_cast<acc_t>(total));
  }
}

// The dropout factor of each key of one query row: 1 / (1 - p) where kept, 0 where dropped.
template <typename scalar_t>
void dropout_factors(const Problem& p, int64_t task, int64_t query, int64_t first_key, int64_t count,
                     scalar_t* factors) {
  const scalar_t keep = static_cast<scalar_t>(1.0 / (1.0 - p.dropout));
  if (p.dropout == 0) {
    std::fill(factors, factors + count, scalar_t(1));
    return;
  }
  const uint32_t key = llmesr::dropout_row_key(p.seed, task, p.length, query);
  for (int64_t j = 0; j < count; ++j) {
    factors[j] = llmesr::dropout_keeps(key, first_key + j, p.threshold) ? keep : scalar_t(0);
  }
}

// One n x n block per task, reused across the tasks a thread runs.
at::Tensor square(at::Tensor& scratch, int64_t n) { return scratch.narrow(0, 0, n * n).view({n, n}); }

std::tuple<at::Tensor, at::Tensor> attention_cpu(const at::Tensor& q, const at::Tensor& k, const at::Tensor& v,
                                                 const at::Tensor& lengths, bool causal, double dropout,
                                                 int64_t seed) {
  llmesr::check_attention(q, k, v, lengths, dropout);
  at::AutoDispatchBelowAutograd below_autograd;  // the ATen calls inside are not differentiated
  const Problem p(q, causal, dropout, seed);
  const auto lens = checked_lengths(lengths, p.length);
  auto out = at::zeros_like(q, at::MemoryFormat::Contiguous);
  auto lse = at::zeros({p.batch, p.heads, p.length}, q.options().dtype(llmesr::lse_dtype(q)));
  AT_DISPATCH_FLOATING_TYPES(q.scalar_type(), "attention_cpu", [&] {
    using acc_t = std::conditional_t<std::is_same_v<scalar_t, double>, double, float>;
    const scalar_t scale = static_cast<scalar_t>(1.0 / std::sqrt(static_cast<double>(p.dim)));
    at::parallel_for(0, p.batch * p.heads, 1, [&](int64_t lo, int64_t hi) {
      auto scratch = at::empty({p.length * p.length}, q.options());
      std::vector<scalar_t> factors(p.length);
      for (int64_t t = lo; t < hi; ++t) {
        const int64_t b = t / p.heads, h = t % p.heads, n = lens[b], start = p.length - n;
        if (n == 0) continue;
        auto weights = square(scratch, n);
        at::mm_out(weights, p.block(q, b, h, start), p.block(k, b, h, start).t());
        softmax_block<scalar_t, acc_t>(weights, scale, causal, lse.data_ptr<acc_t>() + t * p.length + start, false);
        if (dropout > 0) {
          scalar_t* w = weights.data_ptr<scalar_t>();
          for (int64_t i = 0; i < n; ++i) {
            const int64_t limit = causal ? i + 1 : n;
            dropout_factors(p, t, start + i, start, limit, factors.data());
            for (int64_t j = 0; j < limit; ++j) w[i * n + j] *= factors[j];
          }
        }
        auto out_block = p.block(out, b, h, start);
        at::mm_out(out_block, weights, p.block(v, b, h, start));
      }
    });
  });
  return {out, lse};
}

std::tuple<at::Tensor, at::Tensor, at::Tensor> attention_backward_cpu(
    const at::Tensor& grad, const at::Tensor& q, const at::Tensor& k, const at::Tensor& v, const at::Tensor& out,
    const at::Tensor& lse, const at::Tensor& lengths, bool causal, double dropout, int64_t seed) {
  llmesr::check_attention(q, k, v, lengths, dropout);
  at::AutoDispatchBelowAutograd below_autograd;  // the ATen calls inside are not differentiated
  TORCH_CHECK(grad.sizes() == q.sizes() && out.sizes() == q.sizes(), "attention_backward: grad ", grad.sizes(),
              " and out ", out.sizes(), " must match q ", q.sizes());
  const Problem p(q, causal, dropout, seed);
  TORCH_CHECK(lse.sizes() == at::IntArrayRef({p.batch, p.heads, p.length}) &&
                  lse.scalar_type() == llmesr::lse_dtype(q),
              "attention_backward: lse must be [B, H, L] of the forward's dtype");
  const auto lens = checked_lengths(lengths, p.length);
  auto dq = at::zeros_like(q, at::MemoryFormat::Contiguous);
  auto dk = at::zeros_like(k, at::MemoryFormat::Contiguous);
  auto dv = at::zeros_like(v, at::MemoryFormat::Contiguous);
  auto lse_c = lse.contiguous();
  AT_DISPATCH_FLOATING_TYPES(q.scalar_type(), "attention_backward_cpu", [&] {
    using acc_t = std::conditional_t<std::is_same_v<scalar_t, double>, double, float>;
    const scalar_t scale = static_cast<scalar_t>(1.0 / std::sqrt(static_cast<double>(p.dim)));
    at::parallel_for(0, p.batch * p.heads, 1, [&](int64_t lo, int64_t hi) {
      auto scratch = at::empty({2, p.length * p.length}, q.options());
      auto scratch_probs = scratch[0], scratch_grads = scratch[1];
      std::vector<scalar_t> factors(p.length);
      for (int64_t t = lo; t < hi; ++t) {
        const int64_t b = t / p.heads, h = t % p.heads, n = lens[b], start = p.length - n;
        if (n == 0) continue;
        auto qb = p.block(q, b, h, start), kb = p.block(k, b, h, start), vb = p.block(v, b, h, start);
        auto gb = p.block(grad, b, h, start);
        auto probs = square(scratch_probs, n), dweights = square(scratch_grads, n);
        at::mm_out(probs, qb, kb.t());
        softmax_block<scalar_t, acc_t>(probs, scale, causal, lse_c.data_ptr<acc_t>() + t * p.length + start, true);
        at::mm_out(dweights, gb, vb.t());  // d loss / d (dropped weights)
        // d out_i . out_i = sum_j (dropped weight)_ij (d weight)_ij: the softmax's backward term.
        auto row_dot = (gb * p.block(out, b, h, start)).sum(1).contiguous();
        const scalar_t* dot = row_dot.data_ptr<scalar_t>();
        scalar_t* w = probs.data_ptr<scalar_t>();
        scalar_t* dw = dweights.data_ptr<scalar_t>();
        for (int64_t i = 0; i < n; ++i) {
          const int64_t limit = causal ? i + 1 : n;
          dropout_factors(p, t, start + i, start, limit, factors.data());
          scalar_t* wi = w + i * n;
          scalar_t* dwi = dw + i * n;
          for (int64_t j = 0; j < limit; ++j) {
            dwi[j] = wi[j] * (dwi[j] * factors[j] - dot[i]) * scale;  // d scores
            wi[j] *= factors[j];                                      // the dropped weights
          }
          std::fill(dwi + limit, dwi + n, scalar_t(0));
        }
        auto dv_block = p.block(dv, b, h, start), dq_block = p.block(dq, b, h, start);
        auto dk_block = p.block(dk, b, h, start);
        at::mm_out(dv_block, probs.t(), gb);
        at::mm_out(dq_block, dweights, kb);
        at::mm_out(dk_block, dweights.t(), qb);
      }
    });
  });
  return {dq, dk, dv};
}

}  // namespace

TORCH_LIBRARY_IMPL(llmesr, CPU, m) {
  m.impl("attention", &attention_cpu);
  m.impl("attention_backward", &attention_backward_cpu);
}
