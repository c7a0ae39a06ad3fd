"""The thread count of a run: the load measurement, the rule that turns it into a count, the pools it
sizes, and that a run records its count and keeps it on resume."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

from llmesr import threads
from llmesr.runs import read_run_config  # noqa: E402

CROWDED = threads.crowded

STAT = """cpu  100 5 50 1000 20 3 2 10 0 0
cpu0 50 2 25 500 10 1 1 5 0 0
intr 12345
"""


def test_cpu_ticks_count_idle_and_iowait_as_not_busy():
    busy, total = threads.cpu_ticks(STAT)
    assert (busy, total) == (100 + 5 + 50 + 3 + 2 + 10, 1190)
    with pytest.raises(ValueError, match="no aggregate 'cpu' line"):
        threads.cpu_ticks("cpu0 1 2 3 4 5 6 7 8\n")


@pytest.mark.parametrize(
    ("available", "others", "expected"),
    [(2, 0.0, 2), (2, 0.2, 2), (2, 0.3, 1), (2, 1.0, 1), (2, 3.0, 1), (16, 1.0, 15), (16, 0.9, 15), (4, None, 4)],
)
def test_free_threads_are_the_cores_others_leave_free(available, others, expected):
    assert threads.free_threads(available, others) == expected


@pytest.mark.skipif(not Path("/proc/stat").exists(), reason="needs Linux's /proc/stat")
def test_a_busy_process_is_seen():
    spinner = subprocess.Popen([sys.executable, "-c", "while True: pass"])
    try:
        assert threads.others_busy_cores(0.5) >= 0.5
    finally:
        spinner.kill()
        spinner.wait()


def test_unknown_load_takes_every_core(tmp_path):
    assert threads.others_busy_cores(0.01, stat=tmp_path / "missing") is None


def test_cores_are_shared_among_local_ranks(monkeypatch):
    monkeypatch.setenv("LOCAL_WORLD_SIZE", "1")
    alone = threads.cores()
    monkeypatch.setenv("LOCAL_WORLD_SIZE", str(alone * 4))
    assert threads.cores() == 1


def test_configure_sizes_every_pool_and_bounds_the_spinning(monkeypatch):
    for name in (*threads.POOLS, "GOMP_SPINCOUNT"):
        monkeypatch.setenv(name, "x")
    monkeypatch.delenv("GOMP_SPINCOUNT")
    threads.configure(3)
    assert [os.environ[n] for n in threads.POOLS] == ["3", "3", "3"]
    assert os.environ["GOMP_SPINCOUNT"] == threads.SPIN_COUNT
    monkeypatch.setenv("GOMP_SPINCOUNT", "5")  # the user's setting stays
    threads.configure(1)
    assert os.environ["GOMP_SPINCOUNT"] == "5"
    with pytest.raises(ValueError, match="threads must be at least 1, not 0"):
        threads.configure(0)


def test_a_run_records_its_threads_and_resume_keeps_them(tmp_path, monkeypatch, capsys):
    torch = pytest.importorskip("torch")
    from llmesr.cli import train as train_cli

    from conftest import embedded_synthetic

    for name in (*threads.POOLS, "GOMP_SPINCOUNT"):
        monkeypatch.setenv(name, "1")  # restored after the test: the command sets them
    before = torch.get_num_threads()
    data = embedded_synthetic(tmp_path / "data", n_users=60, n_items=40, seed=3)
    out = tmp_path / "run"
    small = ["--epochs", "1", "--hidden", "8", "--max-len", "10", "--n-negatives", "10", "--no-compare"]
    try:
        assert train_cli.main(["--data", str(data), "--out", str(out), *small]) == 0
        chosen = read_run_config(out)["threads"]
        assert 1 <= chosen <= threads.cores()
        assert f"threads: {chosen} thread" in capsys.readouterr().err
        assert json.loads((out / "metrics.json").read_text())["environment"]["threads"] == chosen
        torch.set_num_threads(chosen + 1)
        assert train_cli.main(["--resume", str(out), "-q"]) == 0
        assert torch.get_num_threads() == chosen  # the recorded count, not a new measurement
        assert train_cli.main(["--resume", str(out), "-q", "--threads", str(chosen + 1)]) == 0
        assert torch.get_num_threads() == chosen + 1  # given explicitly: allowed, like --device
    finally:
        torch.set_num_threads(before)


def test_the_load_watch_counts_other_processes_busy_cores(tmp_path, monkeypatch):
    stat = tmp_path / "stat"
    stat.write_text("cpu  100 0 0 900 0 0 0 0\n")
    own = iter([10, 30, 30])  # this process's ticks at each read
    monkeypatch.setattr(threads, "own_ticks", lambda: next(own))
    monkeypatch.setattr(threads.os, "cpu_count", lambda: 4)
    watch = threads.LoadWatch(stat)
    stat.write_text("cpu  180 0 0 920 0 0 0 0\n")  # 80 busy ticks of 100, 20 of them this process's
    assert watch.others() == pytest.approx(60 / 100 * 4)
    assert watch.others() is None  # no tick passed since the last call
    stat.unlink()
    assert watch.others() is None


@pytest.mark.parametrize(("others", "said"), [(1.0, True), (0.1, False), (None, False)])
def test_a_run_says_once_when_the_machine_gets_crowded(tmp_path, monkeypatch, others, said):
    pytest.importorskip("torch")
    from llmesr.cli import train as train_cli

    from conftest import embedded_synthetic

    for name in (*threads.POOLS, "GOMP_SPINCOUNT"):
        monkeypatch.setenv(name, "1")
    monkeypatch.setattr(threads, "crowded", CROWDED)  # the real rule, not conftest's quiet machine
    monkeypatch.setattr(threads, "cores", lambda: 2)
    monkeypatch.setattr(threads.LoadWatch, "others", lambda self: others)
    data = embedded_synthetic(tmp_path / "data", n_users=60, n_items=40, seed=3)
    out = tmp_path / "run"
    small = ["--epochs", "2", "--hidden", "8", "--max-len", "10", "--n-negatives", "10", "--no-compare", "-q"]
    assert train_cli.main(["--data", str(data), "--out", str(out), "--threads", "2", *small]) == 0
    lines = [line for line in (out / "log.txt").read_text().splitlines() if "other processes kept" in line]
    expected = "epoch 1: other processes kept 1.0 of 2 cores busy, fewer free than this run's 2 threads"
    assert [line.split(";")[0] for line in lines] == ([expected] if said else [])
    if said:
        assert lines[0].endswith(f"llmesr-train --resume {out} --threads 1")


def test_crowded_means_fewer_free_cores_than_threads(monkeypatch):
    monkeypatch.setattr(threads, "cores", lambda: 2)
    assert [CROWDED(2, x) for x in (0.0, 0.2, 0.8, None)] == [False, False, True, False]
    assert not CROWDED(1, 2.0)  # one thread is never crowded out
