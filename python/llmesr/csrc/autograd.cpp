// Autograd for llmesr's ops, in C++: a Python autograd formula costs ~200 us per call, more than
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
                         .typed<std::tuple<at::Tensor, at::Tensor, at::Tensor>(const at::Tensor&, const at::Tensor&,
                                                                               int64_t, double)>();
    auto [loss, mean, probs] = op.call(student, teachers, kind, temperature);
    ctx->save_for_backward({student, mean, probs});  // computed once by the forward
    ctx->saved_data["kind"] = kind;
    ctx->saved_data["temperature"] = temperature;
    ctx->mark_non_differentiable({mean, probs});
    return {loss, mean, probs};
  }

  static variable_list backward(AutogradContext* ctx, variable_list grads) {
    static auto op = c10::Dispatcher::singleton()
                         .findSchemaOrThrow("llmesr::distill_backward", "")
                         .typed<at::Tensor(const at::Tensor&, const at::Tensor&, const at::Tensor&,
                                           const at::Tensor&, int64_t, double)>();
    auto saved = ctx->get_saved_variables();
    auto grad = op.call(grads[0], saved[0], saved[1], saved[2], ctx->saved_data["kind"].toInt(),
                        ctx->saved_data["temperature"].toDouble());
    return {grad, at::Tensor(), at::Tensor(), at::Tensor()};
  }
};

std::tuple<at::Tensor, at::Tensor, at::Tensor> distill_autograd(const at::Tensor& student, const at::Tensor& teachers,
                                                                int64_t kind, double temperature) {
  auto out = Distill::apply(student, teachers, kind, temperature);
  return {out[0], out[1], out[2]};
}

class Attention : public torch::autograd::Function<Attention> {
 public:
  static variable_list forward(AutogradContext* ctx, const at::Tensor& q, const at::Tensor& k, const at::Tensor& v,
                               const at::Tensor& lengths, bool causal, double dropout, int64_t seed) {
    at::AutoDispatchBelowADInplaceOrView guard;
    static auto op = c10::Dispatcher::singleton()
                         .findSchemaOrThrow("llmesr::attention", "")
                         .typed<std::tuple<at::Tensor, at::Tensor>(const at::Tensor&, const at::Tensor&,
                                                                   const at::Tensor&, const at::Tensor&, bool, double,
                                                                   int64_t)>();
    auto [out, lse] = op.call(q, k, v, lengths, causal, dropout, seed);
    ctx->save_for_backward({q, k, v, out, lse, lengths});
    ctx->saved_data["causal"] = causal;
    ctx->saved_data["dropout"] = dropout;
    ctx->saved_data["seed"] = seed;
    ctx->mark_non_differentiable({lse});
    return {out, lse};
  }

  static variable_list backward(AutogradContext* ctx, variable_list grads) {
    static auto op = c10::Dispatcher::singleton()
                         .findSchemaOrThrow("llmesr::attention_backward", "")
                         .typed<std::tuple<at::Tensor, at::Tensor, at::Tensor>(
                             const at::Tensor&, const at::Tensor&, const at::Tensor&, const at::Tensor&,
                             const at::Tensor&, const at::Tensor&, const at::Tensor&, bool, double, int64_t)>();
    auto s = ctx->get_saved_variables();
    auto grad = grads[0].defined() ? grads[0] : at::zeros_like(s[3]);
    auto [dq, dk, dv] = op.call(grad, s[0], s[1], s[2], s[3], s[4], s[5], ctx->saved_data["causal"].toBool(),
                                ctx->saved_data["dropout"].toDouble(), ctx->saved_data["seed"].toInt());
    return {dq, dk, dv, at::Tensor(), at::Tensor(), at::Tensor(), at::Tensor()};
  }
};

std::tuple<at::Tensor, at::Tensor> attention_autograd(const at::Tensor& q, const at::Tensor& k, const at::Tensor& v,
                                                      const at::Tensor& lengths, bool causal, double dropout,
                                                      int64_t seed) {
  auto out = Attention::apply(q, k, v, lengths, causal, dropout, seed);
  return {out[0], out[1]};
}

class Dropout : public torch::autograd::Function<Dropout> {
 public:
  static at::Tensor apply_op(const at::Tensor& x, double p, int64_t seed) {
    static auto op = c10::Dispatcher::singleton()
                         .findSchemaOrThrow("llmesr::dropout", "")
                         .typed<at::Tensor(const at::Tensor&, double, int64_t)>();
    return op.call(x, p, seed);
  }

  static at::Tensor forward(AutogradContext* ctx, const at::Tensor& x, double p, int64_t seed) {
    at::AutoDispatchBelowADInplaceOrView guard;
    ctx->saved_data["p"] = p;
    ctx->saved_data["seed"] = seed;
    return apply_op(x, p, seed);
  }

  // The same decisions and scale on the gradient: the same op (the flat indices match).
  static variable_list backward(AutogradContext* ctx, variable_list grads) {
    auto grad = apply_op(grads[0], ctx->saved_data["p"].toDouble(), ctx->saved_data["seed"].toInt());
    return {grad, at::Tensor(), at::Tensor()};
  }
};

at::Tensor dropout_autograd(const at::Tensor& x, double p, int64_t seed) { return Dropout::apply(x, p, seed); }

}  // namespace

TORCH_LIBRARY_IMPL(llmesr, Autograd, m) {
  m.impl("dropout", &dropout_autograd);
  m.impl("distill", &distill_autograd);
  m.impl("attention", &attention_autograd);
}
