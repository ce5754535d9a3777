"""The course site (scripts/build_book.py, `make book`): its skeleton (every page, the notebooks unexecuted) builds
with sphinx -W, every internal link and image of the HTML resolves, no page loads anything from the internet, the
table of contents follows the notebook order, and widget outputs become the static outputs they captured."""
import importlib.util
import re
from html.parser import HTMLParser
from pathlib import Path
from urllib.parse import unquote, urlsplit

import nbformat
import pytest

ROOT = Path(__file__).resolve().parents[1]
spec = importlib.util.spec_from_file_location("build_book", ROOT / "scripts" / "build_book.py")
build_book = importlib.util.module_from_spec(spec)
spec.loader.exec_module(build_book)


class Refs(HTMLParser):
    """Collects (tag, attribute, value) of every href / src, and every id, of one HTML page."""

    def __init__(self):
        super().__init__()
        self.refs, self.ids = [], set()

    def handle_starttag(self, tag, attrs):
        for name, value in attrs:
            if name in ("href", "src") and value:
                self.refs.append((tag, name, value))
            if name == "id" and value:
                self.ids.add(value)


def pages(html: Path) -> list[Path]:
    """The built pages (not the theme's templates under _static/)."""
    return sorted(p for p in html.rglob("*.html") if "_static" not in p.relative_to(html).parts)


def parse(page: Path) -> Refs:
    refs = Refs()
    refs.feed(page.read_text(encoding="utf-8"))
    return refs


@pytest.fixture(scope="module")
def html(tmp_path_factory) -> Path:
    out = tmp_path_factory.mktemp("book")
    assert build_book.main(["--no-execute", "--out", str(out)]) == 0, "sphinx-build -W failed (see its warnings)"
    return out / "html"


def test_every_page_and_notebook_is_built(html):
    for nb in build_book.notebooks():
        assert (html / "notebooks" / f"{nb.stem}.html").exists(), nb.name
    for docs in build_book.DOCS_TOC.values():
        for doc in docs:
            assert (html / f"{doc}.html").exists(), doc
    pages = {p.relative_to(ROOT / "docs").with_suffix("") for p in (ROOT / "docs").rglob("*.md")}
    listed = {Path(d).relative_to("docs") for docs in build_book.DOCS_TOC.values() for d in docs if d.startswith("docs/")}
    assert pages == listed, f"docs pages outside the table of contents: {sorted(map(str, pages - listed))}"


def test_internal_links_and_images_resolve(html):
    ids = {page: parse(page).ids for page in pages(html)}
    for page in ids:
        for tag, attr, value in parse(page).refs:
            url = urlsplit(value)
            if url.scheme or value.startswith(("//", "mailto:", "javascript:")):
                continue
            target = (page.parent / unquote(url.path)).resolve() if url.path else page
            assert target.exists(), f"{page.relative_to(html)}: <{tag} {attr}={value}> points at nothing"
            if url.fragment and target.suffix == ".html" and target in ids:
                assert url.fragment in ids[target], f"{page.relative_to(html)}: no #{url.fragment} in {url.path}"


def test_no_asset_comes_from_the_internet(html):
    for page in pages(html):
        for tag, attr, value in parse(page).refs:
            if tag != "a":
                assert not re.match(r"(https?:)?//", value), f"{page.relative_to(html)} loads {value}"
    assert (html / "_static" / "MathJax.js").exists()


def test_table_of_contents_follows_the_notebook_order(html):
    hrefs = [v for tag, attr, v in parse(html / "README.html").refs if tag == "a" and v.startswith("notebooks/")]
    order = list(dict.fromkeys(urlsplit(v).path for v in hrefs))
    assert order[:len(build_book.notebooks())] == [f"notebooks/{p.stem}.html" for p in build_book.notebooks()]


def test_widget_outputs_become_what_they_captured():
    plot = nbformat.v4.new_output("display_data", data={"image/png": "iVBOR", "text/plain": "<Figure>"})
    state = {
        "box": {"model_name": "VBoxModel", "state": {"children": ["IPY_MODEL_slider", "IPY_MODEL_menu", "IPY_MODEL_out"]}},
        "slider": {"model_name": "FloatSliderModel", "state": {"description": "sparsity", "value": 0.5}},
        "menu": {"model_name": "DropdownModel", "state": {"description": "scope", "index": 1,
                                                          "_options_labels": ["global", "layer"]}},
        "out": {"model_name": "OutputModel", "state": {"outputs": [plot]}},
    }
    view = nbformat.v4.new_output("display_data", data={
        "text/plain": "interactive(...)", build_book.WIDGET_VIEW: {"model_id": "box", "version_major": 2}})
    text = nbformat.v4.new_output("stream", name="stdout", text="before\n")
    nb = nbformat.v4.new_notebook(cells=[nbformat.v4.new_code_cell("w", outputs=[text, view])])
    nb.metadata["widgets"] = {build_book.WIDGET_STATE: {"state": state}}
    build_book.freeze_widgets(nb)
    outputs = nb.cells[0].outputs
    assert "widgets" not in nb.metadata
    assert [o.output_type for o in outputs] == ["stream", "stream", "display_data"]
    assert outputs[0].text == "before\n"
    assert "sparsity = 0.5, scope = layer" in outputs[1].text
    assert outputs[2].data["image/png"] == "iVBOR"
    assert not any(build_book.WIDGET_VIEW in o.get("data", {}) for o in outputs)
