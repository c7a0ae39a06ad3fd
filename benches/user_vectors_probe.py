"""How the similar users change when a user's vector is the mean of their items' vectors
(`llmesr-embed --user-vectors item-mean`) rather than their encoded prompt (benches/RESULTS.md, "Users from
their items' vectors"). For a folder embedded with prompts: the share of the 10 similar users both ways keep,
and, as a proxy of what a neighbour is worth to the distillation, how often a user's validation item is in
one of their 10 neighbours' training histories, beside random neighbours. Needs no language model.

    python benches/user_vectors_probe.py DATA_FOLDER
"""

from __future__ import annotations

import argparse

import numpy as np

from llmesr.data import load_dataset, load_embeddings
from llmesr.embed import item_mean_users
from llmesr.retrieval import similar_users

K = 10


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("folder", help="a dataset folder embedded by llmesr-embed with --user-vectors prompt")
    args = p.parse_args()
    ds = load_dataset(args.folder)
    tables = load_embeddings(args.folder)
    users = range(1, ds.n_users + 1)
    history = [set()] + [set(ds.train_history(u).tolist()) for u in users]
    neighbours = {
        "prompt": tables["similar_users"][1:, :K],
        "item-mean": similar_users(item_mean_users(ds, tables["item_emb"][1:]), K) + 1,
        "random": np.random.default_rng(0).integers(1, ds.n_users + 1, size=(ds.n_users, K)),
    }
    kept = np.mean(
        [len(set(a) & set(b)) / K for a, b in zip(neighbours["prompt"], neighbours["item-mean"], strict=True)]
    )
    print(f"{args.folder}: {ds.n_users:,} users; similar users kept by item-mean: {kept:.1%} of {K}")
    judged = [u for u in users if ds.valid[u] > 0]  # users with fewer than three items have no validation item
    for name, rows in neighbours.items():
        hit = np.mean([any(int(ds.valid[u]) in history[v] for v in rows[u - 1]) for u in judged])
        print(f"  {name:>9}: validation item in a neighbour's training history for {hit:.1%} of users")


if __name__ == "__main__":
    main()
