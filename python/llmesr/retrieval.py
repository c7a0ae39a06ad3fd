"""Similar-user retrieval: for every user, the most cosine-similar other users by their text
embeddings (the neighbours whose representations LLM-ESR's self-distillation learns from).

Exact (blocked, multi-threaded: memory stays O(n·k + block) however many users there are, where the
original implementation builds the full n×n similarity matrix), or approximate for millions of users.
"""

from __future__ import annotations

from collections.abc import Callable

import numpy as np

from llmesr import _native
from llmesr.errors import SettingsError


def similar_users(
    embeddings: np.ndarray,
    k: int,
    *,
    approximate: bool = False,
    lists: int | None = None,
    probe: int | None = None,
    seed: int = 0,
    progress: Callable[[str, int, int], object] | None = None,
) -> np.ndarray:
    """Indices of the `k` most cosine-similar rows of every row, as int32 `[n, k]`: best first, the
    row itself excluded, equal similarities ordered by lower index.

    Exact by default. With `approximate=True`, an inverted file: rows are clustered (spherical
    k-means, `lists` clusters, default about 4*sqrt(n)) and each row is compared with the rows of the
    `probe` clusters nearest to its own (default 32); deterministic for a `seed`,
    exact when `probe == lists`. For millions of users, where exact search is quadratic.

    Raises DataError (before any work) for NaN or infinite values, all-zero rows, or `k` not in
    `1..n-1`.
    """
    arr = np.ascontiguousarray(embeddings, dtype=np.float32)
    if arr.ndim != 2:
        raise SettingsError(f"embeddings must be a 2-D array [users, dims], not of shape {arr.shape}")
    if approximate:
        default_lists, _ = _native.default_ivf_settings(arr.shape[0])
        lists = lists or default_lists
    elif lists is not None or probe is not None:
        raise SettingsError("lists and probe apply to the approximate search (approximate=True)")
    return _native.similar_users(arr, int(k), progress, lists, probe, seed)
