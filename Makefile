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

# Re-create the shipped default model (checkpoints/slm/default) from scratch: ~3 h 15 min on the 2-core CPU
# (corpus ~7 min; stage 1: a 9,000-step cosine schedule, ~70 min, then resumed with 15,000-, 18,000- and 22,000-step
# schedules -- warm restarts, as the shipped model was trained -- ~47 + 23 + 31 min; stage 2 ~6 min; evaluation ~6 min).
# The demo-corpus recipe it replaced: configs/slm/default_stage{1,2}.yaml.
default-model: setup
	test -f data/large/corpus.json || $(BIN)/speechlm data synth --preset large --out data/large --workers 2
	$(BIN)/speechlm train configs/slm/large_guided.yaml
	for n in 15000 18000 22000; do \
	  $(BIN)/speechlm train configs/slm/large_guided.yaml train.max_steps=$$n train.keep_checkpoints=24 --resume || exit 1; \
	done
	$(BIN)/speechlm train configs/slm/large_guided_stage2.yaml
	$(BIN)/speechlm eval runs/slm/large_guided_stage2 --data data/large --kinds tts,qa --limit 48 --threads 1 --json runs/slm/large_guided_eval/report.json
	$(BIN)/speechlm ship runs/slm/large_guided_stage2 --out checkpoints/slm/default --eval runs/slm/large_guided_eval/report.json

clean:
	rm -rf $(VENV) .pytest_cache
