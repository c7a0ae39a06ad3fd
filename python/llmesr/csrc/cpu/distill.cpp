// CPU implementation of llmesr::distill: one pass over the teachers for their mean, then the loss
// (kd: mean squared error; cl: InfoNCE over cosine similarities) and its gradient for the student.
#include <ATen/Parallel.h>
#include <torch/library.h>
#include <torch/torch.h>

#include <cmath>

namespace {

constexpr double kNormEps = 1e-12;  // as torch.nn.functional.normalize

void check(const at::Tensor& student, const at::Tensor& teachers) {
  TORCH_CHECK(student.dim() == 2 && teachers.dim() == 3, "distill: student [B, D] and teachers [B, K, D]");
  TORCH_CHECK(teachers.size(0) == student.size(0) && teachers.size(2) == student.size(1),
              "distill: teachers ", teachers.sizes(), " do not match student ", student.sizes());
  TORCH_CHECK(teachers.size(1) >= 1, "distill: at least one teacher per row");
  TORCH_CHECK(student.scalar_type() == teachers.scalar_type(), "distill: student and teachers differ in dtype");
}

// The teachers' mean, [B, D], in the accumulation type.
template <typename scalar_t>
at::Tensor teacher_mean(const at::Tensor& teachers) {
  const int64_t b = teachers.size(0), k = teachers.size(1), d = teachers.size(2);
  auto t = teachers.contiguous();
  auto out = at::empty({b, d}, t.options());
  const scalar_t* src = t.data_ptr<scalar_t>();
  scalar_t* dst = out.data_ptr<scalar_t>();
  at::parallel_for(0, b, 16, [&](int64_t lo, int64_t hi) {
    for (int64_t r = lo; r < hi; ++r) {
      scalar_t* row = dst + r * d;
      for (int64_t j = 0; j < d; ++j) row[j] = 0;
      for (int64_t i = 0; i < k; ++i) {
        const scalar_t* x = src + (r * k + i) * d;
        for (int64_t j = 0; j < d; ++j) row[j] += x[j];
      }
      for (int64_t j = 0; j < d; ++j) row[j] /= static_cast<scalar_t>(k);
    }
  });
  return out;
}

at::Tensor normalized(const at::Tensor& x) { return x / x.norm(2, 1, true).clamp_min(kNormEps); }

at::Tensor distill_cpu(const at::Tensor& student, const at::Tensor& teachers, int64_t kind, double temperature) {
  check(student, teachers);
  TORCH_CHECK(kind == 0 || kind == 1, "distill: kind must be 0 (kd) or 1 (cl)");
  return AT_DISPATCH_FLOATING_TYPES(student.scalar_type(), "distill_cpu", [&] {
    auto mean = teacher_mean<scalar_t>(teachers);
    auto s = student.contiguous();
    if (kind == 0) {
      const int64_t n = s.numel();
      const scalar_t* a = s.data_ptr<scalar_t>();
      const scalar_t* m = mean.data_ptr<scalar_t>();
      double total = at::parallel_reduce(
          0, n, 4096, 0.0,
          [&](int64_t lo, int64_t hi, double acc) {
            for (int64_t i = lo; i < hi; ++i) {
              double diff = static_cast<double>(a[i]) - static_cast<double>(m[i]);
              acc += diff * diff;
            }
            return acc;
          },
          std::plus<double>());
      return at::scalar_tensor(total / static_cast<double>(n), s.options());
    }
    auto logits = at::mm(normalized(s), normalized(mean).t()) / temperature;
    return (at::logsumexp(logits, 1) - logits.diagonal()).mean();
  });
}

at::Tensor distill_backward_cpu(const at::Tensor& grad, const at::Tensor& student, const at::Tensor& teachers,
                                int64_t kind, double temperature) {
  check(student, teachers);
  return AT_DISPATCH_FLOATING_TYPES(student.scalar_type(), "distill_backward_cpu", [&] {
    auto mean = teacher_mean<scalar_t>(teachers);
    auto s = student.contiguous();
    if (kind == 0) {
      auto out = at::empty_like(s);
      const int64_t n = s.numel();
      const scalar_t scale = static_cast<scalar_t>(2.0 * grad.item<double>() / static_cast<double>(n));
      const scalar_t* a = s.data_ptr<scalar_t>();
      const scalar_t* m = mean.data_ptr<scalar_t>();
      scalar_t* o = out.data_ptr<scalar_t>();
      at::parallel_for(0, n, 4096, [&](int64_t lo, int64_t hi) {
        for (int64_t i = lo; i < hi; ++i) o[i] = scale * (a[i] - m[i]);
      });
      return out;
    }
    // d loss / d logits = (softmax(logits) - I) / B; through the cosine and the normalisation.
    const int64_t b = s.size(0);
    auto norm = s.norm(2, 1, true).clamp_min(kNormEps);
    auto sn = s / norm;
    auto tn = normalized(mean);
    auto logits = at::mm(sn, tn.t()) / temperature;
    auto dlogits = at::softmax(logits, 1);
    dlogits.diagonal().sub_(1.0);
    dlogits.mul_(grad / static_cast<double>(b));
    auto dsn = at::mm(dlogits, tn) / temperature;
    // normalize's gradient where the norm is not clamped: (dsn - sn <sn, dsn>) / |s|
    auto clamped = s.norm(2, 1, true) < kNormEps;
    auto projected = dsn - sn * (sn * dsn).sum(1, true);
    return at::where(clamped, dsn / norm, projected / norm);
  });
}

}  // namespace

TORCH_LIBRARY_IMPL(llmesr, CPU, m) {
  m.impl("distill", &distill_cpu);
  m.impl("distill_backward", &distill_backward_cpu);
}
