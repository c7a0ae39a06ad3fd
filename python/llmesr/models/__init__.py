"""Sequence models (PyTorch). Importing this package needs torch."""

from llmesr.models.encoder import SequenceEncoder
from llmesr.models.llmesr import LLMESR, Adapter

__all__ = ["LLMESR", "Adapter", "SequenceEncoder"]
