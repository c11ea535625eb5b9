# Two commands for a new user: `make run` (set up on first use, then the main job) and `make test`.
SHELL := /bin/bash
VENV ?= .venv
PY := $(VENV)/bin/python
BERT := $(VENV)/bin/bert
RUN_DIR ?= runs/default
PYTEST_ARGS ?=

include make/cluster.mk

.PHONY: setup setup-test run compile test test-slow test-data bench bench-data bench-train bench-finetune bench-tokenize bench-corpus clean help

help:
	@echo "make run         set up on first use, then run the main job on the embedded default corpus"
	@echo "make test        set up (with test extras) and run the test suite"
	@echo "make test-slow   the slow checks (minutes)"
	@echo "make bench-data  data generation benchmark against Google's create_pretraining_data.py"
	@echo "make bench-train training step benchmark against Hugging Face BertForPreTraining (PyTorch)"
	@echo "make bench-finetune  fine-tuning quality and time against Hugging Face (PyTorch)"
	@echo "make bench-tokenize  tokenizer speed against Google's, and where the stock Rust BERT pipeline differs"
	@echo "make bench-corpus  corpus preparation against NVIDIA's approach (WikiExtractor + NLTK)"
	@echo "make images | push | manifests   the cluster side (see docs/cluster.md)"
	@echo "make test-images build the CPU images here (buildah) and run the pipeline in them (slow)"

$(VENV)/.ready: pyproject.toml scripts/setup_env.sh
	bash scripts/setup_env.sh $(VENV)
	touch $@

$(VENV)/.ready-test: pyproject.toml scripts/setup_env.sh
	bash scripts/setup_env.sh $(VENV) --test
	touch $@ $(VENV)/.ready

setup: $(VENV)/.ready
setup-test: $(VENV)/.ready-test

# Real data and the reference environment (TF 2.15.1 runs Google's TF1-era modeling.py) for parity tests.
test-data: setup-test
	bash scripts/fetch_test_data.sh $(VENV)
	bash scripts/setup_reference_env.sh

# The main job: the whole pipeline (data -> pretrain on 2 Horovod ranks -> fine-tune -> evaluate) run
# locally by kfp.local on the embedded default (Python's own docs), no download and no cluster.
run: setup
	$(VENV)/bin/bert-pipeline run --output-dir $(RUN_DIR)

# The pipeline's IR YAML, to upload in the KFP UI.
compile: setup
	$(VENV)/bin/bert-pipeline compile -o bert_pipeline.yaml

test: test-data
	$(PY) -m pytest -q $(PYTEST_ARGS)

test-slow: test-data
	$(PY) -m pytest -q -m slow $(PYTEST_ARGS)

bench-data: test-data
	$(PY) benchmarks/bench_data.py

bench-train: test-data
	$(PY) benchmarks/bench_train.py

bench-finetune: test-data
	$(PY) benchmarks/bench_finetune.py

bench-tokenize: test-data
	$(PY) benchmarks/bench_tokenize.py

bench-corpus: test-data
	$(PY) benchmarks/bench_corpus.py

bench: bench-data bench-train bench-finetune bench-tokenize bench-corpus

clean:
	rm -rf $(RUN_DIR) .pytest_cache
