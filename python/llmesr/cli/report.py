"""`llmesr-report`: the paper-style table of finished runs (see llmesr.report)."""

from __future__ import annotations

import argparse
import math
import sys
from pathlib import Path

from llmesr.cli.common import add_debug_option, run_command
from llmesr.errors import SettingsError


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(
        prog="llmesr-report",
        description="Test metrics of finished llmesr-train runs by method, dataset and long-tail group: mean ± std "
        "over seeds and a paired test over users against the backbone alone. Prints the markdown table.",
    )
    p.add_argument("runs", nargs="+", metavar="RUN_DIR", help="run folders (config.json and metrics.json)")
    p.add_argument("--out", help="also write report.md, report.csv and report.png into this folder")
    p.add_argument(
        "--tail-curve",
        metavar="GAMMAS",
        help="for each run, also the long-tail trade-off of scores minus gamma*log(1+popularity) at these comma-"
        "separated gammas (e.g. 0,0.5,1,2; test, full ranking; loads the models and their datasets), and the "
        "mean ID- and semantic-view parts of the score for tail targets, head targets and top-ranked items",
    )
    add_debug_option(p)
    return p


def tail_tables(folders: list[str], gammas: list[float]) -> str:
    from llmesr.analysis import score_parts, tail_tradeoff

    lines = []
    for folder in folders:
        lines += [f"\n### {folder}: popularity adjustment (test, full ranking)\n"]
        lines += [
            "| gamma | overall NDCG@10 | tail-item HR@10 | head-item HR@10 | tail / head | coverage@10 | tail share@10 | mean popularity@10 |"
        ]
        lines += ["|---|---|---|---|---|---|---|---|"]
        for r in tail_tradeoff(folder, gammas):
            tail, head = r["tail_item_HR@10"], r["head_item_HR@10"]
            ratio = tail / head if tail is not None and head else float("nan")
            lines.append(
                f"| {r['gamma']:g} | {r['overall_NDCG@10']:.4f} | {r['tail_item_HR@10']:.4f} | {r['head_item_HR@10']:.4f} | "
                f"{ratio:.3f} | {r['coverage@10']:.4f} | {r['tail_share@10']:.4f} | {r['mean_popularity@10']:.1f} |"
            )
        parts = score_parts(folder)
        views = [v for v in next(iter(parts.values())) if v != "count"]
        lines += [f"\nscore parts ({', '.join(views)} view):\n", "| items | " + " | ".join(views) + " | count |"]
        lines += ["|---" * (len(views) + 2) + "|"]
        for name, p in parts.items():
            lines.append(f"| {name} | " + " | ".join(f"{p[v]:.3f}" for v in views) + f" | {p['count']} |")
    return "\n".join(lines) + "\n"


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)

    def body() -> None:
        from llmesr import report
        from llmesr.io import atomic_write_text

        rows = report.build_rows([report.load_run(folder) for folder in args.runs])
        text = report.markdown(rows) + report.time_to_quality(rows)
        if args.tail_curve:
            try:
                gammas = [float(g) for g in args.tail_curve.split(",")]
            except ValueError:
                raise SettingsError(
                    f"--tail-curve: not a comma-separated list of numbers: {args.tail_curve!r}"
                ) from None
            if not all(math.isfinite(g) for g in gammas):
                raise SettingsError(f"--tail-curve: every gamma must be a finite number, not {args.tail_curve!r}")
            text += tail_tables(args.runs, gammas)
        print(text)
        if args.out:
            out = Path(args.out)
            if out.exists() and not out.is_dir():
                raise FileExistsError(f"--out {out} is a file, not a folder")
            out.mkdir(parents=True, exist_ok=True)
            atomic_write_text(out / "report.md", text)
            atomic_write_text(out / "report.csv", report.csv_text(rows))
            if not report.plot(rows, out / "report.png"):
                print("matplotlib is not installed: no report.png", file=sys.stderr)

    return run_command(body, debug=args.debug)


if __name__ == "__main__":
    sys.exit(main())
