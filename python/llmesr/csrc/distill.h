// What the CPU and CUDA implementations of llmesr::distill share: the argument checks and the cl
// (contrastive) loss, which is a few ATen calls (a matrix product and a softmax each way) on either device.
#pragma once

#include <ATen/ATen.h>

namespace llmesr {

constexpr double kNormEps = 1e-12;  // as torch.nn.functional.normalize

// The cl loss runs in float (double for double): half types would lose its softmax.
inline at::ScalarType compute_dtype(const at::Tensor& x) {
  return x.scalar_type() == at::kDouble ? at::kDouble : at::kFloat;
}

inline void check_distill(const at::Tensor& student, const at::Tensor& teachers) {
  TORCH_CHECK(student.dim() == 2 && teachers.dim() == 3, "distill: student [B, D] and teachers [B, K, D]");
  TORCH_CHECK(teachers.size(0) == student.size(0) && teachers.size(2) == student.size(1),
              "distill: teachers ", teachers.sizes(), " do not match student ", student.sizes());
  TORCH_CHECK(teachers.size(1) >= 1, "distill: at least one teacher per row");
  TORCH_CHECK(student.scalar_type() == teachers.scalar_type(), "distill: student and teachers differ in dtype");
}

inline void check_distill_backward(const at::Tensor& student, const at::Tensor& teacher_mean,
                                   const at::Tensor& probs, int64_t kind) {
  TORCH_CHECK(student.sizes() == teacher_mean.sizes(), "distill_backward: student ", student.sizes(),
              " and teacher mean ", teacher_mean.sizes(), " differ in shape");
  TORCH_CHECK(kind != 1 || (probs.dim() == 2 && probs.size(0) == student.size(0) && probs.size(1) == student.size(0)),
              "distill_backward: cl needs the forward's [B, B] softmax, got ", probs.sizes());
}

inline at::Tensor normalized(const at::Tensor& x) { return x / x.norm(2, 1, true).clamp_min(kNormEps); }

// InfoNCE over cosine logits / temperature: student row i against every teacher mean, i the positive.
// Returns the loss and the softmax of the logits [B, B], which the backward reuses.
inline std::tuple<at::Tensor, at::Tensor> cl_forward(const at::Tensor& student, const at::Tensor& mean,
                                                     double temperature) {
  auto logits = at::mm(normalized(student), normalized(mean).t()).div_(temperature);
  auto log_probs = at::log_softmax(logits, 1);
  return {log_probs.diagonal().mean().neg(), log_probs.exp()};
}

// d cl loss / d student from the forward's softmax: d loss / d logits = (softmax - I) / B, through the
// cosine and the normalisation ((g - u <u, g>) / |s|, or g / eps where the norm was clamped).
inline at::Tensor cl_grad(const at::Tensor& grad, const at::Tensor& student, const at::Tensor& mean,
                          const at::Tensor& probs, double temperature) {
  const int64_t b = student.size(0);
  auto norm = student.norm(2, 1, true);
  auto clamped = norm < kNormEps;
  norm.clamp_min_(kNormEps);
  auto sn = student / norm;
  auto dlogits = probs.clone();
  dlogits.diagonal().sub_(1.0);
  dlogits.mul_(grad / (static_cast<double>(b) * temperature));
  auto dsn = at::mm(dlogits, normalized(mean));
  auto projected = dsn - sn * (sn * dsn).sum(1, true);
  return at::where(clamped, dsn, projected).div_(norm);
}

}  // namespace llmesr
