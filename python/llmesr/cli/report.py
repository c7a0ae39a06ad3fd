"""`llmesr-report`: the paper-style table of finished runs (see llmesr.report)."""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

from llmesr.cli.common import run_command


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(
        prog="llmesr-report",
        description="Test metrics of finished llmesr-train runs by method, dataset and long-tail group: mean ± std "
        "over seeds and a paired test over users against the backbone alone. Prints the markdown table.",
    )
    p.add_argument("runs", nargs="+", metavar="RUN_DIR", help="run folders (config.json and metrics.json)")
    p.add_argument("--out", help="also write report.md, report.csv and report.png into this folder")
    return p


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)

    def body() -> None:
        from llmesr import report
        from llmesr.io import atomic_write_text

        rows = report.build_rows([report.load_run(folder) for folder in args.runs])
        text = report.markdown(rows)
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

    return run_command(body)


if __name__ == "__main__":
    sys.exit(main())
