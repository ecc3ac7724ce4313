# Two commands do all set-up on a fresh machine:
#   make demo   -> creates .venv, installs, runs the offline end-to-end demo
#   make test   -> creates .venv, installs, runs the test suite
PYTHON ?= python3.11
VENV   ?= .venv
PY     := $(VENV)/bin/python
PIP    := $(VENV)/bin/pip

.PHONY: install demo test lint bench clean-outputs

$(VENV)/.installed: setup.cfg pyproject.toml
	$(PYTHON) -m venv $(VENV)
	$(PIP) install --quiet --upgrade pip
	# torch first, pinned to the releases this machine kind serves from local disk
	$(PIP) install --quiet torch==2.14.1 torchvision==0.29.1
	$(PIP) install --quiet -e '.[dev,scale]'
	touch $@

install: $(VENV)/.installed

demo: install
	$(PY) cli.py demo

# Node example used by tests/deploy/test_embedding.py (skips with a reason where npm/node are absent)
examples/node/node_modules: examples/node/package.json examples/node/package-lock.json
	@command -v npm >/dev/null && npm ci --ignore-scripts --no-audit --no-fund --prefix examples/node \
	  || echo "npm not found: the Node example tests will skip"

test: install examples/node/node_modules
	$(PY) -m pytest -q

lint: install
	$(VENV)/bin/ruff check .

bench: install
	$(PY) -m benchmarks.run

clean-outputs:
	rm -rf checkpoints/*.pt exports/*.onnx runs/*/ reports/*/ data/synthetic
