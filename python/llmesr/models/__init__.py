"""Sequence models (PyTorch). Importing this package needs torch."""

from llmesr.models.encoder import SequenceEncoder

__all__ = ["SequenceEncoder"]
