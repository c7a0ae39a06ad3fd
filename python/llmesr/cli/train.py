"""`llmesr-train`: train and test LLM-ESR (default: on the built-in synthetic dataset)."""

from __future__ import annotations

import argparse
import os
import sys
from pathlib import Path
from typing import Any

from llmesr.cli.common import StageProgress, add_debug_option, format_rows, run_command
from llmesr.config import SECTION_OF, SECTIONS, TrainConfig, declared, defaults, flatten, load_toml
from llmesr.errors import SettingsError
from llmesr.metrics import GROUPS


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(
        prog="llmesr-train",
        description="Train LLM-ESR (or a backbone alone) and test it with both protocols by long-tail group. "
        "Settings: defaults (the paper's), then --config FILE, then the options given.",
        epilog="Several processes: torchrun --standalone --nproc-per-node N -m llmesr.cli.train ... (gloo on CPU, NCCL on GPUs).",
    )
    p.add_argument("--data", help="a prepared and embedded dataset folder (default: the built-in synthetic data)")
    p.add_argument("--out", help="run folder (default: runs/<method>-<backbone>-<seed>)")
    p.add_argument(
        "--config",
        help="TOML file of settings: keys named like the options, at the top level or in tables named like the option groups below ([optim] lr = 0.001)",
    )
    p.add_argument("--resume", metavar="RUN_DIR", help="continue a killed run from its last epoch (its own settings)")
    p.add_argument("--overwrite", action="store_true", help="replace an existing run folder")
    p.add_argument("-q", "--quiet", action="store_true", help="no progress bars")
    p.add_argument(
        "--compare",
        action=argparse.BooleanOptionalAction,
        help="also train the backbone alone (--method base, same settings, run folder OUT-base) and print both "
        "beside ranking by popularity [default: on for the built-in synthetic data]",
    )
    groups: dict[str, argparse._ArgumentGroup] = {}
    for section, f in declared():
        flag = f"--{f.name.replace('_', '-')}"
        default = f.metadata["none_means"] if f.default is None else f.default
        if section not in groups:
            groups[section] = p.add_argument_group(section, SECTIONS[section].__doc__)
        group = groups[section]
        common: dict[str, Any] = dict(default=argparse.SUPPRESS, help=f"{f.metadata['help']} [default: {default}]")
        if f.type.startswith("bool"):
            group.add_argument(flag, action=argparse.BooleanOptionalAction, **common)
        else:
            kind = int if f.type in ("int", "int | None") else float if f.type in ("float", "float | None") else str
            group.add_argument(flag, type=kind, choices=f.metadata["choices"], **common)
    groups["fusion"].add_argument(
        "--cross-attention",
        action=argparse.BooleanOptionalAction,
        default=argparse.SUPPRESS,
        help="the same as --fusion cross_attention (--no-cross-attention: --fusion concat)",
    )
    add_debug_option(p)
    return p


def resolve_config(args: argparse.Namespace) -> TrainConfig:
    """Defaults, then the TOML file, then the command line."""
    values: dict[str, Any] = defaults()
    values.update(load_toml(args.config) if args.config else {})
    values.update({name: getattr(args, name) for name in SECTION_OF if getattr(args, name, None) is not None})
    if hasattr(args, "cross_attention"):  # the former switch, still accepted
        fusion = flatten({"cross_attention": args.cross_attention})["fusion"]
        if getattr(args, "fusion", fusion) != fusion:
            raise SettingsError(
                f"--fusion {args.fusion} and --{'' if args.cross_attention else 'no-'}cross-attention disagree"
            )
        values["fusion"] = fusion
    if args.data is not None:
        values["data"] = args.data
    if values.get("data") is None:
        values["data"] = DEFAULT_DATA  # the built-in synthetic catalogue, made on first use (`default_data`)
    if args.out is not None:
        values["out"] = args.out
    values.setdefault("out", str(Path("runs") / f"{values['method']}-{values['backbone']}-{values['seed']}"))
    return TrainConfig.of(**values)


# The built-in synthetic catalogue with MiniLM embeddings, made once under runs/data (named by the
# generator's version: an older version's folder is left alone, not reused).
DEFAULT_DATA = str(Path("runs") / "data" / "synthetic-v2")


def default_data(hidden: int, progress: bool = True) -> str:
    """Makes the built-in catalogue (`DEFAULT_DATA`) unless it is there; returns its folder."""
    data = DEFAULT_DATA
    if not (Path(data) / "similar_users.npy").exists():
        from llmesr import prepare_synthetic
        from llmesr.embed import CACHE, embed_dataset
        from llmesr.encoders import SentenceTransformerEncoder

        print(f"preparing and embedding the synthetic dataset in {data} (once)", file=sys.stderr)
        prepare_synthetic(data, overwrite=True)
        bar = StageProgress(enabled=progress)
        try:
            embed_dataset(data, SentenceTransformerEncoder(), hidden=hidden, cache_dir=CACHE, progress=bar)
        finally:
            bar.close()
    return data


def stopped_by_budget(metrics: dict[str, Any], cfg: TrainConfig) -> bool:
    """Whether a run ran all its epochs at a constant rate rather than stopping early (a cosine
    schedule's end is where its rate reaches 0: the run has converged by construction)."""
    return cfg.optim.lr_schedule == "constant" and metrics["epochs"] >= cfg.optim.epochs


def summary(out: str, metrics: dict[str, Any], cfg: TrainConfig) -> str:
    stopped = "early stop"
    if stopped_by_budget(metrics, cfg):
        stopped = f"budget run: {cfg.optim.epochs} epochs"
    elif metrics["epochs"] >= cfg.optim.epochs:
        stopped = f"the {cfg.optim.lr_schedule} schedule's end"
    rows = [("run folder", out), ("best epoch", f"{metrics['best_epoch']} of {metrics['epochs']} ({stopped})")]
    if metrics.get("popularity_penalty"):  # no surprise: the tested rankings are not the model's own scores
        rows.append(
            ("popularity penalty", f"{metrics['popularity_penalty']:g} x log(1 + popularity) in the test rankings")
        )
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


def train_and_compare_base(
    cfg: TrainConfig, metrics: dict[str, Any], args: argparse.Namespace, main_rank: bool
) -> None:
    """--compare: the backbone alone with the same settings (run folder OUT-base), then both by group
    beside popularity and the text neighbours, and metrics.png with the two side by side."""
    from llmesr.baselines import popularity_metrics, text_neighbours_metrics
    from llmesr.train import plot_run, train

    base = cfg.replace(method="base", out=f"{cfg.out}-base")
    base_resume = bool(args.resume) and (Path(base.out) / "config.json").exists()
    base_metrics = train(base, progress=not args.quiet, resume=base_resume, overwrite=args.overwrite)
    if not main_rank:
        return
    plot_run(Path(cfg.out), cfg, metrics, base=base_metrics)
    columns = {
        f"LLM-ESR-{cfg.model.backbone}": metrics["test"],
        f"{cfg.model.backbone} alone": base_metrics["test"],
        "popularity": metrics.get("popularity") or popularity_metrics(cfg),
        "text neighbours": text_neighbours_metrics(cfg),  # what the item text alone ranks
    }
    print(f"\nbackbone alone: {base.out}, best epoch {base_metrics['best_epoch']} of {base_metrics['epochs']}")
    print(comparison(columns))
    if stopped_by_budget(metrics, cfg) or stopped_by_budget(base_metrics, cfg):
        print(
            f"a comparison after {cfg.optim.epochs} epochs, not at convergence: llmesr-train --resume {cfg.out} "
            "--epochs 1000 --compare trains both on to early stopping"
        )


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)

    def body() -> None:
        from llmesr import threads

        if args.resume:
            from llmesr.runs import RESUME_MAY_CHANGE, load_config

            cfg = load_config(Path(args.resume))
            # Where the folder is now (it may have been moved or copied); the settings of RESUME_MAY_CHANGE
            # given here replace the recorded ones (the recorded thread count by default: another rounds differently).
            given = {k: getattr(args, k) for k in RESUME_MAY_CHANGE if hasattr(args, k)}
            cfg = cfg.replace(out=args.resume, **given)
        else:
            cfg = resolve_config(args)
        count = cfg.run.threads
        if count is None:
            count, why = threads.choose()
            cfg = cfg.replace(threads=count)
            if not args.quiet:
                print(f"threads: {why}; --threads N to choose", file=sys.stderr)
        threads.configure(count)  # before torch starts its pool
        from llmesr.train import train

        if cfg.data == DEFAULT_DATA:
            default_data(cfg.model.hidden, progress=not args.quiet)
        compare = args.compare if args.compare is not None else (not args.resume and args.data is None)
        metrics = train(cfg, progress=not args.quiet, resume=bool(args.resume), overwrite=args.overwrite)
        main_rank = int(os.environ.get("RANK", "0")) == 0  # one summary under torchrun
        if main_rank:
            print(summary(cfg.out, metrics, cfg))
        if compare and cfg.model.method != "base":
            train_and_compare_base(cfg, metrics, args, main_rank)

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
