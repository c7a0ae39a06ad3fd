import contextlib
import gzip
import os
import re
import threading
from collections.abc import Iterator
from http.server import BaseHTTPRequestHandler, HTTPServer
from pathlib import Path

import pytest


@pytest.fixture(autouse=True)
def quiet_machine(monkeypatch):
    """Training runs in tests see a quiet machine: a run notes in its log when other processes crowd it,
    which would make the logs depend on what else the machine runs (the note's own tests patch the load)."""
    from llmesr import threads

    monkeypatch.setattr(threads, "crowded", lambda n_threads, others: False)


@contextlib.contextmanager
def serve(handler: type[BaseHTTPRequestHandler]) -> Iterator[str]:
    """A local HTTP server answering with `handler` (quiet), as an OpenAI-style base URL."""
    handler.log_message = lambda self, *args: None  # type: ignore[method-assign]
    server = HTTPServer(("127.0.0.1", 0), handler)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    try:
        yield f"http://127.0.0.1:{server.server_port}/v1"
    finally:
        server.shutdown()


def embedded_synthetic(folder: Path, n_users: int, n_items: int, seed: int, dim: int = 16) -> Path:
    """A small synthetic dataset with hashing-encoder embeddings (10 similar users, PCA to 8): the data
    the training tests share."""
    from llmesr import prepare_synthetic
    from llmesr.embed import embed_dataset
    from llmesr.encoders import HashingEncoder

    prepare_synthetic(folder, n_users=n_users, n_items=n_items, seed=seed)
    embed_dataset(folder, HashingEncoder(dim), k=10, hidden=8)
    return folder


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


def epoch_lines(run: Path) -> list[str]:
    """The per-epoch lines of a run's log.txt ("epoch N: loss ..."), without the lines about its patience."""
    return [line for line in (run / "log.txt").read_text().splitlines() if re.match(r"epoch \d+: loss ", line)]


def assert_same_loss_and_gradients(fast, slow, module) -> None:
    """Two losses over `module`'s parameters agree, and so do their gradients (float32 tolerances)."""
    import torch

    torch.testing.assert_close(fast, slow, rtol=1e-5, atol=1e-6)
    params = [p for p in module.parameters() if p.requires_grad]
    for a, b in zip(
        torch.autograd.grad(fast, params, allow_unused=True),
        torch.autograd.grad(slow, params, allow_unused=True),
        strict=True,
    ):
        if a is None or b is None:
            assert a is None and b is None
        else:
            torch.testing.assert_close(a, b, rtol=1e-4, atol=1e-5)
