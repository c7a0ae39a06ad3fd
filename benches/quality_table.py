"""Summarises quality runs (run folders of llmesr-train) as the markdown tables of benches/RESULTS.md:
test HR@10 / NDCG@10 per group and protocol, mean over seeds (and each seed), epochs and time.

    python benches/quality_table.py runs/llmesr-1 runs/llmesr-2 runs/llmesr-3 runs/base-1 runs/base-2 runs/base-3

The Yelp quality benchmark (2 CPU cores: budget-limited, see RESULTS.md):

    llmesr-prepare ../shared/data/yelp/sequences.txt --items ../shared/data/yelp/items.jsonl --out data/yelp
    llmesr-embed data/yelp                      # MiniLM, ~23 min on one core
    for seed in 1 2 3; do for method in llmesr base; do
      llmesr-train --data data/yelp --method $method --seed $seed --epochs 15 --patience 5 --out runs/$method-$seed
    done; done
"""

from __future__ import annotations

import json
import sys
from collections import defaultdict
from pathlib import Path

GROUPS = ("overall", "tail_user", "head_user", "tail_item", "head_item")


def main(folders: list[str]) -> None:
    by_method: dict[str, list[dict]] = defaultdict(list)
    for folder in folders:
        config = json.loads((Path(folder) / "config.json").read_text())
        metrics = json.loads((Path(folder) / "metrics.json").read_text())
        by_method[config["method"]].append({"seed": config["seed"], **metrics})
    for protocol in ("full", "sampled"):
        print(f"\n{protocol} ranking, test, HR@10 / NDCG@10 (mean of seeds; each seed below)\n")
        print("| method | " + " | ".join(GROUPS) + " |")
        print("|---" * (len(GROUPS) + 1) + "|")
        for method, runs in by_method.items():
            cells = []
            for g in GROUPS:
                hr = sum(r["test"][protocol][g]["HR@10"] for r in runs) / len(runs)
                ndcg = sum(r["test"][protocol][g]["NDCG@10"] for r in runs) / len(runs)
                cells.append(f"{hr:.4f} / {ndcg:.4f}")
            print(f"| {method} (mean of {len(runs)}) | " + " | ".join(cells) + " |")
            for r in sorted(runs, key=lambda r: r["seed"]):
                cells = [
                    f"{r['test'][protocol][g]['HR@10']:.4f} / {r['test'][protocol][g]['NDCG@10']:.4f}" for g in GROUPS
                ]
                print(f"| {method} seed {r['seed']} | " + " | ".join(cells) + " |")
    print(
        "\n| run | best epoch | epochs run | training time | mean seq/s | users per group (tail/head user, tail/head item) |"
    )
    print("|---|---|---|---|---|---|")
    for method, runs in by_method.items():
        for r in sorted(runs, key=lambda r: r["seed"]):
            seconds = sum(h["train_seconds"] for h in r["history"])
            rate = sum(h["sequences_per_second"] for h in r["history"]) / len(r["history"])
            counts = "/".join(str(r["test"]["full"][g]["count"]) for g in GROUPS[1:])
            print(
                f"| {method} seed {r['seed']} | {r['best_epoch']} | {r['epochs']} | {seconds / 60:.1f} min | {rate:.0f} | {counts} |"
            )


if __name__ == "__main__":
    main(sys.argv[1:])
