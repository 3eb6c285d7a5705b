# Mirage: everything these targets create stays inside the repository
# (.venv/, .mirage/), and is git-ignored.

SHELL := /bin/bash
PYTHON ?= $(shell command -v python3.11 || command -v python3)
VENV := .venv
PY := $(VENV)/bin/python
MANAGE := $(PY) manage.py
DEPS_STAMP := $(VENV)/.deps-installed
REQUIREMENTS := requirements/base.txt requirements/dev.txt requirements/local-model.txt
PYTEST_ARGS ?=
# The whole suite runs in this many processes (pytest-xdist), a test file
# to a process: most of its time is waiting on workers, leases and faults.
TEST_PROCESSES ?= 2

.PHONY: help venv services services-down migrate run demo test test-unit test-e2e test-multihost browser prometheus ocr netns-tools lint bench soak clean

help:
	@echo "make demo        set up, run the pipeline on real documents, print results"
	@echo "make test        set up and run the whole test suite"
	@echo "make test-unit   fast unit tests only (no worker)"
	@echo "make test-multihost  the multi-host network-fault suite (root)"
	@echo "make run         the whole stack in the foreground (web :8000, workers, beat, Flower :5555)"
	@echo "make services    start the database and broker (idempotent)"
	@echo "make bench       the benchmarks (prints one table)"
	@echo "make soak        the soak: 5,000 documents under load with worker kills (hours; not part of make test)"

$(DEPS_STAMP): $(REQUIREMENTS)
	@test -x $(PY) || $(PYTHON) -m venv $(VENV)
	$(PY) -m pip install --quiet --upgrade pip
	$(PY) -m pip install --quiet -r requirements/dev.txt -r requirements/local-model.txt
	@touch $@

venv: $(DEPS_STAMP)

services: $(DEPS_STAMP)
	$(PY) -m mirage.devservices up

services-down: $(DEPS_STAMP)
	$(PY) -m mirage.devservices down

migrate: services
	$(MANAGE) migrate --noinput -v 0

run: migrate
	$(MANAGE) collectstatic --noinput -v 0
	$(VENV)/bin/honcho -f Procfile start

demo: migrate
	$(MANAGE) demo $(DEMO_PATHS)

test: services browser prometheus ocr netns-tools
	$(PY) -m pytest -n $(TEST_PROCESSES) --dist loadfile $(PYTEST_ARGS)

# The multi-host suite alone (network namespaces; root).
test-multihost: services netns-tools
	$(PY) -m pytest -m multihost $(PYTEST_ARGS)

# The browser tests drive Debian's Chromium; install it when missing and
# possible (root with apt), otherwise those tests skip and say why.
browser:
	@if ! command -v chromium >/dev/null || ! command -v chromedriver >/dev/null; then \
		if [ "$$(id -u)" = 0 ] && command -v apt-get >/dev/null; then \
			echo "installing chromium and chromium-driver (browser tests)"; \
			apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq chromium chromium-driver >/dev/null; \
		else \
			echo "chromium/chromedriver not found: browser tests will be skipped (apt-get install chromium chromium-driver)"; \
		fi; \
	fi

# The alert-rule tests run promtool and the metrics test a real Prometheus
# server, both from Debian's prometheus package; installed like chromium above.
prometheus:
	@if ! command -v promtool >/dev/null || ! command -v prometheus >/dev/null; then \
		if [ "$$(id -u)" = 0 ] && command -v apt-get >/dev/null; then \
			echo "installing prometheus (promtool and the server, for the metrics tests)"; \
			apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends prometheus >/dev/null; \
		else \
			echo "promtool/prometheus not found: the alert-rule and Prometheus tests will be skipped (apt-get install prometheus)"; \
		fi; \
	fi

# OCR of scanned PDFs runs Debian's Tesseract (English, plus German for the
# second-language tests); installed the same way as Chromium.
OCR_PACKAGES := tesseract-ocr tesseract-ocr-eng tesseract-ocr-deu
ocr:
	@if ! command -v tesseract >/dev/null || ! tesseract --list-langs 2>/dev/null | grep -qx deu; then \
		if [ "$$(id -u)" = 0 ] && command -v apt-get >/dev/null; then \
			echo "installing $(OCR_PACKAGES) (OCR of scanned PDFs)"; \
			apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq $(OCR_PACKAGES) >/dev/null; \
		else \
			echo "tesseract (with eng and deu data) not found: OCR tests will be skipped (apt-get install $(OCR_PACKAGES))"; \
		fi; \
	fi

# The multi-host tests build network namespaces with iproute2 and cut links
# with nftables; install them when missing and possible (root with apt),
# otherwise those tests skip and say why.
netns-tools:
	@if ! command -v ip >/dev/null || ! command -v nft >/dev/null; then \
		if [ "$$(id -u)" = 0 ] && command -v apt-get >/dev/null; then \
			echo "installing iproute2 and nftables (multi-host tests)"; \
			apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq iproute2 nftables >/dev/null; \
		else \
			echo "ip/nft not found: multi-host tests will be skipped (apt-get install iproute2 nftables)"; \
		fi; \
	fi

test-unit: $(DEPS_STAMP)
	$(PY) -m pytest -m unit $(PYTEST_ARGS)

test-e2e: services
	$(PY) -m pytest -m "not unit" $(PYTEST_ARGS)

lint: $(DEPS_STAMP)
	$(VENV)/bin/ruff check .
	$(VENV)/bin/ruff format --check .

bench: migrate
	$(PY) -m bench $(BENCH_ARGS)

# 5,000 documents x 50 chunks through the real pipeline under API load, the
# embed worker SIGKILLed every 2 minutes (docs/benchmarks.md, "Soak").
soak: migrate
	$(PY) -m bench.soak $(SOAK_ARGS)

clean: services-down
	rm -rf .mirage
