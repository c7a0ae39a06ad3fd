"""Sequence models (PyTorch). Importing this package needs torch."""

from llmesr.models.encoder import GRUEncoder, SequenceEncoder
from llmesr.models.llmesr import BACKBONES, LLMESR, Adapter

__all__ = ["BACKBONES", "LLMESR", "Adapter", "GRUEncoder", "SequenceEncoder"]
