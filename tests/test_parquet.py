"""Parquet input (through pyarrow): the same dataset as the same rows in a TSV file; errors name the
Parquet file, row and column."""

import json

import pytest

pa = pytest.importorskip("pyarrow")
pq = pytest.importorskip("pyarrow.parquet")

from llmesr import DataError, prepare  # noqa: E402

from conftest import write  # noqa: E402


def histories(ds):
    users, items = ds.user_ids(), ds.item_ids()
    return {users[u]: [items[i] for i in ds.history(u)] for u in range(1, ds.n_users + 1)}


def table(**columns):
    return pa.table(columns)


def test_parquet_reads_like_the_same_rows_as_tsv(tmp_path):
    times_ms = [1_600_000_000_500, 1_600_000_100_000, 1_500_000_000_000, 1_600_000_000_000, 1_600_000_200_000]
    t = table(
        user_id=["u1", "u1", "u1", "u2", "u2"],
        item_id=pa.array(["b", "a", "c", "a", "c"]).dictionary_encode(),
        rating=[4.0, 5.0, 3.0, 1.0, 2.0],
        timestamp=pa.array(times_ms, pa.timestamp("ms", tz="UTC")),
        images=[["x"], [], [], [], []],  # a list column: left out
    )
    pq.write_table(t, tmp_path / "log.parquet", row_group_size=2)  # several row groups
    ds = prepare([tmp_path / "log.parquet"], tmp_path / "p", min_rating=2)
    tsv = "user_id\titem_id\trating\ttimestamp\n" + "".join(
        f"{u}\t{i}\t{r}\t{ms // 1000}\n"
        for u, i, r, ms in zip(*[t[c].to_pylist() for c in ("user_id", "item_id", "rating")], times_ms, strict=True)
    )
    same = prepare([write(tmp_path / "log.tsv", tsv)], tmp_path / "t", min_rating=2)
    assert histories(ds) == histories(same) == {"u1": ["c", "b", "a"], "u2": ["c"]}
    assert list(ds.timestamps) == list(same.timestamps)
    meta = json.loads((tmp_path / "p" / "meta.json").read_text())
    assert meta["sources"][0]["path"] == str(tmp_path / "log.parquet") and meta["input_format"] == "tsv"
    assert meta["sources"][0]["read_as"] == "parquet rows as tsv"


def test_parquet_errors_name_the_file_row_and_column(tmp_path):
    pq.write_table(table(user_id=["u1", None], item_id=["a", "b"]), tmp_path / "nulls.parquet")
    with pytest.raises(DataError, match=r"nulls.parquet: row 2: column 'user_id' is null"):
        prepare([tmp_path / "nulls.parquet"], tmp_path / "o1")
    pq.write_table(table(user=["u1", "u2"], item=["a", "b"], rating=["4", "five"]), tmp_path / "bad.parquet")
    with pytest.raises(DataError, match=r"bad.parquet: row 2: .*five"):
        prepare([tmp_path / "bad.parquet"], tmp_path / "o2")
    (tmp_path / "broken.parquet").write_bytes(b"PAR1 not really")
    with pytest.raises(DataError, match=r"broken.parquet: not a readable Parquet file"):
        prepare([tmp_path / "broken.parquet"], tmp_path / "o3")
    assert not any((tmp_path / f"o{i}").exists() for i in (1, 2, 3))
