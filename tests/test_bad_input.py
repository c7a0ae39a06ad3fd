"""Malformed input gets a clear error naming the file, the line and the problem, never a crash and
never a half-written dataset."""

import json
import subprocess
import sys

import pytest

from llmesr import DataError, _native, prepare

from conftest import write

CASES = [
    ("missing.csv", b"user,item,time\n1,2,3\n4,5\n", "missing.csv:3: missing columns: expected 3 fields, found 2"),
    ("extra.csv", b"user,item\n1,2\n1,2,3\n", "extra.csv:3: extra columns: expected 2 fields, found 3"),
    ("utf8.csv", b"user,item\n1,2\n\xff\xfe,3\n", "utf8.csv:3: not valid UTF-8 (byte 0xFF at column 1)"),
    ("num.csv", b"user,item,rating\n1,2,4.5\n1,3,five\n", "num.csv:3: rating 'five' is not a number"),
    ("date.csv", b"user,item,date\n1,2,2020-01-01\n1,3,2020-13-01\n", "date.csv:3: timestamp '2020-13-01' is neither"),
    ("quote.csv", b'user,item\n1,"2\n', "quote.csv:2: unterminated quoted field 2"),
    ("empty.csv", b"", "empty.csv: the file is empty"),
    ("header.csv", b"user,item,time\n", "header.csv: the file has a header but no data lines"),
    ("nouser.csv", b"a,b\n1,2\n", "nouser.csv:1: no user column in the header"),
    (
        "inter.txt",
        b"1 2\n99999999999999999999 3\n",
        "inter.txt:2: user id 99999999999999999999 does not fit in 64 bits",
    ),
    ("neg.txt", b"1 2\n1 -3\n", "neg.txt:2: item id '-3' is not a non-negative integer"),
    (
        "r.json",
        b'{"reviewerID": "a", "asin": "b", "overall": 5, "unixReviewTime": 1}\n{"reviewerID": 1}\n',
        "r.json:2: bad Amazon review",
    ),
    (
        "y.json",
        b'{"user_id": "u", "business_id": "b", "stars": 5, "date": "2020-01-01"}\n{"user_id": "u"\n',
        "y.json:2: bad Yelp review",
    ),
    ("seq.txt", b"1 2 3\n4\n", "seq.txt:2: a sequence line needs a user id and at least one item id"),
]


@pytest.mark.parametrize(("name", "content", "message"), CASES, ids=[c[0] for c in CASES])
def test_clear_error(tmp_path, name, content, message):
    src = write(tmp_path / name, content)
    with pytest.raises(DataError) as err:
        prepare([src], tmp_path / "out")
    assert str(err.value).startswith(str(tmp_path / name))
    assert message in str(err.value)
    assert not (tmp_path / "out").exists()
    assert [p.name for p in tmp_path.iterdir()] == [name]  # no temporary folder left behind


def test_skip_bad_lines_counts_them(tmp_path):
    src = write(tmp_path / "x.csv", b"user,item,rating\n1,2,5\n1,3\n\xff,4,1\n2,2,x\n2,3,1\n")
    ds = prepare([src], tmp_path / "out", skip_bad_lines=True)
    assert ds.n_interactions == 2
    assert ds.meta["skipped_lines"] == 3
    assert ds.meta["skipped_examples"][0].endswith("x.csv:3: missing columns: expected 3 fields, found 2")
    assert json.loads((tmp_path / "out" / "meta.json").read_text())["skipped_lines"] == 3


def test_all_lines_bad(tmp_path):
    src = write(tmp_path / "x.csv", b"user,item\n1\n2\n")
    with pytest.raises(DataError, match="no valid interactions: all 2 lines were skipped"):
        prepare([src], tmp_path / "out", skip_bad_lines=True)


def test_filters_that_leave_nothing(tmp_path):
    src = write(tmp_path / "x.csv", "user,item,rating,time\n1,1,2,5\n1,2,2,6\n")
    with pytest.raises(DataError, match="the filters left no interactions"):
        prepare([src], tmp_path / "out", min_user=3)
    with pytest.raises(DataError, match="left no interactions .* 2 below --min-rating"):
        prepare([src], tmp_path / "out", min_rating=4)
    seq = write(tmp_path / "s.txt", "1 2 3\n")
    with pytest.raises(DataError, match="date window needs timestamps"):
        prepare([seq], tmp_path / "out", since=0)
    with pytest.raises(DataError, match="--min-rating needs ratings"):
        prepare([seq], tmp_path / "out", min_rating=1)


def test_bad_item_file(tmp_path):
    src = write(tmp_path / "s.txt", "1 2 3\n")
    items = write(tmp_path / "items.jsonl", '{"item_id": 2, "title": "a"}\n{"title": "no id"}\n')
    with pytest.raises(DataError, match=r"items.jsonl:2: no item id field"):
        prepare([src], tmp_path / "out", items=[items])
    ds = prepare([src], tmp_path / "out", items=[items], skip_bad_lines=True)
    assert ds.meta["items_with_metadata"] == 1 and ds.meta["skipped_lines"] == 1


def test_missing_file_and_existing_output(tmp_path):
    with pytest.raises(FileNotFoundError, match="nope.csv"):
        prepare([tmp_path / "nope.csv"], tmp_path / "out")
    good = write(tmp_path / "good.txt", "1 2 3\n")
    prepare([good], tmp_path / "out")
    with pytest.raises(FileExistsError, match="--overwrite"):
        prepare([good], tmp_path / "out")
    # A failing overwrite leaves the old result in place.
    bad = write(tmp_path / "bad.txt", "1 2 3\n4\n")
    with pytest.raises(DataError):
        prepare([bad], tmp_path / "out", overwrite=True)
    assert json.loads((tmp_path / "out" / "meta.json").read_text())["n_interactions"] == 2
    replaced = prepare([write(tmp_path / "new.txt", "1 2 3 4\n")], tmp_path / "out", overwrite=True)
    assert replaced.n_interactions == 3
    assert sorted(p.name for p in tmp_path.iterdir()) == ["bad.txt", "good.txt", "new.txt", "out"]


def test_panic_becomes_exception():
    with pytest.raises(RuntimeError, match="internal error .* deliberate test panic"):
        _native._panic_for_test()


def test_progress_callback_can_cancel(tmp_path):
    src = write(tmp_path / "s.txt", "1 2 3\n")

    def stop(stage, done, total):
        raise KeyboardInterrupt

    with pytest.raises(KeyboardInterrupt):
        prepare([src], tmp_path / "out", progress=stop)
    assert not (tmp_path / "out").exists()


def test_cli_reports_one_line(tmp_path):
    src = write(tmp_path / "x.csv", "user,item\n1\n")
    run = subprocess.run(
        [sys.executable, "-m", "llmesr.cli.prepare", str(src), "--out", str(tmp_path / "o"), "-q"],
        capture_output=True,
        text=True,
    )
    assert run.returncode == 2
    assert run.stderr.strip() == f"error: {src}:2: missing columns: expected 2 fields, found 1"
