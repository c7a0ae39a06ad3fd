"""llmesr-export: RecBole atomic files that read back as the same dataset (users, order, split)."""

import numpy as np
import pytest

from llmesr import prepare, prepare_synthetic
from llmesr.cli import export as export_cli
from llmesr.export import export_recbole

from conftest import write


def histories(ds):
    users, items = ds.user_ids(), ds.item_ids()
    return {users[u]: [items[i] for i in ds.history(u)] for u in range(1, ds.n_users + 1)}


def test_recbole_files_read_back_as_the_same_dataset(tmp_path):
    # Tied timestamps (kept in input order by us): the exported positions keep that order for RecBole.
    src = write(tmp_path / "log.csv", "user,item,rating,time\nu1,b,4,10\nu1,a,5,10\nu1,c,3,5\nu2,a,1,1\nu2,c,2,2\n")
    ds = prepare([src], tmp_path / "ds")
    out = export_recbole(ds.path, tmp_path / "mine")
    inter = (out / "mine.inter").read_text().splitlines()
    assert inter[0] == "user_id:token\titem_id:token\ttimestamp:float\trating:float"
    assert inter[1:4] == ["u1\tc\t0\t3", "u1\tb\t1\t4", "u1\ta\t2\t5"]
    back = prepare([out / "mine.inter"], tmp_path / "back")
    assert back.meta["input_format"] == "recbole"
    assert histories(back) == histories(ds)
    np.testing.assert_array_equal(back.ratings, ds.ratings)
    settings = (out / "mine.yaml").read_text()
    assert "eval_args: {split: {LS: valid_and_test}, order: TO, group_by: user, mode: full}" in settings
    assert "load_col: {inter: [user_id, item_id, timestamp, rating]}" in settings
    assert f'data_path: "{tmp_path.resolve()}"' in settings and 'dataset: "mine"' in settings
    assert "loss_type: CE\ntrain_neg_sample_args: ~" in settings  # RecBole 1.2 refuses CE without the second
    assert not (out / "mine.item").exists()  # no item text in this dataset


def test_item_text_and_the_command(tmp_path, capsys):
    ds = prepare_synthetic(tmp_path / "syn", n_users=40, n_items=30, seed=3)
    assert export_cli.main([str(ds.path), "--out", str(tmp_path / "syn-rb"), "--max-len", "50"]) == 0
    assert "dataset='syn-rb'" in capsys.readouterr().out
    rows = (tmp_path / "syn-rb" / "syn-rb.item").read_text().splitlines()
    assert rows[0] == "item_id:token\ttitle:token_seq\tcategories:token_seq" and len(rows) == ds.n_items + 1
    first = ds.item_text()[0]
    assert rows[1] == f"{ds.item_ids()[1]}\t{first['title']}\t{' '.join(first['categories'])}"
    assert "MAX_ITEM_LIST_LENGTH: 50" in (tmp_path / "syn-rb" / "syn-rb.yaml").read_text()
    back = prepare([tmp_path / "syn-rb" / "syn-rb.inter"], tmp_path / "back")
    assert histories(back) == histories(ds)
    # An existing export is replaced only with --overwrite; a foreign folder never.
    assert export_cli.main([str(ds.path), "--out", str(tmp_path / "syn-rb")]) == 2
    assert "--overwrite" in capsys.readouterr().err
    assert export_cli.main([str(ds.path), "--out", str(tmp_path / "syn-rb"), "--overwrite"]) == 0
    (tmp_path / "other").mkdir()
    assert export_cli.main([str(ds.path), "--out", str(tmp_path / "other"), "--overwrite"]) == 2
    assert "not a folder this command wrote" in capsys.readouterr().err


def test_an_id_with_a_tab_is_refused(tmp_path):
    # JSON ids may hold a tab, which would split a RecBole row.
    src = write(tmp_path / "r.jsonl", '{"rating": 5.0, "parent_asin": "P\\tX", "user_id": "U1", "timestamp": 1}\n')
    ds = prepare([src], tmp_path / "ds")
    assert ds.item_ids() == [None, "P\tX"]
    with pytest.raises(ValueError, match="item id 'P\\\\tX' cannot be written as a RecBole token"):
        export_recbole(ds.path, tmp_path / "x")
    assert not (tmp_path / "x").exists()
