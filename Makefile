# The newcomer's two commands:  `make demo` (set up + main job)  and  `make test` (set up + tests).
VENV := .venv
BIN := $(VENV)/bin

.PHONY: setup demo test test-slow default-model clean
setup:
	@bash scripts/setup.sh

demo: setup
	$(BIN)/speechlm demo

test: setup
	$(BIN)/python -m pytest -q

test-slow: setup
	$(BIN)/python -m pytest -q -m slow

# Re-create the shipped default model (checkpoints/slm/default) from scratch: ~85 min on one CPU core.
default-model: setup
	test -f data/demo/corpus.json || $(BIN)/speechlm data synth --preset demo --out data/demo
	$(BIN)/speechlm train configs/slm/default_stage1.yaml
	$(BIN)/speechlm train configs/slm/default_stage2.yaml
	$(BIN)/speechlm eval runs/slm/default_stage2 --data data/demo --kinds tts,qa --limit 48 --threads 1 --json runs/slm/default_eval/report.json
	$(BIN)/speechlm ship runs/slm/default_stage2 --out checkpoints/slm/default --eval runs/slm/default_eval/report.json

clean:
	rm -rf $(VENV) .pytest_cache
