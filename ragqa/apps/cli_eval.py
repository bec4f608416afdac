"""`ragqa eval ...`: retrieval, QA and summarisation reports."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Annotated, Optional

import typer

from ragqa.apps.common import (IndexOpt, JsonOpt, ThreadsOpt, app, command_settings, for_variants,
                               progress_bar)


eval_app = typer.Typer(no_args_is_help=True, help="Evaluate retrieval and answers.")
app.add_typer(eval_app, name="eval")


@eval_app.command("retrieval")
def eval_retrieval(
    index: IndexOpt,
    queries: Annotated[Path, typer.Option("--queries", help='JSONL of {"_id", "text"}.')],
    qrels: Annotated[Path, typer.Option("--qrels", help="BEIR qrels TSV (query-id, corpus-id, score).")],
    mode: Annotated[Optional[str], typer.Option("--mode", help="dense | bm25 | hybrid (default: all three).")] = None,
    limit: Annotated[Optional[int], typer.Option("--limit", help="A random sample of N judged queries.")] = None,
    seed: Annotated[int, typer.Option("--seed", help="Seed of the --limit sample.")] = 0,
    json_out: JsonOpt = False,
    threads: ThreadsOpt = None,
) -> None:
    """nDCG@k, Recall@k and MRR@10 of the index's document rankings against qrels."""
    from ragqa.evaluation.evaluate import evaluate_retrieval, read_qrels, read_queries, sample_queries
    from ragqa.indexing.index import Index

    settings = command_settings(threads=threads)
    items, judged = sample_queries(read_queries(queries), read_qrels(qrels), limit, seed)
    results = {}
    with Index.open(index, settings) as idx:
        for m in [mode] if mode else ["dense", "bm25", "hybrid"]:
            with progress_bar(f"{m} queries", "queries") as progress:
                results[m] = evaluate_retrieval(idx, items, judged, mode=m, progress=progress)
    if json_out:
        typer.echo(json.dumps({"index": str(index), "qrels": str(qrels), "limit": limit, "seed": seed,
                               "results": results}))
        return
    cols = ["ndcg@10", "recall@100", "mrr@10", "recall@10"]
    typer.echo(f"{'mode':8s} " + " ".join(f"{c:>10s}" for c in cols) + "   queries")
    for m, r in results.items():
        typer.echo(f"{m:8s} " + " ".join(f"{r[c]:10.4f}" for c in cols) + f"   {r['queries']}")


@eval_app.command("qa")
def eval_qa(
    index: IndexOpt,
    data: Annotated[Path, typer.Option("--data", help="SQuAD json, or JSONL with question and answers.")],
    variants: Annotated[str, typer.Option("--variants", help="Comma-separated: base,NAME,...")] = "base",
    report: Annotated[Path, typer.Option("--report", help="Directory for report.md and results.json.")] = Path("reports/qa"),
    model: Annotated[Optional[str], typer.Option("--model", "-m", help="Generator model.")] = None,
    limit: Annotated[Optional[int], typer.Option("--limit", help="A random sample of N questions.")] = None,
    seed: Annotated[int, typer.Option("--seed")] = 0,
    k: Annotated[Optional[int], typer.Option("-k", help="Passages to retrieve.")] = None,
    template: Annotated[Optional[str], typer.Option("--template")] = None,
    gold_context: Annotated[bool, typer.Option("--gold-context", help="Give the model the gold paragraph "
                                               "instead of retrieving (the reading-comprehension ceiling).")] = False,
    predictions: Annotated[bool, typer.Option("--predictions", help="Also write predictions.jsonl.")] = False,
    threads: ThreadsOpt = None,
) -> None:
    """EM / F1 / gold passage in sources / abstention per variant, on the same retrieved passages.
    Variants of different base models compare in one report: --variants
    qwen2.5-coder-1.5b-instruct:base,squad-lora-qwen (quality, seconds, memory and size side by side)."""
    from ragqa.answering.pipeline import RagQA, make_generator
    from ragqa.evaluation.evaluate import evaluate_qa, load_qa_data, sample_items, write_qa_report

    settings, entries = _contenders(variants, model, threads)
    items = sample_items(load_qa_data(data), limit, seed)
    with RagQA.open(index, settings) as qa, progress_bar("questions", "questions") as progress:
        for e in entries:
            if e.model == settings.model:
                qa.check_variant(e.variant)
        summary, rows = evaluate_qa(qa, items, entries, gold_context=gold_context, k=k, template=template,
                                    progress=progress,
                                    generator_for=lambda m: make_generator(settings.replace(model=m)))
    models = list(dict.fromkeys(e.model for e in entries))
    meta = {"data": str(data), "index": str(index), "model": ",".join(models), "questions": len(items),
            "seed": seed, "k": k or settings.top_k, "template": template or settings.template,
            "gold_context": gold_context, "threads": settings.threads}
    _echo_report(write_qa_report(report, summary, rows, meta, predictions=predictions))


def _contenders(variants: str, model: str | None, threads: int | None):
    """The settings and the contenders of `--variants` (MODEL:NAME entries may name other bases;
    without any, the variants' own base is served)."""
    from ragqa.answering.pipeline import model_for_variants
    from ragqa.evaluation.evaluate import contenders

    names = [v.strip() for v in variants.split(",") if v.strip()]
    settings = command_settings(threads=threads, model=model)
    if not any(":" in n for n in names):  # one base: the one the variants were trained on
        settings = for_variants(settings, model, names)
    return settings, contenders(names, settings.model,
                                variant_base=lambda name: model_for_variants(settings, [name]).model)


def _echo_report(report) -> None:
    """The report's tables (without the charts and the examples), then what was written."""
    typer.echo(report.tables)
    typer.echo(f"wrote {', '.join(report.files)}")


@eval_app.command("summarize")
def eval_summarize(
    data: Annotated[Path, typer.Option("--data", help="JSONL: DialogSum (dialogue, summary) or input/output.")],
    variants: Annotated[str, typer.Option("--variants", help="Comma-separated: base,NAME,...")] = "base",
    report: Annotated[Path, typer.Option("--report", help="Directory for report.md and results.json.")] = Path("reports/summarize"),
    model: Annotated[Optional[str], typer.Option("--model", "-m", help="Generator model.")] = None,
    template: Annotated[str, typer.Option("--template")] = "summarize",
    limit: Annotated[Optional[int], typer.Option("--limit", help="A random sample of N items.")] = None,
    seed: Annotated[int, typer.Option("--seed")] = 0,
    predictions: Annotated[bool, typer.Option("--predictions", help="Also write predictions.jsonl.")] = False,
    threads: ThreadsOpt = None,
) -> None:
    """ROUGE-1/2/L (95% CIs) and BLEU per variant on the same summarisation prompts. Variants of
    different base models compare in one report, as in `eval qa` (MODEL:base, MODEL:NAME)."""
    from ragqa.evaluation.evaluate import (evaluate_summaries, load_summarization_data, sample_items,
                                  write_summary_report)
    from ragqa.answering.pipeline import generation_settings, make_generator

    settings, entries = _contenders(variants, model, threads)
    items = sample_items(load_summarization_data(data), limit, seed)
    with progress_bar("dialogues", "items") as progress:
        summary, rows = evaluate_summaries(make_generator(settings), items, entries, template=template,
                                           settings=generation_settings(settings), progress=progress,
                                           generator_for=lambda m: make_generator(settings.replace(model=m)))
    models = list(dict.fromkeys(e.model for e in entries))
    meta = {"data": str(data), "model": ",".join(models), "items": len(items), "seed": seed, "template": template,
            "threads": settings.threads}
    _echo_report(write_summary_report(report, summary, rows, meta, predictions=predictions))
