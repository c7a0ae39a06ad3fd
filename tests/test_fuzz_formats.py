"""Parser fuzzing over every input format: valid samples mutated byte by byte (and plain random bytes)
must either prepare into a dataset folder that loads and passes its checks, or fail with a DataError
naming the input file. Never another exception, never a half-written folder."""

import tempfile
from pathlib import Path

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from llmesr import DataError, prepare
from llmesr.data import load_dataset

SAMPLES = {
    "csv": ("x.csv", b"user,item,rating,time\n1,2,4.5,100\n1,3,5,200\n2,2,3,150\n2,4,1,90\n1,4,2,300\n"),
    "tsv": ("x.tsv", b"user_id\titem_id\ttimestamp\na\tb\t2\na\tc\t1\nb\tc\t3\nb\td\t4\na\td\t5\n"),
    "recbole": (
        "x.inter",
        b"user_id:token\titem_id:token\trating:float\ttimestamp:float\n1\t5\t4.0\t97.0\n1\t6\t3\t96\n",
    ),
    "seqlines": ("x.txt", b"1 2 3 4\n2 3 4 5 6\n3 1 1 2\n"),
    "llmesr": ("inter.txt", b"1 2\n1 3\n1 4\n2 3\n2 5\n2 6\n"),
    "movielens": ("u.data", b"1\t2\t5\t300\n1\t1\t3\t100\n2\t1\t4\t200\n2\t3\t4\t250\n1\t3\t1\t400\n"),
    "amazon": (
        "r.json",
        b'{"reviewerID": "A1", "asin": "B0", "overall": 5.0, "unixReviewTime": 1}\n'
        b"{'reviewerID': 'A2', 'asin': 'B1', 'overall': 4.0, 'reviewTime': '01 2, 2014'}\n"
        b'{"reviewerID": "A1", "asin": "B1", "overall": 3.0, "unixReviewTime": 5}\n',
    ),
    "amazon2023": (
        "All_Beauty.jsonl",
        b'{"rating": 5.0, "asin": "B0", "parent_asin": "P0", "user_id": "U1", "timestamp": 1588687728923}\n'
        b'{"rating": 4.0, "asin": "B1", "parent_asin": "P1", "user_id": "U2", "timestamp": 1588687729000}\n'
        b'{"rating": 3.0, "asin": "B2", "parent_asin": "P1", "user_id": "U1", "timestamp": 1600000000000}\n',
    ),
    "yelp": (
        "y.json",
        b'{"user_id": "u", "business_id": "b", "stars": 5, "date": "2020-01-01"}\n'
        b'{"user_id": "u", "business_id": "c", "stars": 4, "date": "2020-01-02 10:00:00"}\n'
        b'{"user_id": "v", "business_id": "c", "stars": 1, "date": "2021-03-04"}\n',
    ),
}

# Bytes that matter to the parsers: separators, quotes, digits, signs, brackets, UTF-8 lead bytes.
INTERESTING = st.sampled_from(list(b",\t \n\r\"'{}[]:.-+0123456789eE") + [0x00, 0xC3, 0xFF])


@st.composite
def mutated(draw, sample: bytes) -> bytes:
    data = bytearray(sample)
    for _ in range(draw(st.integers(1, 6))):
        where = draw(st.integers(0, len(data)))
        op = draw(st.sampled_from(["insert", "delete", "replace", "truncate", "duplicate"]))
        if op == "insert":
            data[where:where] = bytes(draw(st.lists(INTERESTING, min_size=1, max_size=4)))
        elif op == "delete" and data:
            del data[where : where + draw(st.integers(1, 4))]
        elif op == "replace" and where < len(data):
            data[where] = draw(INTERESTING)
        elif op == "truncate":
            del data[where:]
        elif op == "duplicate":
            data += data[:where]
    return bytes(data)


def check(fmt: str, name: str, content: bytes) -> None:
    with tempfile.TemporaryDirectory() as tmp:
        src = Path(tmp) / name
        src.write_bytes(content)
        out = Path(tmp) / "out"
        try:
            ds = prepare([src], out, format=fmt)
        except DataError as e:
            assert str(e).startswith(str(src)), str(e)
            assert not out.exists()
            return
        again = load_dataset(out)  # passes the load-time checks
        assert again.n_interactions == ds.n_interactions > 0


@pytest.mark.parametrize("fmt", sorted(SAMPLES))
@settings(max_examples=40, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(data=st.data())
def test_mutated_inputs_parse_or_fail_cleanly(fmt, data):
    name, sample = SAMPLES[fmt]
    check(fmt, name, data.draw(mutated(sample)))


@pytest.mark.parametrize("fmt", sorted(SAMPLES))
@settings(max_examples=15, deadline=None)
@given(content=st.binary(max_size=200))
def test_random_bytes_parse_or_fail_cleanly(fmt, content):
    check(fmt, SAMPLES[fmt][0], content)
