"""Training settings (kept free of torch, so the command line can be built without it)."""

from __future__ import annotations

from dataclasses import dataclass


@dataclass
class TrainConfig:
    data: str
    out: str
    method: str = "llmesr"  # or "base"
    epochs: int = 200
    patience: int = 20
    seed: int = 42
    device: str = "auto"
    max_len: int = 200
    hidden: int = 64
    layers: int = 2
    heads: int = 1
    dropout: float = 0.5
    batch_size: int = 128
    lr: float = 1e-3
    alpha: float = 0.1  # weight of the self-distillation loss
    n_similar: int = 10
    n_negatives: int = 100  # sampled protocol
    tail_user_len: int | None = None
    tail_item_pop: int | None = None
