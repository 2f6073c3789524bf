# The README's two commands: `make demo` and `make test`.
PY ?= python
PIP = $(PY) -m pip

.PHONY: install demo test test-slow bench bench-smoke lint

# torch first, pinned: on these machines the pin installs a CPU build from local disk,
# whereas an unpinned torch would pull a multi-GB CUDA build. pythae (the optional extra
# `pythae`) requires the `dataclasses` backport, which Python >= 3.7 must not install over
# its own module: install pythae without dependencies, then the ones it needs.
install:
	$(PIP) install -q torch==2.13.0
	$(PIP) install -q -e ".[dev,scale,lightning]"
	$(PIP) install -q --no-deps "pythae>=0.1.2"
	$(PIP) install -q cloudpickle imageio "pydantic>=2" typing-extensions

demo: install
	$(PY) -m postcollapse thresholds mnist --top 5
	$(PY) -m postcollapse reproduce all --preset quick --out results/quick
	@echo "figures and report: results/quick/report.html (and report.md)"

test: install
	$(PY) -m pytest -q

test-slow: install
	$(PY) -m pytest -q -m slow || [ $$? -eq 5 ]

bench: install
	$(PY) benchmarks/run_all.py

lint:
	$(PY) -m ruff check src tests benchmarks examples

bench-smoke: install
	$(PY) benchmarks/run_all.py --smoke
