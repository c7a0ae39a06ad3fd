"""Prepared datasets: building them (through the Rust core) and loading them (memory-mapped, no copy).

The folder layout is documented in the README ("Dataset folder") and in `rust/core/src/folder.rs`.
"""

from __future__ import annotations

import hashlib
import json
import os
import tempfile
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field, fields, replace
from functools import cached_property
from pathlib import Path
from typing import Any

import numpy as np

from llmesr import _native, parquet
from llmesr.errors import SettingsError
from llmesr.io import atomic_dir
from llmesr.locks import folder_lock

FORMAT_VERSION = _native.FORMAT_VERSION  # both defined once, in the Rust core
FORMATS = ("auto", *_native.formats())

ProgressFn = Callable[[str, int, int], object]


def _version() -> str:
    return _native.__version__


@dataclass(frozen=True)
class PrepareOptions:
    """How `prepare` reads and filters the input: the one list of its options (the command line's
    flags and the Rust side read these names). Filters run in this order: rating threshold, date
    window (`since <= t < until`, Unix seconds), chronological ordering (stable: ties keep input
    order), removal of consecutive repeats, k-core."""

    format: str = "auto"
    items: Sequence[str | os.PathLike[str]] = ()  # item metadata files
    item_key: str | None = None
    user_col: str | None = None
    item_col: str | None = None
    time_col: str | None = None
    rating_col: str | None = None
    columns: Sequence[str] | None = None  # roles by position, for files without a header
    min_user: int = 0
    min_item: int = 0
    min_rating: float | None = None
    since: int | None = None
    until: int | None = None
    core_mode: str = "iterative"
    dedup_consecutive: bool = False
    skip_bad_lines: bool = False

    def __post_init__(self) -> None:
        if self.format not in FORMATS:
            raise SettingsError(f"unknown format {self.format!r}; choose one of {', '.join(FORMATS)}")
        for name in ("min_user", "min_item"):
            if getattr(self, name) < 0:
                raise SettingsError(f"{name} must be at least 0, not {getattr(self, name)}")

    def for_native(self) -> dict[str, Any]:
        out = {f.name: getattr(self, f.name) for f in fields(self)}
        out["items"] = [os.fspath(p) for p in self.items]
        out["columns"] = list(self.columns) if self.columns is not None else None
        return out


def prepare(
    inputs: Sequence[str | os.PathLike[str]],
    out: str | os.PathLike[str],
    options: PrepareOptions | None = None,
    *,
    overwrite: bool = False,
    progress: ProgressFn | None = None,
    **settings: Any,
) -> Dataset:
    """Turns raw interaction logs into a prepared dataset folder at `out` and loads it. The reading
    and filtering settings are a `PrepareOptions`, or its fields given by name (`min_user=5`)."""
    if options is None:
        options = PrepareOptions(**settings)
    elif settings:
        raise TypeError("give either options or settings by name, not both")
    options = with_recbole_items(inputs, options)
    with atomic_dir(out, overwrite=overwrite, replaceable=is_dataset_folder) as tmp:
        with tempfile.TemporaryDirectory(prefix="llmesr-parquet-") as scratch:
            files, converted = [], {}  # Parquet inputs go through pyarrow (see llmesr.parquet)
            for p in inputs:
                if parquet.is_parquet(p):
                    tsv = parquet.convert(Path(p), Path(scratch))
                    converted[os.fspath(tsv)] = Path(p)
                    p = tsv
                files.append(os.fspath(p))
            if converted and options.format == "auto":
                options = replace(options, format="tsv")
            try:
                _native.prepare_dataset(
                    files, os.fspath(tmp), options.for_native(), version=_version(), progress=progress
                )
            except _native.DataError as e:
                raise _native.DataError(parquet.name_the_source(str(e), converted)) from None
        if converted:  # meta.json names the Parquet files (the hash is of the rows as read)
            meta = json.loads((tmp / "meta.json").read_text(encoding="utf-8"))
            for source in meta["sources"]:
                if source["path"] in converted:
                    source.update(path=os.fspath(converted[source["path"]]), read_as="parquet rows as tsv")
            (tmp / "meta.json").write_text(json.dumps(meta, indent=2) + "\n", encoding="utf-8")
    return load_dataset(out)


def with_recbole_items(inputs: Sequence[str | os.PathLike[str]], options: PrepareOptions) -> PrepareOptions:
    """RecBole atomic files come as a set: `NAME.inter` beside `NAME.item`. Without `--items`, the item
    file beside each `.inter` input is read as the item text, so RecBole's own files (and
    `llmesr-export`'s) prepare without options."""
    if options.items or options.format not in ("auto", "recbole"):
        return options
    siblings = []
    for p in map(Path, inputs):
        name = p.name.removesuffix(".gz")
        if not name.endswith(".inter"):
            return options
        sibling = p.with_name(name.removesuffix(".inter") + ".item")
        if sibling.exists():
            siblings.append(os.fspath(sibling))
    return replace(options, items=siblings) if siblings else options


def prepare_synthetic(
    out: str | os.PathLike[str],
    *,
    n_users: int = 2000,
    n_items: int = 1500,
    n_topics: int = 8,
    zipf: float = 1.0,
    seed: int = 42,
    overwrite: bool = False,
) -> Dataset:
    """Writes the built-in synthetic catalogue (deterministic for a seed; its generative story is in
    the README, "The built-in synthetic catalogue") and loads it. `n_topics`: departments (at most 10);
    `zipf`: the exponent of item popularity."""
    with atomic_dir(out, overwrite=overwrite, replaceable=is_dataset_folder) as tmp:
        _native.prepare_synthetic(
            os.fspath(tmp),
            n_users=n_users,
            n_items=n_items,
            n_topics=n_topics,
            zipf=zipf,
            seed=seed,
            version=_version(),
        )
    return load_dataset(out)


@dataclass(frozen=True)
class Dataset:
    """A prepared dataset. Arrays are memory-mapped read-only views of the folder's `.npy` files.

    Users are numbered 1..n_users and items 1..n_items; 0 is padding everywhere.
    """

    path: Path
    meta: dict[str, Any]
    indptr: np.ndarray
    items: np.ndarray
    train_end: np.ndarray
    valid: np.ndarray
    test: np.ndarray
    timestamps: np.ndarray | None = None
    ratings: np.ndarray | None = None
    _cache: dict[str, Any] = field(default_factory=dict, repr=False, compare=False)

    @property
    def n_users(self) -> int:
        return int(self.meta["n_users"])

    @property
    def n_items(self) -> int:
        return int(self.meta["n_items"])

    @property
    def n_interactions(self) -> int:
        return int(self.meta["n_interactions"])

    @property
    def native(self) -> _native.DatasetHandle:
        """The arrays as the Rust samplers take them, checked once at load."""
        return self._cache["native"]

    def history(self, user: int) -> np.ndarray:
        """All items of `user`, oldest first."""
        return self.items[self.indptr[user] : self.indptr[user + 1]]

    def train_history(self, user: int) -> np.ndarray:
        """The items of `user` before its validation and test items."""
        return self.items[self.indptr[user] : self.train_end[user]]

    @cached_property
    def lengths(self) -> np.ndarray:
        """History length of each user, `[n_users + 1]` (entry 0 is 0)."""
        return np.diff(self.indptr)[: self.n_users + 1].copy()

    @cached_property
    def train_popularity(self) -> np.ndarray:
        """Number of training interactions of each item, `[n_items + 1]`."""
        # Everything that is not a held-out validation or test item is training.
        counts = np.bincount(self.items, minlength=self.n_items + 1)
        for held_out in (self.valid, self.test):
            counts -= np.bincount(held_out[1:], minlength=self.n_items + 1)
        counts[0] = 0
        return counts

    def user_ids(self) -> list[str | None]:
        """Raw user id of each user (entry 0 is None)."""
        return self._json("user_ids.json")

    def item_ids(self) -> list[str | None]:
        """Raw item id of each item (entry 0 is None)."""
        return self._json("item_ids.json")

    def item_text(self) -> list[dict[str, Any]]:
        """Item metadata records, one per item id 1..n_items (index 0 is item 1)."""
        if "items.jsonl" not in self._cache:
            with open(self.path / "items.jsonl", encoding="utf-8") as f:
                self._cache["items.jsonl"] = [json.loads(line) for line in f]
        return self._cache["items.jsonl"]

    def _json(self, name: str) -> Any:
        if name not in self._cache:
            self._cache[name] = json.loads((self.path / name).read_text(encoding="utf-8"))
        return self._cache[name]


def is_dataset_folder(path: Path) -> bool:
    """A folder `--overwrite` may replace: one of ours (meta.json says so), or an empty one."""
    try:
        if not any(path.iterdir()):
            return True
        return json.loads((path / "meta.json").read_text(encoding="utf-8")).get("format") == "llmesr-dataset"
    except (OSError, ValueError, AttributeError):
        return False


def _load_array(folder: Path, name: str, dtype: str, length: int) -> np.ndarray:
    path = folder / name
    try:
        arr = np.load(path, mmap_mode="r", allow_pickle=False)
    except FileNotFoundError:
        raise _native.DataError(f"{path}: missing; the dataset folder is incomplete") from None
    except (ValueError, EOFError, OSError) as e:
        raise _native.DataError(f"{path}: not a valid .npy file ({e or 'empty'})") from None
    if arr.dtype != np.dtype(dtype) or arr.shape != (length,):
        raise _native.DataError(
            f"{path}: expected {dtype} of shape ({length},), found {arr.dtype} of shape {arr.shape}"
        )
    return arr


META_KEYS = {"n_users": int, "n_items": int, "n_interactions": int, "has_timestamps": bool, "has_ratings": bool}


def load_dataset(path: str | os.PathLike[str]) -> Dataset:
    """Opens a prepared dataset folder; the arrays are memory-mapped, not copied."""
    folder = Path(path)
    meta_path = folder / "meta.json"
    try:
        meta = json.loads(meta_path.read_text(encoding="utf-8"))
    except FileNotFoundError:
        raise _native.DataError(f"{meta_path}: missing; is {folder} a prepared dataset folder?") from None
    except json.JSONDecodeError as e:
        raise _native.DataError(f"{meta_path}: line {e.lineno}: {e.msg}") from None
    if meta.get("format") != "llmesr-dataset":
        raise _native.DataError(f"{meta_path}: not an llmesr dataset")
    if meta.get("format_version") != FORMAT_VERSION:
        raise _native.DataError(
            f"{meta_path}: format version {meta.get('format_version')} is not supported "
            f"(this llmesr reads version {FORMAT_VERSION}); prepare the data again"
        )
    for key, kind in META_KEYS.items():
        value = meta.get(key)
        if not isinstance(value, kind) or (
            isinstance(value, int) and kind is int and (isinstance(value, bool) or value < 0)
        ):
            what = "true or false" if kind is bool else "a count"
            raise _native.DataError(f"{meta_path}: {key!r} must be {what}, found {value!r}")
    n_users, n_inter = meta["n_users"], meta["n_interactions"]
    ds = Dataset(
        path=folder,
        meta=meta,
        indptr=_load_array(folder, "indptr.npy", "<i8", n_users + 2),
        items=_load_array(folder, "items.npy", "<i4", n_inter),
        train_end=_load_array(folder, "train_end.npy", "<i8", n_users + 1),
        valid=_load_array(folder, "valid.npy", "<i4", n_users + 1),
        test=_load_array(folder, "test.npy", "<i4", n_users + 1),
        timestamps=_load_array(folder, "timestamps.npy", "<i8", n_inter) if meta["has_timestamps"] else None,
        ratings=_load_array(folder, "ratings.npy", "<f4", n_inter) if meta["has_ratings"] else None,
    )
    ds._cache["native"] = _native.DatasetHandle(
        str(folder), ds.indptr, ds.train_end, ds.items, ds.valid, ds.test, ds.n_items
    )  # checks the arrays once (the first bad row named); the samplers take it
    return ds


def pareto_threshold(values: np.ndarray, head_share: float = 0.2) -> int:
    """The Pareto (20/80) rule: the head is the `head_share` of entries with the largest values, and
    the returned threshold is the smallest head value; entries below it are tail (ties go to head)."""
    values = np.sort(np.asarray(values))[::-1]
    if len(values) == 0:
        return 0
    k = max(1, int(np.ceil(head_share * len(values))))
    return int(values[k - 1])


def summarize(ds: Dataset, tail_user_len: int | None = None, tail_item_pop: int | None = None) -> dict[str, Any]:
    """Counts, history-length quantiles and long-tail shares (users with history shorter than
    `tail_user_len`; items with training popularity below `tail_item_pop`; Pareto rule by default)."""
    lengths = ds.lengths[1:]
    pop = ds.train_popularity[1:]
    if tail_user_len is None:
        tail_user_len = pareto_threshold(lengths)
    if tail_item_pop is None:
        tail_item_pop = pareto_threshold(pop)
    qs = (0.0, 0.25, 0.5, 0.75, 0.9, 0.99, 1.0)
    return {
        "users": ds.n_users,
        "items": ds.n_items,
        "interactions": ds.n_interactions,
        "density": ds.n_interactions / max(1, ds.n_users * ds.n_items),
        "history_length": {f"q{int(q * 100)}": float(np.quantile(lengths, q)) for q in qs}
        | {"mean": float(lengths.mean())},
        "tail_user_len": int(tail_user_len),
        "tail_item_pop": int(tail_item_pop),
        "tail_user_share": float((lengths < tail_user_len).mean()),
        "tail_item_share": float((pop < tail_item_pop).mean()),
        "evaluable_users": int((ds.test[1:] > 0).sum()),
        "skipped_lines": int(ds.meta.get("skipped_lines", 0)),
    }


# The tables llmesr-embed adds to a dataset folder (written by llmesr.embed), embed.json last.
EMBEDDING_FILES = ("item_emb.npy", "user_emb.npy", "item_pca.npy", "similar_users.npy", "embed.json")


def file_sha256(path: Path) -> str:
    with open(path, "rb") as f:
        return hashlib.file_digest(f, "sha256").hexdigest()


def load_embeddings(path: str | os.PathLike[str]) -> dict[str, np.ndarray]:
    """The tables written by `embed_dataset` (memory-mapped), checked against embed.json's hashes (one
    set, written by one llmesr-embed run) and for NaN or infinite values."""
    folder = Path(path)
    missing = [n for n in EMBEDDING_FILES if not (folder / n).exists()]
    if missing:
        raise _native.DataError(f"{folder}: no {', '.join(missing)}; run llmesr-embed {folder} first")
    again = f"run llmesr-embed {folder} again"
    try:
        files = json.loads((folder / "embed.json").read_text())["files"]
    except (ValueError, KeyError, TypeError):
        raise _native.DataError(
            f"{folder / 'embed.json'}: no table hashes (an older or damaged embedding); {again}"
        ) from None
    with folder_lock(folder, exclusive=False):  # the four tables and embed.json are one set
        tables = {}
        for name in EMBEDDING_FILES[:-1]:
            if file_sha256(folder / name) != files.get(name):
                raise _native.DataError(
                    f"{folder / name}: not the table embed.json describes (an llmesr-embed run killed midway?); {again}"
                )
            try:
                table = np.load(folder / name, mmap_mode="r", allow_pickle=False)
            except (ValueError, EOFError, OSError) as e:
                raise _native.DataError(f"{folder / name}: not a valid .npy file ({e or 'empty'}); {again}") from None
            if table.ndim != 2 or (table.dtype.kind == "f" and not np.isfinite(table).all()):
                raise _native.DataError(f"{folder / name}: NaN or infinite values, or not a 2-D table; {again}")
            tables[name[:-4]] = table
    return tables
