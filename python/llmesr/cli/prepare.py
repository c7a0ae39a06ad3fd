"""`llmesr-prepare`: raw interaction logs (or the built-in synthetic data) to a prepared dataset folder."""

from __future__ import annotations

import argparse
import sys
from dataclasses import fields

from llmesr import _native
from llmesr.cli.common import DefaultsHelp, StageProgress, add_debug_option, count, format_rows, run_command
from llmesr.data import FORMATS, Dataset, PrepareOptions, prepare, prepare_synthetic, summarize
from llmesr.errors import SettingsError


def _timestamp(text: str) -> int:
    value = _native.parse_timestamp(text)
    if value is None:
        raise argparse.ArgumentTypeError(f"{text!r} is neither a Unix time nor a date (YYYY-MM-DD)")
    return value


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(
        prog="llmesr-prepare",
        description="Turn raw interaction logs into a prepared llmesr dataset folder.",
        formatter_class=DefaultsHelp,
    )
    p.add_argument("inputs", nargs="*", metavar="INPUT", help="interaction files (plain, .gz or .parquet), same format")
    p.add_argument("--out", required=True, help="dataset folder to write")
    p.add_argument("--format", choices=FORMATS, default="auto", help="input format")
    p.add_argument("--items", action="append", default=[], metavar="FILE", help="item metadata file(s)")
    p.add_argument("--item-key", help="field of the item file holding the item id (default: detected)")
    cols = p.add_argument_group("columns of csv/tsv/recbole files")
    cols.add_argument("--user-col", help="header name of the user column (default: detected)")
    cols.add_argument("--item-col", help="header name of the item column (default: detected)")
    cols.add_argument("--time-col", help="header name of the timestamp column (default: detected)")
    cols.add_argument("--rating-col", help="header name of the rating column (default: detected)")
    cols.add_argument(
        "--columns",
        help="file WITHOUT a header: comma-separated roles by position, e.g. user,item,rating,time (- = ignore)",
    )
    flt = p.add_argument_group("filters")
    flt.add_argument("--min-rating", type=float, help="keep interactions rated at least this")
    flt.add_argument("--since", type=_timestamp, help="keep interactions at or after this date / Unix time")
    flt.add_argument("--until", type=_timestamp, help="keep interactions before this date / Unix time")
    flt.add_argument("--min-user", type=count(0), default=0, help="k-core: minimum interactions per user")
    flt.add_argument("--min-item", type=count(0), default=0, help="k-core: minimum interactions per item")
    flt.add_argument(
        "--core-mode",
        choices=("iterative", "single-pass"),
        default="iterative",
        help="iterate the k-core to a fixed point, or one pass as the original LLM-ESR code",
    )
    flt.add_argument("--dedup-consecutive", action="store_true", help="drop immediate repeats of an item")
    p.add_argument("--skip-bad-lines", action="store_true", help="skip malformed lines (counted) instead of failing")
    syn = p.add_argument_group("synthetic data (instead of INPUT)")
    syn.add_argument("--synthetic", action="store_true", help="generate the built-in synthetic long-tail dataset")
    syn.add_argument("--n-users", type=count(2), default=2000, help="users to generate")
    syn.add_argument("--n-items", type=count(2), default=1500, help="items to generate")
    syn.add_argument("--seed", type=count(0), default=42, help="the generator's seed")
    p.add_argument(
        "--tail-user-len", type=count(1), help="summary: tail users have shorter histories (default: Pareto)"
    )
    p.add_argument(
        "--tail-item-pop", type=count(1), help="summary: tail items have fewer interactions (default: Pareto)"
    )
    p.add_argument("--overwrite", action="store_true", help="replace an existing --out folder")
    p.add_argument("-q", "--quiet", action="store_true", help="no progress bars or summary")
    add_debug_option(p)
    return p


def format_summary(ds: Dataset, s: dict) -> str:
    h = s["history_length"]
    rows = [
        ("dataset", str(ds.path)),
        ("users", f"{s['users']:,}"),
        ("items", f"{s['items']:,}"),
        ("interactions", f"{s['interactions']:,}"),
        ("density", f"{s['density']:.5f}"),
        (
            "history length",
            f"min {h['q0']:g}  q25 {h['q25']:g}  median {h['q50']:g}  q75 {h['q75']:g}  "
            f"q90 {h['q90']:g}  max {h['q100']:g}  mean {h['mean']:.2f}",
        ),
        ("tail users", f"{s['tail_user_share']:.1%} (history < {s['tail_user_len']})"),
        ("tail items", f"{s['tail_item_share']:.1%} (training interactions < {s['tail_item_pop']})"),
        ("evaluable users", f"{s['evaluable_users']:,} (3+ interactions)"),
        ("items with text", f"{ds.meta.get('items_with_metadata', 0):,}"),
        ("skipped lines", f"{s['skipped_lines']:,}"),
    ]
    return format_rows(rows)


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)

    def body() -> None:
        if args.synthetic == bool(args.inputs):
            raise SettingsError("give INPUT files or --synthetic (one of the two)")
        bar = StageProgress(enabled=not args.quiet)
        try:
            if args.synthetic:
                ds = prepare_synthetic(
                    args.out, n_users=args.n_users, n_items=args.n_items, seed=args.seed, overwrite=args.overwrite
                )
            else:
                given = {f.name: getattr(args, f.name) for f in fields(PrepareOptions) if hasattr(args, f.name)}
                given["columns"] = args.columns.split(",") if args.columns else None
                ds = prepare(args.inputs, args.out, PrepareOptions(**given), overwrite=args.overwrite, progress=bar)
        finally:
            bar.close()
        if not args.quiet:
            print(format_summary(ds, summarize(ds, args.tail_user_len, args.tail_item_pop)))

    return run_command(body, debug=args.debug)


if __name__ == "__main__":
    sys.exit(main())
