// Schemas of llmesr's fused operators. Implementations are registered per backend (cpu/, cuda/), the
// autograd formulas in autograd.cpp, the fake (shape) kernels from Python (llmesr/ops).
#include <torch/library.h>

TORCH_LIBRARY(llmesr, m) {
  // Retrieval-augmented self-distillation: student [B, D], teachers [B, K, D] (no gradient);
  // kind 0 = kd (MSE to the teachers' mean), 1 = cl (contrastive, cosine logits / temperature).
  // Returns the loss, the teachers' mean [B, D] and (cl) the softmax of the logits [B, B] (empty for kd),
  // which the backward reuses.
  m.def("distill(Tensor student, Tensor teachers, int kind, float temperature) -> (Tensor, Tensor, Tensor)");
  m.def("distill_backward(Tensor grad, Tensor student, Tensor teacher_mean, Tensor probs, int kind, "
        "float temperature) -> Tensor");

  // Masked multi-head attention: q, k, v [B, L, H, Dh], rows left-padded with lengths[b] real items;
  // causal or not; dropout on the weights decided by a hash of (seed, row, head, query, key).
  // Returns the output [B, L, H, Dh] and the log-sum-exp [B, H, L] that the backward reuses.
  m.def("attention(Tensor q, Tensor k, Tensor v, Tensor lengths, bool causal, float dropout, int seed) -> (Tensor, Tensor)");
  m.def("attention_backward(Tensor grad, Tensor q, Tensor k, Tensor v, Tensor out, Tensor lse, Tensor lengths, "
        "bool causal, float dropout, int seed) -> (Tensor, Tensor, Tensor)");

  // Dropout: each element kept and scaled by 1 / (1 - p), or zeroed, by a hash of (seed, flat index);
  // its backward is the same op on the gradient.
  m.def("dropout(Tensor x, float p, int seed) -> Tensor");
}
