# Two commands do all set-up on a fresh machine:
#   make demo   -> creates .venv, installs, runs the offline end-to-end demo
#   make test   -> creates .venv, installs, runs the test suite
PYTHON ?= python3.11
VENV   ?= .venv
PY     := $(VENV)/bin/python
PIP    := $(VENV)/bin/pip

.PHONY: install demo test lint bench clean-outputs system-deps

$(VENV)/.installed: setup.cfg pyproject.toml
	$(PYTHON) -m venv $(VENV)
	$(PIP) install --quiet --no-cache-dir --upgrade pip
	# torch first, pinned to the releases this machine kind serves from local disk. No cache and no .pyc at
	# install time: ~0.4 GB less on disk (CI once ran out of space here); Python compiles what it imports.
	$(PIP) install --quiet --no-cache-dir --no-compile torch==2.14.1 torchvision==0.29.1
	$(PIP) install --quiet --no-cache-dir --no-compile -e '.[dev,runtimes,scale,serve,audit,track,tune]'
	touch $@

install: $(VENV)/.installed

demo: install
	$(PY) cli.py demo

# Node example used by tests/deploy/test_embedding.py (skips with a reason where npm/node are absent)
examples/node/node_modules: examples/node/package.json examples/node/package-lock.json
	@command -v npm >/dev/null && npm ci --ignore-scripts --no-audit --no-fund --prefix examples/node \
	  || echo "npm not found: the Node example tests will skip"

# Browser example (tests/deploy/test_web.py): onnxruntime-web + puppeteer-core; no browser is downloaded
examples/web/node_modules: examples/web/package.json examples/web/package-lock.json
	@command -v npm >/dev/null && PUPPETEER_SKIP_DOWNLOAD=1 npm ci --ignore-scripts --no-audit --no-fund \
	  --prefix examples/web || echo "npm not found: the browser tests will skip"

# C++ example (tests/deploy/test_cpp.py): ONNX Runtime headers, Debian 13's libonnxruntime-dev (pinned), unpacked
# into examples/cpp/third_party (not installed). Without apt the C++ tests skip.
examples/cpp/third_party:
	@examples/cpp/get_headers.sh >/dev/null || echo "cannot fetch ONNX Runtime headers: the C++ tests will skip"

# System packages the browser and C++ tests use (root + apt only; otherwise those tests skip, saying why)
system-deps:
	@missing=$$(for p in chromium libjpeg-dev libpng-dev g++; do dpkg -s $$p >/dev/null 2>&1 || echo $$p; done); \
	if [ -z "$$missing" ]; then echo "system packages present"; \
	elif [ "$$(id -u)" = 0 ] && command -v apt-get >/dev/null; then \
	  apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends $$missing; \
	else echo "missing $$missing (not root): the browser/C++ tests will skip"; fi

test: install examples/node/node_modules examples/web/node_modules examples/cpp/third_party
	$(PY) -m pytest -q

lint: install
	$(VENV)/bin/ruff check .

bench: install
	$(PY) -m benchmarks.run

clean-outputs:
	rm -rf checkpoints/*.pt exports/*.onnx runs/*/ reports/*/ data/synthetic  # runs/<name>/weights/ hold the checkpoints
