# asr-eval — set-up and entry points. Every target installs what it needs.
SHELL := /bin/bash
PYTHON ?= python3.11
VENV ?= .venv
BIN := $(VENV)/bin
# CPU machines: the local CPU wheel. GPU users pick their own, e.g.
#   make test TORCH_SPEC="torch==2.9.1"   or   TORCH_SPEC=""  (keep the torch already in the venv)
TORCH_SPEC ?= torch==2.13.0
EXTRAS ?= test,ray,ui,docs,whispercpp,openvino

export HF_HUB_OFFLINE := 1
export TRANSFORMERS_OFFLINE := 1
export HF_DATASETS_OFFLINE := 1
export TOKENIZERS_PARALLELISM := false
export PREFECT_HOME := $(CURDIR)/.prefect
export PREFECT_SERVER_ANALYTICS_ENABLED := false
export PREFECT_SERVER_EPHEMERAL_STARTUP_TIMEOUT_SECONDS := 180
export NO_MKDOCS_2_WARNING := 1

.PHONY: install test demo serve ui docs bench browser-deps clean

$(BIN)/python:
	$(PYTHON) -m venv $(VENV)
	$(BIN)/pip install -q --upgrade pip

# Reinstall when pyproject changes; the stamp records what was installed. --no-compile: pip would
# byte-compile every installed module (torch, ray, gradio, …: 70 s of a 2:45 install on a 2-core VM);
# Python compiles the modules a run imports, once, when it first imports them.
$(VENV)/.installed: pyproject.toml | $(BIN)/python
	@if [ -n "$(TORCH_SPEC)" ]; then $(BIN)/pip install -q --no-compile $(TORCH_SPEC); fi
	$(BIN)/pip install -q --no-compile -e ".[$(EXTRAS)]"
	@$(BIN)/python -c "import torch, transformers; print('torch', torch.__version__, '| transformers', transformers.__version__)"
	touch $@

install: $(VENV)/.installed

# Headless Chromium (+ a CJK font for readable screenshots) for the report's browser test
# (Debian packages; CI runs as root).
# Headless Chromium + CJK fonts (browser tests) and a C++ compiler (torch.compile on CPU: -O compile=true).
browser-deps:
	@if ! command -v chromium >/dev/null || ! command -v chromedriver >/dev/null || ! fc-list 2>/dev/null | grep -qi "noto.*cjk" || ! command -v g++ >/dev/null; then \
	  if [ "$$(id -u)" = 0 ]; then apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq chromium chromium-driver fonts-noto-cjk g++ >/dev/null; \
	  else echo "chromium/chromedriver/g++ missing and not root: the browser and compile tests will be skipped"; fi; fi

# pytest, then the documentation site: --strict fails on a broken link or anchor (site/ is ignored)
test: install browser-deps
	$(BIN)/python -m pytest -q --durations=30
	$(BIN)/mkdocs build --strict --site-dir site

demo: install
	$(BIN)/asr-eval demo

# Local Prefect server + every deployment served from one process (Ctrl-C stops both).
# Set PREFECT_API_URL to use an existing server instead.
serve: install
	BIN=$(BIN) flows/serve.sh

# The web app on http://127.0.0.1:7860 (transcribe & compare, live microphone, browse runs).
# Options: make ui UI_ARGS="--port 8080 --db reports/other.duckdb"
ui: install
	$(BIN)/asr-eval ui $(UI_ARGS)

# The documentation site on http://127.0.0.1:8000, rebuilt as pages change (DOCS_ARGS="-a 0.0.0.0:8000")
docs: install
	$(BIN)/mkdocs serve $(DOCS_ARGS)

bench: install
	$(BIN)/python bench/run_all.py

clean:
	rm -rf $(VENV) .pytest_cache .hypothesis site
