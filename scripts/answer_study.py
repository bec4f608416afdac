"""Compare answer prompts (templates) and decoding settings on the same retrieved passages.

Development only: questions come from SQuAD part-a articles 0-15 (``scripts/squad_splits.py``),
retrieval runs once per question over an index of the whole part-a, then every configuration
answers from the same passages with one loaded model. Prints F1 / EM / answer length / seconds per
configuration and writes every prediction to OUT (JSON).

    python scripts/answer_study.py --index build/tune/squad-all-index \
        --data build/tune/squad-dev.json --model qwen2.5-coder-0.5b-instruct --limit 40 \
        --config qa:1.1 --config qa:1.0 --config qa-concise:1.0 --out build/study.json

A configuration is ``TEMPLATE:REPETITION_PENALTY`` (a built-in template name or a .toml path).
"""

from __future__ import annotations

import argparse
import json
import statistics
import time
from pathlib import Path

from ragqa.config import Settings
from ragqa.evaluation.evaluate import answer_text, exact_match, load_qa_data, sample_items, token_f1
from ragqa.generators import GenerationSettings
from ragqa.answering.pipeline import RagQA, is_abstention


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--index", required=True)
    ap.add_argument("--data", required=True)
    ap.add_argument("--model", required=True)
    ap.add_argument("--limit", type=int, default=40)
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("-k", type=int, default=None)
    ap.add_argument("--max-prompt-tokens", type=int, default=None)
    ap.add_argument("--config", action="append", required=True)
    ap.add_argument("--out", default="build/answer-study.json")
    args = ap.parse_args()

    settings = Settings.load().replace(model=args.model, max_prompt_tokens=args.max_prompt_tokens)
    items = sample_items(load_qa_data(args.data), args.limit, args.seed)
    rows = []
    with RagQA.open(args.index, settings) as qa:
        for n, item in enumerate(items, 1):
            for config in args.config:
                template, _, penalty = config.rpartition(":")
                shell, prompt = qa.prepare(item.question, k=args.k, template=template)
                if prompt is None:
                    text, seconds, tokens, new = "I don't know.", 0.0, 0, 0
                else:
                    t0 = time.perf_counter()
                    result = qa.generator.generate(prompt.text, settings=GenerationSettings(
                        max_new_tokens=settings.max_new_tokens, repetition_penalty=float(penalty)))
                    seconds, text = time.perf_counter() - t0, result.text.strip()
                    tokens, new = prompt.tokens, result.new_tokens
                pred = answer_text(text)
                rows.append({"id": item.id, "config": config, "question": item.question,
                             "answers": item.answers, "prediction": text,
                             "f1": token_f1(pred, item.answers), "em": exact_match(pred, item.answers),
                             "abstained": is_abstention(text), "seconds": seconds,
                             "prompt_tokens": tokens, "new_tokens": new,
                             "gold_in_sources": item.gold_doc in [s.doc_id for s in shell.sources]})
            print(f"{n}/{len(items)}", flush=True)
    print(f"{'config':40s} {'F1':>6s} {'EM':>6s} {'abst':>5s} {'words':>6s} {'s/ans':>6s} {'prompt':>6s}")
    for config in args.config:
        mine = [r for r in rows if r["config"] == config]
        print(f"{config:40s} {100 * statistics.fmean(r['f1'] for r in mine):6.1f} "
              f"{100 * statistics.fmean(r['em'] for r in mine):6.1f} "
              f"{sum(r['abstained'] for r in mine):5d} "
              f"{statistics.fmean(len(answer_text(r['prediction']).split()) for r in mine):6.1f} "
              f"{statistics.median(r['seconds'] for r in mine):6.1f} "
              f"{statistics.median(r['prompt_tokens'] for r in mine):6.0f}")
    gold = statistics.fmean(r["gold_in_sources"] for r in rows)
    print(f"gold passage among the sources: {100 * gold:.0f}%")
    Path(args.out).parent.mkdir(parents=True, exist_ok=True)
    Path(args.out).write_text(json.dumps(rows, indent=1, ensure_ascii=False) + "\n")


if __name__ == "__main__":
    main()
