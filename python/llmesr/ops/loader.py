"""Just-in-time build and load of the native operators (see `llmesr.ops`)."""

from __future__ import annotations

import hashlib
import os
import shutil
import sys
import threading
import time
import warnings
from pathlib import Path

import torch

from llmesr.errors import ExternalError, SettingsError

CSRC = Path(__file__).resolve().parent.parent / "csrc"
MODES = ("auto", "native", "ref")


def ops_mode() -> str:
    mode = os.environ.get("LLMESR_OPS", "auto")
    if mode not in MODES:
        raise SettingsError(f"LLMESR_OPS must be one of {', '.join(MODES)}, not {mode!r}")
    return mode


def sources(with_cuda: bool) -> list[Path]:
    found = [CSRC / "registration.cpp", CSRC / "autograd.cpp", *sorted((CSRC / "cpu").glob("*.cpp"))]
    return found + (sorted((CSRC / "cuda").glob("*.cu")) if with_cuda else [])


def build_dir(files: list[Path]) -> Path:
    """The cache folder of a build: keyed by torch's version and the sources with the headers they include."""
    digest = hashlib.sha256()
    for f in [*files, *sorted(CSRC.rglob("*.h")), *sorted(CSRC.rglob("*.cuh"))]:
        digest.update(f.name.encode() + f.read_bytes())
    root = Path(os.environ.get("LLMESR_OPS_CACHE", Path.home() / ".cache" / "llmesr" / "ops"))
    tag = f"torch{torch.__version__}-{'cuda' if any(f.suffix == '.cu' for f in files) else 'cpu'}-{digest.hexdigest()[:12]}"
    return root / tag.replace("+", "_")


LOADED: bool | None = None  # the answer of `native_ops_loaded`, once known (read as is under torch.compile)
DEVICES: frozenset[str] = frozenset()  # device types the loaded ops have kernels for


def native_ops_loaded() -> bool:
    """Builds (first time) and loads the native ops; False when `LLMESR_OPS=ref` or, in `auto` mode,
    when they cannot be built (a warning says why)."""
    global LOADED, DEVICES
    if LOADED is None:
        DEVICES = _load()
        LOADED = bool(DEVICES)
    return LOADED


def ops_description() -> dict[str, object]:
    """What ran, for the run folder: the mode, the devices the native ops serve (none: the PyTorch
    twins), the C++ compiler they were built with and torch's version."""
    loaded = native_ops_loaded()
    compiler = os.environ.get("CXX", "c++")
    return {
        "mode": ops_mode(),
        "native_devices": sorted(DEVICES) if loaded else [],
        "compiler": compiler if loaded else None,
        "torch": torch.__version__,
    }


def native_for(tensor: torch.Tensor) -> bool:
    """Whether the native ops serve tensors of this device and dtype (the CPU kernels are float32 and
    float64 only: bfloat16 from autocast on a CPU goes to the twins)."""
    loaded = LOADED if LOADED is not None else native_ops_loaded()
    if tensor.device.type == "cpu" and tensor.dtype not in (torch.float32, torch.float64):
        return False
    return loaded and tensor.device.type in DEVICES


def sources_in(folder: Path, files: list[Path]) -> list[Path]:
    """The build's own copy of the sources (the whole csrc tree, for the headers), inside its cache
    folder. Ninja rebuilds whenever a compile command changes, and the command names the source
    paths: compiled from where the package lies, two installs of the same version (an editable
    checkout and a wheel, two environments) would rebuild the shared cache on every switch."""
    copy = folder / "src"
    if not copy.is_dir():
        staging = folder / f"src.tmp{os.getpid()}"
        shutil.rmtree(staging, ignore_errors=True)
        shutil.copytree(CSRC, staging)
        try:
            os.replace(staging, copy)
        except OSError:  # another process put its identical copy there first
            shutil.rmtree(staging, ignore_errors=True)
    return [copy / f.relative_to(CSRC) for f in files]


def _build(with_cuda: bool) -> None:
    from torch.utils.cpp_extension import load

    files = sources(with_cuda)
    folder = build_dir(files)
    folder.mkdir(parents=True, exist_ok=True)
    with BuildProgress(folder, files):
        load(
            name="llmesr_ops",
            sources=[str(f) for f in sources_in(folder, files)],
            build_directory=str(folder),
            extra_cflags=["-O3"],
            extra_cuda_cflags=["-O3"],
            is_python_module=False,
            verbose=False,
        )


class BuildProgress:
    """A first build's progress on stderr, `[n/N]` like ninja's: each translation unit counts when its
    object file appears in the build folder, the link last. Silent when the library is cached."""

    def __init__(self, folder: Path, files: list[Path], every: float = 1.0) -> None:
        self.folder, self.every = folder, every
        self.objects = [folder / f"{f.stem}{'.cuda' if f.suffix == '.cu' else ''}.o" for f in files]
        self.active = not (folder / "llmesr_ops.so").exists()
        self.stop = threading.Event()
        self.thread = threading.Thread(target=self.watch, daemon=True)

    def __enter__(self) -> BuildProgress:
        if self.active:
            print(
                f"llmesr: compiling the native ops once ({len(self.objects)} files; cached in {self.folder}); "
                "LLMESR_OPS=ref skips it and runs the PyTorch twins",
                file=sys.stderr,
            )
            self.start = time.monotonic()
            self.thread.start()
        return self

    def done(self) -> int:
        return sum(o.exists() for o in self.objects) + (self.folder / "llmesr_ops.so").exists()

    def watch(self) -> None:
        from tqdm import tqdm

        with tqdm(total=len(self.objects) + 1, desc="llmesr: compiling", unit="step", file=sys.stderr) as bar:
            while not self.stop.wait(self.every):
                bar.update(self.done() - bar.n)
            bar.update(self.done() - bar.n)

    def __exit__(self, *exc: object) -> None:
        if self.active:
            self.stop.set()
            self.thread.join()
            ok = "done" if exc[0] is None else "failed"
            print(f"llmesr: native ops build {ok} in {time.monotonic() - self.start:.0f} s", file=sys.stderr)


def register_fake_kernels() -> None:
    """Every op module's shape kernels (`register_fake` beside its twin), found rather than listed."""
    import importlib
    import pkgutil

    import llmesr.ops

    for info in pkgutil.iter_modules(llmesr.ops.__path__):
        module = importlib.import_module(f"llmesr.ops.{info.name}")
        if callable(getattr(module, "register_fake", None)):
            module.register_fake()


def _load() -> frozenset[str]:
    mode = ops_mode()
    if mode == "ref":
        return frozenset()
    # With a GPU, CPU and CUDA kernels together; if the CUDA build fails (no nvcc), the CPU ones alone.
    attempts = [("cpu", "cuda"), ("cpu",)] if torch.cuda.is_available() else [("cpu",)]
    for devices in attempts:
        try:
            _build(with_cuda="cuda" in devices)
        except Exception as e:  # no compiler, no ninja, a failed build: the reference still works
            if mode == "native" and devices == attempts[-1]:
                raise ExternalError(f"LLMESR_OPS=native but the native ops could not be built: {e}") from e
            where = "CUDA " if "cuda" in devices else ""
            warnings.warn(f"llmesr: native {where}ops unavailable, using the PyTorch reference ({e})", stacklevel=3)
            continue
        register_fake_kernels()
        return frozenset(devices)
    return frozenset()
