"""Every input format, parsed from small fixtures written here, lands in the same dataset layout."""

import json

import numpy as np
import pytest

from llmesr import _native, load_dataset, prepare

from conftest import write


def histories(ds):
    """{raw user: [raw item, ...]} in dataset order."""
    uids, iids = ds.user_ids(), ds.item_ids()
    return {uids[u]: [iids[i] for i in ds.history(u)] for u in range(1, ds.n_users + 1)}


def test_csv_header_mapping_order_and_ratings(tmp_path):
    src = write(
        tmp_path / "log.csv",
        'Rating,UserId,movieId,timestamp\n4,u2,m1,30\n5,u1,m2,20\n3,u1,m1,10\n2,u1,"m,3",20\n',
    )
    ds = prepare([src], tmp_path / "out")
    assert histories(ds) == {"u1": ["m1", "m2", "m,3"], "u2": ["m1"]}  # tie at t=20 keeps input order
    assert ds.timestamps.tolist() == [10, 20, 20, 30]
    assert ds.ratings.tolist() == [3.0, 5.0, 2.0, 4.0]
    assert ds.meta["input_format"] == "csv"


def test_csv_explicit_columns_and_headerless(tmp_path):
    src = write(tmp_path / "a.csv", "who,what,when\n1,10,5\n1,11,6\n")
    ds = prepare([src], tmp_path / "o1", user_col="who", item_col="what", time_col="when")
    assert histories(ds) == {"1": ["10", "11"]}
    src = write(tmp_path / "b.csv", "1,10,4.0,6\n1,11,5.0,5\n")
    ds = prepare([src], tmp_path / "o2", format="csv", columns=["user", "item", "rating", "time"])
    assert histories(ds) == {"1": ["11", "10"]}
    assert ds.ratings.tolist() == [5.0, 4.0]


def test_tsv_and_recbole(tmp_path):
    src = write(tmp_path / "x.tsv", "user_id\titem_id\ttimestamp\na\tb\t2\na\tc\t1\n")
    assert histories(prepare([src], tmp_path / "o1")) == {"a": ["c", "b"]}
    src = write(
        tmp_path / "ml.inter",
        "user_id:token\titem_id:token\trating:float\ttimestamp:float\n1\t5\t4.0\t978300760.0\n1\t6\t3\t978300700\n",
    )
    ds = prepare([src], tmp_path / "o2")
    assert ds.meta["input_format"] == "recbole"
    assert histories(ds) == {"1": ["6", "5"]}


def test_seqlines_and_llmesr_inter(tmp_path):
    src = write(tmp_path / "seq.txt", "1 5 3 5\n2 3\n10 4 4\n")
    ds = prepare([src], tmp_path / "o1")
    assert ds.meta["input_format"] == "seqlines"
    assert histories(ds) == {"1": ["5", "3", "5"], "2": ["3"], "10": ["4", "4"]}
    assert ds.timestamps is None and ds.ratings is None
    src = write(tmp_path / "inter.txt", "1 7\n1 3\n2 3\n")
    ds = prepare([src], tmp_path / "o2")
    assert ds.meta["input_format"] == "llmesr"
    assert histories(ds) == {"1": ["7", "3"], "2": ["3"]}
    assert ds.item_ids() == [None, "3", "7"]  # numeric ids keep numeric order


@pytest.mark.parametrize("gz", [False, True])
def test_amazon_reviews_and_metadata(tmp_path, gz):
    reviews = (
        '{"reviewerID": "A1", "asin": "B2", "overall": 5.0, "unixReviewTime": 200, "reviewText": "ok"}\n'
        '{"reviewerID": "A1", "asin": "B1", "overall": 2.0, "unixReviewTime": 100}\n'
        "{'reviewerID': 'A2', 'asin': 'B1', 'overall': 4.0, 'reviewTime': '01 2, 2014'}\n"
    )
    meta_2014 = (
        "{'asin': 'B1', 'title': 'Rose \\'Oil\\'', 'price': 9.5, 'brand': 'Acme', "
        "'categories': [['Beauty', 'Skin']], 'description': 'Nice'}\n"
    )
    meta_2018 = '{"asin": "B2", "title": "Gel", "category": ["Beauty", "Hair"], "price": "$4"}\n'
    src = write(tmp_path / "reviews.json.gz", reviews, gz=gz)
    m1 = write(tmp_path / "meta_2014.json.gz", meta_2014, gz=gz)
    m2 = write(tmp_path / "meta_2018.json", meta_2018)
    ds = prepare([src], tmp_path / "out", items=[m1, m2], min_rating=3)
    assert ds.meta["input_format"] == "amazon"
    assert histories(ds) == {"A1": ["B2"], "A2": ["B1"]}
    assert ds.meta["removed"]["by_rating"] == 1
    text = {r["raw_id"]: r for r in ds.item_text()}
    assert text["B1"]["title"] == "Rose 'Oil'" and text["B1"]["categories"] == ["Beauty", "Skin"]
    assert text["B1"]["price"] == "9.5" and text["B1"]["brand"] == "Acme"
    assert text["B2"]["categories"] == ["Beauty", "Hair"] and text["B2"]["price"] == "$4"
    assert ds.meta["items_with_metadata"] == 2
    assert len(ds.meta["sources"][0]["blake3"]) == 64


def test_amazon_2023_reviews_and_metadata(tmp_path):
    """McAuley lab's Amazon Reviews 2023: items are product families (parent_asin), times in ms."""
    reviews = (
        '{"rating": 5.0, "title": "Great", "text": "x", "images": [], "asin": "B1a", "parent_asin": "P1", '
        '"user_id": "U1", "timestamp": 1588687728923, "helpful_vote": 0, "verified_purchase": true}\n'
        '{"rating": 4.0, "asin": "B2", "parent_asin": "P2", "user_id": "U1", "timestamp": 1588687728100}\n'
        '{"rating": 3.0, "asin": "B1b", "parent_asin": "P1", "user_id": "U2", "timestamp": 1600000000000}\n'
    )
    meta = (
        '{"main_category": "All Beauty", "title": "Rose Oil", "average_rating": 4.5, "rating_number": 3, '
        '"features": ["Vegan", "Cold pressed"], "description": ["For skin."], "price": 9.5, "images": [], '
        '"store": "Acme", "categories": ["Skin Care"], "details": {"Brand": "Acme Co"}, "parent_asin": "P1"}\n'
        '{"main_category": "All Beauty", "title": "Gel", "features": [], "description": [], "price": null, '
        '"store": null, "categories": [], "details": {"Brand": "Zed"}, "parent_asin": "P2"}\n'
    )
    src, items = write(tmp_path / "All_Beauty.jsonl.gz", reviews, gz=True), write(tmp_path / "meta.jsonl", meta)
    ds = prepare([src], tmp_path / "out", items=[items])
    assert ds.meta["input_format"] == "amazon2023"
    # Times are stored in whole seconds: two reviews in the same second keep the file's order.
    assert histories(ds) == {"U1": ["P1", "P2"], "U2": ["P1"]}
    assert ds.timestamps is not None and list(ds.timestamps[:2]) == [1588687728, 1588687728]
    text = {r["raw_id"]: r for r in ds.item_text()}
    assert text["P1"]["categories"] == ["All Beauty", "Skin Care"] and text["P1"]["brand"] == "Acme"
    assert text["P1"]["description"] == "Vegan Cold pressed For skin." and text["P1"]["price"] == "9.5"
    assert text["P2"]["brand"] == "Zed" and text["P2"].get("price") is None


def test_source_hashes_identify_file_content(tmp_path):
    a = write(tmp_path / "a.txt", "1 2 3\n")
    b = write(tmp_path / "b.txt", "1 2 3\n")
    c = write(tmp_path / "c.txt", "1 2 4\n")
    hashes = [prepare([p], tmp_path / f"out_{p.stem}").meta["sources"][0]["blake3"] for p in (a, b, c)]
    assert hashes[0] == hashes[1] != hashes[2]


def test_yelp_reviews_and_business(tmp_path):
    reviews = (
        '{"review_id": "r1", "user_id": "U", "business_id": "b2", "stars": 4, "date": "2019-01-02 10:00:00"}\n'
        '{"review_id": "r2", "user_id": "U", "business_id": "b1", "stars": 1, "date": "2018-05-01 09:00:00"}\n'
    )
    business = (
        '{"business_id": "b1", "name": "Cafe Uno", "categories": "Coffee & Tea, Cafes"}\n'
        '{"business_id": "b2", "name": "Pho Place", "categories": null}\n'
        '{"business_id": "zz", "name": "Unused", "categories": "X"}\n'
    )
    ds = prepare(
        [write(tmp_path / "review.json", reviews)],
        tmp_path / "out",
        items=[write(tmp_path / "business.json", business)],
        since=_native.parse_timestamp("2018-01-01"),
    )
    assert histories(ds) == {"U": ["b1", "b2"]}
    text = ds.item_text()
    assert [t["title"] for t in text] == ["Cafe Uno", "Pho Place"]
    assert text[0]["categories"] == ["Coffee & Tea", "Cafes"] and text[1]["categories"] == []


def test_movielens_100k_and_1m(tmp_path):
    udata = write(tmp_path / "u.data", "1\t2\t5\t300\n1\t1\t3\t100\n2\t1\t4\t200\n")
    flags = "|".join(["0"] * 19)
    uitem = write(
        tmp_path / "u.item",
        f"1|Caf\xe9 Society (1995)|01-Jan-1995||http://x|{flags}\n".encode("latin-1")
        + f"2|GoldenEye (1995)|01-Jan-1995||http://y|0|1|1|{'|'.join(['0'] * 16)}\n".encode("latin-1"),
    )
    ds = prepare([udata], tmp_path / "o1", items=[uitem])
    assert ds.meta["input_format"] == "movielens"
    assert histories(ds) == {"1": ["1", "2"], "2": ["1"]}
    text = ds.item_text()
    assert text[0]["title"] == "Café Society (1995)"
    assert text[1]["categories"] == ["Action", "Adventure"]
    ratings = write(tmp_path / "ratings.dat", "1::10::5::978300760\n1::11::3::978300000\n")
    movies = write(tmp_path / "movies.dat", "10::Toy Story (1995)::Animation|Comedy\n11::Heat (1995)::Action\n")
    ds = prepare([ratings], tmp_path / "o2", items=[movies])
    assert histories(ds) == {"1": ["11", "10"]}
    assert ds.item_text()[0]["categories"] == ["Animation", "Comedy"]


def test_several_inputs_are_concatenated(tmp_path):
    a = write(tmp_path / "a.csv", "user,item,time\n1,1,5\n")
    b = write(tmp_path / "b.csv", "user,item,time\n1,2,1\n2,1,3\n")
    ds = prepare([a, b], tmp_path / "out")
    assert histories(ds) == {"1": ["2", "1"], "2": ["1"]}
    assert [s["path"] for s in ds.meta["sources"]] == [str(a), str(b)]


def test_folder_roundtrip_and_zero_copy(tmp_path):
    src = write(tmp_path / "s.txt", "1 1 2 3 4\n2 2 3\n3 4 1 2\n")
    ds = prepare([src], tmp_path / "out")
    again = load_dataset(tmp_path / "out")
    for name in ("indptr", "items", "train_end", "valid", "test"):
        arr = getattr(again, name)
        assert isinstance(arr, np.memmap), name  # memory-mapped, not read into memory
        np.testing.assert_array_equal(arr, getattr(ds, name))
    assert again.indptr.tolist() == [0, 0, 4, 6, 9]
    assert again.train_end.tolist() == [0, 2, 6, 7]
    assert again.valid.tolist() == [0, 3, 0, 1] and again.test.tolist() == [0, 4, 0, 2]
    meta = json.loads((tmp_path / "out" / "meta.json").read_text())
    assert (meta["n_users"], meta["n_items"], meta["n_interactions"]) == (3, 4, 9)
    assert meta["llmesr_version"] and meta["format_version"] == 1


def test_detect_format(tmp_path):
    assert _native.detect_format(str(write(tmp_path / "x.txt", "1 2 3\n"))) == "seqlines"
    assert _native.detect_format(str(write(tmp_path / "r.dat", "1::2::3::4\n"))) == "movielens"


def test_train_popularity_counts_training_interactions_only(tmp_path):
    ds = prepare([write(tmp_path / "s.txt", "1 1 2 3 4\n2 2 3\n3 4 4 1\n")], tmp_path / "out")
    expected = np.zeros(ds.n_items + 1, dtype=np.int64)
    for u in range(1, ds.n_users + 1):
        for i in ds.train_history(u):
            expected[i] += 1
    np.testing.assert_array_equal(ds.train_popularity, expected)
    assert expected.tolist() == [0, 1, 2, 1, 1]
