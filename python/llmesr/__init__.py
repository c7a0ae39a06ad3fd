"""llmesr: LLM-enhanced sequential recommendation (LLM-ESR, NeurIPS 2024), correct and fast."""

from importlib.metadata import PackageNotFoundError, version

from llmesr._native import DataError
from llmesr.data import Dataset, load_dataset, prepare, prepare_synthetic

try:
    __version__ = version("llmesr")
except PackageNotFoundError:  # running from a source tree without installing
    __version__ = "0.0.0+unknown"

__all__ = ["DataError", "Dataset", "load_dataset", "prepare", "prepare_synthetic", "__version__"]
