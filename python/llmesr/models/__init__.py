"""Sequence models (PyTorch). Importing this package needs torch."""

from llmesr.models.encoder import SequenceEncoder
from llmesr.models.llmesr import LLMESR, Adapter, SASRec

__all__ = ["LLMESR", "Adapter", "SASRec", "SequenceEncoder"]
