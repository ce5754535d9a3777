# Quick start: `make run` (sets up .venv, runs the quickstart table), `make test`, `make lab`, `make student`.
VENV ?= .venv
PY := $(VENV)/bin/python
CONFIG ?= configs/quickstart.json
FAST ?= 0

.PHONY: setup run test lab student clean outputs-filter docs book gpu-check gpu-wheels

setup: $(VENV)/.installed

# torch/torchvision are pinned first so that pip takes this machine's local wheels (CPU works);
# on a GPU machine any torch>=2.3 with CUDA works too.
$(VENV)/.installed: pyproject.toml
	python3 -m venv $(VENV)
	$(PY) -m pip install -q --upgrade pip
	$(PY) -m pip install -q torch==2.14.1 torchvision==0.29.1
	$(PY) -m pip install -q -e ".[notebooks,test]"
	touch $@

run: setup
	$(PY) main_prune.py --config_path $(CONFIG)

# Unit tests and the notebooks in fast mode (tests/ also runs the student edition), then every notebook in full
# mode, as `make lab` runs them.
test: setup
	PRUNING_FAST=1 $(PY) -m pytest tests notebooks --nbval-lax --nbval-current-env -q
	PRUNING_FAST=0 $(PY) -m pytest notebooks --nbval-lax --nbval-current-env -q

# The generated reference pages (docs/reference/*.md) and the README's methods table, from the registry and the
# config schema; tests/test_reference.py fails when they are stale.
docs: setup
	$(PY) -m pruning_lib.reference

# The course site: every notebook executed in fast mode (about 3 min) and the docs pages, as static HTML built offline
# (Sphinx + myst-nb + sphinx-book-theme); open build/book/html/README.html. tests/test_book.py builds its skeleton.
book: setup
	$(PY) scripts/build_book.py

# The GPU check (scripts/gpu_check.py, <= 8 min on one H100 / H200): writes its section of benchmarks/RESULTS.md.
# Without a CUDA device it is a dry run (CPU, tiny sizes, into build/gpu_check/). On a machine without the venv (a
# lent GPU box) it runs with python3; `make gpu-wheels` first fetches the two dependencies it may lack, as wheels.
GPU_PY := $(shell test -x $(PY) && echo $(PY) || echo python3)
gpu-check:
	$(GPU_PY) scripts/gpu_check.py

gpu-wheels:
	python3 -m pip download -q --no-deps --only-binary=:all: -d .whl "torch-pruning>=1.5" "tensorly>=0.8"

student: setup
	$(PY) scripts/make_student.py --out student

# Full mode by default; `make lab FAST=1` opens the course in fast mode (fewer epochs and batches).
lab: setup outputs-filter
	PRUNING_FAST=$(FAST) $(VENV)/bin/jupyter lab notebooks/

# JupyterLab's autosave writes outputs into notebooks/. This git filter (nbstripout, cell ids kept; .gitattributes
# names it) strips them whenever git reads a notebook: `git diff` stays empty after a lecture and no output reaches
# a commit (`git status` may list such a notebook until `git add`, which stores nothing new: nbstripout's known
# limit). `make lab` installs it into this checkout's .git/config.
outputs-filter:
	@git rev-parse --git-dir >/dev/null 2>&1 || { echo "outputs-filter: not a git checkout, nothing to do"; exit 0; }; \
	git config filter.nbstripout.clean "'$(abspath $(PY))' -m nbstripout --keep-id" && \
	git config filter.nbstripout.smudge cat && \
	git config filter.nbstripout.required true && \
	git config diff.ipynb.textconv "'$(abspath $(PY))' -m nbstripout --keep-id -t" && \
	echo "outputs-filter: notebook outputs are stripped whenever git reads a notebook"

clean:
	rm -rf runs/ data/checkpoints/
