"""Atomic outputs: a result is built under a temporary name beside its final path and renamed into
place, so a killed run leaves either the old result or the new one, never half of one."""

from __future__ import annotations

import contextlib
import ctypes
import os
import shutil
import tempfile
from collections.abc import Callable, Iterator
from pathlib import Path

_RENAME_EXCHANGE = 2
_AT_FDCWD = -100


def _exchange(a: Path, b: Path) -> bool:
    """Atomically swap two paths (Linux renameat2); False where the system cannot."""
    try:
        libc = ctypes.CDLL(None, use_errno=True)
        renameat2 = libc.renameat2
    except (OSError, AttributeError):
        return False
    rc = renameat2(_AT_FDCWD, os.fsencode(a), _AT_FDCWD, os.fsencode(b), _RENAME_EXCHANGE)
    return rc == 0


@contextlib.contextmanager
def atomic_dir(final: str | os.PathLike[str], overwrite: bool = False) -> Iterator[Path]:
    """Yields an empty temporary folder that replaces `final` when the block succeeds."""
    final = Path(final)
    if final.exists() and not overwrite:
        raise FileExistsError(f"{final} already exists (pass --overwrite to replace it)")
    final.parent.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(prefix=f".{final.name}.tmp-", dir=final.parent))
    os.chmod(tmp, 0o777 & ~_umask())  # mkdtemp makes it private; the result should not be
    try:
        yield tmp
        if not final.exists():
            os.rename(tmp, final)
        elif _exchange(tmp, final):
            shutil.rmtree(tmp)  # now holds the old result
        else:
            old = Path(tempfile.mkdtemp(prefix=f".{final.name}.old-", dir=final.parent))
            os.rename(final, old / "x")
            os.rename(tmp, final)
            shutil.rmtree(old)
    finally:
        if tmp.exists():
            shutil.rmtree(tmp, ignore_errors=True)


def atomic_write(final: str | os.PathLike[str], write: Callable[[Path], object]) -> None:
    """Calls `write(tmp)` for a temporary file beside `final`, then renames it into place."""
    final = Path(final)
    fd, name = tempfile.mkstemp(prefix=f".{final.name}.tmp-", dir=final.parent)
    os.close(fd)
    tmp = Path(name)
    try:
        write(tmp)
        os.chmod(tmp, 0o666 & ~_umask())
        os.replace(tmp, final)
    finally:
        tmp.unlink(missing_ok=True)


def atomic_write_text(final: str | os.PathLike[str], text: str) -> None:
    atomic_write(final, lambda tmp: tmp.write_text(text))


def _umask() -> int:
    umask = os.umask(0)
    os.umask(umask)
    return umask
