# Hand-written stub of the Rust extension (checked against the module by mypy's stubtest in CI).
from collections.abc import Callable
from typing import final

import numpy as np

FORMAT_VERSION: int
__version__: str

__all__ = [
    "DatasetHandle",
    "FORMAT_VERSION",
    "__version__",
    "_panic_for_test",
    "bert4rec_batch",
    "default_ivf_settings",
    "detect_format",
    "eval_negatives",
    "formats",
    "histories",
    "parse_timestamp",
    "prepare_dataset",
    "prepare_synthetic",
    "sasrec_batch",
    "similar_users",
    "DataError",
]

class DataError(ValueError):
    """Malformed or unusable input data."""

def prepare_dataset(
    inputs: list[str],
    out_dir: str,
    options: dict[str, object],
    *,
    version: str = "",
    progress: Callable[[str, int, int], object] | None = None,
) -> str: ...
def prepare_synthetic(
    out_dir: str,
    *,
    n_users: int = 2000,
    n_items: int = 1500,
    n_topics: int = 8,
    zipf: float = 1.0,
    seed: int = 42,
    min_user: int = 0,
    min_item: int = 0,
    version: str = "",
) -> str: ...
def similar_users(
    embeddings: np.ndarray,
    k: int,
    progress: Callable[[str, int, int], object] | None = None,
    lists: int | None = None,
    probe: int | None = None,
    seed: int = 0,
) -> np.ndarray: ...
def default_ivf_settings(n: int) -> tuple[int, int]: ...

@final
class DatasetHandle:
    """A prepared dataset's arrays, checked once; the samplers take it."""

    def __new__(
        cls,
        folder: str,
        indptr: np.ndarray,
        train_end: np.ndarray,
        items: np.ndarray,
        valid: np.ndarray,
        test: np.ndarray,
        n_items: int,
    ) -> DatasetHandle: ...
    @property
    def n_items(self) -> int: ...

def eval_negatives(ds: DatasetHandle, n_neg: int, seed: int) -> np.ndarray: ...
def sasrec_batch(
    ds: DatasetHandle,
    users: np.ndarray,
    max_len: int,
    negative_weights: np.ndarray | None,
    seed: int,
    epoch: int,
) -> tuple[np.ndarray, np.ndarray, np.ndarray]: ...
def bert4rec_batch(
    ds: DatasetHandle,
    users: np.ndarray,
    max_len: int,
    mask_prob: float,
    negative_weights: np.ndarray | None,
    seed: int,
    epoch: int,
) -> tuple[np.ndarray, np.ndarray, np.ndarray]: ...
def histories(ds: DatasetHandle, users: np.ndarray, extra: int, max_len: int) -> np.ndarray: ...
def formats() -> list[str]: ...
def parse_timestamp(text: str) -> int | None: ...
def detect_format(path: str) -> str: ...
def _panic_for_test() -> None: ...
