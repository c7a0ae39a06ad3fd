"""llmesr: LLM-enhanced sequential recommendation (LLM-ESR, NeurIPS 2024), correct and fast."""

from llmesr._native import DataError, __version__  # the version of the workspace's Cargo.toml
from llmesr.data import Dataset, load_dataset, prepare, prepare_synthetic

__all__ = ["DataError", "Dataset", "load_dataset", "prepare", "prepare_synthetic", "__version__"]
