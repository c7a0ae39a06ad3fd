"""LLM-ESR's offline stage: the semantic item table, the user embeddings, the PCA-reduced item table
that initialises the ID view, and every user's most similar users, all stored in the dataset folder.

| file | content |
|---|---|
| `item_emb.npy` | float32 `[n_items + 1, d]`: the frozen semantic item table, row 0 = padding zeros |
| `user_emb.npy` | float32 `[n_users + 1, d]`: user embeddings (training history only), row 0 zeros: the encoded prompt, or with `user_vectors="item-mean"` the mean of the user's unit item vectors |
| `item_pca.npy` | float32 `[n_items + 1, hidden]`: PCA of the item table, to initialise the ID table |
| `similar_users.npy` | int32 `[n_users + 1, k]`: user ids (1-based), best first, self excluded; row 0 zeros |
| `embed.json` | encoder, dimensions, templates, how user vectors were made (`user_vectors`), k, the seconds of each stage (`seconds`: encode_items, encode_users or item_mean_users, pca, similar_users), texts encoded and cache hits, and the SHA-256 of each table (`files`) |

The four tables are written one by one (each atomically), then embed.json, which names their
hashes: `load_embeddings` checks them, so a run killed between two tables (new item table, old
similar users) is refused instead of mixing two embeddings.
"""

from __future__ import annotations

import hashlib
import io
import json
import os
import pickle
import time
from collections.abc import Callable
from functools import partial
from pathlib import Path
from typing import Any

import numpy as np

from llmesr import _native
from llmesr.data import Dataset, load_dataset
from llmesr.encoders import EmbeddingCache, TextEncoder, encode_all
from llmesr.errors import SettingsError
from llmesr.io import atomic_write, atomic_write_text
from llmesr.locks import folder_lock
from llmesr.retrieval import similar_users
from llmesr.text import (
    DEFAULT_ITEM_TEMPLATE,
    DEFAULT_USER_TEMPLATE,
    ITEM_FIELDS,
    USER_PROMPT_ITEMS,
    check_template,
    item_prompts,
    user_prompts,
)

DataError = _native.DataError


def pca(table: np.ndarray, dim: int) -> np.ndarray:
    """Projection of the centred rows on their `dim` leading principal components, each component's
    sign fixed so that its largest coordinate is positive. Exact: the eigenvectors of the d x d
    covariance (float64 `eigh`) are the SVD's right singular vectors, at a fraction of the cost of
    the full SVD of the n x d table (12k x 1536: ~1 s instead of minutes); with fewer rows than
    columns the SVD is the cheaper one and is used."""
    if dim > min(table.shape):
        raise DataError(f"--hidden {dim} is more than the item table allows ({min(table.shape)})")
    centred = table.astype(np.float64) - table.mean(axis=0)
    if centred.shape[0] >= centred.shape[1]:
        _, vectors = np.linalg.eigh(centred.T @ centred)  # ascending eigenvalues
        components = vectors[:, ::-1][:, :dim].T
    else:
        components = np.linalg.svd(centred, full_matrices=False)[2][:dim]
    largest = np.abs(components).argmax(axis=1)
    components = components * np.sign(components[np.arange(dim), largest])[:, None]
    return (centred @ components.T).astype(np.float32)


def with_padding_row(rows: np.ndarray) -> np.ndarray:
    return np.concatenate([np.zeros((1, *rows.shape[1:]), dtype=rows.dtype), rows])


def check_table(name: str, table: np.ndarray, n: int) -> np.ndarray:
    """A precomputed table: `n` rows (or `n + 1` with the padding row first), finite values."""
    if table.ndim != 2:
        raise DataError(f"{name}: expected a 2-D table, found shape {table.shape}")
    if table.shape[0] == n + 1:
        table = table[1:]
    if table.shape[0] != n:
        raise DataError(f"{name}: {table.shape[0]} rows, but the dataset has {n} (or {n + 1} with padding)")
    if not np.isfinite(table).all():
        bad = int(np.argwhere(~np.isfinite(table))[0][0])
        raise DataError(f"{name}: row {bad} has NaN or infinite values")
    return table.astype(np.float32)


def check_similar(table: np.ndarray, n_users: int, zero_based: bool) -> np.ndarray:
    """A precomputed similar-users table as user ids 1..n, one row per user (row 0 = padding dropped)."""
    table = np.asarray(table)
    if table.ndim != 2 or not np.issubdtype(table.dtype, np.integer):
        raise DataError(f"similar-users table: expected a 2-D integer table, found {table.dtype} {table.shape}")
    if table.shape[0] == n_users + 1:
        table = table[1:]
    if table.shape[0] != n_users:
        raise DataError(f"similar-users table: {table.shape[0]} rows, but the dataset has {n_users} users")
    ids = table.astype(np.int64) + (1 if zero_based else 0)
    if ids.min() < 1 or ids.max() > n_users:
        raise DataError(f"similar-users table: ids must lie in 1..{n_users} (0..{n_users - 1} if zero-based)")
    return ids.astype(np.int32)


def load_table(path: str | os.PathLike[str], allow_pickle: bool = False) -> np.ndarray:
    """A precomputed table from `.npy`, or (only with `allow_pickle`) from the original LLM-ESR `.pkl`.
    Pickle runs code from the file: never use it on files you do not trust."""
    path = Path(path)
    if path.suffix == ".pkl":
        if not allow_pickle:
            raise DataError(f"{path}: a pickle can run arbitrary code; pass --allow-pickle if you trust this file")
        with open(path, "rb") as f:
            return np.asarray(pickle.load(f))  # noqa: S301 (explicit, documented opt-in)
    return np.load(path, allow_pickle=False)


def npy_bytes(array: np.ndarray) -> bytes:
    """The .npy file of `array`, in memory: what is written is what is hashed."""
    buffer = io.BytesIO()
    np.save(buffer, array, allow_pickle=False)
    return buffer.getvalue()


SIMILAR_USERS = 100  # similar users kept per user (the paper's retrieval depth; training uses the first n_similar)
CACHE = Path.home() / ".cache" / "llmesr" / "embeddings"  # the embedding cache of the commands


def encode_tables(
    ds: Dataset,
    encoder: TextEncoder,
    templates: dict[str, str],
    cache_dir: str | os.PathLike[str] | None,
    report: Callable[[str, int, int], object],
    info: dict[str, Any],
    seconds: dict[str, float],
) -> dict[str, np.ndarray]:
    """The tables of `templates` ("items", and "users" unless they come from the items) encoded from
    their prompts (distinct texts once, the cache first); each stage's time in `seconds`, its text
    counts in `info`."""
    cache = EmbeddingCache(cache_dir, encoder.name) if cache_dir is not None else None
    prompts = {"items": item_prompts, "users": user_prompts}
    tables = {}
    for what, template in templates.items():
        done = [0]

        def step(n: int, total: int, what: str = what, done: list[int] = done) -> None:
            done[0] += n  # tokens of the distinct texts not in the cache: the bar ends at 100 %
            report(f"encoding {what}", done[0], total)

        t0 = time.perf_counter()
        tables[what], info[f"{what}_texts"] = encode_all(prompts[what](ds, template), encoder, cache, progress=step)
        seconds[f"encode_{what}"] = time.perf_counter() - t0
    return tables


#: How a user's vector is made: "prompt" encodes the titles of their training items as one text (the
#: paper's); "item-mean" averages those items' unit vectors, so no user text is encoded at all.
USER_VECTORS = ("prompt", "item-mean")


def item_mean_users(ds: Dataset, items: np.ndarray, max_items: int = USER_PROMPT_ITEMS) -> np.ndarray:
    """Users 1..n as the mean of the unit vectors of their last `max_items` training items (the items
    their prompt would list), `[n_users, d]` float32. Every user has a training item (the split keeps
    users with fewer than three interactions whole in training)."""
    unit = items / np.maximum(np.linalg.norm(items, axis=1, keepdims=True), 1e-12)
    users = np.empty((ds.n_users, items.shape[1]), dtype=np.float32)
    for u in range(1, ds.n_users + 1):
        users[u - 1] = unit[ds.train_history(u)[-max_items:] - 1].mean(axis=0)
    return users


def write_tables(
    folder: Path,
    items: np.ndarray,
    users: np.ndarray,
    item_pca: np.ndarray,
    neighbours: np.ndarray,
    info: dict[str, Any],
) -> None:
    """The four tables (a zero padding row first) and embed.json, each atomically. embed.json's hashes
    are of the bytes written (not read back from the folder afterwards), so the five files are checked
    as one set at load (`llmesr.data.load_embeddings`)."""
    outputs = {
        "item_emb.npy": with_padding_row(items),
        "user_emb.npy": with_padding_row(users),
        "item_pca.npy": with_padding_row(item_pca),
        "similar_users.npy": with_padding_row(neighbours.astype(np.int32)),
    }
    info["files"] = {}
    for name, array in outputs.items():
        data = npy_bytes(array)
        atomic_write(folder / name, partial(Path.write_bytes, data=data))
        info["files"][name] = hashlib.sha256(data).hexdigest()
    atomic_write_text(folder / "embed.json", json.dumps(info, indent=2) + "\n")


def embed_dataset(
    path: str | os.PathLike[str],
    encoder: TextEncoder | None = None,
    *,
    item_table: np.ndarray | None = None,
    user_table: np.ndarray | None = None,
    similar_table: np.ndarray | None = None,
    similar_zero_based: bool = False,
    item_template: str = DEFAULT_ITEM_TEMPLATE,
    user_template: str = DEFAULT_USER_TEMPLATE,
    user_vectors: str = "prompt",
    k: int = SIMILAR_USERS,
    hidden: int = 64,
    cache_dir: str | os.PathLike[str] | None = None,
    approximate: bool = False,
    progress: Callable[[str, int, int], object] | None = None,
) -> dict[str, Any]:
    """Computes and stores the semantic tables of a prepared dataset. Either an `encoder` (texts are
    built and encoded) or precomputed `item_table` and `user_table`; with `user_vectors="item-mean"`
    users are the mean of their training items' vectors instead (`item_mean_users`), and no user text
    or table is needed. A precomputed `similar_table` (user ids, or 0-based row numbers with
    `similar_zero_based`, e.g. the original's sim_user_100.pkl) replaces the retrieval. Returns what
    `embed.json` holds."""
    with folder_lock(path, exclusive=True):  # one writer of a dataset's tables at a time
        ds: Dataset = load_dataset(path)
        # Everything that can be checked is checked before the slow part.
        if not 1 <= k < ds.n_users:
            raise DataError(f"k must be between 1 and the number of users minus one ({ds.n_users - 1}), not {k}")
        if not 1 <= hidden <= ds.n_items:
            raise DataError(f"--hidden must be between 1 and the number of items ({ds.n_items}), not {hidden}")
        if user_vectors not in USER_VECTORS:
            raise SettingsError(f"user_vectors must be one of {', '.join(USER_VECTORS)}, not {user_vectors!r}")
        from_prompts = user_vectors == "prompt"
        if from_prompts and encoder is None and (item_table is None or user_table is None):
            raise SettingsError("give an encoder, or both precomputed tables")
        if not from_prompts and user_table is not None:
            raise SettingsError("a precomputed user table and user vectors from the items exclude each other")
        if not from_prompts and encoder is None and item_table is None:
            raise SettingsError("give an encoder, or a precomputed item table")
        check_template(item_template, ITEM_FIELDS)
        check_template(user_template, ("titles",))
        report = progress or (lambda *_: None)
        info: dict[str, Any] = {
            "k": k,
            "hidden": hidden,
            "retrieval": "approximate" if approximate else "exact",
            "user_vectors": user_vectors,
        }
        seconds: dict[str, float] = {}  # each stage's wall time, by name
        if encoder is not None:
            templates = {"items": item_template, "users": user_template} if from_prompts else {"items": item_template}
            tables = encode_tables(ds, encoder, templates, cache_dir, report, info, seconds)
            item_table, user_table = tables["items"], tables.get("users")
            info.update(encoder=encoder.name, item_template=item_template)
            if from_prompts:
                info.update(user_template=user_template)
        else:
            info.update(encoder="precomputed")
        assert item_table is not None
        items = check_table("item table", item_table, ds.n_items)
        if not from_prompts:
            t0 = time.perf_counter()
            user_table = item_mean_users(ds, items)
            seconds["item_mean_users"] = time.perf_counter() - t0
        assert user_table is not None
        users = check_table("user table", user_table, ds.n_users)
        if items.shape[1] != users.shape[1]:
            raise DataError(f"item table is {items.shape[1]}-d but user table is {users.shape[1]}-d")
        info.update(dim=int(items.shape[1]))

        t0 = time.perf_counter()
        item_pca = pca(items, hidden)
        seconds["pca"] = time.perf_counter() - t0
        t0 = time.perf_counter()
        if similar_table is not None:
            neighbours = check_similar(similar_table, ds.n_users, similar_zero_based)
            info.update(k=int(neighbours.shape[1]), retrieval="precomputed")
        else:
            neighbours = similar_users(users, k, approximate=approximate, progress=progress) + 1  # rows: users 1..n
        seconds["similar_users"] = time.perf_counter() - t0
        info["seconds"] = {name: round(value, 3) for name, value in seconds.items()}

        write_tables(Path(path), items, users, item_pca, neighbours, info)
        return info
