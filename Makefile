# Quick start: `make run` (sets up .venv, runs the quickstart table), `make test`, `make lab`, `make student`.
VENV ?= .venv
PY := $(VENV)/bin/python
CONFIG ?= configs/quickstart.json

.PHONY: setup run test lab student clean

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

test: setup
	PRUNING_FAST=1 $(PY) -m pytest tests notebooks --nbval-lax --nbval-current-env -q

student: setup
	$(PY) scripts/make_student.py --out student

lab: setup
	$(VENV)/bin/jupyter lab notebooks/

clean:
	rm -rf runs/ data/checkpoints/
