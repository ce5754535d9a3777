"""Sphinx configuration of the course site; scripts/build_book.py stages the sources and calls sphinx-build -c book.
Everything the pages load is served from the build itself: the theme's assets ship with sphinx-book-theme, MathJax
(2.7) comes from the jupyter-server-mathjax wheel, the notebooks arrive executed (no execution here) and their widgets
arrive as static outputs, so no page fetches anything from the internet (tests/test_book.py checks the HTML)."""
from pathlib import Path

import jupyter_server_mathjax

project = "pruning-kit"
author = "the pruning-kit authors"
root_doc = "README"
extensions = ["myst_nb"]
myst_enable_extensions = ["dollarmath", "amsmath"]
myst_heading_anchors = 4  # GitHub-style #anchors on headings, as the pages link them
nb_execution_mode = "off"  # executed by scripts/build_book.py, with the widgets frozen
html_theme = "sphinx_book_theme"
html_title = "pruning-kit"
html_theme_options = {"show_toc_level": 2, "home_page_in_toc": True, "use_download_button": False,
                      "use_fullscreen_button": False, "use_repository_button": False}
html_static_path = [str(Path(jupyter_server_mathjax.__file__).parent / "static")]
mathjax_path = "MathJax.js?config=TeX-AMS-MML_HTMLorMML"
suppress_warnings = ["myst.header"]  # pages start at any heading level, as GitHub renders them
