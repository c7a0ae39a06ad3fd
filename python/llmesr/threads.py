"""How many CPU threads a training run uses (torch's intra-op pool and the Rust core's), chosen by the
machine's load when not given. Kept free of torch: the choice is made before torch starts its pool.

Measured on a 2-core machine (benches/RESULTS.md, "Threads"): a second thread makes an LLM-ESR step 1.5x
faster while the machine is otherwise idle, but 2-5x slower as soon as one other CPU-bound process runs,
whatever OpenMP's wait policy; one thread is then the fastest. So the default is every core that no other
process is using at the start of the run, at least one.
"""

from __future__ import annotations

import math
import os
import time
from collections.abc import Mapping
from pathlib import Path

from llmesr.errors import SettingsError

SAMPLE_SECONDS = 0.3  # how long the load is watched before a run; /proc/stat counts in 10 ms ticks
# OpenMP threads that wait spin this many rounds before sleeping (libgomp's default spins ~30x longer,
# which made a 2-thread step 5x slower beside one busy process; sleeping at once cost 1.7x when idle).
SPIN_COUNT = "10000"
POOLS = ("OMP_NUM_THREADS", "MKL_NUM_THREADS", "RAYON_NUM_THREADS")


def cpu_ticks(stat: str) -> tuple[int, int]:
    """(busy, total) ticks of all CPUs from the text of /proc/stat: idle and iowait are not busy."""
    for line in stat.splitlines():
        fields = line.split()
        if fields and fields[0] == "cpu":
            ticks = [int(x) for x in fields[1:9]]  # user nice system idle iowait irq softirq steal
            idle = ticks[3] + ticks[4]
            return sum(ticks) - idle, sum(ticks)
    raise ValueError("no aggregate 'cpu' line in /proc/stat")


def own_ticks() -> int:
    """CPU time of this process (all its threads) in the same ticks."""
    t = os.times()
    return round((t.user + t.system) * os.sysconf("SC_CLK_TCK"))


def cores() -> int:
    """The cores this process may run on, shared among the local processes of a torchrun job."""
    try:
        n = len(os.sched_getaffinity(0))
    except AttributeError:  # not Linux
        n = os.cpu_count() or 1
    return max(1, n // int(os.environ.get("LOCAL_WORLD_SIZE", "1")))


class LoadWatch:
    """How many cores other processes keep busy over a span of this run: the whole machine's busy time
    in /proc/stat minus this process's. A run chooses its threads once, so it watches each epoch too."""

    def __init__(self, stat: Path = Path("/proc/stat")) -> None:
        self.stat = stat
        self.mark = self.read()

    def read(self) -> tuple[int, int, int] | None:
        try:
            busy, total = cpu_ticks(self.stat.read_text())
        except (OSError, ValueError):
            return None
        return busy, total, own_ticks()

    def others(self) -> float | None:
        """Cores other processes kept busy since the last call (or the watch's start); None where
        /proc/stat is missing or no tick has passed."""
        now, before = self.read(), self.mark
        self.mark = now
        if now is None or before is None or now[1] <= before[1]:
            return None
        busy, total, own = (a - b for a, b in zip(now, before, strict=True))
        return max(0.0, (busy - own) / total * (os.cpu_count() or 1))


def others_busy_cores(seconds: float = SAMPLE_SECONDS, stat: Path = Path("/proc/stat")) -> float | None:
    """How many cores other processes keep busy over the next `seconds` (None where /proc/stat is
    missing)."""
    watch = LoadWatch(stat)
    time.sleep(seconds)
    return watch.others()


def free_threads(available: int, others: float | None) -> int:
    """Every core the other processes leave free (a quarter of a core of background noise is free), at
    least one; all `available` where the load is unknown."""
    if others is None:
        return available
    return max(1, min(available, math.floor(available - others + 0.25)))


def choose() -> tuple[int, str]:
    """The thread count for a run on this machine now, and why (for the run's first line)."""
    available, others = cores(), others_busy_cores()
    threads = free_threads(available, others)
    if others is None:
        return threads, f"{threads} threads (every core; the load is unknown here)"
    return (
        threads,
        f"{threads} thread{'s' * (threads > 1)} (other processes keep {others:.1f} of {available} cores busy)",
    )


def crowded(threads: int, others: float | None) -> bool:
    """Whether other processes now leave fewer free cores than this run's threads (measured: a 2-thread
    run beside one new busy process is 2.4x slower than it would be on one thread)."""
    return others is not None and free_threads(cores(), others) < threads


def variables(threads: int, env: Mapping[str, str]) -> dict[str, str]:
    """The environment variables that size both pools and bound the spinning (a spin count `env`
    already sets stays)."""
    if threads < 1:
        raise SettingsError(f"threads must be at least 1, not {threads}")
    return dict.fromkeys(POOLS, str(threads)) | {"GOMP_SPINCOUNT": env.get("GOMP_SPINCOUNT", SPIN_COUNT)}


def configure(threads: int) -> None:
    """Sizes both pools; call before torch and the Rust pool start (the environment is read then)."""
    os.environ.update(variables(threads, os.environ))
