"""The self-distillation loss as one operator: the teachers' mean and the MSE (`kd`) or the
contrastive loss (`cl`), forward and backward fused, with `distill_loss_reference` its PyTorch twin."""

from __future__ import annotations

import torch
from torch.nn import functional as F

KINDS = {"kd": 0, "cl": 1}


def distill_loss_reference(
    student: torch.Tensor, teachers: torch.Tensor, kind: str = "kd", temperature: float = 1.0
) -> torch.Tensor:
    """student `[B, D]`, teachers `[B, K, D]` (no gradient flows to them)."""
    teacher = teachers.detach().mean(dim=1)
    if kind == "kd":
        return F.mse_loss(student, teacher)
    if kind == "cl":
        logits = F.normalize(student, dim=-1) @ F.normalize(teacher, dim=-1).T / temperature
        return F.cross_entropy(logits, torch.arange(len(student), device=student.device))
    raise ValueError(f"distillation must be 'kd' or 'cl', not {kind!r}")


def distill_loss(
    student: torch.Tensor, teachers: torch.Tensor, kind: str = "kd", temperature: float = 1.0
) -> torch.Tensor:
    """The native op when loaded (see `llmesr.ops`), else the reference."""
    from llmesr.ops import loader

    if kind not in KINDS:
        raise ValueError(f"distillation must be 'kd' or 'cl', not {kind!r}")
    if loader.LOADED if loader.LOADED is not None else loader.native_ops_loaded():
        return torch.ops.llmesr.distill(student, teachers.detach(), KINDS[kind], float(temperature))
    return distill_loss_reference(student, teachers, kind, temperature)


_registered = False


def register() -> None:
    """Fake (shape) kernels and the autograd formula, once the native library is loaded."""
    global _registered
    if _registered:
        return
    _registered = True

    @torch.library.register_fake("llmesr::distill")
    def _(student, teachers, kind, temperature):
        return student.new_empty(())

    @torch.library.register_fake("llmesr::distill_backward")
    def _(grad, student, teachers, kind, temperature):
        return torch.empty_like(student)

    def setup_context(ctx, inputs, output):
        student, teachers, kind, temperature = inputs
        ctx.save_for_backward(student, teachers)
        ctx.kind, ctx.temperature = kind, temperature

    def backward(ctx, grad):
        student, teachers = ctx.saved_tensors
        d_student = torch.ops.llmesr.distill_backward(grad, student, teachers, ctx.kind, ctx.temperature)
        return d_student, None, None, None

    torch.library.register_autograd("llmesr::distill", backward, setup_context=setup_context)
