// What the CPU and CUDA implementations of llmesr::distill share: the argument checks and the cl
// (contrastive) loss, which is a few ATen calls (two matrix products, a softmax) on either device.
#pragma once

#include <ATen/ATen.h>

namespace llmesr {

constexpr double kNormEps = 1e-12;  // as torch.nn.functional.normalize

inline void check_distill(const at::Tensor& student, const at::Tensor& teachers) {
  TORCH_CHECK(student.dim() == 2 && teachers.dim() == 3, "distill: student [B, D] and teachers [B, K, D]");
  TORCH_CHECK(teachers.size(0) == student.size(0) && teachers.size(2) == student.size(1),
              "distill: teachers ", teachers.sizes(), " do not match student ", student.sizes());
  TORCH_CHECK(teachers.size(1) >= 1, "distill: at least one teacher per row");
  TORCH_CHECK(student.scalar_type() == teachers.scalar_type(), "distill: student and teachers differ in dtype");
}

inline void check_distill_backward(const at::Tensor& student, const at::Tensor& teacher_mean) {
  TORCH_CHECK(student.sizes() == teacher_mean.sizes(), "distill_backward: student ", student.sizes(),
              " and teacher mean ", teacher_mean.sizes(), " differ in shape");
}

inline at::Tensor normalized(const at::Tensor& x) { return x / x.norm(2, 1, true).clamp_min(kNormEps); }

// InfoNCE over cosine logits / temperature: student row i against every teacher mean, i the positive.
inline at::Tensor cl_loss(const at::Tensor& student, const at::Tensor& mean, double temperature) {
  auto logits = at::mm(normalized(student), normalized(mean).t()) / temperature;
  return (at::logsumexp(logits, 1) - logits.diagonal()).mean();
}

// d cl_loss / d student: d loss / d logits = (softmax(logits) - I) / B, through the cosine and the
// normalisation ((g - u <u, g>) / |s|, or g / eps where the norm was clamped).
inline at::Tensor cl_grad(const at::Tensor& grad, const at::Tensor& student, const at::Tensor& mean,
                          double temperature) {
  const int64_t b = student.size(0);
  auto norm = student.norm(2, 1, true).clamp_min(kNormEps);
  auto sn = student / norm;
  auto tn = normalized(mean);
  auto dlogits = at::softmax(at::mm(sn, tn.t()) / temperature, 1);
  dlogits.diagonal().sub_(1.0);
  dlogits.mul_(grad / static_cast<double>(b));
  auto dsn = at::mm(dlogits, tn) / temperature;
  auto clamped = student.norm(2, 1, true) < kNormEps;
  auto projected = dsn - sn * (sn * dsn).sum(1, true);
  return at::where(clamped, dsn / norm, projected / norm);
}

}  // namespace llmesr
