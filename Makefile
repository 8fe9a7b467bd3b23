# The newcomer's two commands:  `make demo` (set up + main job)  and  `make test` (set up + tests).
VENV := .venv
BIN := $(VENV)/bin

.PHONY: setup demo test test-slow clean
setup:
	@bash scripts/setup.sh

demo: setup
	$(BIN)/speechlm demo

test: setup
	$(BIN)/python -m pytest -q

test-slow: setup
	$(BIN)/python -m pytest -q -m slow

clean:
	rm -rf $(VENV) .pytest_cache
