# make demo : create the environment, install the embedded engine, run concilium demo on it
# make lint : ruff check, ruff format --check, pyright (no file is changed)
# make test : create the environment, install the engine, lint, run the test suite (what CI runs)
PYTHON ?= python3
VENV   := .venv
PY     := $(VENV)/bin/python
STAMP  := $(VENV)/.installed
# re-link so files added since the install are importable (strict mode links files)
RELINK := $(PY) -m pip install --quiet --no-deps -e . --config-settings editable_mode=strict

.PHONY: demo demo-sim test lint engine browser mcp-clients bench env clean

$(STAMP): pyproject.toml
	$(PYTHON) -m venv $(VENV)
	$(PY) -m pip install --quiet --upgrade pip
	# strict editable install: the five folders map into concilium.* (see STYLE.md)
	$(PY) -m pip install --quiet -e '.[test]' --config-settings editable_mode=strict
	touch $(STAMP)

env: $(STAMP)

# vLLM's CPU build and Gemma 3 270M, in their own environment under ~/.cache/concilium
# (about 3 minutes and 5 GB the first time; a no-op afterwards)
engine: $(STAMP)
	@$(RELINK) > $(VENV)/relink.log 2>&1 || (cat $(VENV)/relink.log; exit 1)
	$(VENV)/bin/concilium engine install

# the gates run before the tests, each reporting all it finds before make stops
lint: $(STAMP)
	@$(RELINK) > $(VENV)/relink.log 2>&1 || (cat $(VENV)/relink.log; exit 1)
	@status=0; \
	echo "== ruff check"; $(VENV)/bin/ruff check . || status=1; \
	echo "== ruff format --check"; $(VENV)/bin/ruff format --check . || status=1; \
	echo "== pyright"; $(VENV)/bin/pyright || status=1; \
	exit $$status

# the UI's browser tests drive Debian's chromium (Playwright's own download is unreachable)
browser:
	@command -v chromium >/dev/null || { [ "$$(id -u)" = 0 ] && apt-get install -y chromium; } \
	  || echo "chromium is missing and cannot be installed here (not root): browser tests will fail"

# the MCP Inspector CLI and server-everything, pinned, for tests/clients/test_mcp_inspector.py:
# installed with npm under ~/.cache/concilium/npm beside the engine (a no-op once there;
# tests/clients/get_sum.yaml runs server-everything from this folder)
MCP_INSPECTOR     := 2.12.0
SERVER_EVERYTHING := 2026.8.31
NPM_HOME  := $(HOME)/.cache/concilium/npm
NPM_STAMP := $(NPM_HOME)/.installed-inspector-$(MCP_INSPECTOR)-everything-$(SERVER_EVERYTHING)

$(NPM_STAMP):
	npm install --prefix $(NPM_HOME) --no-audit --no-fund --save-exact \
	  @modelcontextprotocol/inspector@$(MCP_INSPECTOR) @modelcontextprotocol/server-everything@$(SERVER_EVERYTHING)
	touch $@

mcp-clients: $(NPM_STAMP)

test: lint engine browser mcp-clients
	CONCILIUM_REQUIRE_ENGINE=1 CONCILIUM_REQUIRE_BROWSER=1 CONCILIUM_REQUIRE_NPM=1 $(VENV)/bin/pytest -q --durations=30

DEMO_ITEMS ?= 50

# what parallel sampling buys the embedded base model (capitals: one sample vs
# greedy vs the majority of 9) and what it costs in time (1 request, n=9, 9 at once, 9 in sequence)
demo: engine
	@echo "== concilium demo: the embedded engine is Gemma 3 270M BASE (pretrained, not instruction-tuned) on vLLM's CPU build"
	$(VENV)/bin/concilium demo --items $(DEMO_ITEMS) --out .demo

demo-sim: $(STAMP)
	@$(RELINK) > $(VENV)/relink.log 2>&1 || (cat $(VENV)/relink.log; exit 1)
	@echo "== the same debate on the simulated server (a test double, not a model)"
	$(VENV)/bin/concilium run examples/debate.yaml --backend sim --input "What is 12 * 7?"

bench: $(STAMP)
	@$(RELINK) > $(VENV)/relink.log 2>&1 || (cat $(VENV)/relink.log; exit 1)
	$(VENV)/bin/concilium bench fanout --json .bench/fanout.json

clean:
	rm -rf $(VENV) build *.egg-info .pytest_cache
