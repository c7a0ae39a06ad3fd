"""Item and user prompts."""

import pytest

from llmesr import prepare
from llmesr.text import DEFAULT_ITEM_TEMPLATE, item_prompt, item_prompts, user_prompts

from conftest import write


def test_item_prompt_fields_unknown_and_truncation():
    record = {"title": "Rose Oil", "brand": None, "price": "9.5", "categories": ["Beauty", "Skin"], "description": ""}
    assert item_prompt(record) == (
        "The item is called Rose Oil, made by unknown, priced at 9.5. "
        "It belongs to the categories Beauty, Skin. Description: unknown"
    )
    long = item_prompt({"title": "x", "description": "word " * 500}, "{description}", max_words=3)
    assert long == "word word word ..."
    assert item_prompt({}, "{title}|{categories}") == "unknown|unknown"


def test_prompts_from_each_metadata_layout(tmp_path):
    seq = write(tmp_path / "s.txt", "1 10 11 12\n")
    amazon = write(
        tmp_path / "meta.json",
        "{'asin': '10', 'title': 'Gel', 'brand': 'Acme', 'price': 4.5, 'categories': [['Beauty', 'Hair']]}\n"
        '{"asin": "11", "title": "Soap", "category": ["Bath"], "description": ["Mild", "soap"]}\n',
    )
    ds = prepare([seq], tmp_path / "out", items=[amazon], item_key="asin")
    prompts = item_prompts(ds, "{title} by {brand} ({price}): {categories}. {description}")
    assert prompts == [
        "Gel by Acme (4.5): Beauty, Hair. unknown",
        "Soap by unknown (unknown): Bath. Mild soap",
        "unknown by unknown (unknown): unknown. unknown",  # item 12 has no metadata
    ]
    yelp = write(tmp_path / "b.json", '{"business_id": "10", "name": "Cafe", "categories": "Food, Coffee"}\n')
    ds = prepare([seq], tmp_path / "out2", items=[yelp])
    assert item_prompts(ds, "{title}: {categories}")[0] == "Cafe: Food, Coffee"


def test_bad_template():
    with pytest.raises(ValueError, match=r"template field \{color\} is unknown"):
        item_prompts(None, DEFAULT_ITEM_TEMPLATE + " {color}")  # type: ignore[arg-type]


def test_user_text_never_contains_validation_or_test_items(tmp_path):
    seq = write(tmp_path / "s.txt", "1 1 2 3 4\n2 4 3\n")
    items = write(tmp_path / "i.jsonl", "".join(f'{{"item_id": {i}, "title": "T{i}"}}\n' for i in range(1, 5)))
    ds = prepare([seq], tmp_path / "out", items=[items])
    users = user_prompts(ds)
    assert users[0] == "A user who interacted with these items, oldest first: T1; T2"  # T3 valid, T4 test
    assert users[1] == "A user who interacted with these items, oldest first: T4; T3"  # too short to hold out
    assert user_prompts(ds, "{titles}", max_items=1)[0] == "T2"


def test_prompts_are_bounded_whatever_the_metadata(tmp_path):
    seq = write(tmp_path / "s.txt", "1 1 2 3 4\n2 4 3\n")
    huge = "x" * 1_000_000  # a 1 MB title without spaces: one "word"
    items = write(tmp_path / "i.jsonl", "".join(f'{{"item_id": {i}, "title": "{huge}"}}\n' for i in range(1, 5)))
    ds = prepare([seq], tmp_path / "out", items=[items])
    assert max(len(p) for p in item_prompts(ds)) < 1500
    assert max(len(p) for p in user_prompts(ds)) < 50 * 1010  # at most 50 titles of 1,000 characters
