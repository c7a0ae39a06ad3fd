"""The popularity penalty's trade-off over converged runs (benches/RESULTS.md, "The popularity penalty"):
each run's test rankings under full ranking with scores minus gamma * log(1 + training popularity), mean ±
std over seeds by group, and the paired t-test over users of LLM-ESR against the backbone alone at the same
gamma (each user's NDCG@10 averaged over each side's seeds), overall and over tail-item targets.

    python benches/penalty_curve.py NAME --llmesr RUN... --base RUN... [--gammas 0,0.1,0.2]

The epoch of each run stays the one it chose; the sequence encoder runs once per run
(`llmesr.analysis.penalised_results`, as --tail-curve).
"""

from __future__ import annotations

import argparse

import numpy as np

from llmesr.analysis import _loaded, penalised_results
from llmesr.report import ndcg_at_10, paired_test

GROUPS = ("overall", "tail_user", "tail_item", "head_item")


def curve(runs: list[str], gammas: list[float]) -> dict[float, list[tuple[dict, np.ndarray, np.ndarray]]]:
    """gamma -> one (groups' NDCG@10, per-user NDCG@10, tail-item target mask) per run."""
    out: dict[float, list] = {g: [] for g in gammas}
    for run in runs:
        rec, ds, groups = _loaded(run)
        tail = ds.train_popularity[ds.test[np.flatnonzero(ds.test > 0)]] < groups.tail_item_pop
        for gamma, result in zip(gammas, penalised_results(rec, ds, groups, gammas), strict=True):
            metrics = result.result()
            out[gamma].append(({g: metrics[g]["NDCG@10"] for g in GROUPS}, ndcg_at_10(result.per_user()[1]), tail))
    return out


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("name")
    p.add_argument("--llmesr", nargs="+", required=True, help="LLM-ESR's run folders (its seeds)")
    p.add_argument("--base", nargs="+", required=True, help="the backbone alone's run folders")
    p.add_argument("--gammas", default="0,0.1,0.15,0.2,0.25,0.3")
    args = p.parse_args()
    gammas = [float(g) for g in args.gammas.split(",")]
    ours, base = curve(args.llmesr, gammas), curve(args.base, gammas)

    def ms(values: list[float]) -> str:  # one run: its value alone (a spread needs two)
        spread = f" ± {np.std(values, ddof=1):.4f}" if len(values) > 1 else ""
        return f"{np.mean(values):.4f}{spread}"

    print(
        "| data | gamma | LLM-ESR overall | tail users | tail items | head items | SASRec alone overall | tail items "
        "| p overall | p tail items |"
    )
    for gamma in gammas:
        a, b = ours[gamma], base[gamma]
        cells = [ms([m[g] for m, _, _ in a]) for g in GROUPS] + [ms([m[g] for m, _, _ in b]) for g in GROUPS[::2]]
        per_a, per_b, tail = np.mean([u for _, u, _ in a], 0), np.mean([u for _, u, _ in b], 0), a[0][2]
        p_all, p_tail = paired_test(per_a, per_b), paired_test(per_a[tail], per_b[tail])
        print(f"| {args.name} | {gamma:g} | " + " | ".join(cells) + f" | {p_all:.2g} | {p_tail:.2g} |")


if __name__ == "__main__":
    main()
