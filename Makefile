# make demo : create the environment and run the debate example on the embedded default
# make test : create the environment and run the test suite (what CI runs)
PYTHON ?= python3
VENV   := .venv
PY     := $(VENV)/bin/python
STAMP  := $(VENV)/.installed

.PHONY: demo test bench env clean

$(STAMP): pyproject.toml
	$(PYTHON) -m venv $(VENV)
	$(PY) -m pip install --quiet --upgrade pip
	# strict editable install: the five folders map into concilium.* (see STYLE.md)
	$(PY) -m pip install --quiet -e '.[test]' --config-settings editable_mode=strict
	touch $(STAMP)

env: $(STAMP)

test: $(STAMP)
	# re-link so files added since the install are importable (strict mode links files)
	$(PY) -m pip install --quiet --no-deps -e . --config-settings editable_mode=strict
	$(VENV)/bin/pytest -q

demo: $(STAMP)
	$(PY) -m pip install --quiet --no-deps -e . --config-settings editable_mode=strict
	@echo "== concilium demo: a 3-agent, 2-round debate on the simulated server (a test double, not a model)"
	$(VENV)/bin/concilium run examples/debate.yaml --backend sim --input "What is 12 * 7?" --trace .demo-trace.jsonl

bench: $(STAMP)
	$(VENV)/bin/concilium bench fanout --json .bench/fanout.json

clean:
	rm -rf $(VENV) build *.egg-info .pytest_cache
