"""`llmesr-train`: train and test LLM-ESR (default: on the built-in synthetic dataset)."""

from __future__ import annotations

import argparse
import sys
from dataclasses import fields
from pathlib import Path

from llmesr.cli.common import format_rows, run_command
from llmesr.config import TrainConfig


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(
        prog="llmesr-train",
        description="Train LLM-ESR-SASRec (or the SASRec baseline) and test it with both protocols by group.",
        formatter_class=argparse.ArgumentDefaultsHelpFormatter,
    )
    p.add_argument("--data", help="a prepared and embedded dataset folder (default: the built-in synthetic data)")
    p.add_argument("--out", help="run folder (default: runs/<method>-<seed>)")
    for f in fields(TrainConfig):
        if f.name in ("data", "out"):
            continue
        kind = int if f.type in ("int", "int | None") else float if f.type == "float" else str
        p.add_argument(f"--{f.name.replace('_', '-')}", type=kind, default=f.default)
    return p


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)

    def body() -> None:
        from llmesr.train import train

        data = args.data
        if data is None:
            data = str(Path("runs") / "data" / "synthetic")
            if not (Path(data) / "similar_users.npy").exists():
                from llmesr import prepare_synthetic
                from llmesr.embed import embed_dataset
                from llmesr.encoders import SentenceTransformerEncoder

                print(f"preparing and embedding the synthetic dataset in {data} (once)", file=sys.stderr)
                prepare_synthetic(data, overwrite=True)
                cache = Path.home() / ".cache" / "llmesr" / "embeddings"
                embed_dataset(data, SentenceTransformerEncoder(), k=100, hidden=args.hidden, cache_dir=cache)
        values = {f.name: getattr(args, f.name) for f in fields(TrainConfig) if f.name not in ("data", "out")}
        out = args.out or str(Path("runs") / f"{args.method}-{args.seed}")
        metrics = train(TrainConfig(data=data, out=out, **values))
        rows = [("run folder", out), ("best epoch", str(metrics["best_epoch"]))]
        for protocol in ("full", "sampled"):
            for group, m in metrics["test"][protocol].items():
                rows.append(
                    (
                        f"test {protocol} {group}",
                        f"HR@10 {m['HR@10']:.4f}  NDCG@10 {m['NDCG@10']:.4f}  (n={m['count']})",
                    )
                )
        print(format_rows(rows))

    return run_command(body)


if __name__ == "__main__":
    sys.exit(main())
