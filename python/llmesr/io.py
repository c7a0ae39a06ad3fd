"""Atomic outputs: a result is built under a temporary name beside its final path and renamed into
place, so a killed run leaves either the old result or the new one, never half of one. Temporary
names carry the writer's process id (`.NAME.tmp-PID-XXXX`), so what a killed writer left behind is
recognised and removed by the next writer of the same path."""

from __future__ import annotations

import contextlib
import ctypes
import os
import shutil
import tempfile
from collections.abc import Callable, Iterator
from pathlib import Path

from llmesr.errors import SettingsError
from llmesr.locks import folder_lock

_RENAME_EXCHANGE = 2
_AT_FDCWD = -100
_written: list[Path] = []  # outputs this process has put in place, in order (see `written`)


def written() -> list[Path]:
    """The outputs (files and folders) this process has renamed into place so far: what an
    interrupted command has already changed on disk."""
    return list(_written)


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
def _naming(final: Path) -> Iterator[None]:
    """An OS error while creating an output names the output, not our temporary beside it."""
    try:
        yield
    except OSError as e:
        raise type(e)(f"{final}: cannot write here ({e.strerror or e})") from None


def _temporary_prefix(final: Path) -> str:
    return f".{final.name}.tmp-"


def _process_alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True  # another user's process
    return True


def remove_stale_temporaries(folder: Path, final: Path | None = None) -> None:
    """Removes the temporaries in `folder` (of `final` only, when given) whose writer process is gone
    (a killed run's leftovers)."""
    for tmp in folder.glob(f"{_temporary_prefix(final)}*" if final is not None else ".*.tmp-*"):
        pid = tmp.name.rsplit(".tmp-", 1)[1].split("-", 1)[0]
        if pid.isdigit() and not _process_alive(int(pid)):
            if tmp.is_dir():
                shutil.rmtree(tmp, ignore_errors=True)
            else:
                tmp.unlink(missing_ok=True)


@contextlib.contextmanager
def atomic_dir(
    final: str | os.PathLike[str], overwrite: bool = False, replaceable: Callable[[Path], bool] | None = None
) -> Iterator[Path]:
    """Yields an empty temporary folder that replaces `final` when the block succeeds. With
    `overwrite`, an existing `final` is replaced only if it is a folder and `replaceable(final)` holds
    (e.g. it is one of our dataset folders), never a file or someone else's folder. The writer holds
    `final`'s exclusive lock (`llmesr.locks`) for the whole block: a second writer fails at once."""
    final = Path(final)
    if not final.name:
        raise SettingsError(f"{str(final)!r} does not name a folder to write")
    with folder_lock(final, exclusive=True), _replacing(final, overwrite, replaceable) as tmp:
        yield tmp


@contextlib.contextmanager
def _replacing(final: Path, overwrite: bool, replaceable: Callable[[Path], bool] | None) -> Iterator[Path]:
    if final.is_symlink():  # replacing it would replace the link, not the folder it names
        raise SettingsError(f"{final} is a symbolic link: give the folder it points to ({final.resolve()})")
    if final.exists():
        if not overwrite:
            raise FileExistsError(f"{final} already exists (pass --overwrite to replace it)")
        if not final.is_dir() or (replaceable is not None and not replaceable(final)):
            raise FileExistsError(f"{final} exists and is not a folder this command wrote: refusing to replace it")
    with _naming(final):
        final.parent.mkdir(parents=True, exist_ok=True)
        remove_stale_temporaries(final.parent, final)
        tmp = Path(tempfile.mkdtemp(prefix=f"{_temporary_prefix(final)}{os.getpid()}-", dir=final.parent))
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
        _written.append(final)
    finally:
        if tmp.exists():
            shutil.rmtree(tmp, ignore_errors=True)


def atomic_write(final: str | os.PathLike[str], write: Callable[[Path], object]) -> None:
    """Calls `write(tmp)` for a temporary file beside `final`, then renames it into place."""
    final = Path(final)
    with _naming(final):
        remove_stale_temporaries(final.parent, final)
        fd, name = tempfile.mkstemp(prefix=f"{_temporary_prefix(final)}{os.getpid()}-", dir=final.parent)
    os.close(fd)
    tmp = Path(name)
    try:
        write(tmp)
        os.chmod(tmp, 0o666 & ~_umask())
        os.replace(tmp, final)
        _written.append(final)
    finally:
        tmp.unlink(missing_ok=True)


def atomic_write_text(final: str | os.PathLike[str], text: str) -> None:
    atomic_write(final, lambda tmp: tmp.write_text(text))


def _umask() -> int:
    umask = os.umask(0)
    os.umask(umask)
    return umask
