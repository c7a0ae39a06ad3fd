// What the CPU and CUDA implementations of llmesr::attention share: the argument checks and (from
// dropout_hash.h) the dropout hash. Layout: q, k, v, out [B, L, H, Dh]; lse [B, H, L]; rows
// left-padded, row b's real items its last lengths[b] positions (llmesr/ops/attention.py has the
// semantics and the twin).
#pragma once

#include <ATen/ATen.h>

#include "dropout_hash.h"

namespace llmesr {

inline void check_attention(const at::Tensor& q, const at::Tensor& k, const at::Tensor& v, const at::Tensor& lengths,
                            double dropout) {
  TORCH_CHECK(q.dim() == 4 && q.size(3) > 0, "attention: q must be [B, L, H, Dh], got ", q.sizes());
  TORCH_CHECK(k.sizes() == q.sizes() && v.sizes() == q.sizes(), "attention: k ", k.sizes(), " and v ", v.sizes(),
              " must match q ", q.sizes());
  TORCH_CHECK(k.scalar_type() == q.scalar_type() && v.scalar_type() == q.scalar_type(),
              "attention: q, k and v differ in dtype");
  TORCH_CHECK(lengths.dim() == 1 && lengths.size(0) == q.size(0) && lengths.scalar_type() == at::kLong,
              "attention: lengths must be int64 [B] with B = ", q.size(0));
  TORCH_CHECK(lengths.device() == q.device(), "attention: lengths must be on ", q.device());
  TORCH_CHECK(dropout >= 0 && dropout < 1, "attention: dropout must be in [0, 1), got ", dropout);
}

inline at::ScalarType lse_dtype(const at::Tensor& q) {
  return q.scalar_type() == at::kDouble ? at::kDouble : at::kFloat;
}

inline void check_attention_backward(const at::Tensor& grad, const at::Tensor& q, const at::Tensor& k,
                                     const at::Tensor& v, const at::Tensor& out, const at::Tensor& lse,
                                     const at::Tensor& lengths, double dropout) {
  check_attention(q, k, v, lengths, dropout);
  TORCH_CHECK(grad.sizes() == q.sizes() && out.sizes() == q.sizes(), "attention_backward: grad ", grad.sizes(),
              " and out ", out.sizes(), " must match q ", q.sizes());
  TORCH_CHECK(lse.sizes() == at::IntArrayRef({q.size(0), q.size(2), q.size(1)}) && lse.scalar_type() == lse_dtype(q),
              "attention_backward: lse must be [B, H, L] of the forward's dtype");
}

}  // namespace llmesr
