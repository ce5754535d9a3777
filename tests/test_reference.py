"""The generated reference pages (pruning_lib/reference.py) are what the code generates now: a new method, option or
config field shows up on them without editing docs (after `make docs`), and every field has its description."""
from dataclasses import fields
from pathlib import Path

import pytest

from pruning_lib import reference
from pruning_lib.config import FIELD_HELP, RECIPE_HELP, Config
from pruning_lib.registry import METHODS
from pruning_lib.train import TrainRecipe

ROOT = Path(__file__).resolve().parents[1]


@pytest.mark.parametrize("rel", list(reference.PAGES))
def test_committed_page_is_the_generated_one(rel):
    assert (ROOT / rel).read_text(encoding="utf-8") == reference.PAGES[rel](), (
        f"{rel} is stale: run `make docs` (python -m pruning_lib.reference) and commit it")


def test_every_field_is_described():
    assert set(FIELD_HELP) == {f.name for f in fields(Config)}
    assert set(RECIPE_HELP) == {f.name for f in fields(TrainRecipe)}


def test_every_method_and_option_is_on_the_methods_page():
    page = reference.methods_page()
    for name, m in METHODS.items():
        section = page.split(f"### `{name}`\n", 1)[1].split("\n### ", 1)[0]
        assert m.summary in section
        assert all(f"| `{option}` |" in section for option in m.options)


def test_readme_methods_table_is_the_generated_one():
    text = (ROOT / "README.md").read_text(encoding="utf-8")
    assert reference.README_MARKERS[0] in text and reference.README_MARKERS[1] in text
    assert text == reference.readme_with_glance(text), "README's methods table is stale: run `make docs`"
