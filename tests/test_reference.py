"""Filtering, ordering, remapping and splitting against a plain-Python reference on random inputs,
and the parsers against random bytes: a parse or a clean error, never a crash."""

import contextlib
import tempfile
from pathlib import Path

import numpy as np
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from llmesr import DataError, prepare


def id_order(keys, all_input_ids):
    """Numeric order when every id of the input (filtered out or not) is a number, else bytewise."""
    if all(k.isdigit() for k in all_input_ids):
        return sorted(keys, key=lambda k: (int(k), k))
    return sorted(keys, key=lambda k: k.encode())


def reference(rows, min_user, min_item, single_pass, dedup, min_rating):
    """rows: (user, item, time, rating) in input order -> {user: [items]}, user order, item order."""
    rows = [r for r in rows if min_rating is None or r[3] >= min_rating]
    by_user: dict[str, list] = {}
    for r in rows:
        by_user.setdefault(r[0], []).append(r)
    seqs = {u: [r[1] for r in sorted(rs, key=lambda r: r[2])] for u, rs in by_user.items()}  # stable
    if dedup:
        seqs = {u: [x for k, x in enumerate(s) if k == 0 or s[k - 1] != x] for u, s in seqs.items()}
    if min_user > 1 or min_item > 1:
        while True:
            item_count: dict[str, int] = {}
            for s in seqs.values():
                for x in s:
                    item_count[x] = item_count.get(x, 0) + 1
            new = {}
            for u, s in seqs.items():
                kept = [x for x in s if len(s) >= min_user and item_count[x] >= min_item]
                if kept:
                    new[u] = kept
            changed = sum(map(len, new.values())) != sum(map(len, seqs.values()))
            seqs = new
            if not changed or single_pass:
                break
    return seqs


user_ids = st.sampled_from(["1", "2", "3", "10", "11", "25"]) | st.sampled_from(["a", "b", "B", "é"])
rows_strategy = st.lists(
    st.tuples(user_ids, st.sampled_from([str(i) for i in range(1, 9)]), st.integers(0, 5), st.integers(1, 5)),
    min_size=1,
    max_size=60,
)


@settings(max_examples=150, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(
    rows=rows_strategy,
    min_user=st.integers(0, 4),
    min_item=st.integers(0, 4),
    single_pass=st.booleans(),
    dedup=st.booleans(),
    min_rating=st.none() | st.integers(1, 5),
)
def test_matches_reference(rows, min_user, min_item, single_pass, dedup, min_rating):
    expected = reference(rows, min_user, min_item, single_pass, dedup, min_rating)
    with tempfile.TemporaryDirectory() as tmp:
        src = Path(tmp) / "log.csv"
        src.write_text("user,item,time,rating\n" + "".join(f"{u},{i},{t},{r}\n" for u, i, t, r in rows))
        try:
            ds = prepare(
                [src],
                Path(tmp) / "out",
                min_user=min_user,
                min_item=min_item,
                core_mode="single-pass" if single_pass else "iterative",
                dedup_consecutive=dedup,
                min_rating=min_rating,
            )
        except DataError as e:
            assert not expected, e
            assert "left no interactions" in str(e)
            return
        users, items = ds.user_ids(), ds.item_ids()
        assert users[1:] == id_order(list(expected), [r[0] for r in rows])
        assert items[1:] == id_order({x for s in expected.values() for x in s}, [r[1] for r in rows])
        got = {users[u]: [items[i] for i in ds.history(u)] for u in range(1, ds.n_users + 1)}
        assert got == expected
        # Leave-one-out: last = test, second-to-last = valid, users under 3 items train-only.
        for u in range(1, ds.n_users + 1):
            h = ds.history(u)
            if len(h) >= 3:
                assert (ds.test[u], ds.valid[u]) == (h[-1], h[-2])
                np.testing.assert_array_equal(ds.train_history(u), h[:-2])
            else:
                assert ds.test[u] == ds.valid[u] == 0
                np.testing.assert_array_equal(ds.train_history(u), h)


VALID_LINES = {
    "csv": "user,item,time,rating\n1,2,3,4.5\n",
    "tsv": "user\titem\ttime\n1\t2\t2020-01-01\n",
    "seqlines": "1 2 3 4\n",
    "llmesr": "1 2\n1 3\n",
    "recbole": "user_id:token\titem_id:token\n1\t2\n",
    "amazon": '{"reviewerID": "a", "asin": "b", "overall": 5.0, "unixReviewTime": 10}\n'
    "{'reviewerID': 'a', 'asin': 'c', 'overall': 4.0, 'unixReviewTime': 11}\n",
    "yelp": '{"user_id": "u", "business_id": "b", "stars": 4, "date": "2020-01-01 10:00:00"}\n',
    "movielens": "1\t2\t3\t4\n1::3::4::5\n",
}


def mutate(data: bytes, edits: list[tuple[int, int]]) -> bytes:
    out = bytearray(data)
    for pos, byte in edits:
        if out:
            out[pos % len(out)] = byte
    return bytes(out)


@settings(max_examples=300, deadline=None)
@given(
    fmt=st.sampled_from(sorted(VALID_LINES)),
    edits=st.lists(st.tuples(st.integers(0, 10_000), st.integers(0, 255)), max_size=6),
    extra=st.binary(max_size=80),
    skip=st.booleans(),
)
def test_parsers_never_crash(fmt, edits, extra, skip):
    data = mutate(VALID_LINES[fmt].encode(), edits) + extra
    with tempfile.TemporaryDirectory() as tmp:
        src = Path(tmp) / "input"
        src.write_bytes(data)
        try:
            ds = prepare([src], Path(tmp) / "out", format=fmt, skip_bad_lines=skip)
        except DataError:
            return
        assert ds.n_interactions >= 1
        assert ds.indptr[-1] == ds.n_interactions


@settings(max_examples=200, deadline=None)
@given(data=st.binary(max_size=200), fmt=st.sampled_from(["auto", *sorted(VALID_LINES)]))
def test_random_bytes(data, fmt):
    with tempfile.TemporaryDirectory() as tmp:
        src = Path(tmp) / "input.gz"
        src.write_bytes(data)
        try:
            prepare([src], Path(tmp) / "out", format=fmt)
        except DataError:
            pass
        except OSError as e:  # a corrupt gzip stream is an I/O error naming the file
            assert "input.gz" in str(e)


@settings(max_examples=200, deadline=None)
@given(line=st.text(max_size=120) | st.binary(max_size=120).map(lambda b: b.decode("latin-1")))
def test_item_metadata_lines_never_crash(line):
    with tempfile.TemporaryDirectory() as tmp:
        src = Path(tmp) / "s.txt"
        src.write_text("1 2 3\n")
        items = Path(tmp) / "items"
        items.write_bytes(("{'asin': " + line + "\n").encode("utf-8", "surrogatepass"))
        with contextlib.suppress(DataError):
            prepare([src], Path(tmp) / "out", items=[items], item_key="asin")
