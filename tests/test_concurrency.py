"""Two processes on one folder: every writer holds an exclusive lock for its whole run, so a second
writer (or a writer beside a reader of the same set of files) fails at once, naming the folder and the
process that holds it; the OS releases the lock on any exit, kill -9 included."""

import os
import signal
import subprocess
import sys
import time

import pytest

from llmesr.locks import FolderInUse, folder_lock
from llmesr.runs import read_run_config  # noqa: E402

HOLD = """
import sys, time
from llmesr.locks import folder_lock
with folder_lock(sys.argv[1], exclusive=sys.argv[2] == "exclusive"):
    print("held", flush=True)
    time.sleep(60)
"""


def hold(folder, exclusive=True):
    """A process holding a lock on `folder` (killed by the caller)."""
    proc = subprocess.Popen(
        [sys.executable, "-c", HOLD, str(folder), "exclusive" if exclusive else "shared"],
        stdout=subprocess.PIPE,
        text=True,
    )
    assert proc.stdout is not None and proc.stdout.readline().strip() == "held"
    return proc


def command(*args):
    """An llmesr command in its own process: (exit status, stderr)."""
    module, *rest = args
    quiet = [] if module == "export" else ["-q"]
    done = subprocess.run(
        [sys.executable, "-m", f"llmesr.cli.{module}", *rest, *quiet], capture_output=True, text=True, timeout=300
    )
    return done.returncode, done.stderr


@pytest.fixture(scope="module")
def data(tmp_path_factory):
    from conftest import embedded_synthetic

    return embedded_synthetic(tmp_path_factory.mktemp("d") / "syn", n_users=80, n_items=40, seed=3)


TRAIN = ["--epochs", "1", "--hidden", "8", "--max-len", "20", "--n-negatives", "10", "--threads", "1"]


@pytest.mark.parametrize(
    ("writer", "target"),
    [
        (["prepare", "--synthetic", "--n-users", "50", "--n-items", "40", "--out"], "prepared"),
        (["embed", "--encoder", "hashing", "-k", "10", "--hidden", "8"], "data"),
        (["train", *TRAIN, "--out"], "run"),
        (["export", "--to", "recbole", "--out"], "export"),
    ],
    ids=["prepare", "embed", "train", "export"],
)
def test_a_second_writer_fails_at_once_naming_the_holder(data, tmp_path, writer, target):
    folder = {"data": data, "prepared": tmp_path / "prepared", "run": tmp_path / "run", "export": tmp_path / "export"}[
        target
    ]
    before = {p.name: p.stat().st_mtime_ns for p in data.iterdir()}
    holder = hold(folder)
    try:
        args = [*writer, str(folder)]
        if writer[0] == "train":
            args += ["--data", str(data)]
        if writer[0] == "export":
            args = [writer[0], str(data), *writer[1:], str(folder)]
        t0 = time.monotonic()
        rc, err = command(*args)
        assert rc == 2, err
        assert f"{folder} is in use by process {holder.pid} (python" in err, err
        assert time.monotonic() - t0 < 60  # at once, not after waiting
    finally:
        holder.kill()
        holder.wait()
    assert {p.name: p.stat().st_mtime_ns for p in data.iterdir()} == before  # nothing written
    assert command(*args)[0] == 0  # the lock went with its process (killed)


def test_training_keeps_its_data_from_being_replaced_or_reembedded(data, tmp_path):
    reader = hold(data, exclusive=False)  # as a training run holds its data
    try:
        rc, err = command("prepare", "--synthetic", "--n-users", "50", "--overwrite", "--out", str(data))
        assert rc == 2 and "is in use by process" in err
        rc, err = command("embed", str(data), "--encoder", "hashing", "-k", "5")
        assert rc == 2 and "is in use by process" in err
        # Readers share: a second training run on the same data goes ahead.
        rc, err = command("train", *TRAIN, "--data", str(data), "--out", str(tmp_path / "run"))
        assert rc == 0, err
    finally:
        reader.kill()
        reader.wait()


def test_two_resumes_of_one_run_and_a_real_pair(data, tmp_path):
    run = tmp_path / "run"
    # Still training (holding the lock) when the later commands run, however idle the machine: it is killed
    # below, never left to finish (200 epochs of this data ended before them on an idle machine).
    epochs = "100000"
    slow = ["--hidden", "8", "--max-len", "20", "--n-negatives", "10", "--threads", "1"]
    slow += ["--epochs", epochs, "--patience", epochs]
    first = subprocess.Popen(
        [sys.executable, "-m", "llmesr.cli.train", *slow, "--data", str(data), "--out", str(run), "-q"],
        stdout=subprocess.DEVNULL,
        stderr=subprocess.PIPE,
        text=True,
    )
    try:
        deadline = time.monotonic() + 120
        while not (run / "checkpoint.safetensors").exists():  # training, so holding the lock
            assert first.poll() is None and time.monotonic() < deadline
            time.sleep(0.2)
        rc, err = command("train", "--resume", str(run))
        assert rc == 2 and f"{run} is in use by process {first.pid}" in err, err
        rc, err = command("train", *TRAIN, "--data", str(data), "--out", str(run), "--overwrite")
        assert rc == 2 and "is in use by process" in err, err
    finally:
        first.send_signal(signal.SIGKILL)
        first.wait()
    saved = read_run_config(run)
    assert saved["epochs"] == int(epochs)  # the first run's settings, untouched by the refused ones
    assert command("train", "--resume", str(run), "--epochs", "2")[0] == 0  # free again after kill -9


def test_locks_nest_within_a_process_and_refuse_an_upgrade(tmp_path):
    folder = tmp_path / "f"
    with folder_lock(folder, exclusive=True), folder_lock(folder, exclusive=False):
        pass
    with (
        folder_lock(folder, exclusive=False),
        pytest.raises(RuntimeError, match="internal error"),
        folder_lock(folder, exclusive=True),
    ):
        pass
    holder = hold(folder, exclusive=False)
    try:
        with folder_lock(folder, exclusive=False):  # readers share
            pass
        with pytest.raises(FolderInUse, match=f"in use by process {holder.pid}"), folder_lock(folder, exclusive=True):
            pass
    finally:
        holder.kill()
        holder.wait()
    assert (tmp_path / ".f.lock").exists()  # a killed holder leaves its lock file, harmless:
    with folder_lock(folder, exclusive=True):
        pass
    assert not (tmp_path / ".f.lock").exists()  # the next last holder removes it
    assert not os.path.exists(folder)  # a lock does not make the folder


def test_the_holder_is_described_short_and_printable():
    from llmesr.locks import describe

    assert describe(["/venv/bin/python3.11", "/venv/bin/llmesr-embed", "data/x"]) == "llmesr-embed data/x"
    assert describe(["/usr/bin/python3", "-c", "import x\nx.run()\x1b[31m"]) == "python3 -c import x x.run()?[31m"
    assert describe(["llmesr-train", "--data", "d" * 200]).endswith("...") and describe([]) == "?"
