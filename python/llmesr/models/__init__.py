"""Sequence models (PyTorch). Importing this package needs torch."""

from llmesr.models.encoder import Encoder, GRUEncoder, SequenceEncoder
from llmesr.models.llmesr import LLMESR, Adapter

__all__ = ["LLMESR", "Adapter", "Encoder", "GRUEncoder", "SequenceEncoder"]
