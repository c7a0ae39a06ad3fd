"""What every command shares: error reporting and progress bars."""

from __future__ import annotations

import argparse
import sys
import traceback
from collections.abc import Callable
from pathlib import Path
from typing import Any

from tqdm import tqdm

import llmesr.io
from llmesr._native import DataError
from llmesr.errors import ExternalError, LlmesrError

STAGES = {"read": "reading", "items": "item text", "filter": "filtering", "write": "writing"}
BYTE_STAGES = {"read", "items"}
TOKEN_STAGES = {"encoding items", "encoding users"}  # counted in estimated tokens (llmesr.encoders)


class StageProgress:
    """A tqdm bar per stage, fed by `(stage, done, total)` callbacks (bytes for file stages)."""

    def __init__(self, enabled: bool = True) -> None:
        self.enabled = enabled
        self.bar: tqdm | None = None
        self.stage = ""

    def __call__(self, stage: str, done: int, total: int) -> None:
        if not self.enabled:
            return
        if stage != self.stage:
            self.close()
            self.stage = stage
            if total > 1:
                unit = "B" if stage in BYTE_STAGES else " tok" if stage in TOKEN_STAGES else ""
                self.bar = tqdm(total=total, desc=STAGES.get(stage, stage), unit=unit, unit_scale=bool(unit))
            else:
                print(f"{STAGES.get(stage, stage)}...", file=sys.stderr)
        if self.bar is not None:
            self.bar.update(done - self.bar.n)

    def close(self) -> None:
        if self.bar is not None:
            self.bar.close()
            self.bar = None


def format_rows(rows: list[tuple[str, str]]) -> str:
    """A two-column summary table, labels aligned."""
    width = max(len(k) for k, _ in rows)
    return "\n".join(f"  {k:<{width}}  {v}" for k, v in rows)


class DefaultsHelp(argparse.ArgumentDefaultsHelpFormatter):
    """Adds "(default: X)" to an option's help only where it says something: not for required options,
    defaults of None/False/empty, or help that already names its default."""

    def _get_help_string(self, action: argparse.Action) -> str:
        text = action.help or ""
        if action.required or action.default in (None, False, [], argparse.SUPPRESS) or "default" in text:
            return text
        return super()._get_help_string(action) or text


def count(minimum: int) -> Callable[[str], int]:
    """An argparse type: an integer of at least `minimum` (a clear usage error, not a traceback from
    the Rust side's unsigned types)."""

    def parse(text: str) -> int:
        try:
            value = int(text)
        except ValueError:
            raise argparse.ArgumentTypeError(f"{text!r} is not an integer") from None
        if value < minimum:
            raise argparse.ArgumentTypeError(f"must be at least {minimum}, not {value}")
        return value

    parse.__name__ = f"integer >= {minimum}"
    return parse


def what_was_written(done: list[Path]) -> str:
    """The default message of an interrupted command: true about what it already changed on disk."""
    if not done:
        return "interrupted; nothing was written"
    return "interrupted after writing " + ", ".join(printable(str(p)) for p in dict.fromkeys(done)) + " (each complete)"


def run_command(
    main: Callable[[], Any],
    interrupted: str | Callable[[], str] | None = None,
    debug: bool = False,
) -> int:
    """Runs a command body. What the user can fix prints as one line naming the file or setting: llmesr's
    own errors (`llmesr.errors`), the data core's, and OS errors (which name the path). Anything else is
    a bug in llmesr or a library it uses and says so, with the frame where it happened (`debug`:
    the whole traceback)."""
    already = len(llmesr.io.written())  # outputs of earlier commands in this process are not this one's
    try:
        main()
    except (LlmesrError, DataError, OSError) as e:
        print(f"error: {printable(str(e))}", file=sys.stderr)
        return 1 if isinstance(e, ExternalError) else 2
    except ImportError as e:
        print(f'error: {e} (training and the default encoder need: pip install "llmesr[train,embed]")', file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        if interrupted is None:
            message = what_was_written(llmesr.io.written()[already:])
        else:
            message = interrupted() if callable(interrupted) else interrupted
        print(message, file=sys.stderr)
        return 130
    except Exception as e:  # noqa: BLE001 (every other error is a bug, reported as one)
        frames = traceback.format_exception(e, limit=None if debug else -1)  # where it happened
        print(printable("".join(frames).rstrip()), file=sys.stderr)
        print(
            f"error: internal error ({type(e).__name__}): a bug in llmesr or a library it uses, not in your input; "
            "please report it with the command you ran" + ("" if debug else " (--debug shows the whole traceback)"),
            file=sys.stderr,
        )
        return 3
    return 0


def printable(text: str) -> str:
    """`text` with control characters escaped (`\\x1b`): paths and data in a message must not drive the
    terminal."""
    return "".join(c if c.isprintable() or c == "\n" else repr(c)[1:-1] for c in text)


def add_debug_option(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--debug", action="store_true", help="on an internal error, print the whole traceback")
