"""`llmesr-export`: a prepared dataset as another library's files (RecBole atomic files)."""

from __future__ import annotations

import argparse
import sys

from llmesr.cli.common import DefaultsHelp, add_debug_option, run_command
from llmesr.export import RECBOLE_COST, TARGETS, export_recbole


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(
        prog="llmesr-export",
        description="Write a prepared dataset folder in another library's format, with the same users, items, "
        "order and leave-one-out split, so that its models can be compared on exactly this data.",
        formatter_class=DefaultsHelp,
    )
    p.add_argument("dataset", metavar="DATASET", help="a prepared dataset folder (llmesr-prepare)")
    p.add_argument(
        "--out", required=True, help="folder to write, named as the dataset's name in RecBole: NAME/NAME.inter, ..."
    )
    p.add_argument("--to", choices=TARGETS, default="recbole", help="target format")
    p.add_argument(
        "--max-len", type=int, default=200, help="longest history the target's models read (MAX_ITEM_LIST_LENGTH)"
    )
    p.add_argument("--overwrite", action="store_true", help="replace a folder an earlier export wrote")
    add_debug_option(p)
    return p


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)

    def body() -> None:
        out = export_recbole(args.dataset, args.out, max_len=args.max_len, overwrite=args.overwrite)
        name = out.name
        settings = out.resolve() / f"{name}.yaml"
        print(
            f"wrote {out}; in RecBole: run_recbole(model='SASRec', dataset='{name}', config_file_list=['{settings}'])\n"
            f"note: {RECBOLE_COST}"
        )

    return run_command(body, debug=args.debug)


if __name__ == "__main__":
    sys.exit(main())
