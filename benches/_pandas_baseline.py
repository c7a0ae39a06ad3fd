"""The same preparation in pandas/NumPy, the way a careful Python user would write it: the baseline
the Rust core is measured against. Steps: read the CSV, iterative k-core, stable chronological order,
ids remapped to 1..N in raw-id order, CSR offsets, leave-one-out split, arrays written as .npy."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pandas as pd


def pandas_prepare(csv: Path, out: Path, min_user: int = 5, min_item: int = 5) -> dict[str, np.ndarray]:
    df = pd.read_csv(csv)
    while True:
        user_count = df["user"].map(df["user"].value_counts())
        item_count = df["item"].map(df["item"].value_counts())
        keep = (user_count >= min_user) & (item_count >= min_item)
        if keep.all():
            break
        df = df[keep]
    df = df.sort_values(["user", "timestamp"], kind="stable")
    user_codes, _ = pd.factorize(df["user"], sort=True)
    item_codes, _ = pd.factorize(df["item"], sort=True)
    n_users = int(user_codes.max()) + 1
    lengths = np.bincount(user_codes, minlength=n_users)
    indptr = np.zeros(n_users + 2, dtype=np.int64)
    np.cumsum(lengths, out=indptr[2:])
    items = (item_codes + 1).astype(np.int32)
    end = indptr[2:]
    has_split = lengths >= 3
    valid = np.zeros(n_users + 1, dtype=np.int32)
    test = np.zeros(n_users + 1, dtype=np.int32)
    valid[1:][has_split] = items[end[has_split] - 2]
    test[1:][has_split] = items[end[has_split] - 1]
    train_end = np.concatenate([[0], np.where(has_split, end - 2, end)]).astype(np.int64)
    arrays = {
        "indptr": indptr,
        "items": items,
        "timestamps": df["timestamp"].to_numpy(np.int64),
        "ratings": df["rating"].to_numpy(np.float32),
        "train_end": train_end,
        "valid": valid,
        "test": test,
    }
    out.mkdir(parents=True, exist_ok=True)
    for name, arr in arrays.items():
        np.save(out / f"{name}.npy", arr)
    return arrays
