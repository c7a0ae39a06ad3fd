// CPU implementation of llmesr::attention. Each (row, head) is one task over its n real positions
// (padding is skipped, not masked). Nothing of size L x L is kept: the backward recomputes the
// weights from the saved log-sum-exp. Two ways to run a task, by n:
// - short rows (most of a real batch): plain loops, query by query, with no ATen call per task
//   (a call costs microseconds, more than a whole short row);
// - long rows: in tiles of 64 queries, whose products run as matrix multiplications (a causal tile
//   only over the keys up to its last query) and whose softmax, causal cut and dropout are one pass
//   over the tile while it sits in cache.
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
};

constexpr int64_t kTile = 64;      // queries per matrix product: a causal row skips the tiles above
constexpr int64_t kGemmFrom = 48;  // rows at least this long take the matrix-multiplication way (measured crossover)

// Rows i = 0..n-1 of one task in a [B, L, H, Dh] tensor whose last dimension is contiguous.
template <typename scalar_t>
struct Rows {
  scalar_t* base;
  int64_t stride;
  scalar_t* operator[](int64_t i) const { return base + i * stride; }
};

template <typename scalar_t>
Rows<scalar_t> rows_of(const at::Tensor& x, int64_t b, int64_t h, int64_t start) {
  return {x.data_ptr<scalar_t>() + b * x.stride(0) + start * x.stride(1) + h * x.stride(2), x.stride(1)};
}

at::Tensor unit_stride(const at::Tensor& x) { return x.stride(3) == 1 ? x : x.contiguous(); }

// Eight partial sums, so that the compiler vectorises without reordering one sum.
template <typename scalar_t>
inline scalar_t dot(const scalar_t* a, const scalar_t* b, int64_t n) {
  scalar_t part[8] = {};
  int64_t d = 0;
  for (; d + 8 <= n; d += 8) {
    for (int u = 0; u < 8; ++u) part[u] += a[d + u] * b[d + u];
  }
  scalar_t total = 0;
  for (; d < n; ++d) total += a[d] * b[d];
  return total + ((part[0] + part[4]) + (part[1] + part[5])) + ((part[2] + part[6]) + (part[3] + part[7]));
}

template <typename scalar_t>
inline void axpy(scalar_t* y, scalar_t a, const scalar_t* x, int64_t n) {
  for (int64_t d = 0; d < n; ++d) y[d] += a * x[d];
}

std::vector<int64_t> checked_lengths(const at::Tensor& lengths, int64_t length) {
  auto values = lengths.contiguous();
  std::vector<int64_t> out(values.data_ptr<int64_t>(), values.data_ptr<int64_t>() + values.numel());
  for (size_t b = 0; b < out.size(); ++b) {
    TORCH_CHECK(out[b] >= 0 && out[b] <= length, "attention: lengths[", b, "] = ", out[b], " is not in [0, ", length,
                "]");
  }
  return out;
}

// In place on a tile of scores (unscaled q.k) of queries first..first+rows-1 over keys 0..keys-1:
// the weights exp(scale * s - lse) of the allowed keys, 0 elsewhere. `lse` (of the tile's queries)
// is written (forward) or read (backward, `known_lse`). The exponentials run as one vectorised ATen
// call over the tile; the loops around it are single passes.
template <typename scalar_t>
void softmax_tile(at::Tensor& scores, int64_t first, scalar_t scale, bool causal, scalar_t* lse, bool known_lse) {
  constexpr scalar_t kNegInf = -std::numeric_limits<scalar_t>::infinity();
  const int64_t rows = scores.size(0), keys = scores.size(1);
  scalar_t* s = scores.data_ptr<scalar_t>();
  std::vector<scalar_t> shift(rows);
  for (int64_t r = 0; r < rows; ++r) {
    scalar_t* row = s + r * keys;
    const int64_t limit = causal ? first + r + 1 : keys;
    shift[r] = known_lse ? lse[r] : *std::max_element(row, row + limit) * scale;
    for (int64_t j = 0; j < limit; ++j) row[j] = row[j] * scale - shift[r];
    std::fill(row + limit, row + keys, kNegInf);  // the causal cut: exp gives 0
  }
  scores.exp_();
  if (known_lse) return;
  for (int64_t r = 0; r < rows; ++r) {
    scalar_t* row = s + r * keys;
    const int64_t limit = causal ? first + r + 1 : keys;
    scalar_t total = 0;
    for (int64_t j = 0; j < limit; ++j) total += row[j];
    const scalar_t inv = scalar_t(1) / total;
    for (int64_t j = 0; j < limit; ++j) row[j] *= inv;
    lse[r] = shift[r] + std::log(total);
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

// One task's working memory, allocated once per thread and reused across its tasks.
template <typename scalar_t>
struct Scratch {
  at::Tensor tiles;        // two query tiles' weights, kTile x L each (the matrix-multiplication way)
  at::Tensor key_grads;    // dk and dv of one task, L x Dh each, summed over its query tiles
  std::vector<scalar_t> factors, weights;

  Scratch(const Problem& p, const at::Tensor& like)
      : tiles(at::empty({2, kTile * p.length}, like.options())),
        key_grads(at::empty({2, p.length, p.dim}, like.options())),
        factors(p.length),
        weights(p.length) {}

  at::Tensor tile(int which, int64_t rows, int64_t keys) {
    return tiles[which].narrow(0, 0, rows * keys).view({rows, keys});
  }
};

// The tensors of one call, and the task (row b, head h, first real position `start`) being run.
template <typename scalar_t>
struct Task {
  const Problem& p;
  int64_t t, b, h, start, n;
  scalar_t scale;

  Rows<scalar_t> rows(const at::Tensor& x) const { return rows_of<scalar_t>(x, b, h, start); }
  at::Tensor block(const at::Tensor& x) const { return x.select(0, b).narrow(0, start, n).select(1, h); }
  int64_t limit(int64_t i) const { return p.causal ? i + 1 : n; }  // keys 0..limit-1 are allowed
};

template <typename scalar_t>
void forward_loops(const Task<scalar_t>& task, const at::Tensor& q, const at::Tensor& k, const at::Tensor& v,
                   const at::Tensor& out, scalar_t* lse, Scratch<scalar_t>& scratch) {
  const int64_t dim = task.p.dim;
  auto qr = task.rows(q), kr = task.rows(k), vr = task.rows(v), outr = task.rows(out);
  scalar_t* w = scratch.weights.data();
  for (int64_t i = 0; i < task.n; ++i) {
    const int64_t limit = task.limit(i);
    for (int64_t j = 0; j < limit; ++j) w[j] = dot(qr[i], kr[j], dim) * task.scale;
    const scalar_t m = *std::max_element(w, w + limit);
    scalar_t total = 0;
    for (int64_t j = 0; j < limit; ++j) total += (w[j] = std::exp(w[j] - m));
    lse[i] = m + std::log(total);
    dropout_factors(task.p, task.t, task.start + i, task.start, limit, scratch.factors.data());
    scalar_t* o = outr[i];
    for (int64_t j = 0; j < limit; ++j) axpy(o, w[j] * scratch.factors[j] / total, vr[j], dim);
  }
}

// Query tiles of kTile rows; a causal tile needs the keys up to its last query only.
template <typename scalar_t>
void forward_gemm(const Task<scalar_t>& task, const at::Tensor& q, const at::Tensor& k, const at::Tensor& v,
                  const at::Tensor& out, scalar_t* lse, Scratch<scalar_t>& scratch) {
  auto qb = task.block(q), kb = task.block(k), vb = task.block(v), ob = task.block(out);
  for (int64_t first = 0; first < task.n; first += kTile) {
    const int64_t rows = std::min(kTile, task.n - first), keys = task.p.causal ? first + rows : task.n;
    auto weights = scratch.tile(0, rows, keys);
    at::mm_out(weights, qb.narrow(0, first, rows), kb.narrow(0, 0, keys).t());
    softmax_tile<scalar_t>(weights, first, task.scale, task.p.causal, lse + first, false);
    if (task.p.dropout > 0) {
      scalar_t* w = weights.template data_ptr<scalar_t>();
      for (int64_t r = 0; r < rows; ++r) {
        const int64_t limit = task.limit(first + r);
        dropout_factors(task.p, task.t, task.start + first + r, task.start, limit, scratch.factors.data());
        for (int64_t j = 0; j < limit; ++j) w[r * keys + j] *= scratch.factors[j];
      }
    }
    auto out_tile = ob.narrow(0, first, rows);
    at::mm_out(out_tile, weights, vb.narrow(0, 0, keys));
  }
}

template <typename scalar_t>
void backward_loops(const Task<scalar_t>& task, const at::Tensor& grad, const at::Tensor& q, const at::Tensor& k,
                    const at::Tensor& v, const at::Tensor& out, const scalar_t* lse, const at::Tensor& dq,
                    const at::Tensor& dk, const at::Tensor& dv, Scratch<scalar_t>& scratch) {
  const int64_t dim = task.p.dim;
  auto gr = task.rows(grad), qr = task.rows(q), kr = task.rows(k), vr = task.rows(v), outr = task.rows(out);
  auto dqr = task.rows(dq), dkr = task.rows(dk), dvr = task.rows(dv);
  for (int64_t i = 0; i < task.n; ++i) {
    const int64_t limit = task.limit(i);
    dropout_factors(task.p, task.t, task.start + i, task.start, limit, scratch.factors.data());
    const scalar_t row_dot = dot(gr[i], outr[i], dim);  // the softmax backward's dO_i . O_i
    for (int64_t j = 0; j < limit; ++j) {
      const scalar_t weight = std::exp(dot(qr[i], kr[j], dim) * task.scale - lse[i]);
      const scalar_t f = scratch.factors[j];
      const scalar_t dscore = weight * (dot(gr[i], vr[j], dim) * f - row_dot) * task.scale;
      axpy(dqr[i], dscore, kr[j], dim);
      axpy(dkr[j], dscore, qr[i], dim);
      axpy(dvr[j], weight * f, gr[i], dim);
    }
  }
}

template <typename scalar_t>
void backward_gemm(const Task<scalar_t>& task, const at::Tensor& grad, const at::Tensor& q, const at::Tensor& k,
                   const at::Tensor& v, const at::Tensor& out, const scalar_t* lse, const at::Tensor& dq,
                   const at::Tensor& dk, const at::Tensor& dv, Scratch<scalar_t>& scratch) {
  auto qb = task.block(q), kb = task.block(k), vb = task.block(v), gb = task.block(grad), dqb = task.block(dq);
  auto dk_sum = scratch.key_grads[0].narrow(0, 0, task.n), dv_sum = scratch.key_grads[1].narrow(0, 0, task.n);
  dk_sum.zero_();
  dv_sum.zero_();
  auto outr = task.rows(out), gr = task.rows(grad);
  for (int64_t first = 0; first < task.n; first += kTile) {
    const int64_t rows = std::min(kTile, task.n - first), keys = task.p.causal ? first + rows : task.n;
    auto q_tile = qb.narrow(0, first, rows), g_tile = gb.narrow(0, first, rows);
    auto probs = scratch.tile(0, rows, keys), dweights = scratch.tile(1, rows, keys);
    at::mm_out(probs, q_tile, kb.narrow(0, 0, keys).t());
    softmax_tile<scalar_t>(probs, first, task.scale, task.p.causal, const_cast<scalar_t*>(lse) + first, true);
    at::mm_out(dweights, g_tile, vb.narrow(0, 0, keys).t());  // d loss / d (dropped weights)
    scalar_t* w = probs.template data_ptr<scalar_t>();
    scalar_t* dw = dweights.template data_ptr<scalar_t>();
    for (int64_t r = 0; r < rows; ++r) {
      const int64_t i = first + r, limit = task.limit(i);
      dropout_factors(task.p, task.t, task.start + i, task.start, limit, scratch.factors.data());
      const scalar_t row_dot = dot(gr[i], outr[i], task.p.dim);  // the softmax backward's dO_i . O_i
      scalar_t* wr = w + r * keys;
      scalar_t* dwr = dw + r * keys;
      for (int64_t j = 0; j < limit; ++j) {
        dwr[j] = wr[j] * (dwr[j] * scratch.factors[j] - row_dot) * task.scale;  // d scores
        wr[j] *= scratch.factors[j];                                             // the dropped weights
      }
      std::fill(dwr + limit, dwr + keys, scalar_t(0));
    }
    dv_sum.narrow(0, 0, keys).addmm_(probs.t(), g_tile);
    dk_sum.narrow(0, 0, keys).addmm_(dweights.t(), q_tile);
    auto dq_tile = dqb.narrow(0, first, rows);
    at::mm_out(dq_tile, dweights, kb.narrow(0, 0, keys));
  }
  task.block(dk).copy_(dk_sum);
  task.block(dv).copy_(dv_sum);
}

// Runs `body(task, scratch)` for every (row, head) with real positions, in parallel.
template <typename scalar_t, typename Body>
void for_each_task(const Problem& p, const std::vector<int64_t>& lengths, const at::Tensor& like, Body&& body) {
  const scalar_t scale = static_cast<scalar_t>(1.0 / std::sqrt(static_cast<double>(p.dim)));
  at::parallel_for(0, p.batch * p.heads, 1, [&](int64_t lo, int64_t hi) {
    Scratch<scalar_t> scratch(p, like);
    for (int64_t t = lo; t < hi; ++t) {
      const int64_t b = t / p.heads, n = lengths[b];
      if (n > 0) body(Task<scalar_t>{p, t, b, t % p.heads, p.length - n, n, scale}, scratch);
    }
  });
}

std::tuple<at::Tensor, at::Tensor> attention_cpu(const at::Tensor& q_in, const at::Tensor& k_in,
                                                 const at::Tensor& v_in, const at::Tensor& lengths, bool causal,
                                                 double dropout, int64_t seed) {
  llmesr::check_attention(q_in, k_in, v_in, lengths, dropout);
  at::AutoDispatchBelowAutograd below_autograd;  // the ATen calls inside are not differentiated
  auto q = unit_stride(q_in), k = unit_stride(k_in), v = unit_stride(v_in);
  const Problem p(q, causal, dropout, seed);
  const auto lens = checked_lengths(lengths, p.length);
  auto out = at::zeros_like(q, at::MemoryFormat::Contiguous);
  auto lse = at::zeros({p.batch, p.heads, p.length}, q.options().dtype(llmesr::lse_dtype(q)));
  AT_DISPATCH_FLOATING_TYPES(q.scalar_type(), "attention_cpu", [&] {
    for_each_task<scalar_t>(p, lens, q, [&](const Task<scalar_t>& task, Scratch<scalar_t>& scratch) {
      scalar_t* task_lse = lse.data_ptr<scalar_t>() + task.t * p.length + task.start;
      if (task.n < kGemmFrom) {
        forward_loops(task, q, k, v, out, task_lse, scratch);
      } else {
        forward_gemm(task, q, k, v, out, task_lse, scratch);
      }
    });
  });
  return {out, lse};
}

std::tuple<at::Tensor, at::Tensor, at::Tensor> attention_backward_cpu(
    const at::Tensor& grad_in, const at::Tensor& q_in, const at::Tensor& k_in, const at::Tensor& v_in,
    const at::Tensor& out_in, const at::Tensor& lse_in, const at::Tensor& lengths, bool causal, double dropout,
    int64_t seed) {
  llmesr::check_attention_backward(grad_in, q_in, k_in, v_in, out_in, lse_in, lengths, dropout);
  at::AutoDispatchBelowAutograd below_autograd;
  auto q = unit_stride(q_in), k = unit_stride(k_in), v = unit_stride(v_in);
  auto grad = unit_stride(grad_in), out = unit_stride(out_in);
  const Problem p(q, causal, dropout, seed);
  const auto lens = checked_lengths(lengths, p.length);
  auto lse = lse_in.contiguous();
  auto dq = at::zeros_like(q, at::MemoryFormat::Contiguous);
  auto dk = at::zeros_like(k, at::MemoryFormat::Contiguous);
  auto dv = at::zeros_like(v, at::MemoryFormat::Contiguous);
  AT_DISPATCH_FLOATING_TYPES(q.scalar_type(), "attention_backward_cpu", [&] {
    for_each_task<scalar_t>(p, lens, q, [&](const Task<scalar_t>& task, Scratch<scalar_t>& scratch) {
      const scalar_t* task_lse = lse.data_ptr<scalar_t>() + task.t * p.length + task.start;
      if (task.n < kGemmFrom) {
        backward_loops(task, grad, q, k, v, out, task_lse, dq, dk, dv, scratch);
      } else {
        backward_gemm(task, grad, q, k, v, out, task_lse, dq, dk, dv, scratch);
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
