"""A prepared dataset in another library's format, so that other models can be compared on exactly
our data and split. RecBole (https://recbole.io) atomic files:

| file | content |
|---|---|
| `NAME.inter` | `user_id:token  item_id:token  timestamp:float` (+ `rating:float` where the dataset has ratings), users in order, each user's items oldest first |
| `NAME.item` | `item_id:token  title:token_seq  categories:token_seq` where the dataset has item text |
| `NAME.yaml` | RecBole settings for the same protocol: leave-one-out in time order (last item test, the one before validation), full ranking, HR@10 / NDCG@10, the same longest history, the softmax loss over all items (`loss_type: CE` with `train_neg_sample_args: ~`, which RecBole 1.2 requires for CE), and where the files are (`data_path`, `dataset`) |

`timestamp` is each interaction's position in its user's history (0, 1, ...): RecBole orders a user's
items by it, so its leave-one-out split is ours whatever the original times (which may tie, or be
absent); the real times stay in our folder. Ids are the raw ids of the source data (RecBole reads
them as tokens and numbers them itself); `llmesr-prepare` reads the files back by the same raw ids.
"""

from __future__ import annotations

import json
import os
import re
from pathlib import Path
from typing import TextIO

from llmesr.data import Dataset, load_dataset
from llmesr.errors import SettingsError
from llmesr.io import atomic_dir
from llmesr.locks import folder_lock

TARGETS = ("recbole",)
RECBOLE_COST = (
    "RecBole trains on every prefix of every history, each padded to MAX_ITEM_LIST_LENGTH: at 200, measured "
    "12-13 GB and 15-90 min per epoch on 2 CPU cores for ml-100k and Yelp; a shorter length costs less."
)
SEPARATORS = re.compile(r"[\t\r\n]")


def token(value: str | None, what: str) -> str:
    """A RecBole token: no tab or line break (they separate fields and rows)."""
    if value is None or SEPARATORS.search(value):
        raise SettingsError(f"{what} {value!r} cannot be written as a RecBole token (it holds a tab or line break)")
    return value


def words(text: str) -> str:
    """A RecBole token_seq field: space-separated words, no tabs or line breaks."""
    return " ".join(SEPARATORS.sub(" ", text).split())


def export_recbole(
    path: str | os.PathLike[str],
    out: str | os.PathLike[str],
    max_len: int = 200,
    overwrite: bool = False,
) -> Path:
    """Writes the dataset folder `path` as RecBole atomic files into the folder `out` (atomically: a
    killed export leaves no partial folder) and returns it. RecBole reads `data_path/NAME/NAME.inter`,
    so the dataset's `name` there is the folder's name (`out`'s last part)."""
    name = token(Path(out).name, "dataset name")
    with (
        folder_lock(path, exclusive=False),
        atomic_dir(out, overwrite=overwrite, replaceable=lambda p: (p / f"{name}.yaml").exists()) as tmp,
    ):
        ds = load_dataset(path)
        with open(tmp / f"{name}.inter", "w", encoding="utf-8", newline="\n") as f:
            write_interactions(ds, f)
        if any(r.get("title") or r.get("categories") for r in ds.item_text()):
            with open(tmp / f"{name}.item", "w", encoding="utf-8", newline="\n") as f:
                write_items(ds, f)
        settings = recbole_settings(ds, max_len, data_path=Path(out).resolve().parent, name=name)
        (tmp / f"{name}.yaml").write_text(settings, encoding="utf-8")
    return Path(out)


def write_interactions(ds: Dataset, f: TextIO) -> None:
    users = [token(u, "user id") if i else "" for i, u in enumerate(ds.user_ids())]
    items = [token(v, "item id") if i else "" for i, v in enumerate(ds.item_ids())]
    ratings = ds.ratings
    f.write("user_id:token\titem_id:token\ttimestamp:float" + ("\trating:float" if ratings is not None else "") + "\n")
    for user in range(1, ds.n_users + 1):
        start, end = int(ds.indptr[user]), int(ds.indptr[user + 1])
        for position, item in enumerate(ds.items[start:end]):
            row = f"{users[user]}\t{items[item]}\t{position}"
            if ratings is not None:
                row += f"\t{float(ratings[start + position]):g}"
            f.write(row + "\n")


def write_items(ds: Dataset, f: TextIO) -> None:
    f.write("item_id:token\ttitle:token_seq\tcategories:token_seq\n")
    for item_id, record in zip(ds.item_ids()[1:], ds.item_text(), strict=True):
        title = words(record.get("title") or "")
        categories = words(" ".join(record.get("categories") or []))
        f.write(f"{token(item_id, 'item id')}\t{title}\t{categories}\n")


def recbole_settings(ds: Dataset, max_len: int, data_path: Path, name: str) -> str:
    """RecBole's settings for llmesr's protocol (full ranking; RecBole's sampled mode draws other
    negatives than ours, so only the full-ranking numbers are comparable)."""
    has_ratings = ds.ratings is not None
    columns = "[user_id, item_id, timestamp" + (", rating]" if has_ratings else "]")
    return (
        f"# RecBole settings for llmesr's split of {ds.path.name} ({ds.n_users} users, {ds.n_items} items)\n"
        "# Use: run_recbole(model='SASRec', config_file_list=['THIS FILE']) (data_path and dataset below)\n"
        f"# {RECBOLE_COST}\n"
        f"data_path: {json.dumps(os.fspath(data_path))}\n"
        f"dataset: {json.dumps(name)}\n"
        "USER_ID_FIELD: user_id\n"
        "ITEM_ID_FIELD: item_id\n"
        "TIME_FIELD: timestamp\n"
        f"load_col: {{inter: {columns}}}\n"
        "user_inter_num_interval: '[0,inf)'\n"
        "item_inter_num_interval: '[0,inf)'\n"
        f"MAX_ITEM_LIST_LENGTH: {max_len}\n"
        "eval_args: {split: {LS: valid_and_test}, order: TO, group_by: user, mode: full}\n"
        "metrics: [Hit, NDCG]\n"
        "topk: [10]\n"
        "valid_metric: NDCG@10\n"
        "loss_type: CE\n"
        "train_neg_sample_args: ~\n"
    )
