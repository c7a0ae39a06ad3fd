"""The self-distillation loss as one operator: the teachers' mean and the MSE (`kd`) or the
contrastive loss (`cl`), forward and backward fused, with `distill_loss_reference` its PyTorch twin."""

from __future__ import annotations

import torch
from torch.nn import functional as F

KINDS = {"kd": 0, "cl": 1}  # the operator's encoding of the kind


def info_nce(a: torch.Tensor, b: torch.Tensor, temperature: float) -> torch.Tensor:
    """Contrastive loss pairing row i of `a` with row i of `b` against the other rows (cosine)."""
    logits = F.normalize(a, dim=-1) @ F.normalize(b, dim=-1).T / temperature
    return F.cross_entropy(logits, torch.arange(len(a), device=a.device))


def distill_loss_reference(
    student: torch.Tensor, teachers: torch.Tensor, kind: str = "kd", temperature: float = 1.0
) -> torch.Tensor:
    """student `[B, D]`, teachers `[B, K, D]` (no gradient flows to them)."""
    teacher = teachers.detach().mean(dim=1)
    if kind == "kd":
        return F.mse_loss(student, teacher)
    if kind == "cl":
        return info_nce(student, teacher, temperature)
    raise ValueError(f"distillation must be 'kd' or 'cl', not {kind!r}")


def distill_loss(
    student: torch.Tensor, teachers: torch.Tensor, kind: str = "kd", temperature: float = 1.0
) -> torch.Tensor:
    """The native op when loaded (see `llmesr.ops`), else the reference."""
    from llmesr.ops import loader

    if kind not in KINDS:
        raise ValueError(f"distillation must be 'kd' or 'cl', not {kind!r}")
    if loader.native_for(student):
        return torch.ops.llmesr.distill(student, teachers.detach(), KINDS[kind], float(temperature))[0]
    return distill_loss_reference(student, teachers, kind, temperature)


def register_fake() -> None:
    """Fake (shape) kernels for torch.compile, once the native library is loaded. (The autograd
    formula is registered in C++, csrc/autograd.cpp: from Python it would cost more than the op.)"""

    @torch.library.register_fake("llmesr::distill")
    def _(student, teachers, kind, temperature):
        b = student.shape[0]
        probs_dtype = torch.float64 if student.dtype == torch.float64 else torch.float32
        probs = student.new_empty((b, b) if kind == KINDS["cl"] else (0,), dtype=probs_dtype)
        return student.new_empty(()), torch.empty_like(student), probs

    @torch.library.register_fake("llmesr::distill_backward")
    def _(grad, student, teacher_mean, probs, kind, temperature):
        return torch.empty_like(student)
