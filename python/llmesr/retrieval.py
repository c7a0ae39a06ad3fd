"""Similar-user retrieval: for every user, the most cosine-similar other users by their text
embeddings (the neighbours whose representations LLM-ESR's self-distillation learns from).

Exact, blocked and multi-threaded in the Rust core: memory stays O(n·k + block) however many users
there are, where the original implementation builds the full n×n similarity matrix.
"""

from __future__ import annotations

from collections.abc import Callable

import numpy as np

from llmesr import _native


def similar_users(
    embeddings: np.ndarray, k: int, *, progress: Callable[[str, int, int], object] | None = None
) -> np.ndarray:
    """Indices of the `k` most cosine-similar rows of every row, as int32 `[n, k]`: best first, the
    row itself excluded, equal similarities ordered by lower index.

    Raises DataError (before any work) for NaN or infinite values, all-zero rows, or `k` not in
    `1..n-1`.
    """
    arr = np.ascontiguousarray(embeddings, dtype=np.float32)
    if arr.ndim != 2:
        raise ValueError(f"embeddings must be a 2-D array [users, dims], not of shape {arr.shape}")
    return _native.similar_users(arr, int(k), progress)
