"""The texts that the language model embeds: one prompt per item from its metadata, and one per user
from the titles of the items in the user's TRAINING history (never the validation or test item, which
would leak the answer into the user's embedding)."""

from __future__ import annotations

import string
from typing import Any

from llmesr.data import Dataset
from llmesr.errors import SettingsError

#: The paper's default order: name, brand and price, then categories, then the description.
DEFAULT_ITEM_TEMPLATE = (
    "The item is called {title}, made by {brand}, priced at {price}. "
    "It belongs to the categories {categories}. Description: {description}"
)
DEFAULT_USER_TEMPLATE = "A user who interacted with these items, oldest first: {titles}"
ITEM_FIELDS = ("item_id", "raw_id", "title", "brand", "price", "categories", "description")
UNKNOWN = "unknown"
USER_PROMPT_ITEMS = 50  # a user's prompt lists their last this many training items


def check_template(template: str, fields: tuple[str, ...]) -> None:
    """Rejects a template naming a field that does not exist (before any work)."""
    for _, name, _, _ in string.Formatter().parse(template):
        if name is not None and name not in fields:
            raise SettingsError(f"template field {{{name}}} is unknown; available: {', '.join(fields)}")


MAX_FIELD_CHARS = 1000  # a field's text is cut at max_words words and this many characters


def _truncate_words(text: str, max_words: int) -> str:
    words = text.split()
    if len(words) > max_words:
        text = " ".join(words[:max_words]) + " ..."
    return text if len(text) <= MAX_FIELD_CHARS else text[:MAX_FIELD_CHARS] + " ..."


def item_prompt(record: dict[str, Any], template: str = DEFAULT_ITEM_TEMPLATE, max_words: int = 100) -> str:
    """One item's prompt: missing fields are written as "unknown", long fields cut to `max_words` words
    and `MAX_FIELD_CHARS` characters."""
    values = {}
    for name in ITEM_FIELDS:
        value = record.get(name)
        if isinstance(value, list):
            value = ", ".join(str(v) for v in value)
        text = UNKNOWN if value is None or str(value).strip() == "" else str(value).strip()
        values[name] = _truncate_words(text, max_words)
    return template.format_map(values)


def item_prompts(ds: Dataset, template: str = DEFAULT_ITEM_TEMPLATE, max_words: int = 100) -> list[str]:
    """Prompts of items 1..n_items, in order."""
    check_template(template, ITEM_FIELDS)
    return [item_prompt(r, template, max_words) for r in ds.item_text()]


def user_prompts(ds: Dataset, template: str = DEFAULT_USER_TEMPLATE, max_items: int = USER_PROMPT_ITEMS) -> list[str]:
    """Prompts of users 1..n_users: the titles of the last `max_items` TRAINING items."""
    check_template(template, ("titles",))
    titles = [_truncate_words(str(r.get("title") or r.get("raw_id") or UNKNOWN), 100) for r in ds.item_text()]
    out = []
    for u in range(1, ds.n_users + 1):
        history = ds.train_history(u)[-max_items:]
        out.append(template.format(titles="; ".join(titles[i - 1] for i in history)))
    return out
