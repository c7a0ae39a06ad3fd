import gzip
import os
from pathlib import Path

import pytest


def write(path: Path, text: str | bytes, gz: bool = False) -> Path:
    data = text.encode() if isinstance(text, str) else text
    if gz:
        data = gzip.compress(data)
    path.write_bytes(data)
    return path


@pytest.fixture
def shared_data() -> Path:
    root = os.environ.get("LLMESR_TEST_DATA")
    if not root or not Path(root).is_dir():
        pytest.skip("LLMESR_TEST_DATA is not set to the shared datasets folder")
    return Path(root)
