// CPU implementation of llmesr::distill: one pass over the teachers for their mean, then the loss
// (kd: mean squared error; cl: InfoNCE over cosine similarities) and its gradient for the student.
#include "../distill.h"

#include <ATen/Parallel.h>
#include <torch/library.h>
#include <torch/torch.h>

#include <algorithm>
#include <cmath>
#include <numeric>
#include <vector>

namespace {

// The teachers' mean [B, D] and, when `student` is given (kd), each row's squared distance from the
// student to it, in one pass over the teachers. Sums run in the input type with eight partial sums (so
// that they vectorise) and rows are added in double in row order: the same result on any thread count.
template <typename scalar_t>
at::Tensor mean_of_teachers(const at::Tensor& teachers, const scalar_t* student, std::vector<double>& row_errors) {
  const int64_t b = teachers.size(0), k = teachers.size(1), d = teachers.size(2);
  auto t = teachers.contiguous();
  auto out = at::empty({b, d}, t.options());
  const scalar_t* src = t.data_ptr<scalar_t>();
  scalar_t* dst = out.data_ptr<scalar_t>();
  const scalar_t inv_k = scalar_t(1) / static_cast<scalar_t>(k);
  const int64_t grain = std::max<int64_t>(1, (1 << 18) / std::max<int64_t>(1, k * d));  // a thread's worth
  at::parallel_for(0, b, grain, [&](int64_t lo, int64_t hi) {
    for (int64_t r = lo; r < hi; ++r) {
      scalar_t* __restrict__ row = dst + r * d;
      const scalar_t* __restrict__ x = src + r * k * d;
      for (int64_t j = 0; j < d; ++j) row[j] = x[j];
      for (int64_t i = 1; i < k; ++i) {
        const scalar_t* __restrict__ xi = x + i * d;
        for (int64_t j = 0; j < d; ++j) row[j] += xi[j];
      }
      for (int64_t j = 0; j < d; ++j) row[j] *= inv_k;
      if (student == nullptr) continue;
      const scalar_t* __restrict__ a = student + r * d;
      scalar_t part[8] = {};
      int64_t j = 0;
      for (; j + 8 <= d; j += 8) {
        for (int u = 0; u < 8; ++u) part[u] += (a[j + u] - row[j + u]) * (a[j + u] - row[j + u]);
      }
      scalar_t tail = 0;
      for (; j < d; ++j) tail += (a[j] - row[j]) * (a[j] - row[j]);
      row_errors[r] = static_cast<double>(tail + ((part[0] + part[4]) + (part[1] + part[5])) +
                                          ((part[2] + part[6]) + (part[3] + part[7])));
    }
  });
  return out;
}

std::tuple<at::Tensor, at::Tensor, at::Tensor> distill_cpu(const at::Tensor& student, const at::Tensor& teachers,
                                                           int64_t kind, double temperature) {
  llmesr::check_distill(student, teachers);
  TORCH_CHECK(kind == 0 || kind == 1, "distill: kind must be 0 (kd) or 1 (cl)");
  return AT_DISPATCH_FLOATING_TYPES(student.scalar_type(), "distill_cpu", [&]() -> std::tuple<at::Tensor, at::Tensor, at::Tensor> {
    auto s = student.contiguous();
    std::vector<double> row_errors(s.size(0));
    auto mean = mean_of_teachers<scalar_t>(teachers, kind == 0 ? s.data_ptr<scalar_t>() : nullptr, row_errors);
    if (kind == 0) {
      const double total = std::accumulate(row_errors.begin(), row_errors.end(), 0.0);
      return {at::scalar_tensor(total / static_cast<double>(s.numel()), s.options()), mean, s.new_empty({0})};
    }
    auto [loss, probs] = llmesr::cl_forward(s, mean, temperature);
    return {loss, mean, probs};
  });
}

at::Tensor distill_backward_cpu(const at::Tensor& grad, const at::Tensor& student, const at::Tensor& teacher_mean,
                                const at::Tensor& probs, int64_t kind, double temperature) {
  llmesr::check_distill_backward(student, teacher_mean, probs, kind);
  return AT_DISPATCH_FLOATING_TYPES(student.scalar_type(), "distill_backward_cpu", [&] {
    auto mean = teacher_mean.contiguous();
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
    return llmesr::cl_grad(grad, s, mean, probs, temperature);
  });
}

}  // namespace

TORCH_LIBRARY_IMPL(llmesr, CPU, m) {
  m.impl("distill", &distill_cpu);
  m.impl("distill_backward", &distill_backward_cpu);
}
