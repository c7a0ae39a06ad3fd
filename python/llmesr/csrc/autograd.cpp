// Autograd for llmesr::distill, in C++: a Python autograd formula costs ~200 us per call, more than
// the whole fused loss at the paper's sizes. Calls go through the dispatcher, so CPU and CUDA share it.
#include <torch/torch.h>

namespace {

using torch::autograd::AutogradContext;
using torch::autograd::variable_list;

class Distill : public torch::autograd::Function<Distill> {
 public:
  static variable_list forward(AutogradContext* ctx, const at::Tensor& student, const at::Tensor& teachers,
                               int64_t kind, double temperature) {
    at::AutoDispatchBelowADInplaceOrView guard;
    static auto op = c10::Dispatcher::singleton()
                         .findSchemaOrThrow("llmesr::distill", "")
                         .typed<std::tuple<at::Tensor, at::Tensor>(const at::Tensor&, const at::Tensor&, int64_t,
                                                                   double)>();
    auto [loss, mean] = op.call(student, teachers, kind, temperature);
    ctx->save_for_backward({student, mean});  // the teachers' mean, computed once by the forward
    ctx->saved_data["kind"] = kind;
    ctx->saved_data["temperature"] = temperature;
    ctx->mark_non_differentiable({mean});
    return {loss, mean};
  }

  static variable_list backward(AutogradContext* ctx, variable_list grads) {
    static auto op = c10::Dispatcher::singleton()
                         .findSchemaOrThrow("llmesr::distill_backward", "")
                         .typed<at::Tensor(const at::Tensor&, const at::Tensor&, const at::Tensor&, int64_t, double)>();
    auto saved = ctx->get_saved_variables();
    auto grad = op.call(grads[0], saved[0], saved[1], ctx->saved_data["kind"].toInt(),
                        ctx->saved_data["temperature"].toDouble());
    return {grad, at::Tensor(), at::Tensor(), at::Tensor()};
  }
};

std::tuple<at::Tensor, at::Tensor> distill_autograd(const at::Tensor& student, const at::Tensor& teachers,
                                                    int64_t kind, double temperature) {
  auto out = Distill::apply(student, teachers, kind, temperature);
  return {out[0], out[1]};
}

}  // namespace

TORCH_LIBRARY_IMPL(llmesr, Autograd, m) { m.impl("distill", &distill_autograd); }
