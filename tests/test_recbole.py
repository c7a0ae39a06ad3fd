"""Data both ways between llmesr and RecBole: our export read back by raw ids, RecBole's own atomic
files prepared without options, and (where RecBole is installed) RecBole training on an export as written."""

import json
import subprocess
import sys
from pathlib import Path

import pytest

from llmesr import prepare, prepare_synthetic
from llmesr.export import export_recbole

from conftest import write

HARNESS = Path(__file__).resolve().parents[1] / "benches" / "peers" / "run_recbole.py"


def histories(ds):
    users, items = ds.user_ids(), ds.item_ids()
    return {users[u]: [items[i] for i in ds.history(u)] for u in range(1, ds.n_users + 1)}


def titles(ds):
    return dict(zip(ds.item_ids()[1:], [r.get("title") for r in ds.item_text()], strict=True))


def test_an_export_prepares_back_to_the_same_split_and_titles(tmp_path):
    ds = prepare_synthetic(tmp_path / "syn", n_users=60, n_items=40, seed=5)
    out = export_recbole(ds.path, tmp_path / "rb" / "syn")
    back = prepare([out / "syn.inter"], tmp_path / "back", format="recbole")  # NAME.item beside it is read too
    assert histories(back) == histories(ds)
    assert (back.train_end - back.indptr[:-1] == ds.train_end - ds.indptr[:-1]).all()  # the same split
    assert titles(back) == titles(ds)
    # Categories travel as RecBole token sequences: the words come back, not the grouping.
    first = ds.item_ids()[1]
    words = " ".join(ds.item_text()[0]["categories"]).split()
    assert back.item_text()[back.item_ids().index(first) - 1]["categories"] == words
    assert [Path(s["path"]).name for s in back.meta["item_sources"]] == ["syn.item"]


def test_recboles_own_atomic_files_prepare_without_options(tmp_path):
    # RecBole's distributed ml-100k layout: rating before timestamp, a typed .item header of its own.
    folder = tmp_path / "ml-100k"
    folder.mkdir()
    write(
        folder / "ml-100k.inter",
        "user_id:token\titem_id:token\trating:float\ttimestamp:float\n"
        "196\t242\t3\t881250949\n196\t302\t3\t881250950\n196\t51\t2\t881250951\n"
        "22\t377\t1\t878887116\n22\t51\t2\t878887110\n22\t242\t5\t878887120\n",
    )
    write(
        folder / "ml-100k.item",
        "item_id:token\tmovie_title:token_seq\trelease_year:token\tclass:token_seq\n"
        "242\tKolya\t1996\tComedy\n302\tL.A. Confidential\t1997\tCrime Film-Noir Mystery Thriller\n"
        "51\tLegends of the Fall\t1994\tDrama Romance War Western\n377\tHeavyweights\t1994\tChildren's Comedy\n",
    )
    ds = prepare([folder / "ml-100k.inter"], tmp_path / "ds")
    assert histories(ds) == {"196": ["242", "302", "51"], "22": ["51", "377", "242"]}
    assert titles(ds) == {
        "242": "Kolya",
        "302": "L.A. Confidential",
        "51": "Legends of the Fall",
        "377": "Heavyweights",
    }
    assert ds.item_text()[ds.item_ids().index("51") - 1]["categories"] == ["Drama", "Romance", "War", "Western"]
    assert ds.meta["items_with_metadata"] == 4


def test_a_malformed_recbole_item_row_names_its_file_and_line(tmp_path):
    write(tmp_path / "x.inter", "user_id:token\titem_id:token\nu\ta\nu\tb\n")
    write(tmp_path / "x.item", "item_id:token\ttitle:token_seq\na\tFirst\nb\n")
    with pytest.raises(ValueError, match=r"x\.item:3: 1 tab-separated fields where the header names 2"):
        prepare([tmp_path / "x.inter"], tmp_path / "ds")


def test_recbole_trains_on_an_export_as_written(tmp_path):
    pytest.importorskip("recbole")
    ds = prepare_synthetic(tmp_path / "syn", n_users=80, n_items=50, seed=2)
    out = export_recbole(ds.path, tmp_path / "rb" / "syn", max_len=20)
    result = tmp_path / "recbole.json"
    command = [sys.executable, str(HARNESS), "--recbole-side", "--settings", str(out / "syn.yaml")]
    command += ["--result", str(result), "--epochs", "1", "--max-len", "20", "--threads", "1"]
    subprocess.run(command, check=True, cwd=tmp_path, capture_output=True, timeout=600)
    test = json.loads(result.read_text())["test"]
    assert test["llmesr_protocol"]["count"] == ds.n_users  # every user's last item, as ours
    # The harness's scoring, with RecBole's rule, gives RecBole's own figures (it rounds to 4 places).
    for metric in ("NDCG@10", "HR@10"):
        assert test["recbole_protocol_recomputed"][metric] == pytest.approx(test["recbole_protocol"][metric], abs=1e-4)
