"""Sequence models (PyTorch). Importing this package needs torch."""

from llmesr.models.encoder import GRUEncoder, SequenceEncoder, TransformerEncoder
from llmesr.models.llmesr import LLMESR
from llmesr.models.views import Adapter

__all__ = ["LLMESR", "Adapter", "GRUEncoder", "SequenceEncoder", "TransformerEncoder"]
