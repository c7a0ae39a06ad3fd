"""Fused C++/CUDA operators and their pure-PyTorch twins.

`LLMESR_OPS` chooses: `auto` (default: the native ops when they build, else the reference with a
warning), `native` (fail if they do not build) or `ref` (always the PyTorch reference). The sources
(`llmesr/csrc`) compile just-in-time against the installed torch on first use, once per process and
cached under `~/.cache/llmesr/ops` (`LLMESR_OPS_CACHE`), keyed by torch version and the sources' hash.
"""

from llmesr.ops.attention import masked_attention, masked_attention_reference
from llmesr.ops.distill import distill_loss, distill_loss_reference
from llmesr.ops.dropout import HashedDropout, hashed_dropout, hashed_dropout_reference
from llmesr.ops.loader import native_ops_loaded, ops_mode

__all__ = [
    "HashedDropout",
    "distill_loss",
    "distill_loss_reference",
    "hashed_dropout",
    "hashed_dropout_reference",
    "masked_attention",
    "masked_attention_reference",
    "native_ops_loaded",
    "ops_mode",
]
