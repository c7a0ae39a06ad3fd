"""`llmesr-train`: train and test LLM-ESR (default: on the built-in synthetic dataset)."""

from __future__ import annotations

import argparse
import os
import sys
from dataclasses import MISSING, fields
from pathlib import Path
from typing import Any

from llmesr.cli.common import StageProgress, add_debug_option, format_rows, run_command
from llmesr.config import CHOICES, COMPAT_DEFAULTS, TrainConfig, load_toml
from llmesr.metrics import GROUPS

HELP = {
    "backbone": "sequence encoder",
    "method": "llmesr: the dual-view model with self-distillation; base: the backbone alone (ID view)",
    "views": "ablation: both views, or the collaborative (id) or semantic view only",
    "cross_attention": "two-way cross-attention between the views",
    "shared_encoder": "one encoder for both views (--no-shared-encoder: the separate-encoders ablation)",
    "id_init": "initial ID item table: the PCA of the semantic table, or random",
    "distill": "self-distillation loss: kd (MSE) or cl (contrastive)",
    "alpha": "weight of the self-distillation loss (0: off)",
    "n_similar": "similar users per user in the distillation",
    "teachers": "distillation teachers computed once per epoch and looked up (an approximation, 2.3x faster "
    "epochs), or encoded at every step (exact, the paper's); see benches/RESULTS.md",
    "beta": "weight of the item regulariser (0: off)",
    "temperature": "temperature of the contrastive losses",
    "mask_prob": "Bert4Rec's masking probability",
    "negatives": "training negatives: uniform, or popularity-weighted (never in the user's training history)",
    "loss": "next-item loss: auto (ce up to 4,096 items, sampled beyond; the run records which), bce (one negative "
    "per target, the paper's), ce (softmax over the whole catalogue), sampled (softmax over --loss-negatives shared "
    "by the batch, log-Q corrected)",
    "loss_negatives": "negatives a batch shares under --loss sampled",
    "logit_adjust": "tau: train with tau*log(item's share of interactions) added to every logit and rank without it "
    "(logit adjustment, towards the long tail; 0: off)",
    "compat": "original: reproduce the original code: its masking (no causal mask, padding attended), "
    "selection on the sampled protocol, optimistic ties (its block layout and init are our defaults too)",
    "embed_scale": "multiply input item embeddings by sqrt(hidden) (Transformer backbones, both views)",
    "block": "Transformer block: prenorm, or original (pmixer's SASRec layout)",
    "init": "parameter init: normal, or xavier (xavier_normal_ on every matrix, as the original)",
    "select_on": "validation protocol whose NDCG@10 selects the best epoch",
    "ties": "a candidate tied with the target ranks above it (pessimistic) or below it (optimistic)",
    "user_groups": "tail users by the length of the model input (the paper's) or of the whole history",
    "on_nonfinite": "a NaN or infinite training loss: stop the run with an error, or skip that batch (logged)",
    "patience": "epochs without a better validation NDCG@10 before stopping",
    "device": "auto, cpu, cuda or cuda:N",
    "threads": "CPU threads of torch and the Rust core (one is fastest beside any other busy process)",
    "max_len": "longest history the model reads (the most recent items)",
    "n_negatives": "negatives per user of the sampled protocol",
    "tail_user_len": "tail users have a history shorter than this",
    "tail_item_pop": "tail items have fewer training interactions than this",
}

NONE_DEFAULTS = {"threads": "every core no other process is using at the start"}


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(
        prog="llmesr-train",
        description="Train LLM-ESR (or a backbone alone) and test it with both protocols by long-tail group. "
        "Settings: defaults (the paper's), then --config FILE, then the options given.",
        epilog="Several processes: torchrun --standalone --nproc-per-node N -m llmesr.cli.train ... (gloo on CPU, NCCL on GPUs).",
    )
    p.add_argument("--data", help="a prepared and embedded dataset folder (default: the built-in synthetic data)")
    p.add_argument("--out", help="run folder (default: runs/<method>-<backbone>-<seed>)")
    p.add_argument("--config", help="TOML file of settings (keys named like the options)")
    p.add_argument("--resume", metavar="RUN_DIR", help="continue a killed run from its last epoch (its own settings)")
    p.add_argument("--overwrite", action="store_true", help="replace an existing run folder")
    p.add_argument("-q", "--quiet", action="store_true", help="no progress bars")
    p.add_argument(
        "--compare",
        action=argparse.BooleanOptionalAction,
        help="also train the backbone alone (--method base, same settings, run folder OUT-base) and print both "
        "beside ranking by popularity [default: on for the built-in synthetic data]",
    )
    for f in fields(TrainConfig):
        if f.name in ("data", "out"):
            continue
        flag = f"--{f.name.replace('_', '-')}"
        default = f.default
        if f.default is None:
            default = NONE_DEFAULTS.get(f.name, "from --compat" if f.name in COMPAT_DEFAULTS else "the Pareto rule")
        common: dict[str, Any] = dict(default=argparse.SUPPRESS, help=f"{HELP.get(f.name, '')} [default: {default}]")
        if f.type == "bool":
            p.add_argument(flag, action=argparse.BooleanOptionalAction, **common)
        else:
            kind = int if f.type in ("int", "int | None") else float if f.type == "float" else str
            p.add_argument(flag, type=kind, choices=CHOICES.get(f.name), **common)
    add_debug_option(p)
    return p


def resolve_config(args: argparse.Namespace) -> TrainConfig:
    """Defaults, then the TOML file, then the command line."""
    values: dict[str, Any] = {f.name: f.default for f in fields(TrainConfig) if f.default is not MISSING}
    toml = load_toml(args.config) if args.config else {}
    values.update(toml)
    given = {f.name: getattr(args, f.name) for f in fields(TrainConfig) if hasattr(args, f.name)}
    values.update({k: v for k, v in given.items() if v is not None})
    if args.data is not None:
        values["data"] = args.data
    if values.get("data") is None:
        values["data"] = DEFAULT_DATA  # the built-in synthetic catalogue, made on first use (`default_data`)
    if args.out is not None:
        values["out"] = args.out
    values.setdefault("out", str(Path("runs") / f"{values['method']}-{values['backbone']}-{values['seed']}"))
    return TrainConfig(**values)


# The built-in synthetic catalogue with MiniLM embeddings, made once under runs/data (named by the
# generator's version: an older version's folder is left alone, not reused).
DEFAULT_DATA = str(Path("runs") / "data" / "synthetic-v2")


def default_data(hidden: int, progress: bool = True) -> str:
    """Makes the built-in catalogue (`DEFAULT_DATA`) unless it is there; returns its folder."""
    data = DEFAULT_DATA
    if not (Path(data) / "similar_users.npy").exists():
        from llmesr import prepare_synthetic
        from llmesr.embed import embed_dataset
        from llmesr.encoders import SentenceTransformerEncoder

        print(f"preparing and embedding the synthetic dataset in {data} (once)", file=sys.stderr)
        prepare_synthetic(data, overwrite=True)
        cache = Path.home() / ".cache" / "llmesr" / "embeddings"
        bar = StageProgress(enabled=progress)
        try:
            embed_dataset(data, SentenceTransformerEncoder(), k=100, hidden=hidden, cache_dir=cache, progress=bar)
        finally:
            bar.close()
    return data


def stopped_by_budget(metrics: dict[str, Any], budget: int | None) -> bool:
    """Whether a run ran all its `budget` epochs rather than stopping early (None: no budget)."""
    return budget is not None and metrics["epochs"] >= budget


def summary(out: str, metrics: dict[str, Any], budget: int | None = None) -> str:
    stopped = f"budget run: {budget} epochs" if stopped_by_budget(metrics, budget) else "early stop"
    rows = [("run folder", out), ("best epoch", f"{metrics['best_epoch']} of {metrics['epochs']} ({stopped})")]
    for protocol in ("full", "sampled"):
        for group in GROUPS:
            m = metrics["test"][protocol][group]
            value = "no users" if m["count"] == 0 else f"HR@10 {m['HR@10']:.4f}  NDCG@10 {m['NDCG@10']:.4f}"
            rows.append((f"test {protocol} {group}", f"{value}  (n={m['count']})"))
    return format_rows(rows)


def comparison(columns: dict[str, dict[str, Any]]) -> str:
    """Test NDCG@10 (HR@10) by group and protocol, one column per model: `columns` maps a name to its
    test metrics (metrics.json's "test")."""
    names = list(columns)
    header = ("", *names)
    lines = [header]
    for protocol in ("full", "sampled"):
        for group in GROUPS:
            cells = []
            for name in names:
                m = columns[name][protocol][group]
                cells.append("-" if m["count"] == 0 else f"{m['NDCG@10']:.4f} ({m['HR@10']:.4f})")
            n = columns[names[0]][protocol][group]["count"]
            lines.append((f"{protocol} {group} (n={n})", *cells))
    widths = [max(len(row[i]) for row in lines) for i in range(len(header))]
    text = ["  " + "  ".join(cell.ljust(w) for cell, w in zip(row, widths, strict=True)) for row in lines]
    return "test NDCG@10 (HR@10) by long-tail group\n" + "\n".join(text)


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)

    def body() -> None:
        from dataclasses import replace

        from llmesr import threads

        if args.resume:
            from llmesr.runs import RESUME_MAY_CHANGE, load_config

            cfg = load_config(Path(args.resume))
            # Where the folder is now (it may have been moved or copied); the settings of RESUME_MAY_CHANGE
            # given here replace the recorded ones (the recorded thread count by default: another rounds differently).
            given = {k: getattr(args, k) for k in RESUME_MAY_CHANGE if hasattr(args, k)}
            cfg = replace(cfg, out=args.resume, **given)
        else:
            cfg = resolve_config(args)
        count = cfg.threads
        if count is None:
            count, why = threads.choose()
            cfg = replace(cfg, threads=count)
            if not args.quiet:
                print(f"threads: {why}; --threads N to choose", file=sys.stderr)
        threads.configure(count)  # before torch starts its pool
        from llmesr.train import train

        if cfg.data == DEFAULT_DATA:
            default_data(cfg.hidden, progress=not args.quiet)
        compare = args.compare if args.compare is not None else (not args.resume and args.data is None)
        metrics = train(cfg, progress=not args.quiet, resume=bool(args.resume), overwrite=args.overwrite)
        main_rank = int(os.environ.get("RANK", "0")) == 0  # one summary under torchrun
        if main_rank:
            print(summary(cfg.out, metrics, budget=cfg.epochs))
        if compare and cfg.method != "base":
            from dataclasses import replace

            from llmesr.train import plot_run, popularity_metrics, text_neighbours_metrics

            base = replace(cfg, method="base", out=f"{cfg.out}-base")
            base_resume = bool(args.resume) and (Path(base.out) / "config.json").exists()
            base_metrics = train(base, progress=not args.quiet, resume=base_resume, overwrite=args.overwrite)
            if main_rank:
                plot_run(Path(cfg.out), cfg, metrics, base=base_metrics)  # the two side by side
                columns = {
                    f"LLM-ESR-{cfg.backbone}": metrics["test"],
                    f"{cfg.backbone} alone": base_metrics["test"],
                    "popularity": metrics.get("popularity") or popularity_metrics(cfg),
                    "text neighbours": text_neighbours_metrics(cfg),  # what the item text alone ranks
                }
                print(
                    f"\nbackbone alone: {base.out}, best epoch {base_metrics['best_epoch']} of {base_metrics['epochs']}"
                )
                print(comparison(columns))
                if stopped_by_budget(metrics, cfg.epochs) or stopped_by_budget(base_metrics, cfg.epochs):
                    print(
                        f"a comparison after {cfg.epochs} epochs, not at convergence: llmesr-train --resume {cfg.out} "
                        "--epochs 1000 --compare trains both on to early stopping"
                    )

    def interrupted() -> str:
        out = args.resume or args.out
        if out is None:
            try:
                out = resolve_config(args).out
            except (ValueError, OSError):
                out = "RUN_DIR"
        return f"interrupted: continue with llmesr-train --resume {out}"

    return run_command(body, interrupted=interrupted, debug=args.debug)


if __name__ == "__main__":
    sys.exit(main())
