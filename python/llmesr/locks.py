"""Folder locks, so that two processes never write one dataset or run folder at once.

A command that writes a folder (prepare, embed, train, export) holds an exclusive lock on it for its
whole run; one that reads several of its files as one set (training's data, the embedding tables, a
served run) holds a shared one. The locks are flock(2) on a sibling file `.NAME.lock`, which outlives
the folder being replaced by a rename, and is removed by its last holder; the OS releases the locks on
any exit, kill -9 included, so a lock file a killed process left is harmless. A second writer fails at once, naming the folder and the process that
holds it. Within one process the locks nest (embed reads the dataset it writes).
"""

from __future__ import annotations

import contextlib
import fcntl
import os
from collections.abc import Iterator
from pathlib import Path


class FolderInUse(OSError):
    """Another process holds a lock on the folder that this command needs."""


# Locks this process holds: lock file -> exclusive. A nested request takes nothing more: the outer
# block holds the lock and releases it.
_held: dict[Path, bool] = {}


def _lock_file(folder: Path) -> Path:
    folder = folder.absolute()
    return folder.parent / f".{folder.name}.lock"


def holders(lock_file: Path) -> list[str]:
    """`PID (command)` of every other process holding a lock on `lock_file` (from /proc/locks, Linux)."""
    try:
        st = lock_file.stat()
        lines = Path("/proc/locks").read_text().splitlines()
    except OSError:
        return []
    device = f"{os.major(st.st_dev):02x}:{os.minor(st.st_dev):02x}:{st.st_ino}"
    found = []
    for line in lines:
        parts = line.split()
        if "->" in parts or len(parts) < 6 or parts[5] != device or not parts[4].isdigit():
            continue
        pid = int(parts[4])
        if pid == os.getpid():
            continue
        try:
            argv = [os.fsdecode(a) for a in Path(f"/proc/{pid}/cmdline").read_bytes().split(b"\0") if a]
        except OSError:
            argv = []
        found.append(f"{pid} ({describe(argv)})")
    return sorted(set(found))


def describe(argv: list[str]) -> str:
    """A process's command line, short and printable: `llmesr-embed data/x` rather than the interpreter
    and the script's full path."""
    names = [Path(a).name if i < 2 else a for i, a in enumerate(argv)]
    if len(names) > 1 and names[0].startswith("python") and not names[1].startswith("-"):
        names = names[1:]  # a console script run by its interpreter
    text = " ".join(" ".join(names).split())
    text = "".join(c if c.isprintable() else "?" for c in text)
    return (text[:77] + "...") if len(text) > 80 else text or "?"


@contextlib.contextmanager
def folder_lock(folder: str | os.PathLike[str], exclusive: bool) -> Iterator[None]:
    """Holds a lock on `folder` (which need not exist yet) for the block: exclusive to write it,
    shared to read it. Raises FolderInUse at once when another process holds a conflicting lock.
    Where no lock file can be made (a read-only place), nobody can write there: no lock is taken."""
    lock_file = _lock_file(Path(folder))
    if lock_file in _held:
        if exclusive and not _held[lock_file]:
            raise RuntimeError(f"llmesr internal error: {folder} is read-locked by this process, not write-locked")
        yield
        return
    try:
        fd = _acquire(lock_file, exclusive)
    except OSError:  # no lock file can be made here: the folder cannot be written either, and its
        yield  # writer reports why in its own words (read-only, not a folder, ...)
        return
    if fd is None:
        who = holders(lock_file)
        by = f"process {', '.join(who)}" if who else "another process"
        raise FolderInUse(f"{folder} is in use by {by}: wait for it to finish, or stop it")
    _held[lock_file] = exclusive
    try:
        yield
    finally:
        del _held[lock_file]
        _release(lock_file, fd)


def _acquire(lock_file: Path, exclusive: bool) -> int | None:
    """A descriptor of `lock_file` holding the lock, or None when another process holds a conflicting
    one. A lock file is removed by its last holder (`_release`), so one that vanished or was replaced
    between our open and our lock is not the live one: then try again."""
    lock_file.parent.mkdir(parents=True, exist_ok=True)
    while True:
        fd = os.open(lock_file, os.O_RDWR | os.O_CREAT | os.O_CLOEXEC, 0o666)
        try:
            fcntl.flock(fd, (fcntl.LOCK_EX if exclusive else fcntl.LOCK_SH) | fcntl.LOCK_NB)
        except BlockingIOError:
            os.close(fd)
            return None
        try:
            if os.stat(lock_file).st_ino == os.fstat(fd).st_ino:
                return fd
        except FileNotFoundError:
            pass
        os.close(fd)


def _release(lock_file: Path, fd: int) -> None:
    """Releases the lock; the last holder (the one that can take it exclusively) removes the file, so
    no lock file outlives the commands that used it (one left by a killed process is harmless)."""
    try:
        fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        lock_file.unlink(missing_ok=True)
    except OSError:
        pass  # another process still holds it: it removes the file
    finally:
        os.close(fd)  # releases the lock
