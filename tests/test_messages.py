"""What a newcomer reads: clear messages for common mistakes, honest progress, clean help texts."""

import pytest

torch = pytest.importorskip("torch")

from llmesr import prepare_synthetic  # noqa: E402
from llmesr.cli import embed as embed_cli  # noqa: E402
from llmesr.cli import prepare as prepare_cli  # noqa: E402
from llmesr.cli import train as train_cli  # noqa: E402
from llmesr.embed import embed_dataset  # noqa: E402
from llmesr.encoders import HashingEncoder  # noqa: E402

from conftest import embedded_synthetic  # noqa: E402


@pytest.fixture(scope="module")
def data(tmp_path_factory):
    return embedded_synthetic(tmp_path_factory.mktemp("d") / "syn", n_users=60, n_items=30, seed=2)


TINY = ["--epochs", "1", "--hidden", "8", "--max-len", "10", "--batch-size", "32", "--n-negatives", "10", "-q"]


@pytest.mark.skipif(torch.cuda.is_available(), reason="needs a machine without a GPU")
def test_device_cuda_without_a_gpu(data, tmp_path, capsys):
    assert train_cli.main(["--data", str(data), "--out", str(tmp_path / "r"), "--device", "cuda", *TINY]) == 2
    assert "--device cuda: no CUDA GPU is visible" in capsys.readouterr().err


def test_ctrl_c_names_the_run_folder(data, tmp_path, capsys, monkeypatch):
    import llmesr.train

    def interrupted(*args, **kwargs):
        raise KeyboardInterrupt

    monkeypatch.setattr(llmesr.train, "train", interrupted)
    assert train_cli.main(["--data", str(data), "--out", str(tmp_path / "r"), *TINY]) == 130
    assert f"llmesr-train --resume {tmp_path / 'r'}" in capsys.readouterr().err


def test_ctrl_c_says_what_was_already_written(tmp_path, capsys, monkeypatch):
    import llmesr.cli.prepare
    from llmesr.cli import prepare as prepare_cli

    def interrupted(*args, **kwargs):
        raise KeyboardInterrupt

    out = tmp_path / "ds"
    assert prepare_cli.main(["--synthetic", "--n-users", "30", "--n-items", "20", "--out", str(out), "-q"]) == 0
    # Interrupted while reading: the old folder is untouched.
    monkeypatch.setattr(llmesr.cli.prepare, "prepare_synthetic", interrupted)
    assert prepare_cli.main(["--synthetic", "--out", str(out), "--overwrite"]) == 130
    assert capsys.readouterr().err.strip() == "interrupted; nothing was written"
    # Interrupted after --overwrite replaced the folder (during the summary): it says so.
    monkeypatch.undo()
    monkeypatch.setattr(llmesr.cli.prepare, "summarize", interrupted)
    assert (
        prepare_cli.main(["--synthetic", "--n-users", "40", "--n-items", "20", "--out", str(out), "--overwrite"]) == 130
    )
    assert capsys.readouterr().err.strip() == f"interrupted after writing {out} (each complete)"
    assert 'n_users": 40' in (out / "meta.json").read_text()


def test_resuming_a_finished_run_does_not_test_again(data, tmp_path, capsys, monkeypatch):
    run = tmp_path / "r"
    assert train_cli.main(["--data", str(data), "--out", str(run), *TINY]) == 0
    before = (run / "metrics.json").read_text()
    capsys.readouterr()
    import llmesr.train

    monkeypatch.setattr(llmesr.train.Training, "finish", lambda self: pytest.fail("tested again"))
    assert train_cli.main(["--resume", str(run)]) == 0
    assert "finished at epoch 1; its test results are unchanged" in capsys.readouterr().err
    assert (run / "metrics.json").read_text() == before


def test_embed_reports_a_missing_folder_before_loading_a_model(tmp_path, capsys, monkeypatch):
    import llmesr.encoders

    monkeypatch.setattr(llmesr.encoders, "SentenceTransformerEncoder", lambda *a, **k: pytest.fail("model loaded"))
    assert embed_cli.main([str(tmp_path / "nowhere")]) == 2
    assert "nowhere/meta.json: missing" in capsys.readouterr().err


def test_embed_progress_ends_at_its_total_with_repeated_texts(tmp_path):
    ds = prepare_synthetic(tmp_path / "syn", n_users=60, n_items=30, seed=2)
    reports = []
    embed_dataset(ds.path, HashingEncoder(16), k=5, hidden=8, progress=lambda *r: reports.append(r))
    for stage in ("encoding items", "encoding users"):
        last = [r for r in reports if r[0] == stage][-1]
        assert last[1] == last[2], last


def test_prepare_help_has_one_default_per_option(capsys):
    with pytest.raises(SystemExit):
        prepare_cli.main(["--help"])
    text = " ".join(capsys.readouterr().out.split())
    assert "(default: None)" not in text and "(default: detected) (default" not in text
    assert "dataset folder to write (default" not in text  # --out is required: no default
    assert "users to generate (default: 2000)" in text and "the generator's seed (default: 42)" in text


def test_the_first_op_build_shows_its_progress(tmp_path, capsys):
    """The compile's [n/N]: each object file as it appears, then the library; silent when cached."""
    from llmesr.ops.loader import BuildProgress

    files = [tmp_path / "registration.cpp", tmp_path / "attention.cpp", tmp_path / "attention.cu"]
    with BuildProgress(tmp_path, files, every=0.01) as progress:
        assert progress.done() == 0
        for name in ("registration.o", "attention.o", "attention.cuda.o", "llmesr_ops.so"):
            (tmp_path / name).touch()
    err = capsys.readouterr().err
    assert "compiling the native ops once (3 files" in err and "LLMESR_OPS=ref" in err
    assert "4/4" in err and "native ops build done in" in err
    with BuildProgress(tmp_path, files):
        pass
    assert capsys.readouterr().err == ""


def test_the_op_build_compiles_a_copy_of_the_sources_in_its_cache_folder(tmp_path):
    """Ninja rebuilds when a compile command (which names the sources) changes: compiling the cache
    folder's own copy keeps the command the same wherever the package is installed."""
    from llmesr.ops.loader import CSRC, sources, sources_in

    files = sources(with_cuda=True)
    copies = sources_in(tmp_path, files)
    assert copies == sources_in(tmp_path, files)  # a second call reuses the copy
    assert all(
        c.is_relative_to(tmp_path / "src") and c.read_bytes() == f.read_bytes()
        for c, f in zip(copies, files, strict=True)
    )
    headers = sorted(p.relative_to(CSRC) for p in CSRC.rglob("*.h"))
    assert headers and all((tmp_path / "src" / h).is_file() for h in headers)  # the includes come along
    assert [p.name for p in tmp_path.iterdir()] == ["src"]  # no staging folder left behind


def test_user_errors_are_one_line_and_bugs_say_they_are_bugs(tmp_path, capsys, monkeypatch):
    import llmesr.cli.prepare as prepare_module
    from llmesr.errors import LlmesrError, SettingsError

    # A setting the user can fix: one line, exit status 2, no traceback.
    assert train_cli.main(["--data", str(tmp_path), "--dropout", "1.5", "-q"]) == 2
    err = capsys.readouterr().err
    assert err == "error: dropout must be in [0, 1), not 1.5\n"
    assert issubclass(SettingsError, ValueError) and issubclass(SettingsError, LlmesrError)

    # A ValueError from inside (a bug, whatever its type): says so, with the last frames, exit status 3.
    def broken(*args, **kwargs):
        raise ValueError("deliberate test bug")

    monkeypatch.setattr(prepare_module, "summarize", broken)
    argv = ["--synthetic", "--n-users", "20", "--n-items", "10", "--out", str(tmp_path / "s")]
    assert prepare_cli.main(argv) == 3
    err = capsys.readouterr().err
    assert "ValueError: deliberate test bug" in err and "Traceback" in err
    assert "error: internal error (ValueError): a bug in llmesr" in err and "--debug shows" in err
    assert err.count('File "') == 1  # where it happened
    assert prepare_cli.main([*argv, "--overwrite", "--debug"]) == 3
    assert capsys.readouterr().err.count('File "') >= 3  # the whole traceback


def test_terminal_escapes_in_paths_are_not_echoed(tmp_path, capsys):
    missing = tmp_path / "evil\x1b[2Jname.csv"
    assert prepare_cli.main([str(missing), "--out", str(tmp_path / "o"), "-q"]) == 2
    err = capsys.readouterr().err
    assert "\x1b" not in err and "evil\\x1b[2Jname.csv" in err
