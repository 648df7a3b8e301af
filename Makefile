# latentgram: `make demo` builds the default run, `make test` runs the test suite.
# Both set everything up first on a fresh Debian machine: the Fashion-MNIST package through apt,
# a virtual environment in .venv with PyTorch (the CPU build: see TORCH_INDEX_URL), and the
# project itself; Java 17 (unless a Java ≥ 17 or JAVA_HOME is there) and pyspark for Spark.

PYTHON ?= python3
TORCH_VERSION ?= 2.13.0
# A pip index of CPU wheels, where the default index serves torch's CUDA build.
TORCH_INDEX_URL ?=
RUN ?= runs/default
VENV := .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.installed
FASHION_MNIST := /usr/share/datasets/fashion-mnist/train-images-idx3-ubyte.gz
SUDO := $(shell [ "$$(id -u)" = 0 ] || echo sudo)

.PHONY: demo test lint format bench setup system-packages clean

demo: setup
	$(BIN)/latentgram prepare --run $(RUN)

# A worker per core (at most four), a test file's tests on one worker so that its fixtures are
# made once: the suite takes half the time on two cores.
test: setup
	$(BIN)/python -m pytest -q -n auto --maxprocesses 4 --dist loadfile

lint: setup
	$(BIN)/ruff check .
	$(BIN)/ruff format --check .
	$(BIN)/mypy

format: setup
	$(BIN)/ruff format .
	$(BIN)/ruff check --fix .

bench: setup
	$(BIN)/python benchmarks/blae_figures.py --run $(RUN)
	$(BIN)/python benchmarks/ngram_figures.py --run $(RUN)
	$(BIN)/python benchmarks/arvm_figures.py --run $(RUN)
	$(BIN)/pip install -q -e '.[bench]'  # FAISS, the nearest-image baseline
	$(BIN)/python benchmarks/nearest_figures.py --run $(RUN)
	$(BIN)/python benchmarks/service_figures.py --run $(RUN)

setup: system-packages $(STAMP)

# Debian's dataset-fashion-mnist is the default data source; without apt, point
# LATENTGRAM_FASHION_MNIST_DIR or --source idx:PATH at the IDX files instead.
# tests/test_deploy.py validates the Compose files with `docker compose` or, where that is
# missing, Debian's docker-compose (1.29), which needs no Docker daemon: docker.io is left out.
# tests/api/test_page.py drives Debian's chromium headless through Playwright, so Playwright's own
# browser download is never needed; headless needs none of its recommended packages.
# `latentgram build --engine spark` (and tests/run/test_spark_build.py) runs pyspark, the
# [spark] extra, on Debian's Java 17 runtime.
system-packages:
	@if [ ! -f $(FASHION_MNIST) ] && command -v apt-get >/dev/null; then \
		$(SUDO) apt-get update -qq && \
		DEBIAN_FRONTEND=noninteractive $(SUDO) apt-get install -y -qq dataset-fashion-mnist; \
	fi
	@if ! command -v docker-compose >/dev/null && ! docker compose version >/dev/null 2>&1 && \
		command -v apt-get >/dev/null; then \
		$(SUDO) apt-get update -qq && \
		DEBIAN_FRONTEND=noninteractive $(SUDO) apt-get install -y -qq --no-install-recommends \
			docker-compose; \
	fi
	@if ! command -v chromium >/dev/null && command -v apt-get >/dev/null; then \
		$(SUDO) apt-get update -qq && \
		DEBIAN_FRONTEND=noninteractive $(SUDO) apt-get install -y -qq --no-install-recommends \
			chromium; \
	fi
	@java=$$(java -version 2>&1 | sed -n 's/.* version "\(1\.\)\{0,1\}\([0-9]*\).*/\2/p' | head -1); \
	if [ "$${java:-0}" -lt 17 ] && [ -z "$$JAVA_HOME" ] && command -v apt-get >/dev/null; then \
		$(SUDO) apt-get update -qq && \
		DEBIAN_FRONTEND=noninteractive $(SUDO) apt-get install -y -qq --no-install-recommends \
			openjdk-17-jre-headless; \
	fi

# torch is installed first and pinned: an unpinned torch pulls the CUDA build (gigabytes). Which
# build a pinned one is depends on the index: set TORCH_INDEX_URL where it serves CUDA's.
$(STAMP): pyproject.toml
	$(PYTHON) -m venv $(VENV)
	$(BIN)/pip install -q --upgrade pip
	$(BIN)/pip install -q torch==$(TORCH_VERSION) $(if $(TORCH_INDEX_URL),--index-url $(TORCH_INDEX_URL))
	$(BIN)/pip install -q -e '.[dev,spark]'
	touch $(STAMP)

clean:
	rm -rf $(VENV) .pytest_cache .mypy_cache .ruff_cache
